//! One policy on its own: which nodes it selects, the recommendation for their instance types,
//! and why it cannot have one.

use std::collections::HashMap;

use super::*;

const ASSUMED_CNI_WHEN_UNKNOWN: CniVersion = CniVersion::PREFIX_DELEGATION;

/// What a policy's node selector picks: its nodes by instance type (with their capacity.pods),
/// and the selected nodes left out, by reason.
#[derive(Default)]
pub(super) struct Selection<'a> {
    /// A hash map while nodes are counted (a `BTreeMap` entry compared the type's name a dozen
    /// times per node), sorted once after.
    nodes_by_type: HashMap<&'a str, Vec<Option<u32>>>,
    excluded: BTreeMap<String, u32>,
}

/// Every policy's selection in one pass over the nodes. Each node is read once per reconcile
/// rather than once per policy: at 10,000 nodes the node data does not stay in the CPU cache
/// from one policy to the next, and the loads were most of the plan's time. `Err`: the
/// policy's selector is invalid.
pub(super) fn select_all<'a>(
    input: &FleetInput<'a>,
    policies: &[&PolicyInput<'_>],
) -> Vec<Result<Selection<'a>, Blocked>> {
    let expressions: Vec<Result<Vec<kube::core::Expression>, Blocked>> = policies
        .iter()
        .map(|policy| {
            selector_expressions(policy.spec.node_selector.as_ref()).map_err(|message| Blocked {
                reason: Reason::InvalidSpec,
                message,
            })
        })
        .collect();
    // Each distinct key the selectors name is looked up once per node, however many policies
    // name it (policies usually differ by the value of one key, a node group's or a pool's).
    let mut keys: Vec<&str> = Vec::new();
    let indexed: Vec<Option<Vec<(usize, &kube::core::Expression)>>> = expressions
        .iter()
        .map(|expressions| {
            let expressions = expressions.as_ref().ok()?;
            Some(
                expressions
                    .iter()
                    .map(|e| {
                        let key = node_labels::expression_key(e);
                        let index = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                            keys.push(key);
                            keys.len() - 1
                        });
                        (index, e)
                    })
                    .collect(),
            )
        })
        .collect();
    let mut values: Vec<Option<&str>> = Vec::with_capacity(keys.len());
    let mut selections: Vec<Selection<'a>> =
        policies.iter().map(|_| Selection::default()).collect();
    for node in &input.nodes {
        let node: &'a NodeFacts = node;
        values.clear();
        values.extend(keys.iter().map(|k| node.labels.get(k)));
        let mut kind = None;
        for (selection, expressions) in selections.iter_mut().zip(&indexed) {
            let Some(expressions) = expressions else {
                continue;
            };
            if !expressions
                .iter()
                .all(|(i, e)| node_labels::expression_matches(e, values[*i]))
            {
                continue;
            }
            match *kind.get_or_insert_with(|| node.instance_type()) {
                Ok(instance_type) => selection
                    .nodes_by_type
                    .entry(instance_type)
                    .or_default()
                    .push(node.capacity_pods.map(u32::from)),
                Err(reason) => {
                    *selection
                        .excluded
                        .entry(reason.as_str().to_owned())
                        .or_default() += 1
                }
            }
        }
    }
    selections
        .into_iter()
        .zip(expressions)
        .map(|(selection, expressions)| expressions.map(|_| selection))
        .collect()
}

