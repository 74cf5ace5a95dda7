//! The subnet part of a policy's status, decided without IO from what EC2 described: per subnet
//! the figures ([`crate::subnet::figures`]), the headroom per instance type of the fleet at the
//! policy's prefix delegation and warm settings, the advice, and the `SubnetCapacity` condition.
//! The same rows are what `vpc-cni-tuner subnets` prints.

use std::collections::BTreeSet;

use crate::crd::conditions::{self, Reason};
use crate::crd::{SubnetHeadroom, SubnetStatus, SubnetsSpec};
use crate::engine::WarmPoolTargets;
use crate::instance::InstanceLimits;
use crate::subnet::{
    self, Cidr, Figures, InterfaceInfo, NodeFootprint, ReservationInfo, SubnetInfo,
};

use super::ConditionPlan;

/// What EC2 holds for one subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetFacts {
    pub subnet: SubnetInfo,
    pub sources: BTreeSet<&'static str>,
    /// Every interface in the subnet.
    pub interfaces: Vec<InterfaceInfo>,
    pub reservations: Vec<ReservationInfo>,
    pub fleet_nodes: u32,
    pub idle: Option<u32>,
}

/// The fleet whose headroom is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetShape {
    /// Instance types and their limits.
    pub types: Vec<(String, InstanceLimits)>,
    pub prefix_delegation: bool,
    pub targets: WarmPoolTargets,
}

impl FleetShape {
    /// The warm settings of an aws-node env (`WARM_*`, `MINIMUM_IP_TARGET`).
    pub fn targets_of<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> WarmPoolTargets {
        let mut targets = WarmPoolTargets::default();
        for (name, value) in env {
            let value = value.trim().parse().ok();
            match name {
                "WARM_ENI_TARGET" => targets.warm_eni_target = value,
                "WARM_IP_TARGET" => targets.warm_ip_target = value,
                "MINIMUM_IP_TARGET" => targets.minimum_ip_target = value,
                "WARM_PREFIX_TARGET" => targets.warm_prefix_target = value,
                _ => {}
            }
        }
        targets
    }
}

/// A policy's subnet report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetsReport {
    pub statuses: Vec<SubnetStatus>,
    pub condition: Option<ConditionPlan>,
    /// The prefix reservation to create (`reservePrefixes`): subnet and block.
    pub reserve: Vec<(String, Cidr)>,
    /// Set by the apply step: a reservation was created in this pass, which the figures (read
    /// before it) do not show yet.
    pub reserved: bool,
}

/// The description of the prefix reservations this operator creates: how a later read (by
/// another replica, or after a restart) knows them as the operator's.
pub const RESERVATION_DESCRIPTION: &str = "vpc-cni-tuner: prefixes";

/// One subnet's row and figures (`None`: no IPv4 CIDR, or a size AWS does not allow).
pub fn subnet_status(facts: &SubnetFacts, shape: &FleetShape) -> Option<(SubnetStatus, Figures)> {
    let cidr: Cidr = facts.subnet.cidr.as_deref()?.parse().ok()?;
    let allocations = subnet::allocations(&facts.subnet.id, &facts.interfaces, &facts.reservations);
    let figures = subnet::figures(cidr, &allocations)?;
    let headroom = shape
        .types
        .iter()
        .map(|(name, limits)| {
            let pd = shape.prefix_delegation && limits.supports_prefix_delegation();
            let footprint =
                NodeFootprint::of(&shape.targets, limits.ipv4_per_eni, limits.max_enis, pd);
            SubnetHeadroom {
                instance_type: name.clone(),
                nodes: subnet::nodes_that_fit(&figures, footprint),
                pods: subnet::pods_that_fit(&figures, pd),
            }
        })
        .collect();
    let status = SubnetStatus {
        subnet_id: facts.subnet.id.clone(),
        cidr: cidr.to_string(),
        availability_zone: facts.subnet.availability_zone.clone(),
        sources: facts.sources.iter().map(|s| (*s).to_owned()).collect(),
        total_addresses: figures.total,
        free_addresses: figures.free,
        free_aligned_prefixes: figures.free_aligned_prefixes,
        fragmented_addresses: figures.fragmented,
        largest_free_block: figures.largest_free_block.map(|c| c.to_string()),
        idle_addresses: facts.idle,
        fleet_nodes: facts.fleet_nodes,
        headroom,
        advice: None,
        prefix_reservations: facts
            .reservations
            .iter()
            .filter(|r| r.prefix)
            .map(|r| r.cidr.clone())
            .collect(),
        reservation_created: facts
            .reservations
            .iter()
            .find(|r| r.prefix && r.description == RESERVATION_DESCRIPTION)
            .map(|r| r.id.clone()),
    };
    Some((status, figures))
}

