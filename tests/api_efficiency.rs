//! API efficiency at fleet scale (10,000 nodes, 10 policies), counting every request the fleet
//! reconcile sends to the fake API server, which answers like the real one (the applied object
//! comes back and lands in the caches).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use http::Method;
use support::fake_api::*;
use vpc_cni_tuner::controller::{Context, reconcile_fleet};
use vpc_cni_tuner::plan::NodeFacts;
use vpc_cni_tuner::testing::{DEFAULT_ENV, aws_node_ds, node, pool_policies};

const NODES: usize = 10_000;
const POOLS: usize = 10;

fn pool_node(i: usize, instance_type: &str) -> (String, NodeFacts) {
    let facts = node(instance_type)
        .with_label("pool", &format!("pool-{}", i % POOLS))
        .with_capacity(250);
    (format!("node-{i}"), facts)
}

/// Large types only: Auto keeps prefix delegation off.
const LARGE: [&str; 4] = ["m5.24xlarge", "c5.18xlarge", "r5.16xlarge", "m6i.32xlarge"];

fn setup() -> (Context, Verifier) {
    let (ctx, api) = MockApi::new();
    api.fill(
        &ctx,
        pool_policies(POOLS),
        vec![],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    ctx.observed()
        .nodes
        .replace_all((0..NODES).map(|i| pool_node(i, LARGE[i % LARGE.len()])));
    (ctx, api)
}

/// Churn: 500 nodes leave and 500 of the same types and pools join, so the plan is unchanged.
fn churn(ctx: &Context) {
    let leaving: std::collections::BTreeSet<String> =
        (0..500).map(|i| format!("node-{i}")).collect();
    let mut churned: Vec<(String, NodeFacts)> = ctx
        .observed()
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
    ctx.observed().nodes.replace_all(churned);
}

/// The requests since the last call, as (method, path).
fn take(api: &Verifier) -> Vec<(Method, String)> {
    api.take_requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_resyncs_write_nothing_and_one_change_writes_once() {
    let (ctx, api) = setup();
    reconcile_fleet(&ctx).await.expect("first pass");
    let first = take(&api);
    let status_patches = first
        .iter()
        .filter(|(m, p)| m == Method::PATCH && p.ends_with("/status"))
        .count();
    assert_eq!(
        status_patches, POOLS,
        "one status per policy on the first pass"
    );
    api.sync_policies(&ctx);

    // Periodic resyncs of a converged fleet: not a single request.
    for _ in 0..3 {
        let report = reconcile_fleet(&ctx).await.expect("resync");
        assert_eq!(report, Default::default());
    }
    assert_eq!(take(&api), vec![], "a steady state writes nothing");

    churn(&ctx);
    reconcile_fleet(&ctx).await.expect("churn");
    assert_eq!(take(&api), vec![], "churn with known types writes nothing");

    // One change: a small type joins pool-0 (the oldest policy), prefix delegation turns on.
    let mut changed: Vec<(String, NodeFacts)> = ctx
        .observed()
        .nodes
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, (*v).clone()))
        .collect();
    changed.push(pool_node(0, "t3.medium"));
    changed.last_mut().unwrap().0 = "small-node".into();
    ctx.observed().nodes.replace_all(changed);
    reconcile_fleet(&ctx).await.expect("change");
    let writes = take(&api);
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
    api.sync_policies(&ctx);
    reconcile_fleet(&ctx).await.expect("settled");
    assert_eq!(take(&api), vec![], "and then nothing more");
    api.assert_clean();
}

/// The same fleet in EKS add-on mode: one DescribeAddon, one schema read and one UpdateAddon for
/// the change, one follow-up read once EKS applied it, then no EKS call and no Kubernetes
/// request through resyncs and node churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_mode_calls_eks_once_per_change_and_never_in_steady_state() {
    use vpc_cni_tuner::testing::{EKS_ADDON_ENV, eks_addon_ds};

    let (ctx, api, eks) = MockApi::addon(true);
    api.fill(
        &ctx,
        pool_policies(POOLS),
        vec![],
        Some(&eks_addon_ds(EKS_ADDON_ENV, &[])),
    );
    ctx.observed()
        .nodes
        .replace_all((0..NODES).map(|i| pool_node(i, LARGE[i % LARGE.len()])));
    let report = reconcile_fleet(&ctx).await.expect("first pass");
    assert!(report.addon_updated);
    assert_eq!(
        eks.take_calls(),
        ["DescribeAddon", "DescribeAddonConfiguration", "UpdateAddon"]
    );
    let first = take(&api);
    assert!(
        first.iter().all(|(_, p)| !p.contains("/daemonsets/")),
        "aws-node is EKS's: {first:?}"
    );
    api.eks_applies(&ctx, &eks);
    api.sync_policies(&ctx);
    reconcile_fleet(&ctx).await.expect("follow");
    assert_eq!(eks.take_calls(), ["DescribeAddon", "DescribeUpdate"]);
    take(&api);
    api.sync_policies(&ctx);

    for _ in 0..3 {
        let report = reconcile_fleet(&ctx).await.expect("resync");
        assert_eq!(report, Default::default());
    }
    churn(&ctx);
    reconcile_fleet(&ctx).await.expect("churn");
    assert_eq!(take(&api), vec![], "steady state and churn: no request");
    assert_eq!(eks.take_calls(), Vec::<&str>::new(), "and no EKS call");
    api.assert_clean();
}
