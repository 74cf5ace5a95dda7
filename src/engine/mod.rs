//! The tuning engine: given instance facts and a tuning request, the recommended aws-node env
//! and kubelet maxPods for a group of instance types.
//!
//! Pure: no kube, AWS SDK or tokio imports. It takes plain facts and returns plain values, so
//! the CLI and the controller give the same answers.

pub mod cni_version;
pub mod max_pods;
pub mod warm_pool;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use cni_version::{CniVersion, CniVersionError};
pub use max_pods::EniOptions;
pub use warm_pool::{WarmPoolError, WarmPoolProfile, WarmPoolSpec, WarmPoolTargets};

use crate::instance::{Hypervisor, InstanceLimits};
use max_pods::{kube_reserved_memory_mib, max_pods_ip_limit, pod_enis, recommended_ceiling};
use warm_pool::{ENABLE_PREFIX_DELEGATION, GroupShape};

/// One change of an aws-node env entry (on the DaemonSet, or in the EKS add-on's
/// `configurationValues.env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The old value was set by this operator before and someone changed it: a drift repair.
    pub drift: bool,
}

impl EnvChange {
    /// `A: x -> y, B: (unset) -> z`, for conditions, Events and logs.
    pub fn join<'a>(changes: impl IntoIterator<Item = &'a EnvChange>) -> String {
        changes
            .into_iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
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

/// `ENABLE_PREFIX_DELEGATION` as the user asks for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixDelegationMode {
    /// On when the CNI supports it and it raises maxPods for at least one Nitro type in the group.
    #[default]
    Auto,
    Enabled,
    Disabled,
}

/// The cluster's IP family (fixed at cluster creation).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    #[default]
    Ipv4,
    Ipv6,
}

/// How kubelet maxPods is chosen per instance type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MaxPodsPolicy {
    /// The EKS recommended value: the IP limit, capped at 110 (<= 30 vCPUs) or 250.
    #[default]
    Recommended,
    /// As many pods as the node's IPs carry, with no vCPU-based cap.
    IpLimit,
    /// One value for every type; rejected where the IPs cannot carry it.
    Fixed(u32),
}

/// Everything the engine needs besides the instance facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuningRequest {
    pub prefix_delegation: PrefixDelegationMode,
    pub ip_family: IpFamily,
    pub cni_version: CniVersion,
    pub eni: EniOptions,
    pub warm_pool: WarmPoolSpec,
    pub max_pods: MaxPodsPolicy,
    /// An upper bound applied after the policy.
    pub max_pods_ceiling: Option<u32>,
}

impl Default for TuningRequest {
    fn default() -> Self {
        Self {
            prefix_delegation: PrefixDelegationMode::Auto,
            ip_family: IpFamily::Ipv4,
            cni_version: CniVersion::NEWEST_KNOWN,
            eni: EniOptions::default(),
            warm_pool: WarmPoolSpec::default(),
            max_pods: MaxPodsPolicy::Recommended,
            max_pods_ceiling: None,
        }
    }
}

/// One instance type of the group, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceFacts<'a> {
    pub instance_type: &'a str,
    pub limits: InstanceLimits,
}

/// The answer for one instance type. Field names are a JSON contract (`recommend -o json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecommendation {
    pub instance_type: String,
    pub vcpus: u32,
    /// Max ENIs of the default network card.
    pub enis: u32,
    /// ENIs that carry pods after `MAX_ENI`, custom networking and the trunk ENI.
    pub pod_enis: u32,
    pub ipv4_per_eni: u32,
    pub hypervisor: Hypervisor,
    pub bare_metal: bool,
    /// Nitro or bare metal: ipamd can delegate prefixes here.
    pub prefix_delegation_capable: bool,
    /// Whether this type's nodes actually get prefixes (false on Xen types even when the cluster
    /// enables prefix delegation: ipamd falls back to secondary IPs there).
    pub prefix_delegation: bool,
    /// Pods the node's IPv4 addresses carry; `null` in IPv6 clusters, where IPs do not limit.
    pub max_pods_ip_limit: Option<u32>,
    pub max_pods: u32,
    #[serde(rename = "kubeReservedMemoryMiB")]
    pub kube_reserved_memory_mib: u32,
    /// `--per-instance-type`: the warm env this type's aws-node pods would start with
    /// (`warmPool.perInstanceType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_env: Option<BTreeMap<String, String>>,
}