/// The reservation that keeps future prefixes contiguous, when fragmentation threatens them:
/// prefix delegation on, no prefix reservation yet, and free space fragmented (a quarter of the
/// free addresses or more, or no free aligned /28 at all).
fn reservation_wanted(
    facts: &SubnetFacts,
    figures: &Figures,
    prefix_delegation: bool,
) -> Option<Cidr> {
    let fragmented = figures.fragmented > 0
        && (figures.fragmented * 4 >= figures.free || figures.free_aligned_prefixes == 0);
    (prefix_delegation && fragmented && !facts.reservations.iter().any(|r| r.prefix))
        .then_some(figures.largest_free_block)
        .flatten()
}

fn advice(
    facts: &SubnetFacts,
    figures: &Figures,
    shape: &FleetShape,
    reserve: Option<Cidr>,
) -> Option<String> {
    let mut advice = Vec::new();
    if shape.prefix_delegation && figures.free_aligned_prefixes == 0 && figures.free > 0 {
        advice.push(format!(
            "no free aligned /28 is left though {} addresses are free: new prefixes fail with \
             InsufficientCidrBlocks",
            figures.free
        ));
    }
    if let Some(block) = reserve {
        advice.push(format!(
            "{} of {} free addresses are fragmented; keep the largest free aligned block for \
             prefixes: aws ec2 create-subnet-cidr-reservation --subnet-id {} --cidr {block} \
             --reservation-type prefix --description vpc-cni-tuner (or spec.subnets.reservePrefixes)",
            figures.fragmented, figures.free, facts.subnet.id
        ));
    }
    let idle = facts.idle.unwrap_or(0);
    if idle > 0 && !shape.prefix_delegation && shape.targets.warm_ip_target.is_none() {
        advice.push(format!(
            "the warm pools hold {idle} idle addresses: warmPool.profile ConserveIPs \
             (WARM_IP_TARGET and MINIMUM_IP_TARGET instead of a whole warm ENI) frees most of them"
        ));
    } else if idle > 0 && shape.targets.warm_prefix_target.unwrap_or(1) > 1 {
        advice.push(format!(
            "the warm pools hold {idle} idle addresses: WARM_PREFIX_TARGET=1 keeps one /28 per node"
        ));
    }
    (!advice.is_empty()).then(|| advice.join("; "))
}

