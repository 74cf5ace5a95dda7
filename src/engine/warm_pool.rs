//! Warm-pool settings for the aws-node env: named profiles, explicit values, and validation.
//!
//! Profiles (all numbers are strings in the aws-node env):
//!
//! | profile | prefix delegation on | prefix delegation off |
//! |---|---|---|
//! | `balanced` | `WARM_PREFIX_TARGET=1` | `WARM_ENI_TARGET=1` |
//! | `conserve-ips` | `WARM_IP_TARGET=b`, `MINIMUM_IP_TARGET=16` | `WARM_IP_TARGET=b`, `MINIMUM_IP_TARGET=m` |
//! | `fast-scaling` | `WARM_PREFIX_TARGET=2` | `WARM_ENI_TARGET=2` |
//!
//! - `balanced` is the VPC CNI default and the EKS best-practices recommendation: one spare
//!   prefix (16 IPs) or one spare ENI.
//! - `conserve-ips` is for subnets where IPs are scarce. `m` is the smallest number of pod IPs one
//!   ENI of the group's types carries (`IPv4PerENI - 1`): the node fills its primary ENI before
//!   attaching a second one, and no whole spare ENI sits idle. With prefixes the floor is one /28
//!   (16 IPs), the smallest unit ipamd can allocate. `b` (the burst a node absorbs without an EC2
//!   call) is half of `m` rounded up, at least 2 (lower values mean one EC2 call per pod, and
//!   throttling in large fleets) and at most 8 (so at most 8 IPs per node sit idle beyond the
//!   floor). Both stay within the group's pod capacity. No warm target is ever zero.
//! - `fast-scaling` keeps twice the default spare capacity, for bursty workloads where pod start
//!   latency matters more than subnet IPs.
//!
//! Explicit values replace the profile's value for that variable, one by one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::max_pods::IPS_PER_PREFIX;

pub const ENABLE_PREFIX_DELEGATION: &str = "ENABLE_PREFIX_DELEGATION";
pub const WARM_ENI_TARGET: &str = "WARM_ENI_TARGET";
pub const WARM_IP_TARGET: &str = "WARM_IP_TARGET";
pub const MINIMUM_IP_TARGET: &str = "MINIMUM_IP_TARGET";
pub const WARM_PREFIX_TARGET: &str = "WARM_PREFIX_TARGET";

/// Every aws-node env var the engine decides.
pub const MANAGED_ENV_VARS: [&str; 5] = [
    ENABLE_PREFIX_DELEGATION,
    WARM_ENI_TARGET,
    WARM_IP_TARGET,
    MINIMUM_IP_TARGET,
    WARM_PREFIX_TARGET,
];

/// The warm-pool entries that may differ per node (`warmPool.perInstanceType`): all of
/// [`MANAGED_ENV_VARS`] but prefix delegation.
pub const PER_NODE_ENV_VARS: [&str; 4] = [
    WARM_ENI_TARGET,
    WARM_IP_TARGET,
    MINIMUM_IP_TARGET,
    WARM_PREFIX_TARGET,
];

/// The burst bounds of `conserve-ips` (see the module docs).
const CONSERVE_BURST_MIN: u32 = 2;
const CONSERVE_BURST_MAX: u32 = 8;

/// A named set of warm-pool numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarmPoolProfile {
    #[default]
    Balanced,
    ConserveIps,
    FastScaling,
}

/// Warm-pool variables; `None` means unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmPoolTargets {
    pub warm_eni_target: Option<u32>,
    pub warm_ip_target: Option<u32>,
    pub minimum_ip_target: Option<u32>,
    pub warm_prefix_target: Option<u32>,
}

impl WarmPoolTargets {
    /// `self`'s values where set, `base`'s elsewhere.
    pub fn or(self, base: Self) -> Self {
        Self {
            warm_eni_target: self.warm_eni_target.or(base.warm_eni_target),
            warm_ip_target: self.warm_ip_target.or(base.warm_ip_target),
            minimum_ip_target: self.minimum_ip_target.or(base.minimum_ip_target),
            warm_prefix_target: self.warm_prefix_target.or(base.warm_prefix_target),
        }
    }

    /// The env entries for the set variables.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            (WARM_ENI_TARGET, self.warm_eni_target),
            (WARM_IP_TARGET, self.warm_ip_target),
            (MINIMUM_IP_TARGET, self.minimum_ip_target),
            (WARM_PREFIX_TARGET, self.warm_prefix_target),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v.to_string())))
        .collect()
    }
}

/// What the user asked for: a profile plus explicit values that override it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmPoolSpec {
    pub profile: WarmPoolProfile,
    pub explicit: WarmPoolTargets,
}

