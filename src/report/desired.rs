//! The report step's pure half: the status a policy should have, given the plan, the apply
//! step's outcomes and the status it has. Conditions keep `lastTransitionTime` unless their
//! status flips; conditions of other controllers are kept; an unchanged status means no patch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::apply::{AddonOutcome, NodeClassOutcome, Outcomes};
use crate::crd::NodeNetworkPolicyStatus;
use crate::crd::conditions::{self, Reason};
use crate::plan::eks_addon::set_condition;
use crate::plan::{
    ConditionPlan, FleetPlan, LaunchTemplateReport, PolicyPlan, SyncResult, TemplateStep,
};

/// Policy `name`'s part of `plan` with what the apply step did: the add-on write's outcome in
/// CNIConfigured and `cniConfig.eksAddon`, refused EC2NodeClass writes in `ec2NodeClasses`.
pub(crate) fn with_outcomes(
    plan: &FleetPlan,
    outcomes: &Outcomes,
    name: &str,
) -> Option<PolicyPlan> {
    let mut p = plan.policies.get(name)?.clone();
    if let Some(write) = plan.addon.write.as_ref().filter(|w| w.policy == name) {
        match &outcomes.addon {
            AddonOutcome::Unchanged | AddonOutcome::Stale => {}
            AddonOutcome::Sent { update, .. } => {
                if let Some(a) = p.cni_config.as_mut().and_then(|c| c.eks_addon.as_mut()) {
                    a.env = write.env.clone();
                    a.last_update_id = Some(update.id.clone());
                    a.last_update_status = Some(update.status.clone());
                }
            }
            AddonOutcome::Held { reason, message } => {
                set_condition(
                    &mut p,
                    conditions::CNI_CONFIGURED,
                    false,
                    *reason,
                    message.clone(),
                );
            }
            AddonOutcome::Backoff { left } => {
                let planned = p
                    .conditions
                    .iter()
                    .find(|c| c.type_ == conditions::CNI_CONFIGURED)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                let message = format!(
                    "{planned}; next correction in {}s (backoff)",
                    left.as_secs().max(1)
                );
                set_condition(
                    &mut p,
                    conditions::CNI_CONFIGURED,
                    false,
                    Reason::AddonDrift,
                    message,
                );
            }
        }
    }
    if let Some(subnets) = outcomes.subnets.get(name) {
        p.subnets = Some(subnets.clone());
    }
    if let Some(pods) = outcomes.warm_pods.get(name) {
        for t in &mut p.instance_types {
            t.nodes_with_other_warm_env = pods.behind.get(&t.instance_type).copied();
        }
        p.warm_pool_restart = pods.restart.clone();
    }
    if let Some(report) = p.karpenter.as_mut() {
        for (write, outcome) in &outcomes.node_classes {
            if let (NodeClassOutcome::Refused(message), true) = (outcome, write.policy == name) {
                report.write_failed(write, message.clone());
            }
        }
    }
    Some(p)
}

/// Policy `name`'s launch-template part: the plan's report, or the sync results.
pub(crate) fn templates_report(
    plan: &FleetPlan,
    outcomes: &Outcomes,
    name: &str,
) -> Option<LaunchTemplateReport> {
    match plan.templates.get(name)? {
        TemplateStep::Nothing => None,
        TemplateStep::Report(report) => Some(report.clone()),
        TemplateStep::Sync {
            dry_run,
            reuse,
            rollout,
            ..
        } => {
            // A recent result where the plan reused one, else this pass's sync.
            let synced = outcomes.templates.get(name);
            let results: Vec<SyncResult> = reuse
                .iter()
                .enumerate()
                .filter_map(|(i, reused)| {
                    reused
                        .clone()
                        .or_else(|| synced.and_then(|s| s.get(&i)).cloned())
                })
                .collect();
            let records = results.iter().flat_map(|r| {
                r.status
                    .launched_by
                    .iter()
                    .flatten()
                    .filter_map(|l| l.rollout.as_ref().map(|record| (l.name.as_str(), record)))
            });
            Some(LaunchTemplateReport {
                rollout: crate::plan::rollouts::condition(records, *rollout, *dry_run),
                condition: synced_condition(&results, *dry_run),
                statuses: results.into_iter().map(|r| r.status).collect(),
            })
        }
    }
}

