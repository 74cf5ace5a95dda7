//! The decide step: from a snapshot of policies, nodes and the aws-node DaemonSet to a plan
//! value (the env to apply, and each policy's status). Pure: no IO, no clock; the same inputs
//! always give the same plan, so the operator never flaps.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};

use crate::crd::condition::Reason;
use crate::crd::{DaemonSetRef, Enforcement, InstanceTypeStatus, NodeNetworkPolicySpec, condition};
use crate::engine::{
    self, CniVersion, EniOptions, InstanceFacts, IpFamily, PrefixDelegationMode, Recommendation,
    TuningRequest, warm_pool,
};
use crate::instance::{InstanceCatalog, InstanceLimits};

/// Node labels the plan reads.
pub mod labels {
    pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
    pub const INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
    pub const OS: &str = "kubernetes.io/os";
    pub const COMPUTE_TYPE: &str = "eks.amazonaws.com/compute-type";
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
    pub labels: BTreeMap<String, String>,
    pub capacity_pods: Option<u32>,
    /// The EC2 instance id from `spec.providerID` (`aws:///us-west-2a/i-0abc...`).
    pub instance_id: Option<String>,
}

impl NodeFacts {
    /// The node's instance type, or why the VPC CNI does not serve it.
    pub fn instance_type(&self) -> Result<&str, Exclusion> {
        let label = |key: &str| self.labels.get(key).map(String::as_str);
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
}

/// One env entry of the aws-node container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub name: String,
    pub value: Option<String>,
    /// `valueFrom` (ConfigMap, Secret, field ref): not a literal the operator can own.
    pub from_source: bool,
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
}

impl AwsNodeFacts {
    fn env_value(&self, name: &str) -> Option<&EnvEntry> {
        self.env.iter().find(|e| e.name == name)
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
    /// The plan's view of a policy; `name` is the policy's name, borrowed from the caller.
    pub fn from_policy(policy: &'a crate::crd::NodeNetworkPolicy, name: &'a str) -> Self {
        Self {
            name,
            created: policy
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            generation: policy.metadata.generation,
            spec: &policy.spec,
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
}

/// A condition the plan wants, without timestamps (the status step adds those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionPlan {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// One env change the DaemonSet write makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The old value was set by this operator before (someone changed it): a drift repair.
    pub drift: bool,
}

impl std::fmt::Display for EnvChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".to_owned());
        write!(
            f,
            "{}: {} -> {}",
            self.name,
            show(&self.from),
            show(&self.to)
        )
    }
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
}

/// The whole decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetPlan {
    /// `Some` when the aws-node env must change.
    pub daemonset_write: Option<DaemonSetWrite>,
    /// By policy name.
    pub policies: BTreeMap<String, PolicyPlan>,
}

/// Why a policy produced no recommendation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blocked {
    reason: Reason,
    message: String,
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
}

const ASSUMED_CNI_WHEN_UNKNOWN: CniVersion = CniVersion::PREFIX_DELEGATION;

