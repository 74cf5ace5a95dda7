//! Status writes under node churn, on a real kube-apiserver + etcd (tests/support/envtest.rs)
//! with the shipped binary as a process; figures printed, not asserted (not part of the test
//! command; the e2e scenario `status_writes_stay_calm_under_node_churn` holds the bound).
//!
//!     KUBEBUILDER_ASSETS=$(../shared/k8s/assets) cargo bench --bench status_churn
//!
//! One policy over a fleet of `CHURN_FLEET` (default 200) m5.large Nodes; for each window in
//! `CHURN_WINDOWS` (seconds, default `0,60`; 0 writes every change, as before pacing) the
//! binary runs with `--status-count-seconds=WINDOW` while Nodes join and leave for
//! `CHURN_SECONDS` (default 120) at `CHURN_EVENTS` (default 500) events in that time, in
//! phases of 25 joins and 25 leaves. Prints
//! the policy's status writes per minute by cause (`vpc_cni_tuner_status_writes_total`) and
//! the status PATCHes the API server counted.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::envtest::ApiServer;
use vpc_cni_tuner::crd::NodeNetworkPolicy;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sums the lines of metric `name` (in the text format) whose labels contain `filter`.
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Status writes of policies the API server counted (`APPLY` or `PATCH` of the `status`
/// subresource of nodenetworkpolicies).
async fn status_patches(admin: &kube::Client) -> f64 {
    let text = admin
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("resource=\"nodenetworkpolicies\"")
                && l.contains("subresource=\"status\"")
                && (l.contains("verb=\"APPLY\"") || l.contains("verb=\"PATCH\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {"node.kubernetes.io/instance-type": "m5.large"}}}))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let fleet: usize = env_or("CHURN_FLEET", 200);
    let seconds: u64 = env_or("CHURN_SECONDS", 120);
    let events: u64 = env_or("CHURN_EVENTS", 500);
    let windows: Vec<u64> = std::env::var("CHURN_WINDOWS")
        .unwrap_or_else(|_| "0,60".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let Some(api) = ApiServer::start().await else {
        eprintln!("KUBEBUILDER_ASSETS is not set: nothing to measure");
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
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "aws-node", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"k8s-app": "aws-node"}}, "template": {
                "metadata": {"labels": {"k8s-app": "aws-node"}}, "spec": {"containers": [{"name": "aws-node",
                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1",
                "env": [{"name": "ENABLE_PREFIX_DELEGATION", "value": "true"},
                        {"name": "WARM_PREFIX_TARGET", "value": "1"}]}]}}}})).unwrap())
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(admin.clone());
    for i in 0..fleet {
        nodes
            .create(&PostParams::default(), &node(&format!("fleet-{i}")))
            .await
            .unwrap();
    }
    println!(
        "fleet of {fleet} m5.large nodes; churn: {events} node events in {seconds} s per window"
    );
    for window in windows {
        one_window(&api, &admin, window, seconds, events).await;
    }
}

/// The binary with `--status-count-seconds=window` through one churn: prints its status
/// writes per minute; leaves the cluster as it found it.
async fn one_window(api: &ApiServer, admin: &kube::Client, window: u64, seconds: u64, events: u64) {
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
    let admin_port = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpc-cni-tuner"))
        .args([
            "run",
            &format!("--admin-addr=127.0.0.1:{admin_port}"),
            &format!("--status-count-seconds={window}"),
        ])
        .env_clear()
        .env("KUBECONFIG", api.kubeconfig())
        .env("RUST_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = policies
            .get("all")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "policy never Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = |cause: &str| {
        let text = support::http_get(admin_port, "/metrics").unwrap().1;
        metric_sum(
            &text,
            "vpc_cni_tuner_status_writes_total{",
            &format!("cause=\"{cause}\""),
        )
    };
    let causes = ["counts", "values", "conditions"];
    let before: Vec<f64> = causes.iter().map(|c| writes(c)).collect();
    let patches_before = status_patches(admin).await;
    let started = Instant::now();
    let step = Duration::from_millis(seconds * 1000 / events.max(1));
    let mut live: std::collections::VecDeque<String> = Default::default();
    for e in 0..events {
        tokio::time::sleep_until((started + step * e as u32).into()).await;
        // Phases of 25 joins and 25 leaves, as a scale-up and a scale-down: the count drifts
        // (a join and a leave in one debounce window would cancel out).
        if (e / 25) % 2 == 0 || live.is_empty() {
            let name = format!("churn-{window}-{e}");
            nodes
                .create(&PostParams::default(), &node(&name))
                .await
                .unwrap();
            live.push_back(name);
        } else if let Some(name) = live.pop_front() {
            nodes.delete(&name, &Default::default()).await.unwrap();
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let per_minute: Vec<String> = causes
        .iter()
        .zip(&before)
        .map(|(c, b)| format!("{c} {:.1}", (writes(c) - b) / minutes))
        .collect();
    let patches = status_patches(admin).await - patches_before;
    println!(
        "  --status-count-seconds={window}: status writes per minute: {} (the API server \
             counted {:.1} status patches per minute)",
        per_minute.join(", "),
        patches / minutes
    );
    let _ = child.kill();
    let _ = child.wait();
    for name in live {
        nodes.delete(&name, &Default::default()).await.unwrap();
    }
    policies.delete("all", &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while policies.get_opt("all").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "policy not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
