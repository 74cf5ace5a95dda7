//! Instance-type facts that pod density depends on.
//!
//! The table in [`table`] is generated from EC2 `DescribeInstanceTypes` by the
//! `gen-instance-table` binary (see [`crate::codegen`]); [`overrides`] is the short, reviewed list
//! of types the API gets wrong or no longer returns. Lookups go through [`InstanceCatalog`], which
//! checks the overrides first and returns a typed [`UnknownInstanceType`] error for anything else,
//! so the controller can fall back to a live `DescribeInstanceTypes` call.
//!
//! Pure: no kube, AWS SDK or tokio imports.

pub mod attributes;
mod overrides;
#[rustfmt::skip]
mod table;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The virtualisation an instance type runs on, as `DescribeInstanceTypes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    Nitro,
    Xen,
    /// Bare-metal types: the API omits `Hypervisor`.
    None,
}

impl Hypervisor {
    /// Parses the API's `Hypervisor` string; an absent value means no hypervisor (bare metal).
    pub fn from_api(value: Option<&str>) -> Result<Self, String> {
        match value {
            Some("nitro") => Ok(Self::Nitro),
            Some("xen") => Ok(Self::Xen),
            None => Ok(Self::None),
            Some(other) => Err(format!("unknown hypervisor {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nitro => "nitro",
            Self::Xen => "xen",
            Self::None => "none",
        }
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What pod density depends on, for one instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLimits {
    /// `VCpuInfo.DefaultVCpus`.
    pub vcpus: u32,
    /// `MaximumNetworkInterfaces` of the *default* network card (`DefaultNetworkCardIndex`), the
    /// only card ipamd attaches pod ENIs to. On multi-card types (p5, trn1, c6in.32xlarge) this is
    /// far below the instance-wide total.
    pub max_enis: u32,
    /// `Ipv4AddressesPerInterface`.
    pub ipv4_per_eni: u32,
    /// `Ipv6AddressesPerInterface` (0 on types without IPv6).
    pub ipv6_per_eni: u32,
    /// `MaximumNetworkCards`.
    pub network_cards: u32,
    pub hypervisor: Hypervisor,
    /// `BareMetal`, also forced true for every `*.metal*` name.
    pub bare_metal: bool,
}

impl InstanceLimits {
    /// A single-card Nitro type with as many IPv6 as IPv4 addresses per ENI: the usual shape.
    pub const fn nitro(vcpus: u32, max_enis: u32, ipv4_per_eni: u32) -> Self {
        Self {
            vcpus,
            max_enis,
            ipv4_per_eni,
            ipv6_per_eni: ipv4_per_eni,
            network_cards: 1,
            hypervisor: Hypervisor::Nitro,
            bare_metal: false,
        }
    }

    /// The same shape on bare metal (no hypervisor).
    pub const fn metal(vcpus: u32, max_enis: u32, ipv4_per_eni: u32) -> Self {
        Self {
            hypervisor: Hypervisor::None,
            bare_metal: true,
            ..Self::nitro(vcpus, max_enis, ipv4_per_eni)
        }
    }

    /// Prefix delegation needs a Nitro instance or bare metal (VPC CNI docs, "Prefix mode for
    /// Linux"); on Xen, ipamd falls back to secondary IPs.
    pub fn supports_prefix_delegation(&self) -> bool {
        self.hypervisor == Hypervisor::Nitro || self.bare_metal
    }
}

/// Whether an instance-type name denotes a bare-metal size (`c5.metal`, `m7i.metal-24xl`).
pub fn is_metal_name(instance_type: &str) -> bool {
    instance_type
        .split_once('.')
        .is_some_and(|(_, size)| size.starts_with("metal"))
}

/// An instance type that neither the embedded table nor the override list knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instance type {instance_type:?}{}", suggestion_text(.suggestions))]
pub struct UnknownInstanceType {
    pub instance_type: String,
    /// The closest known names, best first.
    pub suggestions: Vec<String>,
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

/// Where a catalog entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FactSource {
    /// The generated table.
    Generated,
    /// The reviewed override list.
    Override,
}

/// Typed lookups over the embedded instance-type facts.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceCatalog;

impl InstanceCatalog {
    /// The catalog compiled into the binary.
    pub fn embedded() -> Self {
        Self
    }

    /// Facts for `instance_type`, overrides first.
    pub fn lookup(&self, instance_type: &str) -> Result<InstanceLimits, UnknownInstanceType> {
        self.lookup_with_source(instance_type)
            .map(|(limits, _)| limits)
            .ok_or_else(|| UnknownInstanceType {
                instance_type: instance_type.to_owned(),
                suggestions: self.closest(instance_type, 3),
            })
    }

    /// Facts and where they came from, or `None` when unknown.
    pub fn lookup_with_source(&self, instance_type: &str) -> Option<(InstanceLimits, FactSource)> {
        find(overrides::OVERRIDES, instance_type)
            .map(|limits| (limits, FactSource::Override))
            .or_else(|| find(table::GENERATED, instance_type).map(|l| (l, FactSource::Generated)))
    }

    /// Every known type name with its facts, sorted by name, overrides applied.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, InstanceLimits)> {
        let mut names: Vec<&'static str> = table::GENERATED
            .iter()
            .chain(overrides::OVERRIDES)
            .map(|(name, _)| *name)
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().filter_map(|name| {
            self.lookup_with_source(name)
                .map(|(limits, _)| (name, limits))
        })
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n` known names closest to `instance_type` (Jaro-Winkler over the whole name, with the
    /// family and size compared separately so `m5.larg` suggests `m5.large`, not `m5a.large`).
    pub(crate) fn closest(&self, instance_type: &str, n: usize) -> Vec<String> {
        let wanted = instance_type.trim().to_ascii_lowercase();
        let mut scored: Vec<(f64, &'static str)> = self
            .iter()
            .map(|(name, _)| (strsim::jaro_winkler(&wanted, name), name))
            .filter(|(score, _)| *score > 0.75)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored
            .into_iter()
            .take(n)
            .map(|(_, name)| name.to_owned())
            .collect()
    }

    /// The generated table alone, without overrides (for invariant tests and the generator).
    pub fn generated_entries(&self) -> &'static [(&'static str, InstanceLimits)] {
        table::GENERATED
    }

    /// The reviewed overrides alone.
    pub fn override_entries(&self) -> &'static [(&'static str, InstanceLimits)] {
        overrides::OVERRIDES
    }
}

fn find(entries: &[(&str, InstanceLimits)], instance_type: &str) -> Option<InstanceLimits> {
    entries
        .binary_search_by(|(name, _)| (*name).cmp(instance_type))
        .ok()
        .map(|index| entries[index].1)
}