/// The expressions of a policy's node selector, or why it is invalid (the message names the
/// field and the fix).
pub(crate) fn selector_expressions(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Vec<kube::core::Expression>, String> {
    let selector: Result<Selector, _> = selector.cloned().unwrap_or_default().try_into();
    selector.map(|s| s.into_iter().collect()).map_err(|err| {
        format!(
            "spec.nodeSelector is invalid: {err}; use operators In, NotIn, Exists or \
             DoesNotExist with values only for In and NotIn"
        )
    })
}

pub(super) fn evaluate<'a>(
    input: &'a FleetInput<'a>,
    policy: &'a PolicyInput<'a>,
    selection: Result<Selection<'a>, Blocked>,
) -> Evaluated<'a> {
    let spec = policy.spec;
    let mut plan = PolicyPlan {
        observed_generation: policy.generation,
        ..Default::default()
    };
    let mut evaluated = Evaluated {
        input: policy,
        plan: PolicyPlan::default(),
        request: TuningRequest::default(),
        facts: Vec::new(),
        nodes_by_type: BTreeMap::new(),
        outcome: Ok(None),
        resized_from: None,
    };

    let nodes_by_type = match selection {
        Ok(selection) => {
            plan.excluded_nodes = selection.excluded;
            selection
                .nodes_by_type
                .into_iter()
                .collect::<BTreeMap<_, _>>()
        }
        Err(blocked) => {
            evaluated.outcome = Err(blocked);
            evaluated.plan = plan;
            return evaluated;
        }
    };
    plan.matched_nodes = nodes_by_type.values().map(|v| v.len() as u32).sum();

    let cni_version = input
        .aws_node
        .and_then(|ds| ds.image.as_deref())
        .map(CniVersion::from_image);
    plan.cni_version = match &cni_version {
        Some(Ok(version)) => Some(version.to_string()),
        _ => None,
    };
    match &cni_version {
        Some(Err(err)) => plan.warnings.push(format!(
            "cannot read the VPC CNI version from the aws-node image ({err}); assuming \
             {ASSUMED_CNI_WHEN_UNKNOWN}, the first with prefix delegation"
        )),
        None if input.aws_node.is_some() => plan
            .warnings
            .push("the aws-node DaemonSet has no aws-node container".to_owned()),
        _ => {}
    }

    let mut unknown = Vec::new();
    let mut facts = Vec::new();
    for instance_type in nodes_by_type.keys() {
        // lookup_with_source, not lookup: no "did you mean" suggestions are wanted here.
        match input
            .catalog
            .lookup_with_source(instance_type)
            .map(|(limits, _)| limits)
            .or_else(|| input.extra_facts.get(*instance_type).copied())
        {
            Some(limits) => facts.push(InstanceFacts {
                instance_type,
                limits,
            }),
            None => unknown.push(*instance_type),
        }
    }

    let request = tuning_request(spec, input.aws_node);

    evaluated.outcome = if &spec.daemon_set != input.managed_daemonset {
        Err(Blocked {
            reason: Reason::DaemonSetNotManaged,
            message: format!(
                "spec.daemonSet is {} but this operator manages {} (its --daemonset flag); set \
                 spec.daemonSet to {} or run an operator for that DaemonSet",
                spec.daemon_set, input.managed_daemonset, input.managed_daemonset
            ),
        })
    } else if !unknown.is_empty() {
        Err(Blocked {
            reason: Reason::UnknownInstanceType,
            message: format!(
                "no ENI/IP limits known for instance type(s) {}; the operator leaves the aws-node \
                 env as it is until they are known: upgrade vpc-cni-tuner, or give it EC2 \
                 DescribeInstanceTypes access so it can look them up",
                unknown.join(", ")
            ),
        })
    } else if facts.is_empty() {
        Ok(None)
    } else {
        match recommend_as_asked(spec, &request, &facts) {
            Ok(rec) => Ok(Some(rec)),
            Err(err) => Err(Blocked {
                reason: Reason::InvalidSpec,
                message: format!("{err} (spec of policy {})", policy.name),
            }),
        }
    };
    evaluated.plan = plan;
    evaluated.request = request;
    evaluated.facts = facts;
    evaluated.nodes_by_type = nodes_by_type;
    fill_from_recommendation(&mut evaluated);
    evaluated
}

