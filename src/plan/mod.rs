//! The decide step: from one snapshot ([`FleetInput`]: policies, nodes, aws-node, Karpenter's
//! NodePools and EC2NodeClasses, the EKS add-on's last read) to one plan value ([`FleetPlan`]):
//! the aws-node or add-on write, each policy's launch-template step and node-class writes, and
//! each policy's status. [`plan_fleet`] is the only entry point. Pure: no IO, no clock (the time
//! is an input); the same inputs always give the same plan, so the operator never flaps. Nothing
//! downstream edits the plan: the apply step returns outcomes, and the report step builds status
//! from plan and outcomes.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::Selector;

use crate::crd::conditions::Reason;
use crate::crd::{
    DaemonSetRef, Enforcement, InstanceTypeStatus, NodeNetworkPolicySpec, conditions,
};
use crate::engine::{
    self, CniVersion, EniOptions, InstanceFacts, IpFamily, PrefixDelegationMode, Recommendation,
    TuningRequest, warm_pool,
};
use crate::instance::{InstanceCatalog, InstanceLimits};

/// Node labels the plan reads.
pub mod labels {
    pub(crate) const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
    pub(crate) const INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
    pub(crate) const OS: &str = "kubernetes.io/os";
    pub(crate) const COMPUTE_TYPE: &str = "eks.amazonaws.com/compute-type";
    /// The managed node group a node belongs to (set by EKS).
    pub(crate) const NODE_GROUP: &str = "eks.amazonaws.com/nodegroup";
}

/// Why a selected node is left out: the VPC CNI does not give it pod IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exclusion {
    Fargate,
    HybridNode,
    Windows,
    NoInstanceType,
}

impl Exclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fargate => "Fargate",
            Self::HybridNode => "HybridNode",
            Self::Windows => "Windows",
            Self::NoInstanceType => "NoInstanceType",
        }
    }
}

/// What the plan needs of a Node: its labels and `status.capacity.pods`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub labels: NodeLabels,
    /// `status.capacity.pods` (kubelet's maxPods: hundreds at most). 16 bits keep the record at
    /// 72 bytes, 96 with its `Arc` on the heap; at 100,000 nodes every 16 bytes is 1.6 MB.
    pub capacity_pods: Option<u16>,
    /// The EC2 instance id from `spec.providerID` (`aws:///us-west-2a/i-0abc...`), inline (an
    /// id is 19 bytes).
    pub instance_id: Option<compact_str::CompactString>,
    /// The node's `Ready` condition is `False` or `Unknown` (a node without one, just
    /// registering, counts as ready).
    pub not_ready: bool,
}

impl NodeFacts {
    /// The node's instance type, or why the VPC CNI does not serve it.
    pub fn instance_type(&self) -> Result<&str, Exclusion> {
        let label = |key: &str| self.labels.get(key);
        match label(labels::COMPUTE_TYPE) {
            Some("fargate") => return Err(Exclusion::Fargate),
            Some("hybrid") => return Err(Exclusion::HybridNode),
            _ => {}
        }
        if label(labels::OS) == Some("windows") {
            return Err(Exclusion::Windows);
        }
        label(labels::INSTANCE_TYPE)
            .or_else(|| label(labels::INSTANCE_TYPE_BETA))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Exclusion::NoInstanceType)
    }
}

/// One policy as the plan sees it.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    pub name: &'a str,
    /// RFC 3339 creation time: the oldest policy wins conflicts (then the name).
    pub created: Option<String>,
    pub generation: Option<i64>,
    pub spec: &'a NodeNetworkPolicySpec,
    /// The `configurationValues.env` keys this policy wrote into the EKS add-on (its status).
    pub addon_env: Option<&'a BTreeMap<String, String>>,
    /// Reverts by another owner of aws-node and the handover (its status).
    pub handover: Option<&'a crate::crd::HandoverStatus>,
    /// aws-node writes this policy decided so far (its status).
    pub aws_node_rollouts: u32,
}

