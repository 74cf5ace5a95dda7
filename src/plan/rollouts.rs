//! Which group of a policy's launch templates to roll next, decided without IO from what the
//! launch-template sync read: the groups that launch from each template (version, another update
//! running), their nodes (how many behind, how many NotReady) and each group's last rollout
//! record (the operator's memory, else the policy's status, so a restart starts nothing twice).
//!
//! The rules, per policy (`spec.launchTemplates[].rollout.enabled`):
//! - A group needs a rollout when it launches another version than the one carrying the wanted
//!   maxPods: a node group pins a number; an Auto Scaling group pins a number, or launches
//!   `$Default` / `$Latest` and still runs nodes with another maxPods.
//! - At most one rollout runs per policy: while one is in progress the others are `Pending`.
//! - A failed or cancelled rollout stops further ones until the wanted version or the policy's
//!   spec (its generation) changes.
//! - A version is rolled out to a group once: a `Successful` or `InProgress` record for it means
//!   no second start, even when nodes stay behind.
//! - The next group waits while another update of it runs (someone else's) or while some of its
//!   nodes are NotReady; groups are taken in spec order, then by kind and name.
//! - `DryRun` and an operator without `--rollouts` start nothing and say what they would do.

use crate::crd::GroupRolloutStatus;
use crate::crd::conditions::{self, Reason};
use crate::rollout::{Launcher, LauncherKind, UpdateState};

use super::ConditionPlan;

/// The rollout states the status shows.
pub mod state {
    pub const PENDING: &str = "Pending";
    pub const WAITING: &str = "Waiting";
    pub const WOULD_START: &str = "WouldStart";
    pub const IN_PROGRESS: &str = "InProgress";
    pub const SUCCESSFUL: &str = "Successful";
    pub const FAILED: &str = "Failed";
    pub const CANCELLED: &str = "Cancelled";
}

/// One group as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFacts {
    pub launcher: Launcher,
    pub nodes: u32,
    /// Nodes whose `capacity.pods` is not the wanted maxPods.
    pub nodes_behind: u32,
    pub not_ready: u32,
    /// Its last rollout record (after following an update in progress this pass).
    pub previous: Option<GroupRolloutStatus>,
}

/// One template with rollout facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFacts {
    pub template_id: String,
    pub enabled: bool,
    pub min_healthy_percentage: u32,
    /// The version carrying the wanted maxPods (`None`: the template is not in sync).
    pub wanted: Option<i64>,
    /// DryRun: the template would get a new version (so `wanted` is not known yet).
    pub would_write: bool,
    pub groups: Vec<GroupFacts>,
}

/// What the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutGate {
    pub dry_run: bool,
    /// The operator runs with `--rollouts`.
    pub operator_allows: bool,
    pub generation: Option<i64>,
}

/// What to do with one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupStep {
    /// No rollout record (rollout off, or nothing was ever rolled to this group).
    Clear,
    /// Keep the record as it is.
    Keep,
    /// Show this record (Pending, Waiting, WouldStart).
    Show(GroupRolloutStatus),
    /// Start the rollout: `UpdateNodegroupVersion` to `version`, or an instance refresh to
    /// `template_version` (`None`: the group's own mixed-instances configuration).
    Start {
        version: i64,
        template_version: Option<String>,
        min_healthy_percentage: u32,
    },
}

/// Whether `group` launches another version than `wanted`.
fn needs_rollout(group: &GroupFacts, wanted: i64) -> bool {
    match (group.launcher.kind, group.launcher.pinned_version()) {
        (_, Some(pinned)) => pinned != wanted,
        (LauncherKind::NodeGroup, None) => false,
        (LauncherKind::AutoScalingGroup, None) => group.nodes_behind > 0,
    }
}

fn record_state(group: &GroupFacts) -> Option<(&str, Option<i64>)> {
    group
        .previous
        .as_ref()
        .map(|p| (p.state.as_str(), p.version))
}

/// A failed or cancelled rollout of `wanted` that still stops the policy's rollouts.
fn halts(group: &GroupFacts, wanted: i64, generation: Option<i64>) -> bool {
    group.previous.as_ref().is_some_and(|p| {
        matches!(p.state.as_str(), state::FAILED | state::CANCELLED)
            && p.version == Some(wanted)
            && p.failed_generation == generation
    })
}