/// Decides the aws-node env and every policy's status.
pub fn plan_fleet(input: &FleetInput<'_>) -> FleetPlan {
    let mut ordered: Vec<&PolicyInput<'_>> = input.policies.iter().collect();
    ordered.sort_by(|a, b| (&a.created, a.name).cmp(&(&b.created, b.name)));

    let mut evaluated: Vec<Evaluated<'_>> = ordered.iter().map(|p| evaluate(input, p)).collect();

    // The cluster-wide decision: the oldest Enforce policy with a recommendation wins.
    let winner = evaluated.iter().position(|e| {
        e.input.spec.enforcement == Enforcement::Enforce && matches!(e.outcome, Ok(Some(_)))
    });
    let winner_env: Option<(String, BTreeMap<String, String>, bool)> = winner.and_then(|i| {
        let e = &evaluated[i];
        match &e.outcome {
            Ok(Some(rec)) => Some((
                e.input.name.to_owned(),
                rec.env.clone(),
                rec.prefix_delegation,
            )),
            _ => None,
        }
    });
    let mut write = None;
    let mut env_blocker: Option<Blocked> = None;
    if let (Some((policy, env, _)), Some(ds)) = (&winner_env, input.aws_node) {
        match env_changes(ds, env) {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                write = Some(DaemonSetWrite {
                    reference: ds.reference.clone(),
                    policy: policy.clone(),
                    env: env.clone(),
                    changes,
                })
            }
            Err(blocked) => env_blocker = Some(blocked),
        }
    }
    let foreign = input
        .aws_node
        .zip(winner_env.as_ref())
        .map(|(ds, (_, env, _))| foreign_overrides(ds, env))
        .unwrap_or_default();

    let mut policies = BTreeMap::new();
    for e in &mut evaluated {
        let is_enforce = e.input.spec.enforcement == Enforcement::Enforce;
        let mut conflict: Option<String> = None;
        if let (Ok(Some(rec)), true, Some((winner_name, env, winner_prefix))) =
            (&e.outcome, is_enforce, &winner_env)
            && winner_name != e.input.name
        {
            if &rec.env != env {
                conflict = Some(format!(
                    "policy {winner_name} is older and sets {} on {}; this policy wants {}. \
                     Align the two policies, or make this one DryRun",
                    describe_env_diff(env, &rec.env),
                    input.managed_daemonset,
                    describe_env_diff(&rec.env, env),
                ));
            }
            if rec.prefix_delegation != *winner_prefix {
                // Its nodes live with the cluster's setting: report maxPods for that.
                recompute(e, *winner_prefix);
            }
        }
        finish_conditions(e, input, conflict, env_blocker.as_ref(), &foreign);
        policies.insert(e.input.name.to_owned(), e.plan.clone());
    }
    FleetPlan {
        daemonset_write: write,
        policies,
    }
}

