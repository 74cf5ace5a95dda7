//! The subnet step of policies with `spec.subnets`: read what EC2 holds for the subnets the
//! fleet's pods draw from (at most once per 5 minutes per policy, never per node event), report
//! their capacity, and (opt-in, Enforce, leader) create the prefix reservation the report asks
//! for, once. Reads per refresh: `DescribeNetworkInterfaces` for the fleet's instances (200 a
//! call), one `DescribeSubnets` by id and one per VPC for subnet discovery, and per subnet its
//! interfaces (paged) and `GetSubnetCidrReservations`; in Kubernetes, the ENIConfigs (custom
//! networking) and a metadata-only pod list of up to 10 sampled nodes per subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use tracing::{info, warn};

use super::Writer;
use crate::aws::Ec2Error;
use crate::aws::launch_templates::{LaunchTemplateApi, SubnetQuery};
use crate::crd::conditions::{self, Reason};
use crate::crd::{Enforcement, NodeNetworkPolicy, SubnetsSpec};
use crate::plan::subnets::{self, FleetShape, SubnetFacts, SubnetsReport};
use crate::plan::{ConditionPlan, FleetPlan, NodeFacts, PolicyPlan};
use crate::subnet::InterfaceInfo;

/// Nodes per subnet whose pods are counted for the idle estimate.
const IDLE_SAMPLE: usize = 10;

