//! Karpenter: which instance types a NodePool may launch, and the one kubelet `maxPods` an
//! EC2NodeClass can carry for all of them. Karpenter computes maxPods from ENI limits without
//! prefix delegation (karpenter-provider-aws issues 6102, 7505, 2029, 8210); an EC2NodeClass's
//! `spec.kubelet.maxPods` overrides that for every type its NodePools may pick, so it must fit
//! the smallest of them.
//!
//! Pure: requirement evaluation against the instance catalog and the choice of the value. The
//! typed NodePool and EC2NodeClass resources (`resources`) are the operator's.

#[cfg(feature = "operator")]
pub mod resources;

use serde::{Deserialize, Serialize};

use crate::engine::{self, InstanceFacts, Recommendation, TuningError, TuningRequest};
use crate::instance::InstanceCatalog;
use crate::instance::attributes::Attributes;

/// Labels Karpenter puts on its nodes and instance types.
pub mod labels {
    pub const NODE_CLASS: &str = "karpenter.k8s.aws/ec2nodeclass";
    pub(crate) const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
    pub(crate) const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
    pub(crate) const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
    pub(crate) const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
    pub(crate) const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
    pub(crate) const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
    pub(crate) const ARCH: &str = "kubernetes.io/arch";
    pub(crate) const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
}

/// One entry of a NodePool's `spec.template.spec.requirements` (a node selector requirement,
/// with Karpenter's `Gte`/`Lte` and `minValues`, which does not narrow the set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// A requirement that cannot be evaluated. The message names the requirement and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    #[error(
        "requirement {key} has operator {operator:?}; Karpenter accepts In, NotIn, Exists, \
         DoesNotExist, Gt, Lt, Gte and Lte"
    )]
    UnknownOperator { key: String, operator: String },
    #[error(
        "requirement {key} {operator} needs exactly one integer value (got {values:?}); write \
         e.g. values: [\"4\"]"
    )]
    NotAnInteger {
        key: String,
        operator: String,
        values: Vec<String>,
    },
}

/// The value an instance type has for a label key this module evaluates, or `Ok(None)` when it
/// has none; `Err(())` for keys that do not narrow instance types (zones, capacity type, custom
/// labels), which are left to Karpenter.
fn label_value(attributes: &Attributes<'_>, key: &str) -> Result<Option<String>, ()> {
    let owned = |v: Option<&str>| Ok(v.map(str::to_owned));
    match key {
        labels::INSTANCE_TYPE | "beta.kubernetes.io/instance-type" => owned(Some(attributes.name)),
        labels::INSTANCE_FAMILY => owned(attributes.family),
        labels::INSTANCE_CATEGORY => owned(attributes.category),
        labels::INSTANCE_GENERATION => owned(attributes.generation),
        labels::INSTANCE_SIZE => owned(attributes.size),
        labels::INSTANCE_CPU => Ok(Some(attributes.cpu.to_string())),
        labels::INSTANCE_HYPERVISOR => owned(Some(attributes.hypervisor)),
        labels::ARCH | "beta.kubernetes.io/arch" => owned(attributes.arch.map(|a| a.as_str())),
        _ => Err(()),
    }
}

const OPERATORS: [&str; 8] = [
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "Gt",
    "Lt",
    "Gte",
    "Lte",
];

impl Requirement {
    /// Checks the requirement's shape: a known operator, and one integer value for the numeric
    /// ones.
    pub fn validate(&self) -> Result<(), RequirementError> {
        if !OPERATORS.contains(&self.operator.as_str()) {
            return Err(RequirementError::UnknownOperator {
                key: self.key.clone(),
                operator: self.operator.clone(),
            });
        }
        if matches!(self.operator.as_str(), "Gt" | "Lt" | "Gte" | "Lte") {
            self.bound()?;
        }
        Ok(())
    }

    fn bound(&self) -> Result<i64, RequirementError> {
        match self.values.as_slice() {
            [one] => one.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| RequirementError::NotAnInteger {
            key: self.key.clone(),
            operator: self.operator.clone(),
            values: self.values.clone(),
        })
    }

