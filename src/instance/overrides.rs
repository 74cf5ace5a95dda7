//! Reviewed overrides for instance types that `DescribeInstanceTypes` gets wrong or no longer
//! returns. Each entry names its source; keep the list sorted (a test checks) and short.
//! An override wins over the generated table. A test fails when an override merely repeats what
//! the generated table already says, so stale entries get removed.

use super::{Hypervisor, InstanceLimits};

const fn previous_generation_xen(vcpus: u32, max_enis: u32, ipv4_per_eni: u32) -> InstanceLimits {
    InstanceLimits {
        vcpus,
        max_enis,
        ipv4_per_eni,
        ipv6_per_eni: 0,
        network_cards: 1,
        hypervisor: Hypervisor::Xen,
        bare_metal: false,
    }
}

const fn metal(vcpus: u32, max_enis: u32, ipv4_per_eni: u32) -> InstanceLimits {
    InstanceLimits::metal(vcpus, max_enis, ipv4_per_eni)
}

const fn nitro(vcpus: u32, max_enis: u32, ipv4_per_eni: u32) -> InstanceLimits {
    InstanceLimits::nitro(vcpus, max_enis, ipv4_per_eni)
}

/// Types listed in amazon-vpc-cni-k8s `misc/eni-max-pods.txt` that the generated table lacks:
/// previous-generation and High Memory types `DescribeInstanceTypes` no longer returns, and types
/// missing from the answer the table was generated from. ENI and IP limits are the ones that
/// file's max-pods values imply (`enis * (ips - 1) + 2`); vCPUs from the EC2 instance-type pages.
/// `bmn-sf1.metal` is left out: its vCPU count is not published.
pub(super) static OVERRIDES: &[(&str, InstanceLimits)] = &[
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("c5a.metal", metal(96, 15, 50)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("c5ad.metal", metal(96, 15, 50)),
    // eni-max-pods.txt: 234 = 8 * (30 - 1) + 2.
    ("cr1.8xlarge", previous_generation_xen(32, 8, 30)),
    // eni-max-pods.txt: 234 = 8 * (30 - 1) + 2.
    ("hs1.8xlarge", previous_generation_xen(16, 8, 30)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("i3.metal", metal(72, 15, 50)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("u-12tb1.112xlarge", nitro(448, 15, 50)),
    // eni-max-pods.txt: 147 = 5 * (30 - 1) + 2.
    ("u-12tb1.metal", metal(448, 5, 30)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("u-18tb1.metal", metal(448, 15, 50)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("u-24tb1.metal", metal(448, 15, 50)),
    // eni-max-pods.txt: 147 = 5 * (30 - 1) + 2.
    ("u-6tb1.metal", metal(448, 5, 30)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("u-9tb1.112xlarge", nitro(448, 15, 50)),
    // eni-max-pods.txt: 147 = 5 * (30 - 1) + 2.
    ("u-9tb1.metal", metal(448, 5, 30)),
];
