//! Subnet reads and the one subnet write: `DescribeSubnets` (by id, or the subnets subnet
//! discovery picks: tag `kubernetes.io/role/cni` in a VPC), `DescribeNetworkInterfaces` (every
//! interface of a subnet, or the interfaces of given instances, 200 ids a call), paged;
//! `GetSubnetCidrReservations` and `CreateSubnetCidrReservation` (type `prefix`).

use aws_sdk_ec2::types::{Filter, SubnetCidrReservationType};

use super::Ec2Error;
use crate::subnet::{InterfaceInfo, ReservationInfo, SubnetInfo};

/// Instance ids per `DescribeNetworkInterfaces` filter (EC2 takes up to 200 values).
const IDS_PER_CALL: usize = 200;

/// Which subnets to describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetQuery {
    pub ids: Vec<String>,
    /// Every subnet of this VPC tagged `kubernetes.io/role/cni` (subnet discovery, VPC CNI
    /// 1.18+), when set.
    pub discovery_vpc: Option<String>,
    /// Every subnet of this VPC.
    pub vpc: Option<String>,
}

pub(super) async fn subnets(
    client: &aws_sdk_ec2::Client,
    query: &SubnetQuery,
) -> Result<Vec<SubnetInfo>, Ec2Error> {
    const OP: &str = "DescribeSubnets";
    let mut request = client.describe_subnets();
    if !query.ids.is_empty() {
        request = request.set_subnet_ids(Some(query.ids.clone()));
    }
    if let Some(vpc) = query.discovery_vpc.as_ref().or(query.vpc.as_ref()) {
        request = request.filters(Filter::builder().name("vpc-id").values(vpc).build());
    }
    if query.discovery_vpc.is_some() {
        request = request.filters(
            Filter::builder()
                .name("tag-key")
                .values("kubernetes.io/role/cni")
                .build(),
        );
    }
    let mut found = Vec::new();
    let mut pages = request.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Ec2Error::from_sdk(OP, e))?;
        found.extend(page.subnets().iter().map(|s| {
            SubnetInfo {
                id: s.subnet_id().unwrap_or_default().to_owned(),
                cidr: s.cidr_block().map(str::to_owned),
                availability_zone: s.availability_zone().map(str::to_owned),
                vpc_id: s.vpc_id().map(str::to_owned),
                available: s
                    .available_ip_address_count()
                    .and_then(|n| u32::try_from(n).ok()),
            }
        }));
    }
    Ok(found)
}

/// Every interface of subnet `subnet`, or (none) of the instances `instances`.
pub(super) async fn interfaces(
    client: &aws_sdk_ec2::Client,
    subnet: Option<&str>,
    instances: &[String],
) -> Result<Vec<InterfaceInfo>, Ec2Error> {
    const OP: &str = "DescribeNetworkInterfaces";
    let filters: Vec<Filter> = match subnet {
        Some(subnet) => vec![Filter::builder().name("subnet-id").values(subnet).build()],
        None => instances
            .chunks(IDS_PER_CALL)
            .map(|ids| {
                Filter::builder()
                    .name("attachment.instance-id")
                    .set_values(Some(ids.to_vec()))
                    .build()
            })
            .collect(),
    };
    let mut found = Vec::new();
    for filter in filters {
        let mut pages = client
            .describe_network_interfaces()
            .filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Ec2Error::from_sdk(OP, e))?;
            found.extend(page.network_interfaces().iter().map(|i| {
                InterfaceInfo {
                    id: i.network_interface_id().unwrap_or_default().to_owned(),
                    subnet_id: i.subnet_id().unwrap_or_default().to_owned(),
                    instance_id: i
                        .attachment()
                        .and_then(|a| a.instance_id())
                        .map(str::to_owned),
                    addresses: i
                        .private_ip_addresses()
                        .iter()
                        .filter_map(|a| a.private_ip_address().map(str::to_owned))
                        .collect(),
                    prefixes: i
                        .ipv4_prefixes()
                        .iter()
                        .filter_map(|p| p.ipv4_prefix().map(str::to_owned))
                        .collect(),
                }
            }));
        }
    }
    Ok(found)
}

pub(super) async fn reservations(
    client: &aws_sdk_ec2::Client,
    subnet: &str,
) -> Result<Vec<ReservationInfo>, Ec2Error> {
    const OP: &str = "GetSubnetCidrReservations";
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let answer = client
            .get_subnet_cidr_reservations()
            .subnet_id(subnet)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        found.extend(answer.subnet_ipv4_cidr_reservations().iter().map(|r| {
            ReservationInfo {
                id: r
                    .subnet_cidr_reservation_id()
                    .unwrap_or_default()
                    .to_owned(),
                cidr: r.cidr().unwrap_or_default().to_owned(),
                prefix: r.reservation_type() == Some(&SubnetCidrReservationType::Prefix),
                description: r.description().unwrap_or_default().to_owned(),
            }
        }));
        match answer.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(found),
        }
    }
}

pub(super) async fn create_prefix_reservation(
    client: &aws_sdk_ec2::Client,
    subnet: &str,
    cidr: &str,
    description: &str,
) -> Result<String, Ec2Error> {
    const OP: &str = "CreateSubnetCidrReservation";
    let answer = client
        .create_subnet_cidr_reservation()
        .subnet_id(subnet)
        .cidr(cidr)
        .reservation_type(SubnetCidrReservationType::Prefix)
        .description(description)
        .send()
        .await
        .map_err(|e| Ec2Error::from_sdk(OP, e))?;
    Ok(answer
        .subnet_cidr_reservation()
        .and_then(|r| r.subnet_cidr_reservation_id())
        .unwrap_or_default()
        .to_owned())
}
