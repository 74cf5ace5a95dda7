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

/// A Nitro type with several network cards: `max_enis` is the default card's.
const fn nitro_cards(vcpus: u32, max_enis: u32, ipv4_per_eni: u32, cards: u32) -> InstanceLimits {
    InstanceLimits {
        network_cards: cards,
        ..InstanceLimits::nitro(vcpus, max_enis, ipv4_per_eni)
    }
}

/// Types listed in amazon-vpc-cni-k8s `misc/eni-max-pods.txt` ("eni-max-pods.txt" entries) that the
/// generated table lacks:
/// previous-generation and High Memory types `DescribeInstanceTypes` no longer returns, and types
/// missing from the answer the table was generated from. ENI and IP limits are the ones that
/// file's max-pods values imply (`enis * (ips - 1) + 2`); vCPUs from the EC2 instance-type pages.
/// `bmn-sf1.metal` is left out: its vCPU count is not published.
///
/// "vpc-cni" entries come from ipamd's built-in limits, amazon-vpc-cni-k8s
/// `pkg/vpc/vpc_ip_resource_limit.go` (commit b52188387f2e, 2026-08-20): ipamd reads that table
/// before asking EC2, so where it disagrees with `DescribeInstanceTypes` the node's pods follow
/// it. vCPUs from the EC2 instance-type pages. The retired f1 and p3 types it also lists are left
/// out: no region offers them; the live lookup serves them where one still does.
pub(super) static OVERRIDES: &[(&str, InstanceLimits)] = &[
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("c5a.metal", metal(96, 15, 50)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("c5ad.metal", metal(96, 15, 50)),
    // vpc-cni: 1 card, 15 ENIs x 50 IPv4, nitro (eni-max-pods 737).
    ("c7i.32xlarge", nitro(128, 15, 50)),
    // eni-max-pods.txt: 234 = 8 * (30 - 1) + 2.
    ("cr1.8xlarge", previous_generation_xen(32, 8, 30)),
    // vpc-cni: default card 0 of 4, 15 ENIs x 50 IPv4, nitro (737).
    ("dl1.24xlarge", nitro_cards(96, 15, 50, 4)),
    // vpc-cni: 8 ENIs x 30 IPv4, nitro (234).
    ("g4ad.16xlarge", nitro(64, 8, 30)),
    // vpc-cni: 2 ENIs x 4 IPv4, nitro (8).
    ("g4ad.2xlarge", nitro(8, 2, 4)),
    // vpc-cni: 3 ENIs x 10 IPv4, nitro (29).
    ("g4ad.4xlarge", nitro(16, 3, 10)),
    // vpc-cni: 4 ENIs x 15 IPv4, nitro (58).
    ("g4ad.8xlarge", nitro(32, 4, 15)),
    // vpc-cni: 2 ENIs x 4 IPv4, nitro (8).
    ("g4ad.xlarge", nitro(4, 2, 4)),
    // eni-max-pods.txt: 234 = 8 * (30 - 1) + 2.
    ("hs1.8xlarge", previous_generation_xen(16, 8, 30)),
    // vpc-cni: 1 card, 15 ENIs x 50 IPv4 (737); DescribeInstanceTypes: 2 cards, 8 ENIs (394).
    ("i7ie.48xlarge", nitro(192, 15, 50)),
    // vpc-cni: 1 card, 15 ENIs x 50 IPv4 (737); DescribeInstanceTypes: 2 cards, 8 ENIs (394).
    ("i7ie.metal-48xl", metal(192, 15, 50)),
    // vpc-cni: 1 card, 24 ENIs x 50 IPv4 (1178); DescribeInstanceTypes: 2 cards, 12 ENIs (590).
    ("i8ge.48xlarge", nitro(192, 24, 50)),
    // vpc-cni: 1 card, 24 ENIs x 50 IPv4 (1178); DescribeInstanceTypes: 2 cards, 12 ENIs (590).
    ("i8ge.metal-48xl", metal(192, 24, 50)),
    // eni-max-pods.txt: 147 = 5 * (30 - 1) + 2.
    ("u-12tb1.metal", metal(448, 5, 30)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("u-18tb1.metal", metal(448, 15, 50)),
    // eni-max-pods.txt: 737 = 15 * (50 - 1) + 2.
    ("u-24tb1.metal", metal(448, 15, 50)),
    // eni-max-pods.txt: 147 = 5 * (30 - 1) + 2.
    ("u-6tb1.metal", metal(448, 5, 30)),
    // eni-max-pods.txt: 147 = 5 * (30 - 1) + 2.
    ("u-9tb1.metal", metal(448, 5, 30)),
];
