//! What a policy's launch templates need this pass, decided without EC2 from the last syncs:
//! sync them to the policy's maxPods (reusing a recent result for the same maxPods), or report
//! why not (no EC2 access, no maxPods yet).

use std::collections::{BTreeMap, HashMap};

use crate::crd::conditions::{self, Reason};
use crate::crd::{Enforcement, LaunchTemplateSpec, LaunchTemplateStatus, NodeNetworkPolicySpec};
use crate::rollout::{Launcher, LauncherKind};

use super::{ConditionPlan, NodeFacts, PolicyInput, PolicyPlan, labels};

/// Where a group's or template's nodes are found: by instance id (Auto Scaling groups,
/// templates) and by the node-group label (managed node groups); each with its pods capacity
/// and whether it is NotReady. Borrows the nodes: no copy of a name per node.
#[derive(Default)]
pub struct NodeIndex<'a> {
    by_instance: HashMap<&'a str, (Option<u32>, bool)>,
    by_node_group: HashMap<&'a str, Vec<(Option<u32>, bool)>>,
}

impl<'a> NodeIndex<'a> {
    pub fn new(nodes: impl IntoIterator<Item = &'a NodeFacts>) -> Self {
        let mut index = Self::default();
        for n in nodes {
            let facts = (n.capacity_pods.map(u32::from), n.not_ready);
            if let Some(id) = n.instance_id.as_deref() {
                index.by_instance.insert(id, facts);
            }
            if let Some(group) = n.labels.get(labels::NODE_GROUP) {
                index.by_node_group.entry(group).or_default().push(facts);
            }
        }
        index
    }

    /// (nodes, behind `max_pods`, NotReady) of a group.
    pub fn count(&self, launcher: &Launcher, max_pods: u32) -> (u32, u32, u32) {
        match launcher.kind {
            LauncherKind::NodeGroup => Self::tally(
                self.by_node_group
                    .get(launcher.name.as_str())
                    .into_iter()
                    .flatten()
                    .copied(),
                max_pods,
            ),
            LauncherKind::AutoScalingGroup => self.count_instances(&launcher.instances, max_pods),
        }
    }

    /// (nodes, behind `max_pods`, NotReady) of the Nodes that run `instances`.
    pub fn count_instances(&self, instances: &[String], max_pods: u32) -> (u32, u32, u32) {
        Self::tally(
            instances
                .iter()
                .filter_map(|id| self.by_instance.get(id.as_str()).copied()),
            max_pods,
        )
    }

    fn tally(nodes: impl Iterator<Item = (Option<u32>, bool)>, max_pods: u32) -> (u32, u32, u32) {
        let (mut count, mut behind, mut not_ready) = (0u32, 0u32, 0u32);
        for (capacity, down) in nodes {
            count = count.saturating_add(1);
            behind = behind.saturating_add(u32::from(capacity != Some(max_pods)));
            not_ready = not_ready.saturating_add(u32::from(down));
        }
        (count, behind, not_ready)
    }
}

/// A [`NodeIndex`] built on first use: most passes reuse no template result.
pub(crate) struct LazyNodeIndex<'n> {
    nodes: &'n [&'n NodeFacts],
    index: std::cell::OnceCell<NodeIndex<'n>>,
}

impl<'n> LazyNodeIndex<'n> {
    pub(crate) fn new(nodes: &'n [&'n NodeFacts]) -> Self {
        Self {
            nodes,
            index: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> &NodeIndex<'n> {
        self.index
            .get_or_init(|| NodeIndex::new(self.nodes.iter().copied()))
    }
}

/// A reused sync's node figures from the Node watch now, not from when the template was read:
/// the template's and each group's nodes and nodes behind `max_pods`.
pub(crate) fn refresh_counts(result: &mut SyncResult, nodes: &NodeIndex<'_>, max_pods: u32) {
    if let Some(instances) = &result.instances {
        let (count, behind, _) = nodes.count_instances(instances, max_pods);
        result.status.nodes = Some(count);
        result.status.nodes_behind = Some(behind);
    }
    for status in result.status.launched_by.iter_mut().flatten() {
        let launcher = result
            .launchers
            .iter()
            .find(|l| l.kind.as_str() == status.kind && l.name == status.name);
        if let (Some(launcher), Some(_)) = (launcher, status.nodes) {
            let (count, behind, _) = nodes.count(launcher, max_pods);
            status.nodes = Some(count);
            status.nodes_behind = Some(behind);
        }
    }
}

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
    /// The template's running instances (`aws:ec2launchtemplate:id`) as this sync read them;
    /// `None` when they could not be read.
    pub instances: Option<Vec<String>>,
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
    nodes: &LazyNodeIndex<'_>,
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
            if reuse.iter().any(Option::is_some) {
                let index = nodes.get();
                for result in reuse.iter_mut().flatten() {
                    refresh_counts(result, index, max_pods);
                }
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
            .map(|t| not_synced(t, plan.max_pods.unwrap_or_default(), message))
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

/// The status of a template this pass does not sync, and why.
fn not_synced(t: &LaunchTemplateSpec, max_pods: u32, message: &str) -> LaunchTemplateStatus {
    LaunchTemplateStatus {
        id: t.id.clone(),
        name: t.name.clone(),
        region: t.region.clone(),
        max_pods_wanted: max_pods,
        message: Some(message.to_owned()),
        ..Default::default()
    }
}

/// One owner per template: a template two Enforce policies list belongs to the older (then the
/// name; the rule EC2NodeClasses follow), so two policies never rewrite it against each other.
/// The younger does not write it: its status says whose it is, `LaunchTemplatesSynced` is
/// False, and its `Conflict` condition names the template and the owner. (A template listed
/// by id in one policy and by name in another is not recognised as the same.)
pub(crate) fn claim_templates(
    ordered: &[&PolicyInput<'_>],
    steps: &mut BTreeMap<String, TemplateStep>,
    policies: &mut BTreeMap<String, PolicyPlan>,
) {
    let mut owners: HashMap<String, &str> = HashMap::new();
    for p in ordered
        .iter()
        .filter(|p| p.spec.enforcement == Enforcement::Enforce)
    {
        let mut lost = Vec::new();
        for (index, t) in p.spec.launch_templates.iter().enumerate() {
            let owner = *owners.entry(t.key()).or_insert(p.name);
            if owner == p.name {
                continue;
            }
            let message = format!(
                "launch template {} is also listed by policy {owner}, which is older and owns it; \
                 this policy does not write it: remove it from one of the two policies",
                t.template_ref()
            );
            if let Some(TemplateStep::Sync {
                reuse, max_pods, ..
            }) = steps.get_mut(p.name)
                && let Some(slot) = reuse.get_mut(index)
            {
                *slot = Some(SyncResult {
                    status: not_synced(t, *max_pods, &message),
                    problem: Some((Reason::LostToOlderPolicy, message.clone())),
                    ..Default::default()
                });
            }
            lost.push(message);
        }
        if let (false, Some(plan)) = (lost.is_empty(), policies.get_mut(p.name)) {
            let earlier = plan
                .conditions
                .iter()
                .find(|c| c.type_ == conditions::CONFLICT && c.status)
                .map(|c| format!("{}; ", c.message))
                .unwrap_or_default();
            super::eks_addon::set_condition(
                plan,
                conditions::CONFLICT,
                true,
                Reason::LostToOlderPolicy,
                format!("{earlier}{}", lost.join("; ")),
            );
        }
    }
}