fn evaluate<'a>(input: &'a FleetInput<'a>, policy: &'a PolicyInput<'a>) -> Evaluated<'a> {
    let spec = policy.spec;
    let mut plan = PolicyPlan {
        observed_generation: policy.generation,
        ..Default::default()
    };
    let mut evaluated = Evaluated {
        input: policy,
        plan: PolicyPlan::default(),
        request: TuningRequest::default(),
        facts: Vec::new(),
        nodes_by_type: BTreeMap::new(),
        outcome: Ok(None),
    };

    let selector: Result<Selector, _> = spec.node_selector.clone().unwrap_or_default().try_into();
    let selector = match selector {
        Ok(selector) => selector,
        Err(err) => {
            evaluated.outcome = Err(Blocked {
                reason: Reason::InvalidSpec,
                message: format!(
                    "spec.nodeSelector is invalid: {err}; use operators In, NotIn, Exists or \
                     DoesNotExist with values only for In and NotIn"
                ),
            });
            evaluated.plan = plan;
            return evaluated;
        }
    };

    let mut nodes_by_type: BTreeMap<&str, Vec<Option<u32>>> = BTreeMap::new();
    for node in &input.nodes {
        if !selector.matches(&node.labels) {
            continue;
        }
        match node.instance_type() {
            Ok(instance_type) => nodes_by_type
                .entry(instance_type)
                .or_default()
                .push(node.capacity_pods),
            Err(reason) => {
                *plan
                    .excluded_nodes
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1
            }
        }
    }
    plan.matched_nodes = nodes_by_type.values().map(|v| v.len() as u32).sum();

    let cni_version = input
        .aws_node
        .and_then(|ds| ds.image.as_deref())
        .map(CniVersion::from_image);
    plan.cni_version = match &cni_version {
        Some(Ok(version)) => Some(version.to_string()),
        _ => None,
    };
    match &cni_version {
        Some(Err(err)) => plan.warnings.push(format!(
            "cannot read the VPC CNI version from the aws-node image ({err}); assuming \
             {ASSUMED_CNI_WHEN_UNKNOWN}, the first with prefix delegation"
        )),
        None if input.aws_node.is_some() => plan
            .warnings
            .push("the aws-node DaemonSet has no aws-node container".to_owned()),
        _ => {}
    }

    let mut unknown = Vec::new();
    let mut facts = Vec::new();
    for instance_type in nodes_by_type.keys() {
        // lookup_with_source, not lookup: no "did you mean" suggestions are wanted here.
        match input
            .catalog
            .lookup_with_source(instance_type)
            .map(|(limits, _)| limits)
            .or_else(|| input.extra_facts.get(*instance_type).copied())
        {
            Some(limits) => facts.push(InstanceFacts {
                instance_type,
                limits,
            }),
            None => unknown.push(*instance_type),
        }
    }

    let request = TuningRequest {
        prefix_delegation: spec.prefix_delegation.into(),
        ip_family: input
            .aws_node
            .map(AwsNodeFacts::ip_family)
            .unwrap_or_default(),
        cni_version: match cni_version {
            Some(Ok(version)) => version,
            _ => ASSUMED_CNI_WHEN_UNKNOWN,
        },
        eni: EniOptions {
            max_eni: spec.max_eni,
            custom_networking: spec.custom_networking,
            security_groups_for_pods: spec.security_groups_for_pods,
        },
        warm_pool: spec.warm_pool.into(),
        max_pods: spec.max_pods.engine_policy(),
        max_pods_ceiling: spec.max_pods.ceiling,
    };

    evaluated.outcome = if &spec.daemon_set != input.managed_daemonset {
        Err(Blocked {
            reason: Reason::DaemonSetNotManaged,
            message: format!(
                "spec.daemonSet is {} but this operator manages {} (its --daemonset flag); set \
                 spec.daemonSet to {} or run an operator for that DaemonSet",
                spec.daemon_set, input.managed_daemonset, input.managed_daemonset
            ),
        })
    } else if !unknown.is_empty() {
        Err(Blocked {
            reason: Reason::UnknownInstanceType,
            message: format!(
                "no ENI/IP limits known for instance type(s) {}; the operator leaves the aws-node \
                 env as it is until they are known: upgrade vpc-cni-tuner, or give it EC2 \
                 DescribeInstanceTypes access so it can look them up",
                unknown.join(", ")
            ),
        })
    } else if facts.is_empty() {
        Ok(None)
    } else {
        match engine::recommend(&request, &facts) {
            Ok(rec) => Ok(Some(rec)),
            Err(err) => Err(Blocked {
                reason: Reason::InvalidSpec,
                message: format!("{err} (spec of policy {})", policy.name),
            }),
        }
    };
    evaluated.plan = plan;
    evaluated.request = request;
    evaluated.facts = facts;
    evaluated.nodes_by_type = nodes_by_type;
    fill_from_recommendation(&mut evaluated);
    evaluated
}