/// One env entry of the aws-node container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub name: String,
    pub value: Option<String>,
    /// `valueFrom` (ConfigMap, Secret, field ref): not a literal the operator can own.
    pub from_source: bool,
}

/// An aws-node pod as the restart step needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsNodePodFacts {
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// The aws-node container's literal warm entries (`""` left out: unset).
    pub warm_env: BTreeMap<String, String>,
}

/// What the plan needs of the aws-node DaemonSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsNodeFacts {
    pub reference: DaemonSetRef,
    /// The `aws-node` container's image, `None` when the container is missing.
    pub image: Option<String>,
    pub container_found: bool,
    pub env: Vec<EnvEntry>,
    /// Env names this operator's field manager owns (from `managedFields`).
    pub owned_env: BTreeSet<String>,
    /// The EKS managed add-on applies this DaemonSet: `managedFields` has an entry of EKS's
    /// field manager, `eks`.
    pub eks_addon: bool,
    /// Indexes in `managedFields` of this operator's entries (to release them in add-on mode).
    pub owned_field_entries: Vec<usize>,
    /// Who else applies aws-node.
    pub owner: Option<AwsNodeOwner>,
    /// Per env name of the aws-node container: the other field managers that own its value.
    pub value_managers: BTreeMap<String, Vec<FieldManager>>,
    /// Per env name: the other field managers that apply the entry but no longer own its value
    /// (this operator took it, e.g. with force before it knew better).
    pub item_managers: BTreeMap<String, Vec<FieldManager>>,
    /// Where the DaemonSet's last rollout stands (`None`: no status yet).
    pub rollout: Option<DaemonSetRollout>,
}

/// A DaemonSet's rollout as its status reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonSetRollout {
    pub generation: i64,
    pub observed_generation: i64,
    pub desired: i32,
    pub updated: i32,
    pub unavailable: i32,
}

impl DaemonSetRollout {
    /// Why the last rollout is not done, or `None` when every pod runs the current template
    /// and is available.
    pub fn unsettled(&self) -> Option<String> {
        if self.observed_generation < self.generation {
            Some(format!(
                "the DaemonSet controller has not yet seen generation {} (it saw {})",
                self.generation, self.observed_generation
            ))
        } else if self.updated < self.desired || self.unavailable > 0 {
            Some(format!(
                "{} of {} pods run the current template and {} are unavailable",
                self.updated, self.desired, self.unavailable
            ))
        } else {
            None
        }
    }
}

impl AwsNodeFacts {
    pub fn env_value(&self, name: &str) -> Option<&EnvEntry> {
        self.env.iter().find(|e| e.name == name)
    }

    /// `ENABLE_PREFIX_DELEGATION` as the aws-node container has it now (`None`: unset).
    pub fn prefix_delegation(&self) -> Option<bool> {
        self.env_value(warm_pool::ENABLE_PREFIX_DELEGATION)
            .and_then(|e| e.value.as_deref())
            .map(|v| v.eq_ignore_ascii_case("true"))
    }

    fn ip_family(&self) -> IpFamily {
        match self
            .env_value("ENABLE_IPv6")
            .and_then(|e| e.value.as_deref())
        {
            Some("true") => IpFamily::Ipv6,
            _ => IpFamily::Ipv4,
        }
    }
}

impl<'a> PolicyInput<'a> {
    /// The policies oldest first (then by name): the order conflicts are decided in.
    pub(crate) fn oldest_first<'p>(policies: &'p [PolicyInput<'a>]) -> Vec<&'p PolicyInput<'a>> {
        let mut ordered: Vec<&PolicyInput<'a>> = policies.iter().collect();
        ordered.sort_by(|a, b| (&a.created, a.name).cmp(&(&b.created, b.name)));
        ordered
    }

