//! What a policy's launch templates need this pass, decided without EC2 from the last syncs:
//! sync them to the policy's maxPods (reusing a recent result for the same maxPods), or report
//! why not (no EC2 access, no maxPods yet).

use std::collections::BTreeMap;

use crate::crd::conditions::{self, Reason};
use crate::crd::{Enforcement, LaunchTemplateSpec, LaunchTemplateStatus, NodeNetworkPolicySpec};
use crate::rollout::Launcher;

use super::{ConditionPlan, PolicyPlan};

/// One template's sync: its status, the Event note when a version was created, and why it is
/// not in sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncResult {
    pub status: LaunchTemplateStatus,
    /// The note of a `LaunchTemplateUpdated` event, when a version was created.
    pub updated: Option<String>,
    /// Why it is not in sync (names the template and what is wrong).
    pub problem: Option<(Reason, String)>,
    /// The groups that launch from the template, as AWS described them this sync.
    pub launchers: Vec<Launcher>,
    /// Rollout Events of this sync: reason, whether a warning, note.
    pub rollout_events: Vec<(&'static str, bool, String)>,
    /// A rollout of the policy runs or waits to start: look again in 30 s, not 5 minutes.
    pub rollout_active: bool,
}

impl SyncResult {
    /// The version that carries the wanted maxPods: the one written, or the one read when it
    /// already did.
    pub fn wanted_version(&self) -> Option<i64> {
        self.status
            .version_written
            .or(self.status.version_read.filter(|_| self.status.in_sync))
    }
}

/// A template's last sync, while it is recent enough to reuse (observed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSync {
    pub max_pods: u32,
    pub dry_run: bool,
    pub result: SyncResult,
}

/// The key of a policy's template in the last syncs.
pub fn sync_key(policy: &str, spec: &LaunchTemplateSpec) -> String {
    format!("{policy}/{}", spec.key())
}

/// The launch-template part of a policy's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateReport {
    pub statuses: Vec<LaunchTemplateStatus>,
    pub condition: ConditionPlan,
    /// `NodesRolledOut`, when a template has `rollout`.
    pub rollout: Option<ConditionPlan>,
}

/// The launch-template step for one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateStep {
    /// The policy lists no launch templates.
    Nothing,
    /// Write `max_pods` into each template (DryRun: only report what would be written); per
    /// template in `spec.launchTemplates`, the recent result to reuse instead of asking EC2.
    Sync {
        max_pods: u32,
        dry_run: bool,
        reuse: Vec<Option<SyncResult>>,
        /// A template has `rollout.enabled`: report `NodesRolledOut`.
        rollout: bool,
    },
    /// Not synced this pass; the report says why.
    Report(LaunchTemplateReport),
}

/// Decides the step from the policy's spec and plan, whether the operator has EC2 access, and
/// the templates' last syncs.
pub(crate) fn launch_template_step(
    name: &str,
    spec: &NodeNetworkPolicySpec,
    plan: &PolicyPlan,
    ec2_access: bool,
    last: &BTreeMap<String, LastSync>,
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
            let dry_run = spec.enforcement == Enforcement::DryRun;
            let mut reuse: Vec<Option<SyncResult>> = spec
                .launch_templates
                .iter()
                .map(|t| {
                    last.get(&sync_key(name, t))
                        .filter(|l| l.max_pods == max_pods && l.dry_run == dry_run)
                        .map(|l| l.result.clone())
                })
                .collect();
            // Rollouts are decided over all of a policy's templates at once: all synced, or
            // none.
            if spec.launch_templates.iter().any(|t| t.rollout.is_some())
                && reuse.iter().any(Option::is_none)
            {
                reuse.fill(None);
            }
            return TemplateStep::Sync {
                max_pods,
                dry_run,
                reuse,
                rollout: spec
                    .launch_templates
                    .iter()
                    .any(|t| t.rollout.as_ref().is_some_and(|r| r.enabled)),
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
        rollout: None,
    })
}