/// The engine's recommendation for `request`. Where Auto was kept on because aws-node runs
/// prefix delegation ([`tuning_request`]) and the policy's settings only fit secondary IPs (an
/// explicit warmENITarget), Auto decides as the spec asks.
fn recommend_as_asked(
    spec: &NodeNetworkPolicySpec,
    request: &TuningRequest,
    facts: &[InstanceFacts<'_>],
) -> Result<Recommendation, engine::TuningError> {
    engine::recommend(request, facts).or_else(|err| {
        let asked: PrefixDelegationMode = spec.prefix_delegation.into();
        if asked == request.prefix_delegation {
            return Err(err);
        }
        let as_asked = TuningRequest {
            prefix_delegation: asked,
            ..request.clone()
        };
        engine::recommend(&as_asked, facts).map_err(|_| err)
    })
}

/// The engine request for a policy's spec on this aws-node (its IP family and CNI version).
pub(super) fn tuning_request(
    spec: &NodeNetworkPolicySpec,
    aws_node: Option<&AwsNodeFacts>,
) -> TuningRequest {
    let cni_version = aws_node
        .and_then(|ds| ds.image.as_deref())
        .and_then(|image| CniVersion::from_image(image).ok())
        .unwrap_or(ASSUMED_CNI_WHEN_UNKNOWN);
    // Auto never turns prefix delegation off by itself: once aws-node runs it (the operator's
    // write for a Nitro node that joined, or another owner's), a Nitro node leaving does not
    // turn it off again. Turning it off under nodes that booted with prefix-delegation maxPods
    // strands their pods; only an explicit Disabled does it (and the status names those nodes).
    let running = aws_node.and_then(AwsNodeFacts::prefix_delegation);
    let prefix_delegation = match spec.prefix_delegation.into() {
        PrefixDelegationMode::Auto if running == Some(true) => PrefixDelegationMode::Enabled,
        mode => mode,
    };
    TuningRequest {
        prefix_delegation,
        ip_family: aws_node.map(AwsNodeFacts::ip_family).unwrap_or_default(),
        cni_version,
        eni: EniOptions {
            max_eni: spec.max_eni,
            custom_networking: spec.custom_networking,
            security_groups_for_pods: spec.security_groups_for_pods,
        },
        warm_pool: (&spec.warm_pool).into(),
        max_pods: spec.max_pods.engine_policy(),
        max_pods_ceiling: spec.max_pods.ceiling,
    }
}

/// Copies the recommendation into the status fields.
fn fill_from_recommendation(e: &mut Evaluated<'_>) {
    let Ok(Some(rec)) = &e.outcome else {
        return;
    };
    e.plan.prefix_delegation = Some(rec.prefix_delegation);
    e.plan.cni_env = rec.env.clone();
    e.plan.max_pods = Some(rec.max_pods);
    e.plan.warnings.extend(rec.warnings.iter().cloned());
    e.plan.instance_types = rec
        .instance_types
        .iter()
        .map(|t| {
            let capacities = e
                .nodes_by_type
                .get(t.instance_type.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            InstanceTypeStatus {
                instance_type: t.instance_type.clone(),
                nodes: capacities.len() as u32,
                prefix_delegation: t.prefix_delegation,
                max_pods_ip_limit: t.max_pods_ip_limit,
                max_pods: t.max_pods,
                nodes_at_target: capacities
                    .iter()
                    .filter(|c| **c == Some(rec.max_pods))
                    .count() as u32,
                warm_env: BTreeMap::new(),
                nodes_with_other_warm_env: None,
            }
        })
        .collect();
    e.plan
        .warnings
        .extend(above_ip_limit(&e.plan.instance_types, &e.nodes_by_type));
    let warm = &e.input.spec.warm_pool;
    if warm.per_instance_type {
        for (status, facts) in e.plan.instance_types.iter_mut().zip(&e.facts) {
            let explicit = warm
                .instance_types
                .get(facts.instance_type)
                .map(|t| (*t).into());
            match engine::warm_env_for_type(
                &e.request,
                facts,
                rec.prefix_delegation,
                explicit.as_ref(),
            ) {
                Ok(env) => status.warm_env = env,
                Err(err) => e.plan.warnings.push(format!(
                    "warmPool.instanceTypes[{}]: {err}",
                    facts.instance_type
                )),
            }
        }
    }
}

/// Nodes of a type without prefix delegation whose kubelet carries more pods than the type's
/// IPs (they booted when prefix delegation was on, or from another maxPods): pods beyond the
/// IPs stay in ContainerCreating until the nodes are replaced.
fn above_ip_limit(
    types: &[InstanceTypeStatus],
    nodes_by_type: &BTreeMap<&str, Vec<Option<u32>>>,
) -> Vec<String> {
    types
        .iter()
        .filter(|t| !t.prefix_delegation)
        .filter_map(|t| {
            let limit = t.max_pods_ip_limit?;
            let capacities = nodes_by_type.get(t.instance_type.as_str())?;
            let above: Vec<u32> = capacities
                .iter()
                .flatten()
                .copied()
                .filter(|c| *c > limit)
                .collect();
            let highest = above.iter().max()?;
            Some(format!(
                "{} {} node(s) run maxPods up to {highest}, above the {limit} pods their IPs \
                 carry without prefix delegation: pods beyond that stay in ContainerCreating; \
                 replace them (a node-group update or an instance refresh of their groups)",
                above.len(),
                t.instance_type
            ))
        })
        .collect()
}

/// Sizes a policy for the prefix delegation aws-node runs (`prefix`), whatever the policy
/// wishes: maxPods, the per-type table and the node classes follow the running mode, the status
/// keeps the env the policy would set. Warm settings that only fit the wished mode do not keep
/// maxPods from being sized (they change no maxPods); a fixed maxPods the running mode cannot
/// carry blocks the policy, so nothing is written above what the IPs can back.
pub(super) fn recompute(e: &mut Evaluated<'_>, prefix: bool) {
    resize(e, prefix, false);
}

/// A `prefixDelegation: Auto` policy adopts prefix delegation where aws-node runs it (or this
/// plan's write turns it on): Auto is content with either mode, and never asks to turn it off
/// again. Its env follows too, so it does not report a conflict with the policy that turned it
/// on, and the next pass (with the live env on) plans the same.
pub(super) fn adopt_for_auto(e: &mut Evaluated<'_>, running: Option<bool>) {
    if e.input.spec.prefix_delegation == crate::crd::PrefixDelegation::Auto
        && running == Some(true)
        && matches!(&e.outcome, Ok(Some(rec)) if !rec.prefix_delegation)
    {
        resize(e, true, true);
    }
}

/// [`recompute`]; with `adopt_env`, the status's env is the resized recommendation's too.
fn resize(e: &mut Evaluated<'_>, prefix: bool, adopt_env: bool) {
    let mode = if prefix {
        PrefixDelegationMode::Enabled
    } else {
        PrefixDelegationMode::Disabled
    };
    let request = TuningRequest {
        prefix_delegation: mode,
        ..e.request.clone()
    };
    let recommended = engine::recommend(&request, &e.facts).or_else(|err| {
        let default_warm = TuningRequest {
            warm_pool: Default::default(),
            ..request.clone()
        };
        engine::recommend(&default_warm, &e.facts).map_err(|_| err)
    });
    let wanted_env = match &e.outcome {
        Ok(Some(original)) => original.env.clone(),
        _ => BTreeMap::new(),
    };
    match recommended {
        Ok(rec) => {
            e.plan.warnings.clear();
            e.outcome = Ok(Some(rec));
            fill_from_recommendation(e);
            if !adopt_env {
                // The status reports what this policy would set, not the running env.
                e.plan.cni_env = wanted_env;
            }
        }
        Err(err) => {
            e.outcome = Err(Blocked {
                reason: Reason::InvalidSpec,
                message: format!(
                    "aws-node runs ENABLE_PREFIX_DELEGATION={prefix}, and for that mode: {err} \
                     (spec of policy {})",
                    e.input.name
                ),
            });
            e.plan.prefix_delegation = None;
            e.plan.max_pods = None;
            e.plan.instance_types.clear();
        }
    }
}