/// Every policy's subnet report (by name), and the Events of this pass.
pub(super) async fn apply(
    w: &Writer<'_>,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
) -> (
    BTreeMap<String, SubnetsReport>,
    Vec<(String, &'static str, bool, String)>,
) {
    let mut reports = BTreeMap::new();
    let mut events = Vec::new();
    for policy in policies {
        let Some(spec) = policy.spec.subnets.as_ref() else {
            continue;
        };
        let name = policy.name_any();
        let Some(policy_plan) = plan.policies.get(&name) else {
            continue;
        };
        let shape = shape(w, policy_plan);
        let facts = match w.ec2 {
            None => Err(problem(
                Reason::NoAwsAccess,
                "the operator has no EC2 access configured; it cannot read subnets".into(),
            )),
            Some(provider) => match w.observed.subnets.fresh(&name) {
                Some(cached) => cached.facts,
                None => {
                    let read = match provider.api(None).await {
                        Ok(api) => read(w, policy, api.as_ref()).await,
                        Err(err) => Err(failure(&err)),
                    };
                    w.observed.subnets.store(&name, read.clone());
                    read
                }
            },
        };
        let mut report = match facts {
            Ok(facts) => subnets::report(&facts, &shape, spec),
            Err(condition) => SubnetsReport {
                condition: Some(condition),
                ..Default::default()
            },
        };
        reserve(w, policy, spec, &mut report, &mut events).await;
        crossing(w, &name, &report, &mut events);
        reports.insert(name, report);
    }
    (reports, events)
}

/// The fleet's instance types, prefix delegation and warm settings as the policy decided them.
fn shape(w: &Writer<'_>, plan: &PolicyPlan) -> FleetShape {
    let live = w.observed.instance_types.known();
    FleetShape {
        types: plan
            .instance_types
            .iter()
            .filter_map(|t| {
                let limits = w
                    .observed
                    .catalog
                    .lookup(&t.instance_type)
                    .ok()
                    .or_else(|| live.get(&t.instance_type).copied())?;
                Some((t.instance_type.clone(), limits))
            })
            .collect(),
        prefix_delegation: plan.prefix_delegation.unwrap_or(false),
        targets: FleetShape::targets_of(plan.cni_env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    }
}

fn problem(reason: Reason, message: String) -> ConditionPlan {
    ConditionPlan {
        type_: conditions::SUBNET_CAPACITY,
        status: false,
        reason,
        message,
    }
}

fn failure(err: &Ec2Error) -> ConditionPlan {
    let reason = match (err, err.code()) {
        (Ec2Error::NoRegion, _) => Reason::NoAwsRegion,
        (_, Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException")) => {
            Reason::AccessDenied
        }
        _ => Reason::AwsError,
    };
    problem(reason, format!("cannot read the fleet's subnets: {err}"))
}

/// The policy's nodes with an instance id: (node name, instance id).
fn fleet(w: &Writer<'_>, policy: &NodeNetworkPolicy) -> Vec<(String, String)> {
    let Ok(expressions) = crate::plan::selector_expressions(policy.spec.node_selector.as_ref())
    else {
        return Vec::new();
    };
    w.observed
        .nodes
        .snapshot()
        .into_iter()
        .filter(|(_, n)| n.labels.matches(&expressions) && n.instance_type().is_ok())
        .filter_map(|(name, n): (String, Arc<NodeFacts>)| {
            n.instance_id.as_deref().map(|id| (name, id.to_owned()))
        })
        .collect()
}

/// What EC2 (and Kubernetes) hold for the fleet's subnets.
async fn read(
    w: &Writer<'_>,
    policy: &NodeNetworkPolicy,
    api: &dyn LaunchTemplateApi,
) -> Result<Vec<SubnetFacts>, ConditionPlan> {
    let fleet = fleet(w, policy);
    let ids: Vec<String> = fleet.iter().map(|(_, id)| id.clone()).collect();
    let fleet_enis = if ids.is_empty() {
        Vec::new()
    } else {
        api.interfaces(None, &ids).await.map_err(|e| failure(&e))?
    };
    let mut sources: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for eni in &fleet_enis {
        sources
            .entry(eni.subnet_id.clone())
            .or_default()
            .insert("Nodes");
    }
    let custom = policy.spec.custom_networking
        || w.observed.aws_node().is_some_and(|a| {
            a.env_value("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG")
                .and_then(|e| e.value.as_deref())
                == Some("true")
        });
    if custom {
        for subnet in eni_config_subnets(w).await {
            sources.entry(subnet).or_default().insert("ENIConfig");
        }
    }
    // No id at all would describe every subnet of the region.
    let mut known = if sources.is_empty() {
        Vec::new()
    } else {
        api.subnets(&SubnetQuery {
            ids: sources.keys().cloned().collect(),
            ..Default::default()
        })
        .await
        .map_err(|e| failure(&e))?
    };
    let vpcs: BTreeSet<String> = known.iter().filter_map(|s| s.vpc_id.clone()).collect();
    for vpc in vpcs {
        let query = SubnetQuery {
            discovery_vpc: Some(vpc),
            ..Default::default()
        };
        for subnet in api.subnets(&query).await.map_err(|e| failure(&e))? {
            sources
                .entry(subnet.id.clone())
                .or_default()
                .insert("Discovery");
            if !known.iter().any(|k| k.id == subnet.id) {
                known.push(subnet);
            }
        }
    }
    let mut facts = Vec::new();
    for subnet in known {
        let interfaces = api
            .interfaces(Some(&subnet.id), &[])
            .await
            .map_err(|e| failure(&e))?;
        let reservations = api
            .subnet_reservations(&subnet.id)
            .await
            .map_err(|e| failure(&e))?;
        let mine: Vec<&InterfaceInfo> = fleet_enis
            .iter()
            .filter(|e| e.subnet_id == subnet.id)
            .collect();
        let nodes: BTreeSet<&str> = mine
            .iter()
            .filter_map(|e| e.instance_id.as_deref())
            .collect();
        let idle = idle(w, &fleet, &mine, &nodes).await;
        facts.push(SubnetFacts {
            sources: sources.remove(&subnet.id).unwrap_or_default(),
            subnet,
            interfaces,
            reservations,
            fleet_nodes: nodes.len() as u32,
            idle,
        });
    }
    facts.sort_by(|a, b| a.subnet.id.cmp(&b.subnet.id));
    Ok(facts)
}

/// The subnets the ENIConfigs name (`crd.k8s.amazonaws.com/v1alpha1`); none when the CRD is not
/// installed or cannot be read.
async fn eni_config_subnets(w: &Writer<'_>) -> Vec<String> {
    let resource = ApiResource {
        group: "crd.k8s.amazonaws.com".into(),
        version: "v1alpha1".into(),
        api_version: "crd.k8s.amazonaws.com/v1alpha1".into(),
        kind: "ENIConfig".into(),
        plural: "eniconfigs".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(w.client.clone(), &resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter_map(|o| o.data["spec"]["subnet"].as_str().map(str::to_owned))
            .collect(),
        Err(err) => {
            warn!(%err, "cannot list ENIConfigs");
            Vec::new()
        }
    }
}

/// Addresses on the fleet's ENIs in a subnet that no pod uses, from up to [`IDLE_SAMPLE`]
/// nodes: each node's secondary addresses and prefix addresses minus its pods (a
/// metadata-only list of the node's pods that are not host-network and not finished), scaled
/// to all the subnet's fleet nodes.
async fn idle(
    w: &Writer<'_>,
    fleet: &[(String, String)],
    enis: &[&InterfaceInfo],
    nodes: &BTreeSet<&str>,
) -> Option<u32> {
    if nodes.is_empty() {
        return None;
    }
    let pods: Api<Pod> = Api::all(w.client.clone());
    let (mut sampled, mut idle) = (0u64, 0u64);
    for instance in nodes.iter().take(IDLE_SAMPLE) {
        let name = fleet.iter().find(|(_, id)| id == instance)?.0.clone();
        let held: u64 = enis
            .iter()
            .filter(|e| e.instance_id.as_deref() == Some(*instance))
            .map(|e| e.addresses.len().saturating_sub(1) as u64 + 16 * e.prefixes.len() as u64)
            .sum();
        let fields = format!(
            "spec.nodeName={name},spec.hostNetwork=false,status.phase!=Succeeded,status.phase!=Failed"
        );
        let running = pods
            .list_metadata(&ListParams::default().fields(&fields))
            .await
            .ok()?
            .items
            .len() as u64;
        idle += held.saturating_sub(running);
        sampled += 1;
    }
    let scaled = idle * nodes.len() as u64 / sampled.max(1);
    u32::try_from(scaled).ok()
}

/// Creates the prefix reservations the report asks for (`reservePrefixes`, Enforce, leader),
/// each subnet once.
async fn reserve(
    w: &Writer<'_>,
    policy: &NodeNetworkPolicy,
    spec: &SubnetsSpec,
    report: &mut SubnetsReport,
    events: &mut Vec<(String, &'static str, bool, String)>,
) {
    let name = policy.name_any();
    if !spec.reserve_prefixes || policy.spec.enforcement == Enforcement::DryRun {
        return;
    }
    let Some(provider) = w.ec2 else { return };
    for (subnet, block) in std::mem::take(&mut report.reserve) {
        if !w.observed.subnets.first_reservation(&subnet) {
            continue;
        }
        let result = match provider.api(None).await {
            Ok(api) => {
                api.create_prefix_reservation(
                    &subnet,
                    &block.to_string(),
                    subnets::RESERVATION_DESCRIPTION,
                )
                .await
            }
            Err(err) => Err(err),
        };
        match result {
            Ok(id) => {
                w.count_write("subnet_reservation");
                let note = format!(
                    "reserved {block} of {subnet} for prefixes ({id}): secondary IPs no longer \
                     fragment it"
                );
                info!(policy = %name, %note, "subnet reservation created");
                events.push((name.clone(), "SubnetPrefixesReserved", false, note));
                if let Some(s) = report.statuses.iter_mut().find(|s| s.subnet_id == subnet) {
                    s.reservation_created = Some(id);
                    s.prefix_reservations.push(block.to_string());
                }
                // The next read shows it in the figures.
                report.reserved = true;
                w.observed.subnets.expire(&name);
            }
            Err(err) => {
                let note = format!("cannot reserve {block} of {subnet} for prefixes: {err}");
                warn!(policy = %name, %note);
                events.push((name.clone(), "SubnetReservationFailed", true, note));
            }
        }
    }
}

/// Events when `SubnetCapacity` crosses: low (Warning) and back.
fn crossing(
    w: &Writer<'_>,
    name: &str,
    report: &SubnetsReport,
    events: &mut Vec<(String, &'static str, bool, String)>,
) {
    let Some(condition) = &report.condition else {
        return;
    };
    let now = (condition.status, condition.reason);
    let before = w.observed.subnets.swap_condition(name, now);
    match (before, now) {
        (Some((_, Reason::LowHeadroom)), (_, Reason::LowHeadroom)) => {}
        (_, (false, Reason::LowHeadroom)) => events.push((
            name.to_owned(),
            "SubnetCapacityLow",
            true,
            condition.message.clone(),
        )),
        (Some((false, Reason::LowHeadroom)), (true, _)) => events.push((
            name.to_owned(),
            "SubnetCapacityRestored",
            false,
            condition.message.clone(),
        )),
        _ => {}
    }
}