/// The answer for a group of instance types (one launch template, one aws-node env).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// `ENABLE_PREFIX_DELEGATION` for the cluster.
    pub prefix_delegation: bool,
    pub ip_family: IpFamily,
    pub cni_version: CniVersion,
    /// The group's maxPods: the minimum over its types.
    pub max_pods: u32,
    #[serde(rename = "kubeReservedMemoryMiB")]
    pub kube_reserved_memory_mib: u32,
    /// The aws-node env entries to set.
    pub env: BTreeMap<String, String>,
    pub instance_types: Vec<InstanceRecommendation>,
    /// Things that work but deserve a look.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A request that cannot be satisfied. Messages name the setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TuningError {
    #[error("no instance types given: name at least one")]
    NoInstanceTypes,
    #[error("MAX_ENI must be 1 or more (got 0)")]
    ZeroMaxEni,
    #[error(
        "prefix delegation needs VPC CNI {required} or later, but the CNI is {found}: upgrade the \
         vpc-cni add-on, or set prefix delegation to auto or disabled"
    )]
    PrefixDelegationUnsupportedCni {
        found: CniVersion,
        required: CniVersion,
    },
    #[error(
        "IPv6 clusters need VPC CNI {required} or later, but the CNI is {found}: upgrade the \
         vpc-cni add-on"
    )]
    Ipv6UnsupportedCni {
        found: CniVersion,
        required: CniVersion,
    },
    #[error(
        "IPv6 clusters always use prefix delegation; prefix delegation cannot be disabled: set it \
         to auto or enabled"
    )]
    Ipv6RequiresPrefixDelegation,
    #[error(
        "{instance_type} ({hypervisor}) cannot run in an IPv6 cluster: IPv6 needs prefix \
         delegation, which needs a Nitro or bare-metal instance type; pick a Nitro type"
    )]
    Ipv6UnsupportedInstanceType {
        instance_type: String,
        hypervisor: Hypervisor,
    },
    #[error(
        "maxPods {value} is more than the {ip_limit} pods the IPs of {instance_type} can carry: \
         pods would be stuck in ContainerCreating; lower it to {ip_limit} or less{advice}"
    )]
    FixedMaxPodsAboveIpLimit {
        value: u32,
        instance_type: String,
        ip_limit: u32,
        /// What else would help under the settings in effect (empty: nothing else does).
        advice: String,
    },
    #[error("maxPods must be 1 or more (got 0)")]
    ZeroMaxPods,
    #[error(transparent)]
    WarmPool(#[from] WarmPoolError),
}

/// Per-type result before the group decisions.
struct TypePlan {
    ip_limit: Option<u32>,
    max_pods: u32,
}

/// The maxPods the policy gives for one type, given its IP limit (`None`: IPs do not limit).
fn policy_max_pods(request: &TuningRequest, vcpus: u32, ip_limit: Option<u32>) -> u32 {
    let target = match request.max_pods {
        MaxPodsPolicy::Recommended => recommended_ceiling(vcpus),
        MaxPodsPolicy::IpLimit => ip_limit.unwrap_or_else(|| recommended_ceiling(vcpus)),
        MaxPodsPolicy::Fixed(value) => value,
    };
    let bounded = match ip_limit {
        Some(limit) => target.min(limit),
        None => target,
    };
    match request.max_pods_ceiling {
        Some(ceiling) => bounded.min(ceiling),
        None => bounded,
    }
}

fn plan_type(request: &TuningRequest, facts: &InstanceFacts<'_>, prefix: bool) -> TypePlan {
    let ip_limit = match request.ip_family {
        IpFamily::Ipv6 => None,
        IpFamily::Ipv4 => Some(max_pods_ip_limit(
            pod_enis(&facts.limits, &request.eni),
            facts.limits.ipv4_per_eni,
            prefix,
        )),
    };
    TypePlan {
        ip_limit,
        max_pods: policy_max_pods(request, facts.limits.vcpus, ip_limit),
    }
}