/// The report of every subnet, the condition against `spec.minHeadroomNodes`, and the
/// reservations to create.
pub fn report(facts: &[SubnetFacts], shape: &FleetShape, spec: &SubnetsSpec) -> SubnetsReport {
    let mut report = SubnetsReport::default();
    let mut tightest: Option<(u32, String)> = None;
    for f in facts {
        let Some((mut status, figures)) = subnet_status(f, shape) else {
            continue;
        };
        let reserve = reservation_wanted(f, &figures, shape.prefix_delegation);
        status.advice = advice(f, &figures, shape, reserve);
        if let (Some(block), true) = (reserve, spec.reserve_prefixes) {
            report.reserve.push((f.subnet.id.clone(), block));
        }
        if let Some(worst) = status.headroom.iter().min_by_key(|h| h.nodes) {
            let line = format!(
                "subnet {} ({}) has room for {} more {} node(s): {} free addresses, {} free \
                 aligned /28 prefixes, {} fragmented",
                status.subnet_id,
                status.cidr,
                worst.nodes,
                worst.instance_type,
                status.free_addresses,
                status.free_aligned_prefixes,
                status.fragmented_addresses
            );
            let line = match &status.advice {
                Some(advice) => format!("{line}; {advice}"),
                None => line,
            };
            if tightest.as_ref().is_none_or(|(n, _)| worst.nodes < *n) {
                tightest = Some((worst.nodes, line));
            }
        }
        report.statuses.push(status);
    }
    report.condition = Some(match tightest {
        Some((nodes, line)) if nodes < spec.min_headroom_nodes => ConditionPlan {
            type_: conditions::SUBNET_CAPACITY,
            status: false,
            reason: Reason::LowHeadroom,
            message: format!(
                "{line} (below spec.subnets.minHeadroomNodes {})",
                spec.min_headroom_nodes
            ),
        },
        Some((_, line)) => ConditionPlan {
            type_: conditions::SUBNET_CAPACITY,
            status: true,
            reason: Reason::HeadroomAvailable,
            message: format!("{} subnet(s); the tightest: {line}", report.statuses.len()),
        },
        None => ConditionPlan {
            type_: conditions::SUBNET_CAPACITY,
            status: false,
            reason: Reason::NoSubnets,
            message: "no subnet found for the fleet: its nodes have no EC2 instance id \
                      (spec.providerID) or no ENI, and no ENIConfig or tagged subnet names one"
                .to_owned(),
        },
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::InstanceCatalog;

    fn shape(types: &[&str], pd: bool, env: &[(&str, &str)]) -> FleetShape {
        let catalog = InstanceCatalog::embedded();
        FleetShape {
            types: types
                .iter()
                .map(|t| ((*t).to_owned(), catalog.lookup(t).expect("a known type")))
                .collect(),
            prefix_delegation: pd,
            targets: FleetShape::targets_of(env.iter().copied()),
        }
    }

    fn facts(id: &str, cidr: &str, addresses: Vec<String>) -> SubnetFacts {
        SubnetFacts {
            subnet: SubnetInfo {
                id: id.into(),
                cidr: Some(cidr.into()),
                ..Default::default()
            },
            sources: BTreeSet::from(["Nodes"]),
            interfaces: vec![InterfaceInfo {
                id: "eni-1".into(),
                subnet_id: id.into(),
                addresses,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// One address in the middle of every /28 of 10.0.0.0/24.
    fn fragmented() -> Vec<String> {
        (0..16).map(|b| format!("10.0.0.{}", b * 16 + 7)).collect()
    }

    #[test]
    fn a_fragmented_subnet_is_low_with_the_reservation_command() {
        let f = facts("subnet-a", "10.0.0.0/24", fragmented());
        let spec = SubnetsSpec::default();
        let r = report(
            &[f],
            &shape(&["m5.large"], true, &[("WARM_PREFIX_TARGET", "1")]),
            &spec,
        );
        let c = r.condition.unwrap();
        assert_eq!((c.status, c.reason), (false, Reason::LowHeadroom));
        assert!(
            c.message
                .contains("subnet subnet-a (10.0.0.0/24) has room for 0 more m5.large"),
            "{}",
            c.message
        );
        assert!(
            c.message.contains("InsufficientCidrBlocks"),
            "{}",
            c.message
        );
        assert_eq!(r.statuses[0].free_aligned_prefixes, 0);
        // Every block holds an address: no block to reserve, so no command and nothing to do.
        assert!(r.reserve.is_empty());
    }

    #[test]
    fn the_reservation_is_the_largest_free_block_and_only_when_asked() {
        // Addresses scattered over the first half: the second half is free but for .255 (AWS).
        let addresses = (0..8).map(|b| format!("10.0.0.{}", b * 16 + 7)).collect();
        let f = facts("subnet-b", "10.0.0.0/24", addresses);
        let pd = shape(&["m5.large"], true, &[]);
        let r = report(std::slice::from_ref(&f), &pd, &SubnetsSpec::default());
        let advice = r.statuses[0].advice.clone().unwrap();
        assert!(
            advice.contains("--subnet-id subnet-b --cidr 10.0.0.128/26 --reservation-type prefix"),
            "{advice}"
        );
        assert!(r.reserve.is_empty(), "not without reservePrefixes");
        let asked = SubnetsSpec {
            reserve_prefixes: true,
            ..Default::default()
        };
        let r = report(std::slice::from_ref(&f), &pd, &asked);
        assert_eq!(
            r.reserve,
            vec![("subnet-b".to_owned(), "10.0.0.128/26".parse().unwrap())]
        );
        // An existing prefix reservation: nothing more.
        let mut reserved = f;
        reserved.reservations.push(ReservationInfo {
            id: "r".into(),
            cidr: "10.0.0.128/26".into(),
            prefix: true,
            description: String::new(),
        });
        assert!(report(&[reserved], &pd, &asked).reserve.is_empty());
    }

    #[test]
    fn the_status_lists_prefix_reservations_and_knows_the_operators_own() {
        let mut f = facts("subnet-d", "10.0.0.0/24", vec!["10.0.0.10".into()]);
        let reservation = |id: &str, cidr: &str, prefix: bool, description: &str| ReservationInfo {
            id: id.into(),
            cidr: cidr.into(),
            prefix,
            description: description.into(),
        };
        f.reservations = vec![
            reservation("scr-1", "10.0.0.64/28", false, RESERVATION_DESCRIPTION),
            reservation("scr-2", "10.0.0.128/26", true, "vpc-cni-tuner"),
        ];
        let pd = shape(&["m5.large"], true, &[]);
        let status = &report(std::slice::from_ref(&f), &pd, &SubnetsSpec::default()).statuses[0];
        // An explicit reservation is not one for prefixes; one made by hand is not the operator's.
        assert_eq!(status.prefix_reservations, ["10.0.0.128/26"]);
        assert_eq!(status.reservation_created, None);
        f.reservations.push(reservation(
            "scr-3",
            "10.0.0.32/28",
            true,
            RESERVATION_DESCRIPTION,
        ));
        let status = &report(&[f], &pd, &SubnetsSpec::default()).statuses[0];
        assert_eq!(
            status.prefix_reservations,
            ["10.0.0.128/26", "10.0.0.32/28"]
        );
        assert_eq!(status.reservation_created.as_deref(), Some("scr-3"));
    }

    #[test]
    fn headroom_per_type_and_a_healthy_condition() {
        let f = facts("subnet-c", "10.0.0.0/20", vec!["10.0.0.10".into()]);
        let secondary = shape(
            &["t3.medium", "m5.large"],
            false,
            &[("WARM_ENI_TARGET", "1")],
        );
        let r = report(&[f], &secondary, &SubnetsSpec::default());
        let h = &r.statuses[0].headroom;
        // 4096 - 5 - 1 = 4090 free; t3.medium takes 6 a node, m5.large 10.
        assert_eq!(
            (h[0].instance_type.as_str(), h[0].nodes),
            ("t3.medium", 4090 / 6)
        );
        assert_eq!(h[1].nodes, 409);
        let c = r.condition.unwrap();
        assert_eq!((c.status, c.reason), (true, Reason::HeadroomAvailable));
        assert!(c.message.contains("409 more m5.large"), "{}", c.message);
    }

    #[test]
    fn idle_warm_pools_get_the_warm_advice_and_no_subnet_says_why() {
        let mut f = facts("subnet-d", "10.0.0.0/24", vec![]);
        f.idle = Some(120);
        let r = report(
            &[f],
            &shape(&["m5.large"], false, &[("WARM_ENI_TARGET", "1")]),
            &SubnetsSpec::default(),
        );
        assert!(
            r.statuses[0]
                .advice
                .as_deref()
                .unwrap()
                .contains("120 idle addresses: warmPool.profile ConserveIPs")
        );
        let none = report(
            &[],
            &shape(&["m5.large"], false, &[]),
            &SubnetsSpec::default(),
        );
        assert_eq!(none.condition.unwrap().reason, Reason::NoSubnets);
    }
}