    /// The plan's view of a policy; `name` is the policy's name, borrowed from the caller.
    pub(crate) fn from_policy(policy: &'a crate::crd::NodeNetworkPolicy, name: &'a str) -> Self {
        Self {
            name,
            created: policy
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            generation: policy.metadata.generation,
            spec: &policy.spec,
            addon_env: policy
                .status
                .as_ref()
                .and_then(|s| s.cni_config.as_ref())
                .and_then(|c| c.eks_addon.as_ref())
                .map(|a| &a.env),
            handover: policy
                .status
                .as_ref()
                .and_then(|s| s.cni_config.as_ref())
                .and_then(|c| c.handover.as_ref()),
            aws_node_rollouts: policy
                .status
                .as_ref()
                .and_then(|s| s.cni_config.as_ref())
                .map_or(0, |c| c.aws_node_rollouts),
        }
    }
}

/// Everything the plan reads.
#[derive(Debug, Clone)]
pub struct FleetInput<'a> {
    pub policies: Vec<PolicyInput<'a>>,
    pub nodes: Vec<&'a NodeFacts>,
    /// The DaemonSet this operator manages; `None` when it does not exist.
    pub aws_node: Option<&'a AwsNodeFacts>,
    /// The DaemonSet this operator is configured to manage.
    pub managed_daemonset: &'a DaemonSetRef,
    pub catalog: &'a InstanceCatalog,
    /// Facts looked up live for types the catalog lacks.
    pub extra_facts: &'a BTreeMap<String, InstanceLimits>,
    /// Where the env is written: the DaemonSet or the EKS add-on.
    pub cni_target: &'a CniTarget,
    /// The time, for the revert window ([`owner::REVERT_WINDOW`]).
    pub now: jiff::Timestamp,
    /// Karpenter's NodePools and EC2NodeClasses, when a policy lists node classes.
    pub karpenter: Option<KarpenterFacts<'a>>,
    /// The operator has EC2 access (launch templates can be written).
    pub ec2_access: bool,
    /// The launch templates' recent syncs, by [`launch_templates::sync_key`].
    pub template_syncs: &'a BTreeMap<String, LastSync>,
}

/// A condition the plan wants, without timestamps (the status step adds those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionPlan {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// The DaemonSet write, when one is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSetWrite {
    pub reference: DaemonSetRef,
    /// The policy whose settings these are.
    pub policy: String,
    /// The full set of env entries the operator owns after the write.
    pub env: BTreeMap<String, String>,
    pub changes: Vec<EnvChange>,
    /// The field manager whose revert this write puts back (the first; a second hands over).
    pub reverted_by: Option<String>,
}

/// What one policy's status should say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyPlan {
    pub observed_generation: Option<i64>,
    pub matched_nodes: u32,
    pub excluded_nodes: BTreeMap<String, u32>,
    pub cni_version: Option<String>,
    pub prefix_delegation: Option<bool>,
    pub cni_env: BTreeMap<String, String>,
    pub max_pods: Option<u32>,
    pub instance_types: Vec<InstanceTypeStatus>,
    pub conditions: Vec<ConditionPlan>,
    pub warnings: Vec<String>,
    /// The policy's Karpenter EC2NodeClasses (`plan_node_classes`), when it lists any.
    pub karpenter: Option<KarpenterReport>,
    /// Where the env is written (`status.cniConfig`).
    pub cni_config: Option<crate::crd::CniConfigStatus>,
    /// The subnets (`spec.subnets`), filled in by the apply step.
    pub subnets: Option<subnets::SubnetsReport>,
    /// The rolling restart of aws-node pods, filled in by the apply step.
    pub warm_pool_restart: Option<crate::crd::WarmPoolRestartStatus>,
}