/// For a fixed maxPods above a type's IP limit: whether prefix delegation would help, said only
/// where it is not already on and could be (a Nitro type, a CNI that has it), with the limit it
/// would give.
fn above_ip_limit_advice(
    request: &TuningRequest,
    facts: &InstanceFacts<'_>,
    prefix_on: bool,
    value: u32,
) -> String {
    let name = facts.instance_type;
    if prefix_on {
        // Already delegating prefixes: nothing but a lower value helps.
        return String::new();
    }
    if !facts.limits.supports_prefix_delegation() {
        return format!(
            " ({name} runs on {}, where prefix delegation does not work)",
            facts.limits.hypervisor
        );
    }
    let Some(with_prefixes) = plan_type(request, facts, true).ip_limit else {
        return String::new();
    };
    let how = if request.cni_version.supports_prefix_delegation() {
        "enable prefix delegation (--prefix-delegation enabled; in a policy, prefixDelegation: \
         Enabled)"
            .to_owned()
    } else {
        format!(
            "upgrade the VPC CNI to {} or later and enable prefix delegation",
            CniVersion::PREFIX_DELEGATION
        )
    };
    if with_prefixes >= value {
        format!(", or {how}: {name} then carries {with_prefixes}")
    } else {
        format!(
            " (with prefix delegation {name} carries {with_prefixes}, still fewer than {value})"
        )
    }
}