fn show(state: &str, version: i64, message: String) -> GroupStep {
    GroupStep::Show(GroupRolloutStatus {
        state: state.to_owned(),
        version: Some(version),
        message: Some(message),
        ..Default::default()
    })
}

/// What the first group that needs a rollout would be started with, or why it cannot be.
fn start_step(t: &TemplateFacts, g: &GroupFacts, wanted: i64) -> Result<GroupStep, String> {
    let l = &g.launcher;
    let template_version = match (l.kind, l.pinned_version(), l.mixed_instances) {
        (LauncherKind::NodeGroup, ..) => None,
        (LauncherKind::AutoScalingGroup, Some(_), true) => {
            return Err(format!(
                "its mixed-instances policy pins version {}: set it to {wanted} (or $Default); \
                 the operator refreshes mixed-instances groups only on $Default or $Latest",
                l.version.as_deref().unwrap_or("-")
            ));
        }
        (LauncherKind::AutoScalingGroup, Some(_), false) => Some(wanted.to_string()),
        (LauncherKind::AutoScalingGroup, None, true) => None,
        (LauncherKind::AutoScalingGroup, None, false) => l.version.clone(),
    };
    Ok(GroupStep::Start {
        version: wanted,
        template_version,
        min_healthy_percentage: t.min_healthy_percentage,
    })
}

fn describe_start(t: &TemplateFacts, g: &GroupFacts, wanted: i64) -> String {
    match g.launcher.kind {
        LauncherKind::NodeGroup => format!(
            "UpdateNodegroupVersion of node group {} to version {wanted} of {}",
            g.launcher.name, t.template_id
        ),
        LauncherKind::AutoScalingGroup => format!(
            "StartInstanceRefresh of Auto Scaling group {} (MinHealthyPercentage {}, skip \
             matching) to version {wanted} of {}",
            g.launcher.name, t.min_healthy_percentage, t.template_id
        ),
    }
}

/// The step of every group of every template (same shape as `templates`).
pub fn decide(templates: &[TemplateFacts], gate: RolloutGate) -> Vec<Vec<GroupStep>> {
    let mut steps: Vec<Vec<GroupStep>> = templates
        .iter()
        .map(|t| vec![GroupStep::Clear; t.groups.len()])
        .collect();
    // Records to keep, what runs, what stopped the policy, and who needs a rollout.
    let mut running: Option<String> = None;
    let mut halted: Option<String> = None;
    let mut candidates = Vec::new();
    for (ti, t) in templates.iter().enumerate() {
        if !t.enabled {
            continue;
        }
        for (gi, g) in t.groups.iter().enumerate() {
            let name = format!("{} {}", g.launcher.kind, g.launcher.name);
            let Some(wanted) = t.wanted else {
                steps[ti][gi] = if gate.dry_run && t.would_write {
                    GroupStep::Show(GroupRolloutStatus {
                        state: state::WOULD_START.to_owned(),
                        message: Some(format!(
                            "DryRun: would write a new version of {}, then roll it out to \
                             {name}",
                            t.template_id
                        )),
                        ..Default::default()
                    })
                } else if g.previous.is_some() {
                    GroupStep::Keep
                } else {
                    GroupStep::Clear
                };
                continue;
            };
            match record_state(g) {
                Some((state::IN_PROGRESS, _)) => {
                    running.get_or_insert(name);
                    steps[ti][gi] = GroupStep::Keep;
                    continue;
                }
                _ if halts(g, wanted, gate.generation) => {
                    halted.get_or_insert(name);
                    steps[ti][gi] = GroupStep::Keep;
                    continue;
                }
                Some((state::SUCCESSFUL, Some(v))) if v == wanted => {
                    steps[ti][gi] = GroupStep::Keep;
                    continue;
                }
                _ => {}
            }
            if needs_rollout(g, wanted) {
                candidates.push((ti, gi));
            } else if g.previous.as_ref().is_some_and(|p| {
                p.version == Some(wanted) && p.state != state::PENDING && p.state != state::WAITING
            }) {
                steps[ti][gi] = GroupStep::Keep;
            }
        }
    }
    let held = Held { halted, running };
    let mut first = true;
    for (ti, gi) in candidates {
        steps[ti][gi] = candidate_step(
            &templates[ti],
            &templates[ti].groups[gi],
            &held,
            gate,
            &mut first,
        );
    }
    steps
}

/// What holds every candidate: a failed rollout, or one in progress (the group's name).
struct Held {
    halted: Option<String>,
    running: Option<String>,
}

