//! The launch-template step: every policy's templates synced to its maxPods (one template at a
//! time in [`super::launch_templates`]), with a status part per policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::Context;
use super::apply::{count_write, publish};
use super::launch_templates::{
    nodes_by_instance, sync_template, synced_condition, unreachable_template,
};
use super::status::LaunchTemplateReport;
use crate::crd::NodeNetworkPolicy;
use crate::plan::{FleetPlan, NodeFacts, TemplateStep, launch_template_step};

/// Syncs every policy's launch templates to its maxPods and returns the status parts.
pub(super) async fn sync_launch_templates(
    ctx: &Context,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    nodes: &[Arc<NodeFacts>],
) -> BTreeMap<String, LaunchTemplateReport> {
    let mut reports = BTreeMap::new();
    if policies.iter().all(|p| p.spec.launch_templates.is_empty()) {
        return reports;
    }
    let nodes = nodes_by_instance(nodes);
    for policy in policies {
        let name = policy.name_any();
        let Some(policy_plan) = plan.policies.get(&name) else {
            continue;
        };
        let (wanted, dry_run) =
            match launch_template_step(&policy.spec, policy_plan, ctx.ec2.is_some()) {
                TemplateStep::Nothing => continue,
                TemplateStep::Report(report) => {
                    reports.insert(name, report);
                    continue;
                }
                TemplateStep::Sync { max_pods, dry_run } => (max_pods, dry_run),
            };
        let mut results = Vec::new();
        for spec in &policy.spec.launch_templates {
            let key = format!("{name}/{}", spec.key());
            let result = match ctx
                .template_cache
                .fresh(&key, wanted, dry_run, ctx.template_ttl)
            {
                Some(result) => result,
                None => {
                    let Some(provider) = &ctx.ec2 else {
                        continue;
                    };
                    let result = match provider.api(spec.region.as_deref()).await {
                        Ok(api) => sync_template(api.as_ref(), spec, wanted, dry_run, &nodes).await,
                        Err(err) => {
                            warn!(policy = %name, %err, "no EC2 API for a launch template");
                            unreachable_template(spec, wanted, &err)
                        }
                    };
                    ctx.template_cache.store(key, wanted, dry_run, &result);
                    result
                }
            };
            if let Some(note) = &result.updated {
                count_write(ctx, "launch_template");
                info!(policy = %name, %note, "launch template updated");
                publish(
                    ctx,
                    policy,
                    "LaunchTemplateUpdated",
                    EventType::Normal,
                    note.clone(),
                )
                .await;
            }
            results.push(result);
        }
        let report = LaunchTemplateReport {
            condition: synced_condition(&results, dry_run),
            statuses: results.into_iter().map(|r| r.status).collect(),
        };
        reports.insert(name, report);
    }
    reports
}
