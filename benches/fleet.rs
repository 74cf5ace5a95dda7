//! Fleet-scale figures, printed (not asserted: machines here are shared and noisy).
//!
//!     cargo bench --bench fleet
//!     FLEET_ONLY=plan cargo bench --bench fleet    # one part: plan, cache or reaction
//!
//! 1. plan: `plan_now` (the caches' snapshot and `plan_fleet`, as each reconcile does) over
//!    10,000 nodes of 200 instance types and 10 policies.
//! 2. node cache: 10,000 kubelet-sized Node objects served by the fake API server
//!    (`tests/support/fake_api.rs`; paged LIST, as the watcher asks for it) through the real
//!    watcher into the node cache; resident memory and the cache's size.
//! 3. reaction: a Node of a new instance type lands in the cache -> the DaemonSet patch request
//!    leaves the client (fleet reconcile, debounce excluded); median and p99.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use support::fleet::realistic_node;

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;
use serde_json::json;
use support::fake_api::{DS_PATH, FakeApi, MockApi, NODES_PATH};
use vpc_cni_tuner::controller::{Context, plan_now, reconcile_fleet};
use vpc_cni_tuner::crd::DaemonSetRef;
use vpc_cni_tuner::instance::InstanceCatalog;
use vpc_cni_tuner::observe::facts::{aws_node_facts, node_facts};
use vpc_cni_tuner::observe::node_view::NodeView as Node;
use vpc_cni_tuner::plan::NodeFacts;
use vpc_cni_tuner::testing::{aws_node_ds, node, pool_policies};

/// Counts live heap bytes (the `cap` crate wraps the system allocator).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const NODES: usize = 10_000;
const TYPES: usize = 200;
const POLICIES: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn fleet_types() -> Vec<&'static str> {
    // Nitro types only, spread over the table, so Auto has something to decide.
    let catalog = InstanceCatalog::embedded();
    let nitro: Vec<&'static str> = catalog
        .iter()
        .filter(|(_, l)| l.supports_prefix_delegation())
        .map(|(n, _)| n)
        .collect();
    let step = nitro.len() / TYPES;
    nitro.into_iter().step_by(step.max(1)).take(TYPES).collect()
}

fn node_facts_fleet(types: &[&str]) -> Vec<NodeFacts> {
    (0..NODES)
        .map(|i| NodeFacts {
            instance_id: Some(format!("i-{i:017x}").into()),
            ..node(types[i % types.len()])
                .with_label("pool", &format!("pool-{}", i % POLICIES))
                .with_capacity(110)
        })
        .collect()
}

fn bench_plan() {
    let types = fleet_types();
    let ds = aws_node_ds(&[], &[]);
    let (ctx, api) = MockApi::new();
    api.fill(
        &ctx,
        pool_policies(POLICIES),
        node_facts_fleet(&types),
        Some(&ds),
    );
    let mut samples = Vec::new();
    let rounds = std::env::var("FLEET_PLAN_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    for _ in 0..rounds {
        let started = Instant::now();
        let (_, plan) = plan_now(&ctx);
        samples.push(started.elapsed());
        assert_eq!(plan.policies.len(), POLICIES);
    }
    samples.sort();
    println!(
        "plan: {NODES} nodes, {} instance types, {POLICIES} policies: median {:.2} ms, p99 {:.2} ms",
        types.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
}

fn resident_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn bench_node_cache() {
    let types = fleet_types();
    let sample = serde_json::to_vec(&realistic_node(1, types[0]))
        .unwrap_or_default()
        .len();
    let (before, _) = resident_kib();
    let heap_before = ALLOCATOR.allocated();
    let api = FakeApi::new();
    api.generate(NODES_PATH, NODES, move |i| {
        realistic_node(i, types[i % types.len()])
    });
    let client = api.client("default");
    let ctx = Context::new(
        client.clone(),
        DaemonSetRef::default(),
        Arc::new(AtomicBool::new(true)),
    );
    let nodes: Api<Node> = Api::all(client);
    let started = Instant::now();
    let mut events = watcher(nodes, vpc_cni_tuner::controller::node_watch_config()).boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let done = matches!(event, watcher::Event::InitDone);
        ctx.observed().nodes.apply(event, node_facts);
        if done {
            break;
        }
    }
    drop(events);
    let elapsed = started.elapsed();
    let (after, peak) = resident_kib();
    let heap_live = ALLOCATOR.allocated().saturating_sub(heap_before);
    let label_bytes: usize = ctx
        .observed()
        .nodes
        .snapshot()
        .iter()
        .map(|(k, n)| {
            k.len()
                + n.labels
                    .iter()
                    .map(|(a, b)| a.len() + b.len())
                    .sum::<usize>()
        })
        .sum();
    println!(
        "node cache: {} nodes of ~{:.1} KiB JSON each listed in {:.2} s (mock API server in the \
         same process); resident {:.1} MiB after (was {:.1} MiB before; peak {:.1} MiB); live heap \
         held by the cache {:.1} MiB ({:.1} MiB of names and labels)",
        ctx.observed().nodes.len(),
        sample as f64 / 1024.0,
        elapsed.as_secs_f64(),
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        heap_live as f64 / (1024.0 * 1024.0),
        label_bytes as f64 / (1024.0 * 1024.0)
    );
}

