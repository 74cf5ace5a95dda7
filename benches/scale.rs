//! Scale on a real kube-apiserver + etcd (tests/support/envtest.rs): N kubelet-sized Nodes, the
//! shipped binary as a process, figures printed (not asserted; not part of the test command).
//!
//!     KUBEBUILDER_ASSETS=$(../shared/k8s/assets) SCALE_NODES=10000,100000 SCALE_RUNS=3 cargo bench --bench scale
//!
//! For each node count and each list mode (`SCALE_MODES`, default `streaming,paged`: an API
//! server serving streaming lists, and one started with `--feature-gates=WatchList=false`) it
//! creates the Nodes, starts the binary SCALE_RUNS times against them (a fresh policy each time;
//! medians), and runs a **reference** as a process too: a plain kube-rs `watcher` + `reflector`
//! of full `Node` objects in the same list mode, what a typical operator does. The last table
//! puts both modes and the reference side by side, as ratios that hold on a noisy machine.
//!
//! Prints: node creation rate; process start -> /readyz and -> policy Ready; peak RSS (VmHWM)
//! after Ready and after churn; the API server's requests by verb and resource
//! (`apiserver_request_total`) during start-up, during a steady resync window and during churn;
//! and the reaction time from a Node of a new instance type to the aws-node write.
//!
//! `SCALE_HOLD=1` stops after seeding the first API server and prints its kubeconfig, for
//! running and profiling the binary by hand; Ctrl-C stops the servers.

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
use kube::api::{Api, PostParams};
use serde_json::json;
use support::envtest::{ApiServer, ListMode};
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
    status_kib(pid, "VmHWM:")
}

/// Prints the peak RSS and what it is made of now; returns the peak in MiB. RSS counts the
/// pages of the binary that are mapped (file-backed: how many depends on the page cache as much
/// as on the code run) besides the heap (anonymous).
fn print_rss(pid: u32) -> f64 {
    let peak = vm_hwm_kib(pid) as f64 / 1024.0;
    println!(
        "  peak RSS after Ready: {peak:.1} MiB (now: {:.1} MiB anonymous, {:.1} MiB file-backed)",
        status_kib(pid, "RssAnon:") as f64 / 1024.0,
        status_kib(pid, "RssFile:") as f64 / 1024.0
    );
    peak
}

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
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

/// One node count, one list mode: the operator's medians and the reference's figures.
struct ModeFigures {
    nodes: usize,
    mode: ListMode,
    /// The reference as the first watcher on a fresh API server.
    reference_cold: Duration,
    operator: Figures,
    reference: ReferenceFigures,
}

/// aws-node and `nodes_wanted` kubelet-sized Nodes.
async fn seed(admin: &kube::Client, nodes_wanted: usize, mode: ListMode) {
    // A self-managed VPC CNI (created as Helm 3 does): the operator writes the DaemonSet.
    let daemonsets: Api<DaemonSet> = Api::namespaced(admin.clone(), "kube-system");
    let helm = PostParams {
        field_manager: Some("helm".into()),
        ..Default::default()
    };
    daemonsets
        .create(&helm, &serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "aws-node", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"k8s-app": "aws-node"}}, "template": {
                "metadata": {"labels": {"k8s-app": "aws-node"}}, "spec": {"containers": [{"name": "aws-node",
                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1",
                "env": [{"name": "ENABLE_PREFIX_DELEGATION", "value": "false"}]}]}}}})).unwrap())
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
        "{nodes_wanted} nodes, {} lists: created in {created:.1?} ({:.0}/s)",
        mode.label(),
        nodes_wanted as f64 / created.as_secs_f64()
    );
}

async fn run(nodes_wanted: usize, mode: ListMode) -> Option<ModeFigures> {
    let api = ApiServer::start_with(mode).await?;
    let admin = api.client().await;
    let out = api.kubectl(&["apply", "-f", concat!(env!("CARGO_MANIFEST_DIR"), "/crds/")]);
    assert!(out.status.success());
    api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/nodenetworkpolicies.tuner.vpccni.io",
    ]);
    seed(&admin, nodes_wanted, mode).await;
    if std::env::var_os("SCALE_HOLD").is_some() {
        // For profiling by hand: the seeded API server stays up until Ctrl-C (SIGINT), then
        // is stopped as on every other path.
        println!("holding; KUBECONFIG={}", api.kubeconfig().display());
        tokio::signal::ctrl_c().await.ok();
        return None;
    }

    let runs: usize = std::env::var("SCALE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    // The reference first, on a fresh API server: in streaming mode the first watcher pays for
    // the API server encoding every Node into its watch cache's serialized form, which later
    // watchers reuse. The operator then runs on a warm cache, and the reference again after it,
    // so the ratios compare like with like; the cold figure is printed too.
    let cold = reference_run(&api, mode);
    println!(
        "reference, first watcher on this API server: listed in {:.2} s, CPU {:.1} s, peak RSS \
         {:.1} MiB",
        cold.listed.as_secs_f64(),
        cold.cpu,
        cold.rss_mib
    );
    let mut figures = Vec::new();
    for run in 0..runs {
        println!("run {}:", run + 1);
        figures.push(operator_run(&api, &admin, nodes_wanted, run).await);
    }
    let median = |pick: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = figures.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let operator = Figures {
        ready: Duration::from_secs_f64(median(|f| f.ready.as_secs_f64())),
        policy_ready: Duration::from_secs_f64(median(|f| f.policy_ready.as_secs_f64())),
        cpu: median(|f| f.cpu),
        rss_ready_mib: median(|f| f.rss_ready_mib),
        rss_churn_mib: median(|f| f.rss_churn_mib),
        reaction: Duration::from_secs_f64(median(|f| f.reaction.as_secs_f64())),
    };
    if runs > 1 {
        println!(
            "median of {runs} runs: /readyz {:.2} s, policy Ready {:.2} s, CPU {:.1} s, peak RSS \
             {:.1} MiB (after churn {:.1} MiB), reaction {:.2} s",
            operator.ready.as_secs_f64(),
            operator.policy_ready.as_secs_f64(),
            operator.cpu,
            operator.rss_ready_mib,
            operator.rss_churn_mib,
            operator.reaction.as_secs_f64(),
        );
    }
    let reference = reference_run(&api, mode);
    println!(
        "reference after the operator: listed in {:.2} s, CPU {:.1} s, peak RSS {:.1} MiB",
        reference.listed.as_secs_f64(),
        reference.cpu,
        reference.rss_mib
    );
    Some(ModeFigures {
        nodes: nodes_wanted,
        mode,
        reference_cold: cold.listed,
        operator,
        reference,
    })
}

