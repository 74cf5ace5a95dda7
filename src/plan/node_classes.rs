//! What each policy's Karpenter EC2NodeClasses need: the kubelet maxPods for the instance types
//! their NodePools may launch, the writes that puts there, what the shared value costs, and the
//! `KarpenterSynced` condition. Decided without the API; the controller makes the writes.

use crate::crd::NodeClassStatus;
use crate::karpenter::resources::{NodeClassFacts, NodePoolFacts};
use crate::karpenter::{
    NodeClassChoice, Requirement, allowed_types, choose_max_pods, labels as karpenter_labels,
};

use super::evaluate::tuning_request;
use super::*;

/// Whether the operator can see Karpenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KarpenterAvailability {
    /// Started without `--karpenter`.
    Disabled,
    /// The NodePool and EC2NodeClass watches have not listed yet.
    Pending,
    /// A CRD is missing (its name), or the API refused the list (the error).
    Unavailable {
        reason: Reason,
        message: String,
    },
    Ready,
}

/// What the fleet input carries of Karpenter.
#[derive(Debug, Clone)]
pub struct KarpenterFacts<'a> {
    pub availability: KarpenterAvailability,
    pub node_pools: Vec<&'a NodePoolFacts>,
    /// EC2NodeClasses by name.
    pub node_classes: BTreeMap<&'a str, &'a NodeClassFacts>,
}

/// What the step reads besides the fleet plan.
pub struct KarpenterInput<'a> {
    pub availability: KarpenterAvailability,
    pub node_pools: Vec<&'a NodePoolFacts>,
    /// EC2NodeClasses by name.
    pub node_classes: BTreeMap<&'a str, &'a NodeClassFacts>,
    pub nodes: &'a [&'a NodeFacts],
    pub aws_node: Option<&'a AwsNodeFacts>,
    pub catalog: &'a InstanceCatalog,
}

/// One EC2NodeClass write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClassWrite {
    pub policy: String,
    pub node_class: String,
    pub max_pods: u32,
    pub from: Option<i64>,
    pub bounding_type: String,
    /// The old value was above what this type's IPs carry (its pods stuck in
    /// ContainerCreating): the type and its IP limit.
    pub from_above_ip_limit: Option<(String, u32)>,
}

/// The Karpenter part of one policy's status, and the writes it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KarpenterReport {
    pub statuses: Vec<NodeClassStatus>,
    pub condition: ConditionPlan,
    pub writes: Vec<NodeClassWrite>,
}

impl KarpenterReport {
    /// A write failed: the node class still carries its old value and is not in sync, and the
    /// condition says why.
    pub(crate) fn write_failed(&mut self, write: &NodeClassWrite, message: String) {
        if let Some(status) = self
            .statuses
            .iter_mut()
            .find(|s| s.name == write.node_class)
        {
            status.in_sync = false;
            status.max_pods_found = write.from;
            status.message = Some(message);
        }
        self.condition = synced_condition(&self.statuses, Some(Reason::NodeClassWriteFailed));
    }
}

/// Plans every policy's node classes into `plans` (in [`plan_fleet`]).
pub(super) fn plan_node_classes(
    fleet: &FleetInput<'_>,
    karpenter: &KarpenterFacts<'_>,
    plans: &mut BTreeMap<String, PolicyPlan>,
) {
    let input = KarpenterInput {
        availability: karpenter.availability.clone(),
        node_pools: karpenter.node_pools.clone(),
        node_classes: karpenter.node_classes.clone(),
        nodes: &fleet.nodes,
        aws_node: fleet.aws_node,
        catalog: fleet.catalog,
    };
    plan_node_classes_of(&fleet.policies, plans, &input);
}

