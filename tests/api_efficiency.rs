//! API efficiency at fleet scale (10,000 nodes, 10 policies), counting every request the fleet
//! reconcile sends to a recording mock API server that answers like the real one (the patched
//! object comes back and lands in the caches).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use support::mock_api::*;
use vpc_cni_tuner::controller::{Context, reconcile_fleet};
use vpc_cni_tuner::plan::NodeFacts;

const NODES: usize = 10_000;
const POOLS: usize = 10;

#[derive(Default)]
struct Recorder {
    requests: Vec<(Method, String)>,
    policies: BTreeMap<String, Value>,
}

fn recording_api(state: Arc<Mutex<Recorder>>) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let state = state.clone();
        async move {
            support::rbac::assert_permitted(
                request.method().as_str(),
                request.uri(),
                &support::rbac::DEFAULT_NAMES,
            );
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let body: Value =
                serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap())
                    .unwrap_or(Value::Null);
            let mut state = state.lock().unwrap();
            state.requests.push((method, path.clone()));
            let answer = if path.contains("/daemonsets/") {
                let applied: Vec<(String, String)> = env_of(&body);
                let entries: Vec<(&str, &str)> = applied
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let owned: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
                ds_response(&entries, &owned)
            } else if path.ends_with("/status") {
                let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                let mut policy = state.policies[&name].clone();
                policy["status"] = body["status"].clone();
                state.policies.insert(name, policy.clone());
                policy
            } else {
                event_response()
            };
            Ok::<_, Infallible>(Response::new(Body::from(
                serde_json::to_vec(&answer).unwrap(),
            )))
        }
    });
    Client::new(service, "default")
}

fn pool_node(i: usize, instance_type: &str) -> (String, NodeFacts) {
    let mut facts = node(instance_type, &[("pool", &format!("pool-{}", i % POOLS))]);
    facts.capacity_pods = Some(250);
    (format!("node-{i}"), facts)
}

/// Large types only: Auto keeps prefix delegation off.
const LARGE: [&str; 4] = ["m5.24xlarge", "c5.18xlarge", "r5.16xlarge", "m6i.32xlarge"];

fn setup() -> (Context, Arc<Mutex<Recorder>>) {
    let state = Arc::new(Mutex::new(Recorder::default()));
    let ctx = context(recording_api(state.clone()));
    let policies: Vec<_> = (0..POOLS)
        .map(|i| {
            policy(
                &format!("pool-{i}"),
                &format!("2026-01-{:02}T00:00:00Z", i + 1),
                json!({"nodeSelector": {"matchLabels": {"pool": format!("pool-{i}")}}}),
                None,
            )
        })
        .collect();
    state.lock().unwrap().policies = policies
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap(),
                serde_json::to_value(p).unwrap(),
            )
        })
        .collect();
    let ds = aws_node_ds(env(DEFAULT_ENV), &[]);
    fill(&ctx, policies, vec![], Some(&ds));
    ctx.nodes
        .replace_all((0..NODES).map(|i| pool_node(i, LARGE[i % LARGE.len()])));
    (ctx, state)
}

fn take(state: &Arc<Mutex<Recorder>>) -> Vec<(Method, String)> {
    std::mem::take(&mut state.lock().unwrap().requests)
}

/// Status answers go back into the policy cache, as the watch would bring them.
fn sync_policy_cache(ctx: &Context, state: &Arc<Mutex<Recorder>>) {
    let policies = state.lock().unwrap().policies.clone();
    ctx.policies.replace_all(
        policies
            .into_iter()
            .map(|(name, value)| (name, serde_json::from_value(value).unwrap())),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_resyncs_write_nothing_and_one_change_writes_once() {
    let (ctx, state) = setup();
    reconcile_fleet(&ctx).await.expect("first pass");
    let first = take(&state);
    let status_patches = first
        .iter()
        .filter(|(m, p)| m == Method::PATCH && p.ends_with("/status"))
        .count();
    assert_eq!(
        status_patches, POOLS,
        "one status per policy on the first pass"
    );
    sync_policy_cache(&ctx, &state);

    // Periodic resyncs of a converged fleet: not a single request.
    for _ in 0..3 {
        let report = reconcile_fleet(&ctx).await.expect("resync");
        assert_eq!(report, Default::default());
    }
    assert_eq!(take(&state), vec![], "a steady state writes nothing");

    // Churn: 500 nodes leave and 500 of the same types and pools join: the plan is unchanged.
    let leaving: std::collections::BTreeSet<String> =
        (0..500).map(|i| format!("node-{i}")).collect();
    let mut churned: Vec<(String, NodeFacts)> = ctx
        .nodes
        .snapshot()
        .into_iter()
        .filter(|(k, _)| !leaving.contains(k))
        .map(|(k, v)| (k, (*v).clone()))
        .collect();
    churned.extend((0..500).map(|i| {
        let (_, facts) = pool_node(i, LARGE[i % LARGE.len()]);
        (format!("replacement-{i}"), facts)
    }));
    ctx.nodes.replace_all(churned);
    reconcile_fleet(&ctx).await.expect("churn");
    assert_eq!(
        take(&state),
        vec![],
        "churn with known types writes nothing"
    );

    // One change: a small type joins pool-0 (the oldest policy), prefix delegation turns on.
    let mut changed: Vec<(String, NodeFacts)> = ctx
        .nodes
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, (*v).clone()))
        .collect();
    changed.push(pool_node(0, "t3.medium"));
    changed.last_mut().unwrap().0 = "small-node".into();
    ctx.nodes.replace_all(changed);
    reconcile_fleet(&ctx).await.expect("change");
    let writes = take(&state);
    let ds_patches = writes
        .iter()
        .filter(|(m, p)| m == Method::PATCH && p.contains("/daemonsets/"))
        .count();
    assert_eq!(ds_patches, 1, "exactly one DaemonSet patch: {writes:?}");
    let mut per_policy: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, path) in writes
        .iter()
        .filter(|(m, p)| m == Method::PATCH && p.ends_with("/status"))
    {
        *per_policy.entry(path.as_str()).or_default() += 1;
    }
    assert!(
        per_policy.values().all(|n| *n == 1),
        "at most one status patch per policy: {per_policy:?}"
    );
    sync_policy_cache(&ctx, &state);
    reconcile_fleet(&ctx).await.expect("settled");
    assert_eq!(take(&state), vec![], "and then nothing more");
}
