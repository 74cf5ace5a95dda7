//! `DescribeInstanceTypes`: the one adapter behind both the table generator and the controller's
//! live fallback for types the embedded table does not know.

use aws_sdk_ec2::types::{InstanceTypeInfo, NetworkInfo};

use super::Ec2Error;
use crate::instance::{Hypervisor, InstanceLimits, is_metal_name};

const OPERATION: &str = "DescribeInstanceTypes";

/// The API's limit on `InstanceTypes` names per call.
pub const MAX_NAMES_PER_CALL: usize = 100;

/// Converts one `InstanceTypeInfo` into the facts pod density depends on.
pub(crate) fn limits_from_api(
    info: &InstanceTypeInfo,
) -> Result<(String, InstanceLimits), Ec2Error> {
    let name = info
        .instance_type()
        .map(|t| t.as_str().to_owned())
        .ok_or_else(|| bad("an entry has no InstanceType".to_owned()))?;
    let missing = |field: &str| bad(format!("{name}: {field} is missing"));
    let network = info.network_info().ok_or_else(|| missing("NetworkInfo"))?;
    let vcpus = info
        .v_cpu_info()
        .and_then(|v| v.default_v_cpus())
        .ok_or_else(|| missing("VCpuInfo.DefaultVCpus"))?;
    let max_enis = default_card_max_enis(network)
        .ok_or_else(|| missing("NetworkInfo.MaximumNetworkInterfaces"))?;
    let ipv4_per_eni = network
        .ipv4_addresses_per_interface()
        .ok_or_else(|| missing("NetworkInfo.Ipv4AddressesPerInterface"))?;
    let hypervisor = Hypervisor::from_api(info.hypervisor().map(|h| h.as_str()))
        .map_err(|reason| bad(format!("{name}: {reason}")))?;
    // The API omits the hypervisor of bare-metal types and some answers omit BareMetal too: the
    // `.metal` size is authoritative.
    let bare_metal = info.bare_metal().unwrap_or(false) || is_metal_name(&name);
    let limits = InstanceLimits {
        vcpus: non_negative(vcpus, &name, "VCpuInfo.DefaultVCpus")?,
        max_enis: non_negative(max_enis, &name, "NetworkInfo.MaximumNetworkInterfaces")?,
        ipv4_per_eni: non_negative(ipv4_per_eni, &name, "NetworkInfo.Ipv4AddressesPerInterface")?,
        ipv6_per_eni: non_negative(
            network.ipv6_addresses_per_interface().unwrap_or(0),
            &name,
            "NetworkInfo.Ipv6AddressesPerInterface",
        )?,
        network_cards: non_negative(
            network.maximum_network_cards().unwrap_or(1),
            &name,
            "NetworkInfo.MaximumNetworkCards",
        )?,
        hypervisor,
        bare_metal,
    };
    Ok((name, limits))
}

/// `MaximumNetworkInterfaces` of the default network card; the instance-wide value when the
/// answer lists no cards.
fn default_card_max_enis(network: &NetworkInfo) -> Option<i32> {
    let default_index = network.default_network_card_index().unwrap_or(0);
    network
        .network_cards()
        .iter()
        .find(|card| card.network_card_index() == Some(default_index))
        .and_then(|card| card.maximum_network_interfaces())
        .or_else(|| network.maximum_network_interfaces())
}

fn non_negative(value: i32, name: &str, field: &str) -> Result<u32, Ec2Error> {
    u32::try_from(value).map_err(|_| bad(format!("{name}: {field} is negative ({value})")))
}

fn bad(reason: String) -> Ec2Error {
    Ec2Error::BadResponse {
        operation: OPERATION,
        reason,
    }
}

/// Every instance type the endpoint's region offers, paging through `NextToken`.
pub async fn describe_all(
    client: &aws_sdk_ec2::Client,
) -> Result<Vec<(String, InstanceLimits)>, Ec2Error> {
    let mut out = Vec::new();
    let mut pages = client
        .describe_instance_types()
        .max_results(100)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Ec2Error::from_sdk(OPERATION, e))?;
        for info in page.instance_types() {
            out.push(limits_from_api(info)?);
        }
    }
    Ok(out)
}

/// Facts for the named types, in batches of [`MAX_NAMES_PER_CALL`]. Names the region does not
/// know make the API fail with `InvalidInstanceType`.
pub async fn describe(
    client: &aws_sdk_ec2::Client,
    names: &[String],
) -> Result<Vec<(String, InstanceLimits)>, Ec2Error> {
    let mut out = Vec::with_capacity(names.len());
    for batch in names.chunks(MAX_NAMES_PER_CALL) {
        let mut request = client.describe_instance_types();
        for name in batch {
            request = request.instance_types(aws_sdk_ec2::types::InstanceType::from(name.as_str()));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OPERATION, e))?;
        for info in answer.instance_types() {
            out.push(limits_from_api(info)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{InstanceType, InstanceTypeHypervisor, NetworkCardInfo, VCpuInfo};

    fn info(name: &str, hypervisor: Option<&str>, bare_metal: Option<bool>) -> InstanceTypeInfo {
        let cards = (0..2).map(|index| {
            NetworkCardInfo::builder()
                .network_card_index(index)
                .maximum_network_interfaces(8)
                .build()
        });
        let mut network = NetworkInfo::builder()
            .maximum_network_interfaces(16)
            .ipv4_addresses_per_interface(50)
            .ipv6_addresses_per_interface(50)
            .maximum_network_cards(2)
            .default_network_card_index(0);
        for card in cards {
            network = network.network_cards(card);
        }
        let mut builder = InstanceTypeInfo::builder()
            .instance_type(InstanceType::from(name))
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(128).build())
            .network_info(network.build());
        if let Some(h) = hypervisor {
            builder = builder.hypervisor(InstanceTypeHypervisor::from(h));
        }
        if let Some(b) = bare_metal {
            builder = builder.bare_metal(b);
        }
        builder.build()
    }

    #[test]
    fn uses_the_default_cards_enis_not_the_instance_total() {
        let (name, limits) =
            limits_from_api(&info("c6in.32xlarge", Some("nitro"), Some(false))).expect("valid");
        assert_eq!(name, "c6in.32xlarge");
        assert_eq!(limits.max_enis, 8);
        assert_eq!(limits.network_cards, 2);
        assert_eq!(limits.hypervisor, Hypervisor::Nitro);
        assert!(!limits.bare_metal);
    }

    #[test]
    fn metal_names_are_bare_metal_even_when_the_api_omits_it() {
        let (_, limits) = limits_from_api(&info("c6in.metal", None, None)).expect("valid");
        assert!(limits.bare_metal);
        assert_eq!(limits.hypervisor, Hypervisor::None);
        assert!(limits.supports_prefix_delegation());
    }

    #[test]
    fn missing_fields_name_the_type_and_field() {
        let broken = InstanceTypeInfo::builder()
            .instance_type(InstanceType::from("x9.large"))
            .build();
        let err = limits_from_api(&broken).expect_err("no network info");
        assert!(
            err.to_string().contains("x9.large: NetworkInfo is missing"),
            "{err}"
        );
    }
}