/// The whole decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetPlan {
    /// `Some` when the aws-node env must change (DaemonSet mode).
    pub daemonset_write: Option<DaemonSetWrite>,
    /// The EKS add-on update and field release (add-on mode).
    pub addon: AddonPlan,
    /// The deciding policy and the message, when this plan hands aws-node over to its owner
    /// (it was not handed over before): an Event.
    pub handover: Option<(String, String)>,
    /// By policy name.
    pub policies: BTreeMap<String, PolicyPlan>,
    /// Each policy's launch-template step, by policy name (policies that list templates).
    pub templates: BTreeMap<String, TemplateStep>,
}

/// Why a policy produced no recommendation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blocked {
    reason: Reason,
    message: String,
}

/// The policy whose env the cluster gets: the oldest Enforce policy with a recommendation.
struct Winner {
    policy: String,
    env: BTreeMap<String, String>,
    prefix_delegation: bool,
}

/// A policy's selection and recommendation, before the cluster-wide decision.
struct Evaluated<'a> {
    input: &'a PolicyInput<'a>,
    plan: PolicyPlan,
    /// The request and facts, to recompute under the cluster's effective prefix delegation.
    request: TuningRequest,
    facts: Vec<InstanceFacts<'a>>,
    /// Nodes per type and their capacity.pods values.
    nodes_by_type: BTreeMap<&'a str, Vec<Option<u32>>>,
    outcome: Result<Option<Recommendation>, Blocked>,
    /// The prefix delegation this policy wanted, when it was sized for the mode aws-node runs
    /// instead ([`running_prefix_delegation`]).
    resized_from: Option<bool>,
}
pub mod eks_addon;
mod env;
mod evaluate;
pub(crate) use evaluate::selector_expressions;
pub(crate) mod intern;
pub mod launch_templates;
pub mod node_classes;
pub mod node_labels;
pub mod owner;
mod readiness;
pub mod rollouts;
pub mod subnets;
pub mod warm_table;

pub use crate::engine::EnvChange;
pub use eks_addon::{AddonFacts, AddonPlan, AddonWrite, CniTarget, UpdateFacts};
use env::{describe_env_diff, env_changes, foreign_overrides};
use evaluate::{adopt_for_auto, evaluate, recompute, select_all};
use launch_templates::launch_template_step;
pub use launch_templates::{LastSync, LaunchTemplateReport, SyncResult, TemplateStep};
use node_classes::plan_node_classes;
pub use node_classes::{
    KarpenterAvailability, KarpenterFacts, KarpenterInput, KarpenterReport, NodeClassWrite,
};
pub use node_labels::NodeLabels;
pub use owner::{AwsNodeOwner, FieldManager, OwnerKind, OwnerMetadata};
use readiness::finish_conditions;

/// The cluster-wide aws-node write, or what keeps it from happening.
#[derive(Default)]
struct EnvDecision {
    write: Option<DaemonSetWrite>,
    /// The env cannot be written at all (valueFrom, duplicates, no aws-node container).
    blocked: Option<Blocked>,
    /// Another owner of aws-node keeps it (DaemonSet mode).
    owner_blocker: Option<Blocked>,
    /// The winner's revert record and handover (`status.cniConfig.handover`).
    handover: Option<crate::crd::HandoverStatus>,
    /// The winner and the message, when this plan hands aws-node over.
    handover_event: Option<(String, String)>,
}

