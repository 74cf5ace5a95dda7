//! Scale on a real kube-apiserver + etcd (tests/support/envtest.rs): N kubelet-sized Nodes, the
//! shipped binary as a process, figures printed (not asserted; not part of the test command).
//!
//!     KUBEBUILDER_ASSETS=$(../shared/k8s/assets) SCALE_NODES=10000 SCALE_RUNS=3 cargo bench --bench scale
//!
//! With SCALE_RUNS > 1 the binary is started that many times against the same nodes (a fresh
//! policy each time) and the medians are printed too.
//!
//! Prints: node creation rate; process start -> /readyz and -> policy Ready; peak RSS (VmHWM)
//! after Ready and after churn; the API server's requests by verb and resource
//! (`apiserver_request_total`) during start-up, during a steady resync window and during churn;
//! and the reaction time from a Node of a new instance type to the aws-node write.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::envtest::ApiServer;
use support::fleet::realistic_node;
use vpc_cni_tuner::crd::NodeNetworkPolicy;

const TYPES: [&str; 6] = [
    "m5.large",
    "m5.xlarge",
    "c5.2xlarge",
    "r5.large",
    "m6i.large",
    "t3.large",
];

/// `apiserver_request_total` summed by (verb, resource). It counts every client: the GETs of
/// nodenetworkpolicies are this benchmark polling for the status, the lease PUTs are the API
/// server's own identity lease, and a watch is counted only when it ends.
async fn request_counts(admin: &Client) -> BTreeMap<(String, String), f64> {
    let text = admin
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *counts
            .entry((label("verb"), label("resource")))
            .or_default() += value;
    }
    counts
}