    /// Whether an instance type with these attributes satisfies this requirement. Keys that do
    /// not describe the instance type satisfy it.
    pub fn allows(&self, attributes: &Attributes<'_>) -> Result<bool, RequirementError> {
        let Ok(value) = label_value(attributes, &self.key) else {
            return Ok(true);
        };
        let number = value.as_deref().and_then(|v| v.parse::<i64>().ok());
        let compare = |holds: fn(i64, i64) -> bool| -> Result<bool, RequirementError> {
            let bound = self.bound()?;
            Ok(number.is_some_and(|n| holds(n, bound)))
        };
        match self.operator.as_str() {
            "In" => Ok(value.is_some_and(|v| self.values.contains(&v))),
            "NotIn" => Ok(value.is_none_or(|v| !self.values.contains(&v))),
            "Exists" => Ok(value.is_some()),
            "DoesNotExist" => Ok(value.is_none()),
            "Gt" => compare(|n, b| n > b),
            "Lt" => compare(|n, b| n < b),
            "Gte" => compare(|n, b| n >= b),
            "Lte" => compare(|n, b| n <= b),
            _ => self.validate().map(|()| false),
        }
    }
}

/// The catalog's instance types that satisfy every requirement of at least one of `pools`
/// (each a NodePool's requirements), sorted by name.
pub fn allowed_types<'c>(
    catalog: &'c InstanceCatalog,
    pools: &[&[Requirement]],
) -> Result<Vec<InstanceFacts<'c>>, RequirementError> {
    for requirement in pools.iter().flat_map(|p| p.iter()) {
        requirement.validate()?;
    }
    let mut allowed = Vec::new();
    for (name, limits) in catalog.iter() {
        let attributes = Attributes::of(name, &limits);
        let mut any_pool = false;
        for pool in pools {
            let mut all = true;
            for requirement in *pool {
                if !requirement.allows(&attributes)? {
                    all = false;
                    break;
                }
            }
            if all {
                any_pool = true;
                break;
            }
        }
        if any_pool {
            allowed.push(InstanceFacts {
                instance_type: name,
                limits,
            });
        }
    }
    Ok(allowed)
}

/// The maxPods an EC2NodeClass should carry for the instance types its NodePools may launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClassChoice {
    /// The policy's maxPods for the smallest allowed type: the value to write.
    pub max_pods: u32,
    /// The allowed type that bounds it.
    pub bounding_type: String,
    /// The allowed type with the highest maxPods of its own, and that value.
    pub largest_type: String,
    pub largest_max_pods: u32,
    /// Allowed types.
    pub allowed: usize,
    /// The lowest IP limit over the allowed types (`None` in IPv6 clusters) and its type: a
    /// value above it leaves pods stuck in ContainerCreating there.
    pub lowest_ip_limit: Option<(String, u32)>,
    /// Whether prefix delegation was assumed on.
    pub prefix_delegation: bool,
}

impl NodeClassChoice {
    /// Pods each node of the largest allowed type cannot run because of the shared value.
    pub fn pods_lost_on_largest(&self) -> u32 {
        self.largest_max_pods.saturating_sub(self.max_pods)
    }

    /// The spread is large: the largest allowed type runs at half its pods or less.
    pub fn spread_is_large(&self) -> bool {
        self.largest_max_pods >= self.max_pods.saturating_mul(2) && self.pods_lost_on_largest() > 0
    }
}

/// The policy's maxPods (`request`; its prefix delegation set to what aws-node really has) for
/// every allowed type, and the minimum.
pub fn choose_max_pods(
    request: &TuningRequest,
    allowed: &[InstanceFacts<'_>],
) -> Result<NodeClassChoice, TuningError> {
    let rec: Recommendation = engine::recommend(request, allowed)?;
    // Ties go to the fewest vCPUs for the bound and the most for the largest, then by name.
    let smallest = rec
        .instance_types
        .iter()
        .min_by_key(|t| (t.max_pods, t.vcpus, t.instance_type.clone()))
        .ok_or(TuningError::NoInstanceTypes)?;
    let largest = rec
        .instance_types
        .iter()
        .max_by_key(|t| {
            (
                t.max_pods,
                t.vcpus,
                std::cmp::Reverse(t.instance_type.clone()),
            )
        })
        .ok_or(TuningError::NoInstanceTypes)?;
    let lowest_ip_limit = rec
        .instance_types
        .iter()
        .filter_map(|t| {
            t.max_pods_ip_limit
                .map(|limit| (t.instance_type.clone(), limit))
        })
        .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(NodeClassChoice {
        max_pods: rec.max_pods,
        bounding_type: smallest.instance_type.clone(),
        largest_type: largest.instance_type.clone(),
        largest_max_pods: largest.max_pods,
        allowed: allowed.len(),
        lowest_ip_limit,
        prefix_delegation: rec.prefix_delegation,
    })
}

#[cfg(test)]
mod tests;