/// Decides `ENABLE_PREFIX_DELEGATION` for the group.
fn decide_prefix_delegation(
    request: &TuningRequest,
    types: &[InstanceFacts<'_>],
) -> Result<bool, TuningError> {
    let cni = request.cni_version;
    if request.ip_family == IpFamily::Ipv6 {
        if request.prefix_delegation == PrefixDelegationMode::Disabled {
            return Err(TuningError::Ipv6RequiresPrefixDelegation);
        }
        if !cni.supports_ipv6() {
            return Err(TuningError::Ipv6UnsupportedCni {
                found: cni,
                required: CniVersion::IPV6,
            });
        }
        if let Some(facts) = types
            .iter()
            .find(|f| !f.limits.supports_prefix_delegation())
        {
            return Err(TuningError::Ipv6UnsupportedInstanceType {
                instance_type: facts.instance_type.to_owned(),
                hypervisor: facts.limits.hypervisor,
            });
        }
        return Ok(true);
    }
    match request.prefix_delegation {
        PrefixDelegationMode::Disabled => Ok(false),
        PrefixDelegationMode::Enabled if !cni.supports_prefix_delegation() => {
            Err(TuningError::PrefixDelegationUnsupportedCni {
                found: cni,
                required: CniVersion::PREFIX_DELEGATION,
            })
        }
        PrefixDelegationMode::Enabled => Ok(true),
        PrefixDelegationMode::Auto => Ok(cni.supports_prefix_delegation()
            && types.iter().any(|facts| {
                facts.limits.supports_prefix_delegation()
                    && plan_type(request, facts, true).max_pods
                        > plan_type(request, facts, false).max_pods
            })),
    }
}

/// The aws-node env of a group: prefix delegation and the warm-pool targets.
fn group_env(
    request: &TuningRequest,
    types: &[InstanceFacts<'_>],
    prefix_delegation: bool,
    instance_types: &[InstanceRecommendation],
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, TuningError> {
    let mut env = BTreeMap::new();
    env.insert(
        ENABLE_PREFIX_DELEGATION.to_owned(),
        prefix_delegation.to_string(),
    );
    if request.ip_family == IpFamily::Ipv4 {
        let capacities: Vec<warm_pool::TypeCapacity<'_>> = instance_types
            .iter()
            .map(|t| warm_pool::TypeCapacity {
                instance_type: t.instance_type.as_str(),
                pod_ips: t
                    .max_pods_ip_limit
                    .unwrap_or_default()
                    .saturating_sub(max_pods::HOST_NETWORK_SYSTEM_PODS),
                pod_enis: t.pod_enis,
                prefix_slots: t
                    .prefix_delegation
                    .then(|| t.pod_enis * t.ipv4_per_eni.saturating_sub(1)),
            })
            .collect();
        let shape = GroupShape {
            min_pod_ips_per_eni: types
                .iter()
                .map(|f| f.limits.ipv4_per_eni.saturating_sub(1))
                .min()
                .unwrap_or_default(),
            min_pod_ip_capacity: capacities
                .iter()
                .map(|c| c.pod_ips)
                .min()
                .unwrap_or_default(),
        };
        let targets = warm_pool::resolve(
            &request.warm_pool,
            prefix_delegation,
            shape,
            &capacities,
            warnings,
        )?;
        env.extend(targets.env());
    } else if request.warm_pool.explicit != WarmPoolTargets::default() {
        warnings.push(
            "warm-pool targets are ignored in IPv6 clusters (each ENI gets a /80 prefix); they \
             were not set"
                .to_owned(),
        );
    }
    Ok(env)
}

/// The warm-pool env a node of one instance type should start aws-node with, in a fleet whose
/// `ENABLE_PREFIX_DELEGATION` is `prefix_delegation` (decided for the whole fleet, never per
/// node): the group rules for a group of that one type, with `explicit` (per-type values) over
/// the request's. Only the `WARM_*` / `MINIMUM_IP_TARGET` entries.
pub fn warm_env_for_type(
    request: &TuningRequest,
    facts: &InstanceFacts<'_>,
    prefix_delegation: bool,
    explicit: Option<&WarmPoolTargets>,
) -> Result<BTreeMap<String, String>, TuningError> {
    let mut request = request.clone();
    request.prefix_delegation = if prefix_delegation {
        PrefixDelegationMode::Enabled
    } else {
        PrefixDelegationMode::Disabled
    };
    if let Some(explicit) = explicit {
        request.warm_pool.explicit = explicit.or(request.warm_pool.explicit);
    }
    let mut env = recommend(&request, std::slice::from_ref(facts))?.env;
    env.remove(ENABLE_PREFIX_DELEGATION);
    Ok(env)
}

/// Recommends the aws-node env and maxPods for a group of instance types.
pub fn recommend(
    request: &TuningRequest,
    types: &[InstanceFacts<'_>],
) -> Result<Recommendation, TuningError> {
    if types.is_empty() {
        return Err(TuningError::NoInstanceTypes);
    }
    if request.eni.max_eni == Some(0) {
        return Err(TuningError::ZeroMaxEni);
    }
    if matches!(request.max_pods, MaxPodsPolicy::Fixed(0)) || request.max_pods_ceiling == Some(0) {
        return Err(TuningError::ZeroMaxPods);
    }

    let prefix_delegation = decide_prefix_delegation(request, types)?;
    let mut warnings = Vec::new();
    let mut instance_types = Vec::with_capacity(types.len());
    for facts in types {
        let limits = &facts.limits;
        let capable = limits.supports_prefix_delegation();
        let effective_prefix = prefix_delegation && capable;
        let plan = plan_type(request, facts, effective_prefix);
        let enis_for_pods = pod_enis(limits, &request.eni);

        if let (MaxPodsPolicy::Fixed(value), Some(ip_limit)) = (request.max_pods, plan.ip_limit)
            && value > ip_limit
        {
            return Err(TuningError::FixedMaxPodsAboveIpLimit {
                value,
                instance_type: facts.instance_type.to_owned(),
                ip_limit,
                advice: above_ip_limit_advice(request, facts, effective_prefix, value),
            });
        }
        if prefix_delegation && !capable {
            warnings.push(format!(
                "{} ({}) cannot use prefix delegation: ipamd falls back to secondary IPs there, \
                 so its nodes carry at most {} pods",
                facts.instance_type, limits.hypervisor, plan.max_pods
            ));
        }
        if request.ip_family == IpFamily::Ipv4 && enis_for_pods == 0 {
            warnings.push(format!(
                "{} has no ENI left for pods with these options (MAX_ENI, custom networking, \
                 security groups for pods): only host-network pods fit",
                facts.instance_type
            ));
        }
        instance_types.push(InstanceRecommendation {
            instance_type: facts.instance_type.to_owned(),
            vcpus: limits.vcpus,
            enis: limits.max_enis,
            pod_enis: enis_for_pods,
            ipv4_per_eni: limits.ipv4_per_eni,
            hypervisor: limits.hypervisor,
            bare_metal: limits.bare_metal,
            prefix_delegation_capable: capable,
            prefix_delegation: effective_prefix,
            max_pods_ip_limit: plan.ip_limit,
            max_pods: plan.max_pods,
            kube_reserved_memory_mib: kube_reserved_memory_mib(plan.max_pods),
            warm_env: None,
        });
    }

    let group_max_pods = instance_types
        .iter()
        .map(|t| t.max_pods)
        .min()
        .unwrap_or_default();

    let env = group_env(
        request,
        types,
        prefix_delegation,
        &instance_types,
        &mut warnings,
    )?;

    Ok(Recommendation {
        prefix_delegation,
        ip_family: request.ip_family,
        cni_version: request.cni_version,
        max_pods: group_max_pods,
        kube_reserved_memory_mib: kube_reserved_memory_mib(group_max_pods),
        env,
        instance_types,
        warnings,
    })
}

#[cfg(test)]
mod tests;
