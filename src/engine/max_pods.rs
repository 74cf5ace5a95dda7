//! The pod-density formulas. Each constant cites where it comes from.

use crate::instance::InstanceLimits;

/// Host-network pods every node runs that take no VPC IP: aws-node and kube-proxy. The `+ 2` in
/// the EKS formula (EKS user guide, "Amazon EC2 instance types"; amazon-vpc-cni-k8s
/// `misc/eni-max-pods.txt` header).
pub(crate) const HOST_NETWORK_SYSTEM_PODS: u32 = 2;

/// IPs in one delegated /28 prefix (VPC CNI docs, "Prefix mode for Linux").
pub(crate) const IPS_PER_PREFIX: u32 = 16;

/// EKS recommended maxPods ceilings: 110 for types with 30 vCPUs or fewer, 250 above
/// (amazon-eks-ami `max-pods-calculator.sh`, `MAX_POD_CEILING_FOR_LOW_CPU` / `_HIGH_CPU`).
pub(crate) const MAX_PODS_CEILING_LOW_CPU: u32 = 110;
pub(crate) const MAX_PODS_CEILING_HIGH_CPU: u32 = 250;
pub(crate) const HIGH_CPU_THRESHOLD_VCPUS: u32 = 30;

/// kube-reserved memory on EKS AMIs: `11 * maxPods + 255` MiB (amazon-eks-ami bootstrap and
/// nodeadm `getMemoryMebibytesToReserve`).
pub(crate) const KUBE_RESERVED_MIB_PER_POD: u32 = 11;
pub(crate) const KUBE_RESERVED_MIB_BASE: u32 = 255;

/// Cluster options that change how many ENIs can carry pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EniOptions {
    /// `MAX_ENI`: clamps the ENI count before anything is subtracted.
    pub max_eni: Option<u32>,
    /// `AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true`: the primary ENI carries no pods.
    pub custom_networking: bool,
    /// `ENABLE_POD_ENI=true`: the trunk ENI takes one ENI slot.
    pub security_groups_for_pods: bool,
}

/// ENIs that carry pod IPs: the default card's ENIs, clamped by `MAX_ENI`, minus one for custom
/// networking, minus one for the trunk ENI. Never below zero.
pub(crate) fn pod_enis(limits: &InstanceLimits, options: &EniOptions) -> u32 {
    let mut enis = limits.max_enis;
    if let Some(max_eni) = options.max_eni {
        enis = enis.min(max_eni);
    }
    if options.custom_networking {
        enis = enis.saturating_sub(1);
    }
    if options.security_groups_for_pods {
        enis = enis.saturating_sub(1);
    }
    enis
}

/// How many pods the node's IPv4 addresses can carry:
/// secondary IPs `ENIs * (IPv4PerENI - 1) + 2`; prefix delegation
/// `ENIs * ((IPv4PerENI - 1) * 16) + 2`. The first address of each ENI is the ENI's own.
pub fn max_pods_ip_limit(pod_enis: u32, ipv4_per_eni: u32, prefix_delegation: bool) -> u32 {
    let slots_per_eni = ipv4_per_eni.saturating_sub(1);
    let ips_per_slot = if prefix_delegation { IPS_PER_PREFIX } else { 1 };
    pod_enis
        .saturating_mul(slots_per_eni)
        .saturating_mul(ips_per_slot)
        .saturating_add(HOST_NETWORK_SYSTEM_PODS)
}

/// The EKS recommended ceiling for a type with `vcpus` vCPUs.
pub(crate) fn recommended_ceiling(vcpus: u32) -> u32 {
    if vcpus > HIGH_CPU_THRESHOLD_VCPUS {
        MAX_PODS_CEILING_HIGH_CPU
    } else {
        MAX_PODS_CEILING_LOW_CPU
    }
}

/// Memory (MiB) the EKS AMIs reserve for Kubernetes system daemons at a given maxPods.
pub fn kube_reserved_memory_mib(max_pods: u32) -> u32 {
    max_pods
        .saturating_mul(KUBE_RESERVED_MIB_PER_POD)
        .saturating_add(KUBE_RESERVED_MIB_BASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_limit_formula_table() {
        // (enis, ipv4 per eni, prefix, expected) — published values: EKS user guide (m5.large 29,
        // 20 with custom networking, 434 raw with prefixes), eni-max-pods.txt (t3.medium 17,
        // m5.24xlarge 737, t3.nano 4).
        let cases = [
            (3, 6, false, 17),
            (3, 10, false, 29),
            (2, 10, false, 20),
            (3, 10, true, 434),
            (15, 50, false, 737),
            (2, 2, false, 4),
            (3, 6, true, 242),
            (0, 10, false, 2),
            (0, 10, true, 2),
        ];
        for (enis, ips, prefix, want) in cases {
            assert_eq!(
                max_pods_ip_limit(enis, ips, prefix),
                want,
                "enis={enis} ips={ips} prefix={prefix}"
            );
        }
    }

    #[test]
    fn pod_enis_clamps_then_subtracts() {
        let m5_large = InstanceLimits::nitro(2, 3, 10);
        let cases = [
            (EniOptions::default(), 3),
            (
                EniOptions {
                    custom_networking: true,
                    ..Default::default()
                },
                2,
            ),
            (
                EniOptions {
                    security_groups_for_pods: true,
                    ..Default::default()
                },
                2,
            ),
            (
                EniOptions {
                    max_eni: Some(2),
                    custom_networking: true,
                    ..Default::default()
                },
                1,
            ),
            (
                EniOptions {
                    max_eni: Some(8),
                    ..Default::default()
                },
                3,
            ),
            (
                EniOptions {
                    max_eni: Some(1),
                    custom_networking: true,
                    security_groups_for_pods: true,
                },
                0,
            ),
        ];
        for (options, want) in cases {
            assert_eq!(pod_enis(&m5_large, &options), want, "{options:?}");
        }
    }

    #[test]
    fn ceiling_and_reserved_memory() {
        assert_eq!(recommended_ceiling(2), 110);
        assert_eq!(recommended_ceiling(30), 110);
        assert_eq!(recommended_ceiling(31), 250);
        assert_eq!(kube_reserved_memory_mib(110), 1465);
        assert_eq!(kube_reserved_memory_mib(17), 442);
    }
}