/// What the profile needs to know about the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GroupShape {
    /// Smallest `IPv4PerENI - 1` over the group's types.
    pub min_pod_ips_per_eni: u32,
    /// Smallest pod IP capacity (`maxPodsIpLimit - 2`) over the group's types.
    pub min_pod_ip_capacity: u32,
}

/// The profile's numbers for this group and mode.
pub(super) fn profile_targets(
    profile: WarmPoolProfile,
    prefix_delegation: bool,
    group: GroupShape,
) -> WarmPoolTargets {
    match (profile, prefix_delegation) {
        (WarmPoolProfile::Balanced, true) => WarmPoolTargets {
            warm_prefix_target: Some(1),
            ..Default::default()
        },
        (WarmPoolProfile::Balanced, false) => WarmPoolTargets {
            warm_eni_target: Some(1),
            ..Default::default()
        },
        (WarmPoolProfile::FastScaling, true) => WarmPoolTargets {
            warm_prefix_target: Some(2),
            ..Default::default()
        },
        (WarmPoolProfile::FastScaling, false) => WarmPoolTargets {
            warm_eni_target: Some(2),
            ..Default::default()
        },
        (WarmPoolProfile::ConserveIps, prefix) => {
            let capacity = group.min_pod_ip_capacity.max(1);
            let floor = if prefix {
                IPS_PER_PREFIX
            } else {
                group.min_pod_ips_per_eni
            };
            let burst = group
                .min_pod_ips_per_eni
                .div_ceil(2)
                .clamp(CONSERVE_BURST_MIN, CONSERVE_BURST_MAX);
            WarmPoolTargets {
                warm_ip_target: Some(burst.min(capacity)),
                minimum_ip_target: Some(floor.clamp(1, capacity)),
                ..Default::default()
            }
        }
    }
}

/// A warm-pool combination that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarmPoolError {
    #[error(
        "all warm targets are zero with prefix delegation (WARM_PREFIX_TARGET=0 and no \
         WARM_IP_TARGET / MINIMUM_IP_TARGET): the VPC CNI does not support this and pods start \
         slowly; set WARM_PREFIX_TARGET to 1 or more, or set WARM_IP_TARGET"
    )]
    ZeroTargetsWithPrefixDelegation,
    #[error(
        "WARM_ENI_TARGET={value} has no effect with prefix delegation; remove it and use \
         WARM_PREFIX_TARGET or WARM_IP_TARGET instead"
    )]
    WarmEniTargetWithPrefixDelegation { value: u32 },
    #[error(
        "WARM_PREFIX_TARGET={value} has no effect without prefix delegation; remove it, or enable \
         prefix delegation"
    )]
    WarmPrefixTargetWithoutPrefixDelegation { value: u32 },
    #[error(
        "MINIMUM_IP_TARGET={value} is more than {instance_type} can hold ({capacity} pod IPs); \
         lower it to {capacity} or less"
    )]
    MinimumIpTargetTooHigh {
        value: u32,
        instance_type: String,
        capacity: u32,
    },
    #[error(
        "{name}={value} is more than {instance_type} can hold ({capacity} {unit}): every node \
         would keep that many idle and drain the subnets fleet-wide; lower it to {capacity} or \
         less"
    )]
    TargetAboveCapacity {
        name: &'static str,
        value: u32,
        instance_type: String,
        capacity: u32,
        unit: &'static str,
    },
}

/// What one instance type of a group can hold, for the bounds of the warm targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeCapacity<'a> {
    pub instance_type: &'a str,
    /// Pod IPs (the IP limit without the host-network pods).
    pub pod_ips: u32,
    /// ENIs that carry pods.
    pub pod_enis: u32,
    /// /28 prefix slots, where the type uses prefix delegation.
    pub prefix_slots: Option<u32>,
}

