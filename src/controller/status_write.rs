//! The status step: server-side apply of each policy's status, only when it changed, and a
//! Warning Event when a policy turns not Ready.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use serde_json::json;

use super::apply::publish;
use super::status::{LaunchTemplateReport, desired_status, owned_part, status_changed};
use super::{Context, Error};
use crate::crd::{FIELD_MANAGER, NodeNetworkPolicy};
use crate::plan::FleetPlan;

/// Writes every policy status that changed; returns how many it wrote.
pub(super) async fn write_statuses(
    ctx: &Context,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    templates: &BTreeMap<String, LaunchTemplateReport>,
) -> Result<usize, Error> {
    let mut written = 0;
    let now = Time(jiff::Timestamp::now());
    for policy in policies {
        let name = policy.name_any();
        let Some(policy_plan) = plan.policies.get(&name) else {
            continue;
        };
        let desired = desired_status(
            policy_plan,
            templates.get(&name),
            policy.status.as_ref(),
            now.clone(),
        );
        if !status_changed(&desired, policy.status.as_ref()) {
            continue;
        }
        let api: Api<NodeNetworkPolicy> = Api::all(ctx.client.clone());
        let body = json!({
            "apiVersion": "tuner.vpccni.io/v1alpha1",
            "kind": "NodeNetworkPolicy",
            "metadata": {"name": name},
            "status": owned_part(&desired),
        });
        let patched = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        super::apply::count_write(ctx, "status");
        written += 1;
        // The watch will bring the same object; taking it now keeps the next pass from
        // patching again before it arrives.
        ctx.policies
            .apply(watcher::Event::Apply(patched), Clone::clone);
        if let Some(ready) = desired.conditions.iter().find(|c| c.type_ == "Ready")
            && ready.status == "False"
        {
            let was_false = policy
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "False" && c.reason == ready.reason);
            if !was_false {
                publish(
                    ctx,
                    policy,
                    &ready.reason,
                    EventType::Warning,
                    ready.message.clone(),
                )
                .await;
            }
        }
    }
    Ok(written)
}