/// The winner's env on `ds`: the changes, then whether another owner of aws-node lets them be
/// written ([`owner::check_write`]).
fn decide_env(
    input: &FleetInput<'_>,
    w: &Winner,
    ds: &AwsNodeFacts,
    daemonset_mode: bool,
) -> EnvDecision {
    let changes = match env_changes(ds, &w.env) {
        Ok(changes) => changes,
        Err(blocked) => {
            return EnvDecision {
                blocked: Some(blocked),
                ..Default::default()
            };
        }
    };
    let previous = input
        .policies
        .iter()
        .find(|p| p.name == w.policy)
        .and_then(|p| p.handover);
    let decision = owner::check_write(ds, &w.env, &changes, previous, input.now);
    let mut out = EnvDecision::default();
    // A change lands only on a settled aws-node: never onto a rollout in progress (every
    // write restarts the CNI on every node; two at once leave nodes without pod networking
    // for longer, and a rollout that cannot finish should not get another).
    let unsettled = ds.rollout.as_ref().and_then(DaemonSetRollout::unsettled);
    if let (Ok(()), true, Some(why)) = (&decision.write, daemonset_mode, unsettled) {
        let (handover, message) = if changes.is_empty() {
            // The spec carries the env; CNIConfigured is True only once the pods run it.
            let message = format!(
                "{} carries these settings, and its pods do not all run them yet ({why})",
                ds.reference
            );
            (decision.handover, message)
        } else {
            // The revert record stays as it was: this pass writes nothing, the next decides
            // again.
            let message = format!(
                "{} is still rolling out its last change ({why}); the env change ({}) is \
                 written once every pod runs the current template and is available",
                ds.reference,
                EnvChange::join(&changes)
            );
            (previous.cloned(), message)
        };
        out.handover = handover;
        out.owner_blocker = Some(Blocked {
            reason: Reason::AwsNodeRollingOut,
            message,
        });
        return out;
    }
    if daemonset_mode {
        let newly = decision.handover.as_ref().is_some_and(|h| h.handed_over)
            && !previous.is_some_and(|p| p.handed_over);
        if let (true, Err(blocked)) = (newly, &decision.write) {
            out.handover_event = Some((w.policy.clone(), blocked.message.clone()));
        }
        out.handover = decision.handover;
    }
    match decision.write {
        Ok(()) if changes.is_empty() || !daemonset_mode => {}
        Ok(()) => {
            out.write = Some(DaemonSetWrite {
                reference: ds.reference.clone(),
                policy: w.policy.clone(),
                env: w.env.clone(),
                changes,
                reverted_by: decision.reverted_by,
            });
        }
        Err(blocked) if daemonset_mode => out.owner_blocker = Some(blocked),
        Err(_) => {}
    }
    out
}

/// Another Enforce policy against the winner: the Conflict message when their env differs (its
/// maxPods follows the mode aws-node runs: [`size_for_running_mode`]).
fn against_winner(
    input: &FleetInput<'_>,
    e: &Evaluated<'_>,
    winner: Option<&Winner>,
) -> Option<String> {
    let is_enforce = e.input.spec.enforcement == Enforcement::Enforce;
    let (Ok(Some(rec)), true, Some(w)) = (&e.outcome, is_enforce, winner) else {
        return None;
    };
    if w.policy == e.input.name {
        return None;
    }
    let (winner_name, env) = (&w.policy, &w.env);
    (&rec.env != env).then(|| {
        format!(
            "policy {winner_name} is older and sets {} on {}; this policy wants {}. Align the two \
             policies, or make this one DryRun",
            describe_env_diff(env, &rec.env),
            input.managed_daemonset,
            describe_env_diff(&rec.env, env),
        )
    })
}

/// The prefix delegation aws-node runs, the one truth maxPods is sized for (templates, node
/// classes, status): the winner's when this plan's write (or add-on update) carries its env,
/// else the live env, whoever owns it (a handover, a server-side owner, DryRun policies only),
/// unset meaning off as in the VPC CNI. `None` when there is no aws-node to read, and in IPv6
/// clusters (always prefixes; IPs do not limit pods).
fn running_prefix_delegation(
    input: &FleetInput<'_>,
    winner: Option<&Winner>,
    operator_writes: bool,
) -> Option<bool> {
    let ds = input.aws_node?;
    if ds.ip_family() == IpFamily::Ipv6 {
        return None;
    }
    match winner {
        Some(w) if operator_writes => Some(w.prefix_delegation),
        _ => Some(ds.prefix_delegation().unwrap_or(false)),
    }
}

