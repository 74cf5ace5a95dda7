//! The report step: each policy's status and the reconcile's Events, built from the plan and
//! the apply step's outcomes ([`desired`], pure), written with server-side apply only when the
//! status changed, and a Warning Event when a policy turns not Ready.
//!
//! May import: the pure core, `crd`, `plan`, `observe` (to put applied statuses into the
//! policy cache), `apply` (its outcomes), `metrics`.

pub mod desired;
pub mod events;
pub mod pacing;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use serde_json::json;

use crate::apply::{AddonOutcome, Outcomes};
use crate::crd::{FIELD_MANAGER, NodeNetworkPolicy};
use crate::error::Error;
use crate::metrics::{ConditionLabels, Metrics, StatusWriteLabels, WriteLabels};
use crate::observe::Observed;
use crate::plan::FleetPlan;
use desired::{desired_status, owned_part, templates_report, with_outcomes};
pub use events::EventSink;
use pacing::{Pace, StatusPacer, classify};

/// What the status step wrote, and when it must look again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub written: usize,
    /// Count-only changes wait this long ([`pacing`]); the pass after writes them.
    pub wait: Option<std::time::Duration>,
}

/// Raises the Events of what was done, then writes every policy status that changed; returns
/// how many it wrote. Nothing is written when the add-on turned out to have changed since it
/// was read (the next reconcile, at once, plans from the new read).
/// The fleet's subnets in the gauges.
fn subnet_gauges(metrics: &Metrics, outcomes: &Outcomes) {
    use crate::metrics::{HeadroomLabels, SubnetLabels};
    let gauges = &metrics.subnets;
    gauges.clear();
    for (policy, report) in &outcomes.subnets {
        for s in &report.statuses {
            let labels = SubnetLabels {
                policy: policy.clone(),
                subnet: s.subnet_id.clone(),
            };
            gauges
                .free_addresses
                .get_or_create(&labels)
                .set(i64::from(s.free_addresses));
            gauges
                .free_aligned_prefixes
                .get_or_create(&labels)
                .set(i64::from(s.free_aligned_prefixes));
            gauges
                .fragmented_addresses
                .get_or_create(&labels)
                .set(i64::from(s.fragmented_addresses));
            for h in &s.headroom {
                let labels = HeadroomLabels {
                    policy: policy.clone(),
                    subnet: s.subnet_id.clone(),
                    instance_type: h.instance_type.clone(),
                };
                gauges
                    .headroom_nodes
                    .get_or_create(&labels)
                    .set(i64::from(h.nodes));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn report(
    sink: &EventSink<'_>,
    observed: &Observed,
    metrics: &Metrics,
    pacer: &StatusPacer,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    outcomes: &Outcomes,
) -> Result<Reported, Error> {
    events::publish_outcomes(sink, policies, plan, outcomes).await;
    let mut reported = Reported::default();
    if outcomes.addon == AddonOutcome::Stale {
        return Ok(reported);
    }
    let now = Time(jiff::Timestamp::now());
    metrics.policy_condition.clear();
    subnet_gauges(metrics, outcomes);
    for policy in policies {
        let name = policy.name_any();
        let Some(policy_plan) = with_outcomes(plan, outcomes, &name) else {
            continue;
        };
        let desired = desired_status(
            &policy_plan,
            templates_report(plan, outcomes, &name).as_ref(),
            policy.status.as_ref(),
            now.clone(),
        );
        for c in &desired.conditions {
            if crate::crd::conditions::OWNED.contains(&c.type_.as_str()) {
                let labels = ConditionLabels {
                    policy: name.clone(),
                    r#type: c.type_.clone(),
                    status: if c.status == "True" { "True" } else { "False" },
                };
                metrics.policy_condition.get_or_create(&labels).set(1);
            }
        }
        let change = classify(&desired, policy.status.as_ref());
        let started = std::time::Instant::now();
        match pacer.pace(&name, change, started) {
            Pace::Write => {}
            Pace::Skip => continue,
            Pace::Later(after) => {
                reported.wait = Some(reported.wait.map_or(after, |w| w.min(after)));
                continue;
            }
        }
        let api: Api<NodeNetworkPolicy> = Api::all(sink.client.clone());
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
        metrics
            .writes
            .get_or_create(&WriteLabels { target: "status" })
            .inc();
        metrics
            .status_writes
            .get_or_create(&StatusWriteLabels {
                cause: change.cause(),
            })
            .inc();
        pacer.written(&name, started);
        reported.written += 1;
        // The watch will bring the same object; taking it now keeps the next pass from
        // patching again before it arrives.
        observed
            .policies
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
                sink.publish(
                    policy,
                    &ready.reason,
                    EventType::Warning,
                    ready.message.clone(),
                )
                .await;
            }
        }
    }
    Ok(reported)
}