/// The first type of `capacities` that cannot hold `value` of a target, as an error.
fn above_capacity(
    name: &'static str,
    value: Option<u32>,
    capacities: &[TypeCapacity<'_>],
    of: impl Fn(&TypeCapacity<'_>) -> Option<u32>,
    unit: &'static str,
) -> Result<(), WarmPoolError> {
    let Some(value) = value else {
        return Ok(());
    };
    match capacities
        .iter()
        .filter_map(|c| of(c).map(|capacity| (c.instance_type, capacity)))
        .filter(|(_, capacity)| value > *capacity)
        .min_by_key(|(_, capacity)| *capacity)
    {
        Some((instance_type, capacity)) => Err(WarmPoolError::TargetAboveCapacity {
            name,
            value,
            instance_type: instance_type.to_owned(),
            capacity,
            unit,
        }),
        None => Ok(()),
    }
}

/// Merges explicit values over the profile and checks the result. `capacities` are
/// `(instance type, pod IP capacity)` for every type in the group.
pub(super) fn resolve(
    spec: &WarmPoolSpec,
    prefix_delegation: bool,
    group: GroupShape,
    capacities: &[TypeCapacity<'_>],
    warnings: &mut Vec<String>,
) -> Result<WarmPoolTargets, WarmPoolError> {
    let targets = spec
        .explicit
        .or(profile_targets(spec.profile, prefix_delegation, group));

    if prefix_delegation {
        if let Some(value) = spec.explicit.warm_eni_target {
            return Err(WarmPoolError::WarmEniTargetWithPrefixDelegation { value });
        }
        let nonzero = |v: Option<u32>| v.is_some_and(|v| v > 0);
        if !nonzero(targets.warm_prefix_target)
            && !nonzero(targets.warm_ip_target)
            && !nonzero(targets.minimum_ip_target)
        {
            return Err(WarmPoolError::ZeroTargetsWithPrefixDelegation);
        }
    } else {
        if let Some(value) = spec.explicit.warm_prefix_target {
            return Err(WarmPoolError::WarmPrefixTargetWithoutPrefixDelegation { value });
        }
        if targets.warm_eni_target == Some(0)
            && targets.warm_ip_target.unwrap_or(0) == 0
            && targets.minimum_ip_target.unwrap_or(0) == 0
        {
            warnings.push(
                "WARM_ENI_TARGET=0 with no WARM_IP_TARGET keeps no spare IPs: every new pod waits \
                 for an EC2 call"
                    .to_owned(),
            );
        }
    }

    // A typo in a warm target drains subnets on every node: no explicit value may exceed what
    // a type of the group can hold (the profiles' values are computed within it).
    above_capacity(
        "WARM_IP_TARGET",
        spec.explicit.warm_ip_target,
        capacities,
        |c| Some(c.pod_ips),
        "pod IPs",
    )?;
    above_capacity(
        "WARM_ENI_TARGET",
        spec.explicit.warm_eni_target,
        capacities,
        |c| Some(c.pod_enis),
        "ENIs for pods",
    )?;
    above_capacity(
        "WARM_PREFIX_TARGET",
        spec.explicit.warm_prefix_target,
        capacities,
        |c| c.prefix_slots,
        "/28 prefixes",
    )?;
    if let Some(value) = targets.minimum_ip_target {
        if let Some(c) = capacities
            .iter()
            .filter(|c| value > c.pod_ips)
            .min_by_key(|c| c.pod_ips)
        {
            return Err(WarmPoolError::MinimumIpTargetTooHigh {
                value,
                instance_type: c.instance_type.to_owned(),
                capacity: c.pod_ips,
            });
        }
        if targets.warm_ip_target.is_none() {
            warnings.push(
                "MINIMUM_IP_TARGET is set without WARM_IP_TARGET: the VPC CNI docs pair them; set \
                 WARM_IP_TARGET too"
                    .to_owned(),
            );
        }
    }
    if targets.warm_ip_target == Some(1) {
        warnings.push(
            "WARM_IP_TARGET=1 makes ipamd call EC2 for almost every pod; expect throttling in \
             large fleets"
                .to_owned(),
        );
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: GroupShape = GroupShape {
        min_pod_ips_per_eni: 5,
        min_pod_ip_capacity: 15,
    };
    const LARGE: GroupShape = GroupShape {
        min_pod_ips_per_eni: 49,
        min_pod_ip_capacity: 735,
    };
    const TINY: GroupShape = GroupShape {
        min_pod_ips_per_eni: 1,
        min_pod_ip_capacity: 2,
    };

    fn targets(
        eni: Option<u32>,
        ip: Option<u32>,
        min: Option<u32>,
        prefix: Option<u32>,
    ) -> WarmPoolTargets {
        WarmPoolTargets {
            warm_eni_target: eni,
            warm_ip_target: ip,
            minimum_ip_target: min,
            warm_prefix_target: prefix,
        }
    }

    #[test]
    fn profile_table() {
        use WarmPoolProfile::*;
        let cases = [
            (Balanced, true, SMALL, targets(None, None, None, Some(1))),
            (Balanced, false, SMALL, targets(Some(1), None, None, None)),
            (FastScaling, true, SMALL, targets(None, None, None, Some(2))),
            (
                FastScaling,
                false,
                LARGE,
                targets(Some(2), None, None, None),
            ),
            (
                ConserveIps,
                false,
                SMALL,
                targets(None, Some(3), Some(5), None),
            ),
            (
                ConserveIps,
                false,
                LARGE,
                targets(None, Some(8), Some(49), None),
            ),
            (
                ConserveIps,
                true,
                SMALL,
                targets(None, Some(3), Some(15), None),
            ),
            (
                ConserveIps,
                true,
                LARGE,
                targets(None, Some(8), Some(16), None),
            ),
            (
                ConserveIps,
                false,
                TINY,
                targets(None, Some(2), Some(1), None),
            ),
        ];
        for (profile, prefix, group, want) in cases {
            assert_eq!(
                profile_targets(profile, prefix, group),
                want,
                "{profile:?} prefix={prefix} {group:?}"
            );
        }
    }

    /// A type's capacity as the engine computes it: 3 ENIs of `ips` addresses, secondary IPs
    /// or prefixes.
    fn cap(instance_type: &str, pod_ips: u32, prefixes: bool) -> TypeCapacity<'_> {
        TypeCapacity {
            instance_type,
            pod_ips,
            pod_enis: 3,
            prefix_slots: prefixes.then_some(pod_ips / 16),
        }
    }

    #[test]
    fn explicit_values_override_the_profile_one_by_one() {
        let spec = WarmPoolSpec {
            profile: WarmPoolProfile::ConserveIps,
            explicit: targets(None, Some(4), None, None),
        };
        let mut warnings = Vec::new();
        let got = resolve(
            &spec,
            false,
            SMALL,
            &[cap("t3.medium", 15, false)],
            &mut warnings,
        );
        assert_eq!(got, Ok(targets(None, Some(4), Some(5), None)));
    }

    #[test]
    fn rejects_combinations_that_cannot_work() {
        let caps = [cap("t3.medium", 15, false), cap("m5.large", 27, false)];
        let caps_pd = [cap("t3.medium", 240, true), cap("m5.large", 432, true)];
        let cases: [(WarmPoolTargets, bool, &str); 8] = [
            (
                targets(None, None, None, Some(0)),
                true,
                "all warm targets are zero",
            ),
            (
                targets(Some(1), None, None, None),
                true,
                "WARM_ENI_TARGET=1 has no effect",
            ),
            (
                targets(None, None, None, Some(1)),
                false,
                "WARM_PREFIX_TARGET=1 has no effect",
            ),
            (
                targets(None, Some(2), Some(20), None),
                false,
                "MINIMUM_IP_TARGET=20 is more than t3.medium can hold (15 pod IPs)",
            ),
            (
                targets(None, Some(0), Some(0), Some(0)),
                true,
                "all warm targets are zero",
            ),
            // Typos that would drain subnets fleet-wide.
            (
                targets(None, Some(500), None, None),
                false,
                "WARM_IP_TARGET=500 is more than t3.medium can hold (15 pod IPs)",
            ),
            (
                targets(Some(40), None, None, None),
                false,
                "WARM_ENI_TARGET=40 is more than t3.medium can hold (3 ENIs for pods)",
            ),
            (
                targets(None, None, None, Some(100)),
                true,
                "WARM_PREFIX_TARGET=100 is more than t3.medium can hold (15 /28 prefixes)",
            ),
        ];
        for (explicit, prefix, want) in cases {
            let spec = WarmPoolSpec {
                profile: WarmPoolProfile::Balanced,
                explicit,
            };
            let caps = if prefix { &caps_pd[..] } else { &caps[..] };
            let err = resolve(&spec, prefix, SMALL, caps, &mut Vec::new())
                .expect_err("combination must be rejected");
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want:?}"
            );
        }
    }

    #[test]
    fn zero_prefix_target_is_fine_with_an_ip_target() {
        let spec = WarmPoolSpec {
            profile: WarmPoolProfile::Balanced,
            explicit: targets(None, Some(5), Some(10), Some(0)),
        };
        let got = resolve(
            &spec,
            true,
            SMALL,
            &[cap("t3.medium", 240, true)],
            &mut Vec::new(),
        );
        assert_eq!(got, Ok(targets(None, Some(5), Some(10), Some(0))));
    }

    #[test]
    fn warns_about_minimum_without_warm_ip_target() {
        let spec = WarmPoolSpec {
            profile: WarmPoolProfile::Balanced,
            explicit: targets(None, None, Some(10), None),
        };
        let mut warnings = Vec::new();
        resolve(
            &spec,
            true,
            SMALL,
            &[cap("m5.large", 432, true)],
            &mut warnings,
        )
        .expect("valid");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("without WARM_IP_TARGET")),
            "{warnings:?}"
        );
    }
}