/// Sizes `e` for the running mode when it wished another one.
fn size_for_running_mode(e: &mut Evaluated<'_>, running: Option<bool>) {
    if let (Some(running), Ok(Some(rec))) = (running, &e.outcome)
        && rec.prefix_delegation != running
    {
        e.resized_from = Some(rec.prefix_delegation);
        recompute(e, running);
    }
}

/// CNIConfigured says so when the policy was sized for a mode it does not want.
fn note_running_mode(e: &mut Evaluated<'_>, input: &FleetInput<'_>) {
    let Some(wished) = e.resized_from else {
        return;
    };
    let running = !wished;
    let note = format!(
        "{} runs ENABLE_PREFIX_DELEGATION={running}, not the {wished} this policy wants: maxPods \
         (launch templates, node classes, status) is sized for the mode aws-node runs",
        input.managed_daemonset
    );
    if let Some(c) = e
        .plan
        .conditions
        .iter_mut()
        .find(|c| c.type_ == conditions::CNI_CONFIGURED)
    {
        c.message = if c.message.is_empty() {
            note
        } else {
            format!("{}; {note}", c.message)
        };
    }
}

/// `status.cniConfig` in DaemonSet mode (the add-on plan replaces it in add-on mode).
fn cni_config_status(
    input: &FleetInput<'_>,
    policy: &PolicyInput<'_>,
    handover: Option<crate::crd::HandoverStatus>,
    wrote: bool,
) -> crate::crd::CniConfigStatus {
    let via = match input.cni_target {
        CniTarget::DaemonSet { .. } => "DaemonSet",
        _ => "EksAddon",
    };
    crate::crd::CniConfigStatus {
        via: via.to_owned(),
        eks_addon: None,
        owner: input
            .aws_node
            .and_then(|ds| ds.owner.as_ref())
            .map(AwsNodeOwner::status),
        handover,
        aws_node_rollouts: policy.aws_node_rollouts + u32::from(wrote),
    }
}

