//! What a policy's launch templates need this pass, decided without EC2: sync them to the
//! policy's maxPods, or report why not (no EC2 access, no maxPods yet).

use crate::crd::conditions::{self, Reason};
use crate::crd::{Enforcement, LaunchTemplateStatus, NodeNetworkPolicySpec};

use super::{ConditionPlan, PolicyPlan};

/// The launch-template part of a policy's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateReport {
    pub statuses: Vec<LaunchTemplateStatus>,
    pub condition: ConditionPlan,
}

/// The launch-template step for one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateStep {
    /// The policy lists no launch templates.
    Nothing,
    /// Write `max_pods` into each template (DryRun: only report what would be written).
    Sync { max_pods: u32, dry_run: bool },
    /// Not synced this pass; the report says why.
    Report(LaunchTemplateReport),
}

/// Decides the step from the policy's spec and plan, and whether the operator has EC2 access.
pub(crate) fn launch_template_step(
    spec: &NodeNetworkPolicySpec,
    plan: &PolicyPlan,
    ec2_access: bool,
) -> TemplateStep {
    if spec.launch_templates.is_empty() {
        return TemplateStep::Nothing;
    }
    let ready = plan
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::READY && c.status);
    let (reason, message) = match (ec2_access, plan.max_pods) {
        (false, _) => (
            Reason::NoAwsAccess,
            "the operator has no EC2 access configured; it cannot write launch templates",
        ),
        (true, Some(max_pods)) if ready => {
            return TemplateStep::Sync {
                max_pods,
                dry_run: spec.enforcement == Enforcement::DryRun,
            };
        }
        _ => (
            Reason::PolicyNotReady,
            "the policy has no maxPods to write yet; see the Ready condition",
        ),
    };
    TemplateStep::Report(LaunchTemplateReport {
        statuses: spec
            .launch_templates
            .iter()
            .map(|t| LaunchTemplateStatus {
                id: t.id.clone(),
                name: t.name.clone(),
                region: t.region.clone(),
                max_pods_wanted: plan.max_pods.unwrap_or_default(),
                message: Some(message.to_owned()),
                ..Default::default()
            })
            .collect(),
        condition: ConditionPlan {
            type_: conditions::LAUNCH_TEMPLATES_SYNCED,
            status: false,
            reason,
            message: message.to_owned(),
        },
    })
}