/// Plans every policy's node classes, oldest policy first (a node class two policies list is
/// the older one's), into `plans`.
pub(super) fn plan_node_classes_of(
    policies: &[PolicyInput<'_>],
    plans: &mut BTreeMap<String, PolicyPlan>,
    input: &KarpenterInput<'_>,
) {
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for policy in PolicyInput::oldest_first(policies) {
        let classes = policy.spec.ec2_node_classes();
        if classes.is_empty() {
            continue;
        }
        let Some(plan) = plans.get_mut(policy.name) else {
            continue;
        };
        let mut warnings = Vec::new();
        let mut statuses = Vec::new();
        let mut writes = Vec::new();
        let mut blocked: Option<Reason> = None;
        for name in classes {
            let owner = *claimed.entry(name.as_str()).or_insert(policy.name);
            let (status, write, reason) = if owner != policy.name {
                let message = format!("managed by policy {owner}, which is older; remove it here");
                (unsynced(name, message), None, Some(Reason::Conflict))
            } else {
                node_class(policy, plan, name, input, &mut warnings)
            };
            blocked = blocked.or(reason);
            statuses.push(status);
            writes.extend(write);
        }
        if !warnings.is_empty() {
            add_degraded(plan, &warnings);
        }
        let dry_run = policy.spec.enforcement == Enforcement::DryRun;
        let condition = synced_condition(
            &statuses,
            blocked.or((dry_run && statuses.iter().any(|s| !s.in_sync)).then_some(Reason::DryRun)),
        );
        plan.karpenter = Some(KarpenterReport {
            statuses,
            condition,
            writes,
        });
    }
}

fn unsynced(name: &str, message: String) -> NodeClassStatus {
    NodeClassStatus {
        name: name.to_owned(),
        message: Some(message),
        ..Default::default()
    }
}

/// Why node classes cannot be planned at all, if they cannot.
fn unavailable(availability: &KarpenterAvailability) -> Option<(Reason, String)> {
    match availability {
        KarpenterAvailability::Disabled => Some((
            Reason::KarpenterDisabled,
            "the operator runs without --karpenter: set the chart value karpenter.enabled=true \
             (it also grants the RBAC for NodePools and EC2NodeClasses)"
                .to_owned(),
        )),
        KarpenterAvailability::Pending => Some((
            Reason::KarpenterPending,
            "waiting for the first list of NodePools and EC2NodeClasses".to_owned(),
        )),
        KarpenterAvailability::Unavailable { reason, message } => Some((*reason, message.clone())),
        KarpenterAvailability::Ready => None,
    }
}

/// One node class: its status, its write (if any) and, when it cannot be planned, the reason.
fn node_class(
    policy: &PolicyInput<'_>,
    plan: &PolicyPlan,
    name: &str,
    input: &KarpenterInput<'_>,
    warnings: &mut Vec<String>,
) -> (NodeClassStatus, Option<NodeClassWrite>, Option<Reason>) {
    if let Some((reason, message)) = unavailable(&input.availability) {
        return (unsynced(name, message), None, Some(reason));
    }
    let Some(class) = input.node_classes.get(name) else {
        let message = format!(
            "EC2NodeClass {name} does not exist; create it or remove it from \
             spec.karpenter.ec2NodeClasses"
        );
        return (
            unsynced(name, message),
            None,
            Some(Reason::NodeClassNotFound),
        );
    };
    let mut pools: Vec<&NodePoolFacts> = input
        .node_pools
        .iter()
        .copied()
        .filter(|p| p.node_class.as_deref() == Some(name))
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let pool_names: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
    let mut status = NodeClassStatus {
        name: name.to_owned(),
        node_pools: pool_names.clone(),
        max_pods_found: class.max_pods,
        ..Default::default()
    };
    let choice = match choose(policy, plan, input, name, &pools) {
        Ok(choice) => choice,
        Err((reason, message)) => {
            status.message = Some(message);
            return (status, None, Some(reason));
        }
    };
    let wanted = choice.max_pods;
    status.instance_types = choice.allowed as u32;
    status.max_pods_wanted = Some(wanted);
    status.bounding_instance_type = Some(choice.bounding_type.clone());
    status.largest_instance_type = Some(choice.largest_type.clone());
    status.pods_lost_on_largest = choice.pods_lost_on_largest();
    let of_class: Vec<&&NodeFacts> = input
        .nodes
        .iter()
        .filter(|n| n.labels.get(karpenter_labels::NODE_CLASS) == Some(name))
        .collect();
    status.nodes = of_class.len() as u32;
    status.nodes_behind = of_class
        .iter()
        .filter(|n| n.capacity_pods.map(u32::from) != Some(wanted))
        .count() as u32;
    if choice.spread_is_large() {
        warnings.push(format!(
            "EC2NodeClass {name}: maxPods {wanted} is bounded by {}, so each {} node runs {} \
             pods fewer than it could ({}); narrow the requirements of NodePool(s) {} (e.g. \
             karpenter.k8s.aws/instance-cpu Gt) or split them, each with its own EC2NodeClass",
            choice.bounding_type,
            choice.largest_type,
            choice.pods_lost_on_largest(),
            choice.largest_max_pods,
            pool_names.join(", ")
        ));
    }
    let write = write_for(policy, name, class, choice, &mut status, warnings);
    (status, write, None)
}

/// The maxPods for the instance types the node class's NodePools allow, or why there is none.
fn choose(
    policy: &PolicyInput<'_>,
    plan: &PolicyPlan,
    input: &KarpenterInput<'_>,
    name: &str,
    pools: &[&NodePoolFacts],
) -> Result<NodeClassChoice, (Reason, String)> {
    let pool_names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    let pool_names = pool_names.join(", ");
    if pools.is_empty() {
        return Err((
            Reason::NoNodePools,
            format!(
                "no NodePool launches from EC2NodeClass {name}; there is nothing to size it for"
            ),
        ));
    }
    let requirements: Vec<&[Requirement]> =
        pools.iter().map(|p| p.requirements.as_slice()).collect();
    let allowed = match allowed_types(input.catalog, &requirements) {
        Ok(allowed) if allowed.is_empty() => {
            return Err((
                Reason::InvalidNodePool,
                format!(
                    "the requirements of NodePool(s) {pool_names} allow no instance type this \
                     operator knows; check them (kubectl get nodepool -o yaml)"
                ),
            ));
        }
        Ok(allowed) => allowed,
        Err(err) => {
            return Err((
                Reason::InvalidNodePool,
                format!("NodePool(s) {pool_names}: {err}"),
            ));
        }
    };
    // The prefix delegation aws-node has: this policy's plan (what the env is or will be after
    // this pass), else the DaemonSet's env as it is.
    let prefix = plan
        .prefix_delegation
        .or_else(|| input.aws_node.and_then(AwsNodeFacts::prefix_delegation))
        .unwrap_or(false);
    let mut request = tuning_request(policy.spec, input.aws_node);
    request.prefix_delegation = if prefix {
        PrefixDelegationMode::Enabled
    } else {
        PrefixDelegationMode::Disabled
    };
    choose_max_pods(&request, &allowed).map_err(|err| {
        (
            Reason::InvalidNodePool,
            format!("the instance types NodePool(s) {pool_names} allow: {err}"),
        )
    })
}

/// The write that gives the node class `choice.max_pods`, unless it has it or the policy is
/// DryRun; `status` says what the node class carries after this pass.
fn write_for(
    policy: &PolicyInput<'_>,
    name: &str,
    class: &NodeClassFacts,
    choice: NodeClassChoice,
    status: &mut NodeClassStatus,
    warnings: &mut Vec<String>,
) -> Option<NodeClassWrite> {
    let wanted = choice.max_pods;
    let dry_run = policy.spec.enforcement == Enforcement::DryRun;
    if class.max_pods == Some(i64::from(wanted)) {
        status.in_sync = true;
        return None;
    }
    let above_ip_limit = match (class.max_pods, &choice.lowest_ip_limit) {
        (Some(found), Some((ip_type, ip_limit))) if found > i64::from(*ip_limit) => {
            Some((ip_type.clone(), *ip_limit))
        }
        _ => None,
    };
    if dry_run {
        if let (Some(found), Some((ip_type, ip_limit))) = (class.max_pods, &above_ip_limit) {
            warnings.push(format!(
                "EC2NodeClass {name} sets maxPods {found}, more than the {ip_limit} pods the IPs \
                 of {ip_type} carry: pods on such nodes stick in ContainerCreating; set it to \
                 {wanted} (enforcement: Enforce does)"
            ));
        }
        status.message = Some(format!(
            "DryRun: would set spec.kubelet.maxPods to {wanted}"
        ));
        return None;
    }
    // Written this pass: the status says what the node class carries after the write, so the
    // next pass finds nothing to change.
    status.in_sync = true;
    status.max_pods_found = Some(i64::from(wanted));
    Some(NodeClassWrite {
        policy: policy.name.to_owned(),
        node_class: name.to_owned(),
        max_pods: wanted,
        from: class.max_pods,
        bounding_type: choice.bounding_type,
        from_above_ip_limit: above_ip_limit,
    })
}

/// `KarpenterSynced` from the node classes' statuses; `problem` is why not, if anything is off.
fn synced_condition(statuses: &[NodeClassStatus], problem: Option<Reason>) -> ConditionPlan {
    let off: Vec<String> = statuses
        .iter()
        .filter(|s| !s.in_sync)
        .map(|s| {
            format!(
                "{}: {}",
                s.name,
                s.message.as_deref().unwrap_or("not in sync")
            )
        })
        .collect();
    match problem {
        Some(reason) if !off.is_empty() => ConditionPlan {
            type_: conditions::KARPENTER_SYNCED,
            status: false,
            reason,
            message: off.join("; "),
        },
        _ => ConditionPlan {
            type_: conditions::KARPENTER_SYNCED,
            status: true,
            reason: Reason::InSync,
            message: format!("{} EC2NodeClass(es) carry their maxPods", statuses.len()),
        },
    }
}

/// Adds warnings to the policy's Degraded condition.
fn add_degraded(plan: &mut PolicyPlan, warnings: &[String]) {
    let Some(degraded) = plan
        .conditions
        .iter_mut()
        .find(|c| c.type_ == conditions::DEGRADED)
    else {
        return;
    };
    let joined = warnings.join("; ");
    if degraded.status {
        degraded.message = format!("{}; {joined}", degraded.message);
    } else {
        *degraded = ConditionPlan {
            type_: conditions::DEGRADED,
            status: true,
            reason: Reason::Warnings,
            message: joined,
        };
    }
}

#[cfg(test)]
#[path = "node_classes_tests.rs"]
mod tests;