/// The reference's figures.
struct ReferenceFigures {
    listed: Duration,
    cpu: f64,
    rss_mib: f64,
}

/// Runs this bench binary again as the reference process (`SCALE_REFERENCE_MODE`), until it has
/// listed every Node.
fn reference_run(api: &ApiServer, mode: ListMode) -> ReferenceFigures {
    use std::io::BufRead as _;
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env_clear()
        .env("SCALE_REFERENCE_MODE", mode.label())
        .env("KUBECONFIG", api.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let listed = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("listed"))
        .map(|_| start.elapsed())
        .expect("the reference lists the nodes");
    let figures = ReferenceFigures {
        listed,
        cpu: cpu_seconds(pid),
        rss_mib: vm_hwm_kib(pid) as f64 / 1024.0,
    };
    let _ = child.kill();
    let _ = child.wait();
    figures
}

/// The reference process: what a typical kube-rs operator does with Nodes, a watcher and a
/// reflector store of full `Node` objects, in the list mode given; prints `listed N` once the
/// initial list is in the store, then keeps watching until killed.
async fn reference(mode: &str) {
    use kube::runtime::{WatchStreamExt as _, reflector, watcher};
    let kubeconfig = std::env::var_os("KUBECONFIG").expect("KUBECONFIG");
    let client = support::envtest::client_for(std::path::Path::new(&kubeconfig)).await;
    let nodes: Api<Node> = Api::all(client);
    let config = if mode == "streaming" {
        watcher::Config::default().streaming_lists()
    } else {
        watcher::Config::default()
    };
    let (store, writer) = reflector::store();
    let mut events = reflector(writer, watcher(nodes, config))
        .default_backoff()
        .boxed();
    let mut printed = false;
    while let Some(event) = events.next().await {
        if !printed && matches!(event, Ok(watcher::Event::InitDone)) {
            println!("listed {}", store.state().len());
            printed = true;
        }
    }
}

/// One process run's figures.
struct Figures {
    ready: Duration,
    policy_ready: Duration,
    /// The operator's CPU seconds up to policy Ready (the initial sync).
    cpu: f64,
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
    let cpu = cpu_seconds(pid);
    println!(
        "  start-up CPU: vpc-cni-tuner {cpu:.1} s, kube-apiserver {:.1} s, etcd {:.1} s, in {:.1} s wall",
        cpu_seconds(apiserver_pid) - cpu_before.1,
        cpu_seconds(etcd_pid) - cpu_before.0,
        policy_ready.as_secs_f64()
    );
    let rss_ready_mib = print_rss(pid);
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
        cpu,
        rss_ready_mib,
        rss_churn_mib,
        reaction,
    }
}

fn print_table(all: &[ModeFigures]) {
    println!();
    println!(
        "| nodes | list | policy Ready | operator CPU | peak RSS | reference listed (first watcher) | reference listed | reference CPU | reference peak RSS | CPU ratio | memory ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for f in all {
        println!(
            "| {} | {} | {:.1} s | {:.1} s | {:.1} MiB | {:.1} s | {:.1} s | {:.1} s | {:.1} MiB | {:.2} | {:.2} |",
            f.nodes,
            f.mode.label(),
            f.operator.policy_ready.as_secs_f64(),
            f.operator.cpu,
            f.operator.rss_ready_mib,
            f.reference_cold.as_secs_f64(),
            f.reference.listed.as_secs_f64(),
            f.reference.cpu,
            f.reference.rss_mib,
            f.operator.cpu / f.reference.cpu.max(0.01),
            f.operator.rss_ready_mib / f.reference.rss_mib.max(0.01),
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(mode) = std::env::var("SCALE_REFERENCE_MODE") {
        runtime.block_on(reference(&mode));
        return;
    }
    let counts: Vec<usize> = std::env::var("SCALE_NODES")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let modes: Vec<ListMode> = std::env::var("SCALE_MODES")
        .unwrap_or_else(|_| "streaming,paged".into())
        .split(',')
        .filter_map(|m| match m.trim() {
            "streaming" => Some(ListMode::Streaming),
            "paged" => Some(ListMode::Paged),
            _ => None,
        })
        .collect();
    let mut all = Vec::new();
    for nodes in counts {
        for &mode in &modes {
            // One API server at a time: each holds its own copy of the Nodes.
            if let Some(figures) = runtime.block_on(run(nodes, mode)) {
                all.push(figures);
            }
        }
    }
    print_table(&all);
}
