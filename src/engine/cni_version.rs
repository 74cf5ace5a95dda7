//! VPC CNI versions, as given on the command line or read from the aws-node image tag.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A VPC CNI release, `major.minor.patch`. Build suffixes (`-eksbuild.1`) are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// Why a version string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniVersionError {
    #[error(
        "{input:?} is not a VPC CNI version: expected MAJOR.MINOR.PATCH such as 1.19.2 or v1.19.2-eksbuild.1"
    )]
    Malformed { input: String },
    #[error("image {image:?} has no version tag: expected ...amazon-k8s-cni:vMAJOR.MINOR.PATCH")]
    NoTag { image: String },
}

impl CniVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Prefix delegation arrived in VPC CNI 1.9.0 (amazon-vpc-cni-k8s CHANGELOG, v1.9.0).
    pub(crate) const PREFIX_DELEGATION: Self = Self::new(1, 9, 0);

    /// IPv6 clusters need VPC CNI 1.10.1 or later (EKS user guide, "IPv6 addresses for clusters,
    /// Pods, and services").
    pub(crate) const IPV6: Self = Self::new(1, 10, 1);

    /// The newest release this build knows (amazon-vpc-cni-k8s tag v1.23.0, 2026-07-31; its
    /// ipamd gRPC moved to a Unix socket, which changes nothing the operator reads). The CLI's
    /// default `--cni-version`; bump it together with the instance table.
    pub(crate) const NEWEST_KNOWN: Self = Self::new(1, 23, 0);

    pub fn supports_prefix_delegation(self) -> bool {
        self >= Self::PREFIX_DELEGATION
    }

    pub(crate) fn supports_ipv6(self) -> bool {
        self >= Self::IPV6
    }

    /// Reads the version from a container image reference such as
    /// `602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1`.
    /// A digest (`@sha256:...`) is ignored; a registry port is not mistaken for a tag.
    pub fn from_image(image: &str) -> Result<Self, CniVersionError> {
        let without_digest = image.split('@').next().unwrap_or(image);
        let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let tag = last_segment
            .split_once(':')
            .map(|(_, tag)| tag)
            .ok_or_else(|| CniVersionError::NoTag {
                image: image.to_owned(),
            })?;
        tag.parse()
    }
}

impl FromStr for CniVersion {
    type Err = CniVersionError;

    /// Accepts `1.19.2`, `v1.19.2`, `v1.19.2-eksbuild.1` and `1.19.2+build`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = || CniVersionError::Malformed {
            input: input.to_owned(),
        };
        let trimmed = input.trim();
        let trimmed = trimmed
            .strip_prefix('v')
            .or_else(|| trimmed.strip_prefix('V'))
            .unwrap_or(trimmed);
        let core = trimmed
            .split(['-', '+'])
            .next()
            .filter(|core| !core.is_empty())
            .ok_or_else(malformed)?;
        let mut parts = core.split('.');
        let mut number = || -> Result<u32, CniVersionError> {
            let part = parts.next().ok_or_else(malformed)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            part.parse().map_err(|_| malformed())
        };
        let version = Self::new(number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(version)
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl schemars::JsonSchema for CniVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CniVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A VPC CNI version, MAJOR.MINOR.PATCH",
            "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+$"
        })
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_tags() {
        let cases = [
            ("1.19.2", Some((1, 19, 2))),
            ("v1.19.2", Some((1, 19, 2))),
            ("v1.19.2-eksbuild.1", Some((1, 19, 2))),
            ("1.9.0+abc", Some((1, 9, 0))),
            (" v1.22.2 ", Some((1, 22, 2))),
            ("1.19", None),
            ("1.19.2.4", None),
            ("latest", None),
            ("", None),
            ("v", None),
            ("1..2", None),
            ("1.-2.3", None),
            ("99999999999.1.1", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<CniVersion>().ok();
            assert_eq!(
                got,
                want.map(|(a, b, c)| CniVersion::new(a, b, c)),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn reads_version_from_image_reference() {
        let cases = [
            (
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1",
                Some((1, 19, 2)),
            ),
            ("amazon-k8s-cni:v1.18.0", Some((1, 18, 0))),
            (
                "registry.local:5000/amazon/amazon-k8s-cni:v1.20.1@sha256:0123",
                Some((1, 20, 1)),
            ),
            ("registry.local:5000/amazon/amazon-k8s-cni", None),
            ("amazon-k8s-cni:latest", None),
            ("amazon-k8s-cni@sha256:abcd", None),
            ("", None),
        ];
        for (image, want) in cases {
            let got = CniVersion::from_image(image).ok();
            assert_eq!(
                got,
                want.map(|(a, b, c)| CniVersion::new(a, b, c)),
                "image {image:?}"
            );
        }
    }

    #[test]
    fn orders_and_gates_features() {
        assert!(!CniVersion::new(1, 8, 9).supports_prefix_delegation());
        assert!(CniVersion::new(1, 9, 0).supports_prefix_delegation());
        assert!(CniVersion::new(2, 0, 0).supports_prefix_delegation());
        assert!(!CniVersion::new(1, 10, 0).supports_ipv6());
        assert!(CniVersion::new(1, 10, 1).supports_ipv6());
        assert_eq!(CniVersion::new(1, 19, 2).to_string(), "1.19.2");
    }
}
