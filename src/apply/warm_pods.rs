//! aws-node pods that run other warm values than their node's type wants
//! (`warmPool.perInstanceType`): ipamd read its env when the pod started, before the webhook
//! (or before the policy). Reported per instance type; with `warmPool.restartPods: Rolling`
//! (Enforce, the leader) restarted one node at a time: the pod is deleted (its DaemonSet creates
//! the new one, which the webhook gives the node's values), and the next node waits until that
//! new pod is Ready. No restart starts while any aws-node pod of the policy's nodes is not Ready;
//! a new pod that is not Ready within `--restart-ready-timeout-seconds` stops the restarts until
//! the policy's spec changes.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use tracing::{info, warn};

use super::Writer;
use crate::crd::{Enforcement, NodeNetworkPolicy, RestartPods, WarmPoolRestartStatus};
use crate::observe::restarts::Restart;
use crate::plan::{AwsNodePodFacts, FleetPlan, NodeFacts};

/// One policy's aws-node pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmPodsReport {
    /// Nodes per instance type whose pod runs other warm values.
    pub behind: BTreeMap<String, u32>,
    pub restart: Option<WarmPoolRestartStatus>,
    pub events: Vec<(String, &'static str, bool, String)>,
}

/// The reports by policy, and whether a restart is being followed (look again soon).
pub async fn apply(
    w: &Writer<'_>,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
) -> (BTreeMap<String, WarmPodsReport>, bool) {
    let mut reports = BTreeMap::new();
    let mut following = false;
    // Node names are copied for the policies that need them only: at 100,000 nodes that is
    // megabytes a reconcile.
    let wanted = policies.iter().any(|p| p.spec.warm_pool.per_instance_type);
    if !wanted || !w.observed.aws_node_pods.is_ready() {
        return (reports, false);
    }
    let pods = pods_by_node(w);
    let nodes = w.observed.nodes.snapshot();
    for policy in policies
        .iter()
        .filter(|p| p.spec.warm_pool.per_instance_type)
    {
        let name = policy.name_any();
        let Some(planned) = plan.policies.get(&name) else {
            continue;
        };
        let wanted: BTreeMap<&str, &BTreeMap<String, String>> = planned
            .instance_types
            .iter()
            .filter(|t| !t.warm_env.is_empty())
            .map(|t| (t.instance_type.as_str(), &t.warm_env))
            .collect();
        let Ok(selector) = crate::plan::selector_expressions(policy.spec.node_selector.as_ref())
        else {
            continue;
        };
        let mine: Vec<(&String, &Arc<NodeFacts>)> = nodes
            .iter()
            .filter(|(_, n)| n.labels.matches(&selector))
            .map(|(name, n)| (name, n))
            .collect();
        let mut report = WarmPodsReport::default();
        let mut behind_nodes = Vec::new();
        for (node, facts) in &mine {
            let Ok(instance_type) = facts.instance_type() else {
                continue;
            };
            let (Some(env), Some(pod)) = (wanted.get(instance_type), pods.get(node.as_str()))
            else {
                continue;
            };
            if !pod.terminating && &pod.warm_env != *env {
                *report.behind.entry(instance_type.to_owned()).or_default() += 1;
                behind_nodes.push((*node).clone());
            }
        }
        for t in wanted.keys() {
            report.behind.entry((*t).to_owned()).or_default();
        }
        if policy.spec.warm_pool.restart_pods == RestartPods::Rolling
            && policy.spec.enforcement == Enforcement::Enforce
        {
            let not_ready = mine
                .iter()
                .filter(|(n, _)| {
                    pods.get(n.as_str())
                        .is_some_and(|p| !p.ready || p.terminating)
                })
                .map(|(n, _)| (*n).clone())
                .next();
            let (status, follow) = restart(
                w,
                policy,
                &pods,
                &behind_nodes,
                not_ready,
                &mut report.events,
            )
            .await;
            following |= follow;
            report.restart = Some(status);
        }
        reports.insert(name, report);
    }
    (reports, following)
}

/// The newest live pod of each node.
fn pods_by_node(w: &Writer<'_>) -> BTreeMap<String, AwsNodePodFacts> {
    let mut by_node: BTreeMap<String, AwsNodePodFacts> = BTreeMap::new();
    for (_, pod) in w.observed.aws_node_pods.snapshot() {
        let Some(node) = pod.node.clone() else {
            continue;
        };
        let keep = by_node
            .get(&node)
            .is_none_or(|current| current.terminating && !pod.terminating);
        if keep {
            by_node.insert(node, (*pod).clone());
        }
    }
    by_node
}