async fn bench_reaction() {
    let types = fleet_types();
    // Only large types: Auto keeps prefix delegation off until a small type joins.
    let catalog = InstanceCatalog::embedded();
    let big: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| {
            catalog
                .lookup(t)
                .is_ok_and(|l| l.max_enis * (l.ipv4_per_eni - 1) + 2 >= 250)
        })
        .collect();
    let nodes = node_facts_fleet(&big);
    let ds = aws_node_ds(&[("ENABLE_PREFIX_DELEGATION", "false")], &[]);
    let (ctx, api) = MockApi::new();
    api.fill(&ctx, pool_policies(POLICIES), nodes, Some(&ds));
    let mut sent_rx = api.hold(http::Method::PATCH, DS_PATH, Duration::ZERO);
    let _ = reconcile_fleet(&ctx).await;
    while sent_rx.try_recv().is_ok() {}

    let mut samples = Vec::new();
    for run in 0..100 {
        // Reset: the DaemonSet without prefix delegation, no small node.
        api.take_requests();
        api.insert(&ds);
        ctx.observed()
            .aws_node
            .replace_all([("kube-system/aws-node".to_owned(), aws_node_facts(&ds))]);
        if run > 0 {
            let gone: Node =
                serde_json::from_value(json!({"metadata": {"name": format!("new-{}", run - 1)}}))
                    .expect("node");
            ctx.observed()
                .nodes
                .apply(watcher::Event::Delete(gone), node_facts);
        }
        // The watch event of a Node of a new instance type, as the watcher delivers it.
        let mut joined = realistic_node(NODES + run, "t3.medium");
        joined["metadata"]["name"] = json!(format!("new-{run}"));
        joined["metadata"]["labels"]["pool"] = json!("pool-0");
        let joined: Node = serde_json::from_value(joined).expect("node");
        let started = Instant::now();
        ctx.observed()
            .nodes
            .apply(watcher::Event::Apply(joined), node_facts);
        let _ = reconcile_fleet(&ctx).await;
        if let Ok(sent) = sent_rx.try_recv() {
            samples.push(sent - started);
        }
        while sent_rx.try_recv().is_ok() {}
    }
    samples.sort();
    if samples.is_empty() {
        println!("reaction: no DaemonSet patch observed");
        return;
    }
    println!(
        "reaction: Node watch event of a new instance type -> DaemonSet patch sent ({} runs, {NODES} nodes): \
         median {:.2} ms, p99 {:.2} ms (plus the {} ms debounce in `run`)",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        500
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `FLEET_ONLY=plan` (or `cache`, `reaction`) runs one part, e.g. under a profiler.
    let only = std::env::var("FLEET_ONLY").ok();
    let wanted = |part: &str| only.as_deref().is_none_or(|o| o == part);
    // Memory first, before anything else has grown the heap.
    if wanted("cache") {
        runtime.block_on(bench_node_cache());
    }
    // The fake API server's client spawns its buffer task: plan inside the runtime.
    if wanted("plan") {
        let guard = runtime.enter();
        bench_plan();
        drop(guard);
    }
    if wanted("reaction") {
        runtime.block_on(bench_reaction());
    }
}