fn print_delta(
    what: &str,
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) {
    let interesting = [
        "nodes",
        "daemonsets",
        "nodenetworkpolicies",
        "events",
        "leases",
    ];
    let mut parts = Vec::new();
    for ((verb, resource), value) in after {
        let delta = value
            - before
                .get(&(verb.clone(), resource.clone()))
                .copied()
                .unwrap_or(0.0);
        if delta > 0.0 && interesting.contains(&resource.as_str()) {
            parts.push(format!("{verb} {resource}: {delta}"));
        }
    }
    println!(
        "  requests {what}: {}",
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    );
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat` (clock ticks of
/// 1/100 s, the Linux default).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(nodes_wanted: usize) {
    let Some(api) = ApiServer::start().await else {
        return;
    };
    let admin = api.client().await;
    let out = api.kubectl(&["apply", "-f", concat!(env!("CARGO_MANIFEST_DIR"), "/crds/")]);
    assert!(out.status.success());
    api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/nodenetworkpolicies.tuner.vpccni.io",
    ]);
    let daemonsets: Api<DaemonSet> = Api::namespaced(admin.clone(), "kube-system");
    daemonsets
        .patch("aws-node", &PatchParams::apply("eks").force(), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "aws-node", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"k8s-app": "aws-node"}}, "template": {
                "metadata": {"labels": {"k8s-app": "aws-node"}}, "spec": {"containers": [{"name": "aws-node",
                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1",
                "env": [{"name": "ENABLE_PREFIX_DELEGATION", "value": "false"}]}]}}}})))
        .await
        .unwrap();

    // Nodes: concurrent creates through the client (kubelet-sized objects with status).
    let nodes: Api<Node> = Api::all(admin.clone());
    let started = Instant::now();
    futures::stream::iter(0..nodes_wanted)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let mut node = realistic_node(i, TYPES[i % TYPES.len()]);
                node["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .retain(|k, _| k == "name" || k == "labels" || k == "annotations");
                let node: Node = serde_json::from_value(node).unwrap();
                nodes.create(&PostParams::default(), &node).await.unwrap();
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let created = started.elapsed();
    println!(
        "{nodes_wanted} nodes: created in {created:.1?} ({:.0}/s)",
        nodes_wanted as f64 / created.as_secs_f64()
    );

    let runs: usize = std::env::var("SCALE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut figures = Vec::new();
    for run in 0..runs {
        println!("run {}:", run + 1);
        figures.push(operator_run(&api, &admin, nodes_wanted, run).await);
    }
    if runs > 1 {
        let median = |pick: fn(&Figures) -> f64| {
            let mut values: Vec<f64> = figures.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!(
            "median of {runs} runs: /readyz {:.2} s, policy Ready {:.2} s, peak RSS {:.1} MiB \
             (after churn {:.1} MiB), reaction {:.2} s",
            median(|f| f.ready.as_secs_f64()),
            median(|f| f.policy_ready.as_secs_f64()),
            median(|f| f.rss_ready_mib),
            median(|f| f.rss_churn_mib),
            median(|f| f.reaction.as_secs_f64()),
        );
    }
}

/// One process run's figures.
struct Figures {
    ready: Duration,
    policy_ready: Duration,
    rss_ready_mib: f64,
    rss_churn_mib: f64,
    reaction: Duration,
}

/// Starts the release binary against the cluster, with a fresh policy `all`, and measures it;
/// leaves the cluster as it found it (the policy and the churn node deleted).
async fn operator_run(api: &ApiServer, admin: &Client, nodes_wanted: usize, run: usize) -> Figures {
    let nodes: Api<Node> = Api::all(admin.clone());
    let policies: Api<NodeNetworkPolicy> = Api::all(admin.clone());
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
            "metadata": {"name": "all"}, "spec": {}}))
            .unwrap(),
        )
        .await
        .unwrap();

    let before_start = request_counts(admin).await;
    let (etcd_pid, apiserver_pid) = api.pids();
    let apiserver_pid = apiserver_pid.unwrap();
    let cpu_before = (cpu_seconds(etcd_pid), cpu_seconds(apiserver_pid));
    let admin_port = support::free_port();
    let start = Instant::now();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_vpc-cni-tuner"))
        .args(["run", &format!("--admin-addr=127.0.0.1:{admin_port}")])
        .env_clear()
        .env("KUBECONFIG", api.kubeconfig())
        .env("RUST_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let ready = wait(Duration::from_secs(300), || async {
        matches!(support::http_get(admin_port, "/readyz"), Some((200, _))).then(|| start.elapsed())
    })
    .await;
    let policy_ready = wait(Duration::from_secs(300), || async {
        let p = policies.get("all").await.ok()?;
        p.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then(|| start.elapsed())
    })
    .await;
    println!("  process start -> /readyz {ready:.2?}, -> policy Ready {policy_ready:.2?}");
    // Where the start-up time goes: CPU seconds of each process over the wall time (2 cores).
    println!(
        "  start-up CPU: vpc-cni-tuner {:.1} s, kube-apiserver {:.1} s, etcd {:.1} s, in {:.1} s wall",
        cpu_seconds(pid),
        cpu_seconds(apiserver_pid) - cpu_before.1,
        cpu_seconds(etcd_pid) - cpu_before.0,
        policy_ready.as_secs_f64()
    );
    let rss_ready_mib = vm_hwm_kib(pid) as f64 / 1024.0;
    println!("  peak RSS after Ready: {rss_ready_mib:.1} MiB");
    let after_start = request_counts(admin).await;
    print_delta("during start-up", &before_start, &after_start);

    // Steady state: nothing changes for a few seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady = request_counts(admin).await;
    print_delta("in 5 s of steady state", &after_start, &steady);

    // Churn: a Node of a Xen type lowers maxPods; the policy's status follows (the env stays).
    let reaction_start = Instant::now();
    let mut xen = realistic_node(nodes_wanted + 1 + run, "m4.large");
    xen["metadata"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "name" || k == "labels");
    let xen: Node = serde_json::from_value(xen).unwrap();
    let xen_name = xen.metadata.name.clone().unwrap();
    nodes.create(&PostParams::default(), &xen).await.unwrap();
    let reaction = wait(Duration::from_secs(60), || async {
        let p = policies.get("all").await.ok()?;
        (p.status?.max_pods == Some(20)).then(|| reaction_start.elapsed())
    })
    .await;
    println!(
        "  reaction: new Xen node -> policy maxPods 20 in {reaction:.2?} (500 ms debounce included)"
    );
    let after_churn = request_counts(admin).await;
    print_delta("during churn", &steady, &after_churn);
    let rss_churn_mib = vm_hwm_kib(pid) as f64 / 1024.0;
    println!("  peak RSS after churn: {rss_churn_mib:.1} MiB");
    let _ = child.kill();
    let _ = child.wait();
    nodes.delete(&xen_name, &Default::default()).await.unwrap();
    policies.delete("all", &Default::default()).await.unwrap();
    wait(Duration::from_secs(30), || async {
        policies.get_opt("all").await.ok()?.is_none().then_some(())
    })
    .await;
    Figures {
        ready,
        policy_ready,
        rss_ready_mib,
        rss_churn_mib,
        reaction,
    }
}

fn main() {
    let nodes: usize = std::env::var("SCALE_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(nodes));
}