/// The step of a group that needs a rollout; `first` is whether no earlier candidate holds it.
fn candidate_step(
    t: &TemplateFacts,
    g: &GroupFacts,
    held: &Held,
    gate: RolloutGate,
    first: &mut bool,
) -> GroupStep {
    let wanted = t.wanted.unwrap_or_default();
    let what = describe_start(t, g, wanted);
    if let Some(failed) = &held.halted {
        return show(
            state::WAITING,
            wanted,
            format!(
                "rollouts are stopped: the rollout of {failed} failed; fix the cause and edit \
                 the policy (or let the wanted version change) to go on"
            ),
        );
    }
    if let Some(running) = &held.running {
        return show(
            state::PENDING,
            wanted,
            format!("after the rollout of {running}"),
        );
    }
    if gate.dry_run {
        return show(
            state::WOULD_START,
            wanted,
            format!("DryRun: would call {what}"),
        );
    }
    if !*first {
        return show(
            state::PENDING,
            wanted,
            "one rollout at a time per policy".to_owned(),
        );
    }
    *first = false;
    let blocked = if !gate.operator_allows {
        Some(
            "the operator runs without --rollouts (chart value rollout.enabled, with the \
             rollout IAM actions)"
                .to_owned(),
        )
    } else if let Some(busy) = &g.launcher.busy {
        Some(format!(
            "another update of the group runs ({busy}); it is left alone"
        ))
    } else if g.not_ready > 0 {
        Some(format!("{} node(s) of the group are NotReady", g.not_ready))
    } else {
        None
    };
    let transient = blocked.is_some();
    match blocked.map_or_else(|| start_step(t, g, wanted), Err) {
        Ok(step) => step,
        Err(why) => {
            // A group that can never start this way does not hold the next one; a transient
            // hold (busy, NotReady, flag off) does.
            *first = !transient;
            show(state::WAITING, wanted, format!("would call {what}: {why}"))
        }
    }
}

/// The `NodesRolledOut` condition from the groups' records, when a template has rollout on.
pub fn condition<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a GroupRolloutStatus)>,
    any_enabled: bool,
    dry_run: bool,
) -> Option<ConditionPlan> {
    if !any_enabled {
        return None;
    }
    let mut worst: Option<(u8, Reason, String)> = None;
    let mut rolled = 0;
    for (group, r) in records {
        let message = match &r.message {
            Some(m) => format!("{group}: {} ({m})", r.state),
            None => format!("{group}: {}", r.state),
        };
        let (rank, reason) = match r.state.as_str() {
            state::FAILED | state::CANCELLED => (5, Reason::RolloutFailed),
            state::IN_PROGRESS => (4, Reason::RolloutInProgress),
            state::WOULD_START => (3, Reason::DryRun),
            state::WAITING => (2, Reason::RolloutWaiting),
            state::PENDING => (1, Reason::RolloutInProgress),
            _ => {
                rolled += 1;
                continue;
            }
        };
        if worst.as_ref().is_none_or(|(w, ..)| rank > *w) {
            worst = Some((rank, reason, message));
        }
    }
    let (status, reason, message) = match worst {
        Some((_, reason, message)) => (false, reason, message),
        None if dry_run => (true, Reason::DryRun, "no group needs a rollout".to_owned()),
        None => (
            true,
            Reason::RolledOut,
            format!(
                "every group launches the wanted version ({rolled} rolled out by the operator)"
            ),
        ),
    };
    Some(ConditionPlan {
        type_: conditions::NODES_ROLLED_OUT,
        status,
        reason,
        message,
    })
}

/// The record after following an update in progress.
pub fn followed(
    previous: &GroupRolloutStatus,
    progress: &crate::rollout::UpdateProgress,
    generation: Option<i64>,
) -> GroupRolloutStatus {
    let mut next = previous.clone();
    next.state = progress.state.as_str().to_owned();
    next.percent_complete = progress.percent_complete.or(next.percent_complete);
    next.message = match (&progress.reason, progress.state) {
        (Some(reason), _) => Some(format!("{}: {reason}", progress.status)),
        (None, UpdateState::InProgress) if progress.status != "InProgress" => {
            Some(progress.status.clone())
        }
        _ => None,
    };
    if matches!(progress.state, UpdateState::Failed | UpdateState::Cancelled) {
        next.failed_generation = generation;
    }
    next
}

#[cfg(test)]
#[path = "rollouts_tests.rs"]
mod tests;