/// The cluster-wide decision: the oldest Enforce policy with a recommendation wins.
fn winner(evaluated: &[Evaluated<'_>]) -> Option<Winner> {
    evaluated.iter().find_map(|e| match &e.outcome {
        Ok(Some(rec)) if e.input.spec.enforcement == Enforcement::Enforce => Some(Winner {
            policy: e.input.name.to_owned(),
            env: rec.env.clone(),
            prefix_delegation: rec.prefix_delegation,
        }),
        _ => None,
    })
}

/// In add-on mode, the add-on's configurationValues; what keeps the env from being written
/// goes into `env_blocker` (a document the operator cannot edit, an add-on it cannot read).
fn addon_document(
    target: &CniTarget,
    env_blocker: &mut Option<Blocked>,
) -> Option<crate::eks_addon::ConfigurationValues> {
    match target {
        CniTarget::DaemonSet { .. } => None,
        CniTarget::EksAddon(facts) => match eks_addon::parse_configuration(facts) {
            Ok(document) => Some(document),
            Err(blocked) => {
                env_blocker.get_or_insert(blocked);
                None
            }
        },
        CniTarget::Unavailable { reason, message } => {
            env_blocker.get_or_insert(Blocked {
                reason: *reason,
                message: message.clone(),
            });
            None
        }
    }
}

/// Each policy's launch-template step, for the policies that list templates.
fn template_steps(
    input: &FleetInput<'_>,
    policies: &BTreeMap<String, PolicyPlan>,
) -> BTreeMap<String, TemplateStep> {
    let nodes = launch_templates::LazyNodeIndex::new(&input.nodes);
    input
        .policies
        .iter()
        .filter_map(|p| {
            let plan = policies.get(p.name)?;
            let step = launch_template_step(
                p.name,
                p.spec,
                plan,
                input.ec2_access,
                input.template_syncs,
                &nodes,
            );
            (step != TemplateStep::Nothing).then(|| (p.name.to_owned(), step))
        })
        .collect()
}

/// The one decide step: the aws-node (or add-on) write, the node-class writes, the
/// launch-template steps and every policy's status, from one snapshot.
pub fn plan_fleet(input: &FleetInput<'_>) -> FleetPlan {
    let ordered = PolicyInput::oldest_first(&input.policies);
    let selections = select_all(input, &ordered);
    let mut evaluated: Vec<Evaluated<'_>> = ordered
        .iter()
        .zip(selections)
        .map(|(p, selection)| evaluate(input, p, selection))
        .collect();

    let winner = winner(&evaluated);
    let daemonset_mode = matches!(input.cni_target, CniTarget::DaemonSet { .. });
    let EnvDecision {
        write,
        blocked: mut env_blocker,
        owner_blocker,
        handover: handover_record,
        handover_event,
    } = match (&winner, input.aws_node) {
        (Some(w), Some(ds)) => decide_env(input, w, ds, daemonset_mode),
        _ => EnvDecision::default(),
    };
    let addon_document = addon_document(input.cni_target, &mut env_blocker);
    let foreign = input
        .aws_node
        .zip(winner.as_ref())
        .map(|(ds, w)| foreign_overrides(ds, &w.env))
        .unwrap_or_default();
    // Values an earlier write took from a server-side owner: warned on the winner.
    let held = match (input.aws_node, &winner, daemonset_mode) {
        (Some(ds), Some(w), true) => owner::held_from_server_side_owner(ds, &w.env),
        _ => None,
    };

    // In add-on mode, keys handed over to the add-on's owner are not the operator's to write.
    let addon_handed_over = matches!(input.cni_target, CniTarget::EksAddon(_))
        && winner
            .as_ref()
            .and_then(|w| input.policies.iter().find(|p| p.name == w.policy))
            .and_then(|p| p.handover)
            .is_some_and(|h| h.handed_over);
    let operator_writes =
        winner.is_some() && env_blocker.is_none() && owner_blocker.is_none() && !addon_handed_over;
    let running = running_prefix_delegation(input, winner.as_ref(), operator_writes);

    let mut policies = BTreeMap::new();
    for e in &mut evaluated {
        adopt_for_auto(e, running);
        let conflict = against_winner(input, e, winner.as_ref());
        size_for_running_mode(e, running);
        let is_winner = winner.as_ref().is_some_and(|w| w.policy == e.input.name);
        if let (true, Some(held)) = (is_winner, &held) {
            e.plan.warnings.push(held.clone());
        }
        let blockers = readiness::Blockers {
            env: env_blocker.as_ref(),
            owner: owner_blocker.as_ref(),
        };
        finish_conditions(e, input, conflict, blockers, &foreign);
        note_running_mode(e, input);
        // The winner's record is this plan's; the others keep theirs.
        let (handover, wrote) = if is_winner {
            (handover_record.clone(), write.is_some())
        } else {
            (e.input.handover.cloned(), false)
        };
        e.plan.cni_config = Some(cni_config_status(input, e.input, handover, wrote));
        policies.insert(e.input.name.to_owned(), e.plan.clone());
    }
    let mut addon = AddonPlan::default();
    if let (CniTarget::EksAddon(facts), Some(document), None) =
        (input.cni_target, &addon_document, &env_blocker)
    {
        let winner = winner.as_ref().map(|w| (w.policy.as_str(), &w.env));
        addon = eks_addon::plan_addon(input, facts, document, winner, &mut policies);
    }
    if let Some(karpenter) = &input.karpenter {
        plan_node_classes(input, karpenter, &mut policies);
    }
    let mut templates = template_steps(input, &policies);
    launch_templates::claim_templates(&ordered, &mut templates, &mut policies);
    let handover = handover_event.or_else(|| addon.handover_event.clone());
    FleetPlan {
        daemonset_write: write,
        addon,
        handover,
        policies,
        templates,
    }
}

#[cfg(test)]
mod tests;
