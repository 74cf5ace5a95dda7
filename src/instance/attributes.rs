//! What an instance type's name and facts say about it, as Karpenter labels instance types
//! (karpenter-provider-aws `pkg/providers/instancetype/types.go`, `computeRequirements`): the
//! family and size split at the dot, the category and generation read by the pattern
//! `(^[a-z]+)(-[0-9]+tb)?([0-9]+).*\.`, the vCPUs, the hypervisor (empty on bare metal) and the
//! architecture.

use super::{Hypervisor, InstanceLimits};

/// A CPU architecture as Kubernetes names it (`kubernetes.io/arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }
}

/// An instance type's attributes, as the labels Karpenter gives its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub name: &'a str,
    /// `karpenter.k8s.aws/instance-family`: `c7g` in `c7g.large`.
    pub family: Option<&'a str>,
    /// `karpenter.k8s.aws/instance-size`: `large` in `c7g.large`.
    pub size: Option<&'a str>,
    /// `karpenter.k8s.aws/instance-category`: `c` in `c7g.large`.
    pub category: Option<&'a str>,
    /// `karpenter.k8s.aws/instance-generation`: `7` in `c7g.large`.
    pub generation: Option<&'a str>,
    /// `karpenter.k8s.aws/instance-cpu`.
    pub cpu: u32,
    /// `karpenter.k8s.aws/instance-hypervisor`: `nitro`, `xen`, or empty on bare metal.
    pub hypervisor: &'static str,
    /// `kubernetes.io/arch`; `None` where the table cannot tell (Mac instances, which EKS does
    /// not run).
    pub arch: Option<Arch>,
}

impl<'a> Attributes<'a> {
    pub fn of(name: &'a str, limits: &InstanceLimits) -> Self {
        let (family, size) = match name.split_once('.') {
            Some((family, size)) if !size.contains('.') => (Some(family), Some(size)),
            _ => (None, None),
        };
        let (category, generation) = category_and_generation(name).unzip();
        Self {
            name,
            family,
            size,
            category,
            generation,
            cpu: limits.vcpus,
            hypervisor: match limits.hypervisor {
                Hypervisor::None => "",
                other => other.as_str(),
            },
            arch: arch_of(name),
        }
    }
}

/// `(^[a-z]+)(-[0-9]+tb)?([0-9]+).*\.` on the whole name: the leading letters, then (after an
/// optional `-<n>tb`, as in `u-6tb1`) the digits.
fn category_and_generation(name: &str) -> Option<(&str, &str)> {
    if !name.contains('.') {
        return None;
    }
    let letters = name.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let category = &name[..letters];
    let mut rest = &name[letters..];
    if let Some(after_dash) = rest.strip_prefix('-') {
        let digits = after_dash.bytes().take_while(u8::is_ascii_digit).count();
        if let Some(after) = after_dash[digits..].strip_prefix("tb")
            && digits > 0
        {
            rest = after;
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| (category, &rest[..digits]))
}

/// The architecture from the name. AWS names Graviton families with a `g` among the attribute
/// letters after the generation (`c7g`, `m6gd`, `c6gn`, `x2gd`, `im4gn`, `is4gen`, `g5g`), and
/// the first Graviton family is `a1`; every other family is x86_64. Mac families are Apple
/// hardware (`None`). `tests/instance_table.rs` checks this against `DescribeInstanceTypes`'
/// `SupportedArchitectures` for every type in the table.
pub fn arch_of(name: &str) -> Option<Arch> {
    let family = name.split('.').next().unwrap_or(name);
    if family.starts_with("mac") {
        return None;
    }
    if family == "a1" {
        return Some(Arch::Arm64);
    }
    let letters = family.bytes().take_while(u8::is_ascii_lowercase).count();
    let after = &family[letters..];
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let attributes = &after[digits..];
    Some(if digits > 0 && attributes.contains('g') {
        Arch::Arm64
    } else {
        Arch::Amd64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::InstanceCatalog;

    fn attrs(name: &str) -> Attributes<'_> {
        let limits = InstanceCatalog::embedded().lookup(name).expect("known");
        Attributes::of(name, &limits)
    }

    #[test]
    fn names_split_as_karpenter_splits_them() {
        let c7g = attrs("c7g.medium");
        assert_eq!(
            (c7g.family, c7g.size, c7g.category, c7g.generation),
            (Some("c7g"), Some("medium"), Some("c"), Some("7"))
        );
        assert_eq!(c7g.arch, Some(Arch::Arm64));
        assert_eq!(c7g.hypervisor, "nitro");
        assert_eq!(c7g.cpu, 1);
        let u = attrs("u-6tb1.metal");
        assert_eq!((u.category, u.generation), (Some("u"), Some("1")));
        assert_eq!(u.hypervisor, "", "bare metal has no hypervisor");
        let inf = attrs("inf2.xlarge");
        assert_eq!((inf.category, inf.generation), (Some("inf"), Some("2")));
        assert_eq!(inf.arch, Some(Arch::Amd64));
        assert_eq!(attrs("m4.large").hypervisor, "xen");
        assert_eq!(attrs("mac2.metal").arch, None);
        assert_eq!(arch_of("is4gen.large"), Some(Arch::Arm64));
        assert_eq!(arch_of("g4ad.xlarge"), Some(Arch::Amd64));
        assert_eq!(arch_of("g5g.xlarge"), Some(Arch::Arm64));
        assert_eq!(arch_of("a1.large"), Some(Arch::Arm64));
    }
}