/// Deletes aws-node pod `name` if it still is the pod with `uid`.
async fn delete(w: &Writer<'_>, name: &str, uid: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(w.client.clone(), &w.observed.managed.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    api.delete(name, &params).await.map(|_| ())
}

/// Follows the node being restarted: its new pod Ready (counted, the restart goes on: `None`),
/// still coming (`Restarting`), or late (`Failed`, and no more restarts).
fn follow_restart(
    w: &Writer<'_>,
    name: &str,
    generation: Option<i64>,
    pods: &BTreeMap<String, AwsNodePodFacts>,
    state: &mut Restart,
    events: &mut Vec<(String, &'static str, bool, String)>,
) -> Option<(&'static str, String, Option<String>, bool)> {
    let (node, old_uid, since) = state.waiting_for.clone()?;
    match pods.get(&node) {
        Some(pod) if pod.uid != old_uid && pod.ready && !pod.terminating => {
            state.restarted += 1;
            state.waiting_for = None;
            let note =
                format!("aws-node restarted on node {node}: it runs the node type's warm values");
            info!(policy = %name, %note);
            events.push((name.to_owned(), "AwsNodePodRestarted", false, note));
            None
        }
        _ if since.elapsed() > w.observed.restart_timeout => {
            let why = format!(
                "the new aws-node pod on node {node} was not Ready within {}s; restarts stopped \
                 (edit the policy to go on)",
                w.observed.restart_timeout.as_secs()
            );
            warn!(policy = %name, %why);
            events.push((name.to_owned(), "AwsNodeRestartFailed", true, why.clone()));
            state.waiting_for = None;
            state.failed = Some((generation, why.clone()));
            Some(("Failed", node, Some(why), false))
        }
        _ => {
            let message = format!("waiting for the new aws-node pod on node {node} to be Ready");
            Some(("Restarting", node, Some(message), true))
        }
    }
}

/// One step of a policy's rolling restart: its status, and whether to look again soon.
async fn restart(
    w: &Writer<'_>,
    policy: &NodeNetworkPolicy,
    pods: &BTreeMap<String, AwsNodePodFacts>,
    behind: &[String],
    not_ready: Option<String>,
    events: &mut Vec<(String, &'static str, bool, String)>,
) -> (WarmPoolRestartStatus, bool) {
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let mut state = w
        .observed
        .warm_restarts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&name)
        .cloned()
        .unwrap_or_default();
    let remaining = behind.len() as u32;
    let status = |state: &str, node: Option<String>, r: &Restart, message: Option<String>| {
        WarmPoolRestartStatus {
            state: state.to_owned(),
            node,
            restarted: r.restarted,
            remaining,
            message,
        }
    };
    let save = |r: &Restart| {
        w.observed
            .warm_restarts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), r.clone());
    };
    if let Some((at, why)) = &state.failed {
        if *at == generation {
            return (status("Failed", None, &state, Some(why.clone())), false);
        }
        state.failed = None;
    }
    if let Some((state_word, node, message, follow)) =
        follow_restart(w, &name, generation, pods, &mut state, events)
    {
        save(&state);
        return (status(state_word, Some(node), &state, message), follow);
    }
    save(&state);
    let Some(next) = behind.first() else {
        return (status("Idle", None, &state, None), false);
    };
    if let Some(node) = not_ready {
        let message = format!("the aws-node pod on node {node} is not Ready: no restart meanwhile");
        return (status("Waiting", Some(node), &state, Some(message)), true);
    }
    let Some(pod) = pods.get(next) else {
        return (status("Idle", None, &state, None), false);
    };
    let pod_name = &pod.name;
    match delete(w, pod_name, &pod.uid).await {
        Ok(_) => {
            w.count_write("aws_node_pod");
            state.waiting_for = Some((next.clone(), pod.uid.clone(), Instant::now()));
            save(&state);
            let message = format!("restarting aws-node on node {next} (pod {pod_name})");
            info!(policy = %name, %message);
            (
                status("Restarting", Some(next.clone()), &state, Some(message)),
                true,
            )
        }
        Err(err) => {
            let why = format!("cannot delete aws-node pod {pod_name} on node {next}: {err}");
            warn!(policy = %name, %why);
            (
                status("Waiting", Some(next.clone()), &state, Some(why)),
                true,
            )
        }
    }
}