/// Copies the recommendation into the status fields.
fn fill_from_recommendation(e: &mut Evaluated<'_>) {
    let Ok(Some(rec)) = &e.outcome else {
        return;
    };
    e.plan.prefix_delegation = Some(rec.prefix_delegation);
    e.plan.cni_env = rec.env.clone();
    e.plan.max_pods = Some(rec.max_pods);
    e.plan.warnings.extend(rec.warnings.iter().cloned());
    e.plan.instance_types = rec
        .instance_types
        .iter()
        .map(|t| {
            let capacities = e
                .nodes_by_type
                .get(t.instance_type.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            InstanceTypeStatus {
                instance_type: t.instance_type.clone(),
                nodes: capacities.len() as u32,
                prefix_delegation: t.prefix_delegation,
                max_pods_ip_limit: t.max_pods_ip_limit,
                max_pods: t.max_pods,
                nodes_at_target: capacities
                    .iter()
                    .filter(|c| **c == Some(rec.max_pods))
                    .count() as u32,
            }
        })
        .collect();
}

/// Recomputes a losing policy's numbers under the cluster's prefix-delegation setting.
fn recompute(e: &mut Evaluated<'_>, prefix: bool) {
    let request = TuningRequest {
        prefix_delegation: if prefix {
            PrefixDelegationMode::Enabled
        } else {
            PrefixDelegationMode::Disabled
        },
        ..e.request.clone()
    };
    if let Ok(rec) = engine::recommend(&request, &e.facts) {
        let wanted_env = match &e.outcome {
            Ok(Some(original)) => original.env.clone(),
            _ => rec.env.clone(),
        };
        e.plan.warnings.clear();
        e.outcome = Ok(Some(rec));
        fill_from_recommendation(e);
        // The status reports what this policy would set, not the winner's env.
        e.plan.cni_env = wanted_env;
    }
}

/// The changes that make the DaemonSet carry `env`, or why it cannot be written safely.
fn env_changes(
    ds: &AwsNodeFacts,
    env: &BTreeMap<String, String>,
) -> Result<Vec<EnvChange>, Blocked> {
    if !ds.container_found {
        return Err(Blocked {
            reason: Reason::AwsNodeContainerMissing,
            message: format!(
                "DaemonSet {} has no container named aws-node; the operator only writes that \
                 container's env",
                ds.reference
            ),
        });
    }
    for name in warm_pool::MANAGED_ENV_VARS {
        let entries: Vec<&EnvEntry> = ds.env.iter().filter(|e| e.name == name).collect();
        if entries.len() > 1 {
            return Err(Blocked {
                reason: Reason::DuplicateEnv,
                message: format!(
                    "the aws-node container of {} lists {name} {} times; remove the duplicates so \
                     the operator can manage it",
                    ds.reference,
                    entries.len()
                ),
            });
        }
        if entries.first().is_some_and(|e| e.from_source) && env.contains_key(name) {
            return Err(Blocked {
                reason: Reason::EnvFromSource,
                message: format!(
                    "{name} in the aws-node container of {} comes from valueFrom (a ConfigMap or \
                     Secret); remove valueFrom so the operator can set it",
                    ds.reference
                ),
            });
        }
    }
    let mut changes = Vec::new();
    for (name, value) in env {
        let current = ds.env_value(name).and_then(|e| e.value.clone());
        if current.as_ref() != Some(value) {
            changes.push(EnvChange {
                name: name.clone(),
                drift: current.is_some() && ds.owned_env.contains(name),
                from: current,
                to: Some(value.clone()),
            });
        }
    }
    // Entries this operator set before and no longer wants: leaving them out of the apply
    // removes them.
    for name in &ds.owned_env {
        if !env.contains_key(name) && ds.env_value(name).is_some() {
            changes.push(EnvChange {
                name: name.clone(),
                from: ds.env_value(name).and_then(|e| e.value.clone()),
                to: None,
                drift: false,
            });
        }
    }
    Ok(changes)
}

/// Warm targets someone else set that override the operator's settings.
fn foreign_overrides(ds: &AwsNodeFacts, env: &BTreeMap<String, String>) -> Vec<String> {
    [warm_pool::WARM_IP_TARGET, warm_pool::MINIMUM_IP_TARGET]
        .into_iter()
        .filter(|name| !env.contains_key(*name) && !ds.owned_env.contains(*name))
        .filter_map(|name| {
            let value = ds.env_value(name)?.value.clone()?;
            (value.trim() != "0" && !value.trim().is_empty()).then(|| format!("{name}={value}"))
        })
        .collect()
}

fn describe_env_diff(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> String {
    let differing: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if differing.is_empty() {
        "no other settings".to_owned()
    } else {
        differing.join(", ")
    }
}

fn finish_conditions(
    e: &mut Evaluated<'_>,
    input: &FleetInput<'_>,
    conflict: Option<String>,
    env_blocker: Option<&Blocked>,
    foreign: &[String],
) {
    let spec = e.input.spec;
    let dry_run = spec.enforcement == Enforcement::DryRun;
    let mut conditions = Vec::new();
    let cond = |type_, status, reason, message: String| ConditionPlan {
        type_,
        status,
        reason,
        message,
    };
    let ds_missing = input.aws_node.is_none() && &spec.daemon_set == input.managed_daemonset;

    let ready = match (&e.outcome, ds_missing) {
        (Err(blocked), _) => cond(
            condition::READY,
            false,
            blocked.reason,
            blocked.message.clone(),
        ),
        (Ok(_), true) => cond(
            condition::READY,
            false,
            Reason::DaemonSetNotFound,
            format!(
                "DaemonSet {} does not exist; install the VPC CNI (the vpc-cni add-on) or set \
                 spec.daemonSet",
                input.managed_daemonset
            ),
        ),
        (Ok(_), false) if !dry_run && env_blocker.is_some() => {
            let blocked = env_blocker.map(|b| (b.reason, b.message.clone()));
            let (reason, message) = blocked.unwrap_or((Reason::Blocked, String::new()));
            cond(condition::READY, false, reason, message)
        }
        (Ok(None), false) => cond(
            condition::READY,
            true,
            Reason::NoMatchingNodes,
            "the node selector matches no node the VPC CNI serves; nothing to tune".to_owned(),
        ),
        (Ok(Some(_)), false) if dry_run => cond(
            condition::READY,
            true,
            Reason::DryRun,
            "computed; DryRun writes nothing".to_owned(),
        ),
        (Ok(Some(_)), false) => cond(
            condition::READY,
            true,
            Reason::Reconciled,
            format!("{} nodes planned", e.plan.matched_nodes),
        ),
    };
    let ready_ok = ready.status;
    conditions.push(ready);

    let cni_configured = if !ready_ok {
        cond(
            condition::CNI_CONFIGURED,
            false,
            Reason::NotReady,
            "see the Ready condition".to_owned(),
        )
    } else if matches!(e.outcome, Ok(None)) {
        cond(
            condition::CNI_CONFIGURED,
            false,
            Reason::NoMatchingNodes,
            "nothing to configure".to_owned(),
        )
    } else if dry_run {
        let would_change = input
            .aws_node
            .map(|ds| {
                env_changes(ds, &e.plan.cni_env)
                    .map(|c| c.len())
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if would_change == 0 {
            cond(
                condition::CNI_CONFIGURED,
                true,
                Reason::InSync,
                format!("{} already carries these settings", input.managed_daemonset),
            )
        } else {
            cond(
                condition::CNI_CONFIGURED,
                false,
                Reason::DryRun,
                format!(
                    "would change {would_change} env var(s) on {}; set enforcement: Enforce to apply",
                    input.managed_daemonset
                ),
            )
        }
    } else if conflict.is_some() {
        cond(
            condition::CNI_CONFIGURED,
            false,
            Reason::Conflict,
            "an older policy decides the aws-node env; see the Conflict condition".to_owned(),
        )
    } else {
        // The same message before and after the write, so a write costs one status patch; the
        // write itself is recorded as an Event.
        cond(
            condition::CNI_CONFIGURED,
            true,
            Reason::InSync,
            format!("{} carries these settings", input.managed_daemonset),
        )
    };
    conditions.push(cni_configured);

    conditions.push(match conflict {
        Some(message) => cond(
            condition::CONFLICT,
            true,
            Reason::LostToOlderPolicy,
            message,
        ),
        None => cond(
            condition::CONFLICT,
            false,
            Reason::NoConflict,
            "no other policy disagrees".to_owned(),
        ),
    });

    let mut degraded: Vec<String> = e.plan.warnings.clone();
    if !foreign.is_empty() && !dry_run {
        degraded.push(format!(
            "{} set by another manager overrides the warm-pool settings; remove it from the \
             vpc-cni add-on configuration",
            foreign.join(", ")
        ));
    }
    conditions.push(if degraded.is_empty() {
        cond(
            condition::DEGRADED,
            false,
            Reason::AsExpected,
            "nothing to report".to_owned(),
        )
    } else {
        cond(
            condition::DEGRADED,
            true,
            Reason::Warnings,
            degraded.join("; "),
        )
    });
    e.plan.conditions = conditions;
}

#[cfg(test)]
mod tests;