/// The status `plan` asks for. `now` stamps conditions whose status flips (or are new).
pub fn desired_status(
    plan: &PolicyPlan,
    templates: Option<&LaunchTemplateReport>,
    current: Option<&NodeNetworkPolicyStatus>,
    now: Time,
) -> NodeNetworkPolicyStatus {
    let current_conditions = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut conditions: Vec<Condition> = current_conditions
        .iter()
        .filter(|c| !conditions::OWNED.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    for planned in plan
        .conditions
        .iter()
        .chain(templates.map(|t| &t.condition))
        .chain(templates.and_then(|t| t.rollout.as_ref()))
        .chain(plan.karpenter.as_ref().map(|k| &k.condition))
        .chain(plan.subnets.as_ref().and_then(|s| s.condition.as_ref()))
    {
        let status = if planned.status { "True" } else { "False" };
        let previous = current_conditions.iter().find(|c| c.type_ == planned.type_);
        let last_transition_time = match previous {
            Some(previous) if previous.status == status => previous.last_transition_time.clone(),
            _ => now.clone(),
        };
        conditions.push(Condition {
            type_: planned.type_.to_owned(),
            status: status.to_owned(),
            reason: planned.reason.as_str().to_owned(),
            message: truncate(&planned.message, 32 * 1024),
            observed_generation: plan.observed_generation,
            last_transition_time,
        });
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    NodeNetworkPolicyStatus {
        observed_generation: plan.observed_generation,
        conditions,
        matched_nodes: plan.matched_nodes,
        excluded_nodes: plan.excluded_nodes.clone(),
        cni_version: plan.cni_version.clone(),
        prefix_delegation: plan.prefix_delegation,
        cni_env: plan.cni_env.clone(),
        max_pods: plan.max_pods,
        instance_types: plan.instance_types.clone(),
        launch_templates: templates.map(|t| t.statuses.clone()).unwrap_or_default(),
        ec2_node_classes: plan
            .karpenter
            .as_ref()
            .map(|k| k.statuses.clone())
            .unwrap_or_default(),
        cni_config: plan.cni_config.clone(),
        warm_pool_restart: plan.warm_pool_restart.clone(),
        subnets: plan
            .subnets
            .as_ref()
            .map(|s| s.statuses.clone())
            .unwrap_or_default(),
    }
}

/// The `LaunchTemplatesSynced` condition over a policy's templates.
pub(crate) fn synced_condition(results: &[SyncResult], dry_run: bool) -> ConditionPlan {
    let problems: Vec<&(Reason, String)> =
        results.iter().filter_map(|r| r.problem.as_ref()).collect();
    if let Some(&&(reason, _)) = problems.first() {
        return ConditionPlan {
            type_: conditions::LAUNCH_TEMPLATES_SYNCED,
            status: false,
            reason,
            message: problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        };
    }
    let pending = results.iter().filter(|r| !r.status.in_sync).count();
    if dry_run && pending > 0 {
        return ConditionPlan {
            type_: conditions::LAUNCH_TEMPLATES_SYNCED,
            status: false,
            reason: Reason::DryRun,
            message: format!(
                "{pending} launch template(s) would get a new version; DryRun writes nothing"
            ),
        };
    }
    let behind: u32 = results.iter().filter_map(|r| r.status.nodes_behind).sum();
    ConditionPlan {
        type_: conditions::LAUNCH_TEMPLATES_SYNCED,
        status: true,
        reason: Reason::InSync,
        message: if behind == 0 {
            format!("{} launch template(s) carry maxPods", results.len())
        } else {
            format!(
                "{} launch template(s) carry maxPods; {behind} running node(s) still have another \
                 maxPods: update the node group or start an instance refresh",
                results.len()
            )
        },
    }
}

/// The part of `status` this operator applies: its own conditions only, so server-side apply
/// leaves other controllers' conditions alone.
pub(crate) fn owned_part(status: &NodeNetworkPolicyStatus) -> NodeNetworkPolicyStatus {
    NodeNetworkPolicyStatus {
        conditions: status
            .conditions
            .iter()
            .filter(|c| conditions::OWNED.contains(&c.type_.as_str()))
            .cloned()
            .collect(),
        ..status.clone()
    }
}

/// `message` cut to at most `max` bytes on a character boundary, with `...` when cut (condition
/// messages and Event notes have size limits).
pub(crate) fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ConditionPlan;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    fn plan(ready: bool, message: &str) -> PolicyPlan {
        PolicyPlan {
            observed_generation: Some(2),
            conditions: vec![ConditionPlan {
                type_: conditions::READY,
                status: ready,
                reason: crate::crd::conditions::Reason::Reconciled,
                message: message.to_owned(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn keeps_transition_time_unless_status_flips_and_keeps_foreign_conditions() {
        let t1 = time("2026-01-01T00:00:00Z");
        let t2 = time("2026-02-01T00:00:00Z");
        let mut first = desired_status(&plan(true, "a"), None, None, t1.clone());
        first.conditions.push(Condition {
            type_: "example.com/Audited".into(),
            status: "True".into(),
            reason: "Manual".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: t1.clone(),
        });
        let same = desired_status(&plan(true, "a"), None, Some(&first), t2.clone());
        assert_eq!(
            super::super::pacing::classify(&same, Some(&first)),
            super::super::pacing::StatusChange::Unchanged
        );
        let reworded = desired_status(&plan(true, "b"), None, Some(&first), t2.clone());
        assert_ne!(
            super::super::pacing::classify(&reworded, Some(&first)),
            super::super::pacing::StatusChange::Unchanged
        );
        let ready = reworded
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.last_transition_time, t1);
        let flipped = desired_status(&plan(false, "b"), None, Some(&first), t2.clone());
        let ready = flipped
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.last_transition_time, t2);
        assert!(
            flipped
                .conditions
                .iter()
                .any(|c| c.type_ == "example.com/Audited")
        );
        assert!(
            !owned_part(&flipped)
                .conditions
                .iter()
                .any(|c| c.type_ == "example.com/Audited")
        );
        assert_eq!(flipped.observed_generation, Some(2));
    }
}
