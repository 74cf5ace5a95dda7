//! Process-level faults: two replicas with leader election never both write, a released lease is
//! taken over at once, and a shutdown signal stops the whole operator cleanly.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use kube::Api;
use serde_json::json;
use vpc_cni_tuner::fence::Fence;
use vpc_cni_tuner::leader::{self, LeaseConfig};
use vpc_cni_tuner::testing::{aws_node_ds, default_policy};

mod support;
use support::fake_api::{DS_PATH, FakeApi, status_path};
use support::rbac::{DEFAULT_NAMES, Names};

/// The lease names of [`config`].
const LEASE_NAMES: Names = Names {
    daemonset: DEFAULT_NAMES.daemonset,
    lease: ("operators", "vpc-cni-tuner"),
};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/operators/leases/vpc-cni-tuner";

/// `run` flags for an in-process operator: admin server on a free loopback port, a short
/// debounce.
fn run_args() -> vpc_cni_tuner::cli::RunArgs {
    vpc_cni_tuner::cli::RunArgs {
        kubeconfig: None,
        context: None,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        leader_elect: false,
        lease_namespace: "default".into(),
        lease_name: "vpc-cni-tuner".into(),
        identity: None,
        daemonset: Default::default(),
        resync_seconds: 300,
        debounce_millis: 10,
        status_count_seconds: 60,
        log_format: vpc_cni_tuner::cli::LogFormat::Text,
        aws_region: None,
        ec2_endpoint_url: None,
        karpenter: false,
        rollouts: false,
        rollout_follow_seconds: 30,
        restart_ready_timeout_seconds: 300,
        webhook_addr: None,
        webhook_secret: "vpc-cni-tuner-webhook-tls".into(),
        webhook_configuration: None,
        webhook_hosts: Vec::new(),
        webhook_cert_source: vpc_cni_tuner::webhook::server::CertSource::SelfManaged,
        cni_config_via: Default::default(),
        eks_cluster_name: None,
        eks_endpoint_url: None,
    }
}

/// Sends the shutdown signal; the operator must exit cleanly within 5 s.
async fn stop_and_join(
    stop: tokio::sync::watch::Sender<bool>,
    operator: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    stop.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), operator)
        .await
        .expect("stops within 5 s of the signal")
        .expect("task");
    result.expect("clean exit");
}

/// An API server holding aws-node, the default policy and one t3.medium node.
fn one_node_fleet() -> FakeApi {
    let api = FakeApi::new();
    api.insert(&aws_node_ds(&[("ENABLE_PREFIX_DELEGATION", "false")], &[]));
    api.insert(&default_policy());
    api.insert(&json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"node.kubernetes.io/instance-type": "t3.medium"}}}));
    api
}

type Running = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// The operator started in-process on `client`; the sender stops it.
fn start(client: kube::Client, args: vpc_cni_tuner::cli::RunArgs) -> Running {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(vpc_cni_tuner::operator::run_with_ec2(
        client, args, None, shutdown,
    ));
    (stop, operator)
}

/// Status patches of the default policy so far.
fn status_patches(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path == status_path("default"))
        .count()
}

/// Waits up to `within` for the first status patch; `what` says what it means if none comes.
async fn wait_for_status(api: &FakeApi, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while status_patches(api) == 0 {
        assert!(
            Instant::now() < deadline,
            "no status within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "operators".into(),
        name: "vpc-cni-tuner".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        retry_period: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_lead_at_once_and_a_released_lease_is_taken_over() {
    let api = FakeApi::with_names(LEASE_NAMES);
    let (flag_a, flag_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    // Each replica's write fence, elected: closed until its lease is held.
    let (fence_a, fence_b) = (Fence::open(), Fence::open());
    fence_a.elect();
    fence_b.elect();
    let (stop_a, shutdown_a) = tokio::sync::watch::channel(false);
    let (stop_b, shutdown_b) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(leader::run(
        Api::namespaced(api.client("operators"), "operators"),
        config("replica-a"),
        flag_a.clone(),
        fence_a.clone(),
        shutdown_a,
    ));
    let b = tokio::spawn(leader::run(
        Api::namespaced(api.client("operators"), "operators"),
        config("replica-b"),
        flag_b.clone(),
        fence_b.clone(),
        shutdown_b,
    ));

    let mut someone_led = false;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let (la, lb) = (
            flag_a.load(Ordering::Acquire),
            flag_b.load(Ordering::Acquire),
        );
        assert!(!(la && lb), "both replicas believe they lead");
        assert!(
            !(fence_a.check().is_ok() && fence_b.check().is_ok()),
            "both replicas may write"
        );
        someone_led |= la || lb;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(someone_led, "nobody acquired the lease");

    // Stop the leader: it releases the lease, and the other takes over well before the lease
    // would have expired.
    let (leader_stop, leader_task, follower_flag) = if flag_a.load(Ordering::Acquire) {
        (stop_a, a, flag_b.clone())
    } else {
        (stop_b, b, flag_a.clone())
    };
    leader_stop.send(true).unwrap();
    leader_task.await.unwrap();
    let released = Instant::now();
    while !follower_flag.load(Ordering::Acquire) {
        assert!(
            released.elapsed() < Duration::from_millis(1500),
            "no takeover after release"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.assert_clean();
}

#[tokio::test]
async fn lease_decision_respects_expiry() {
    // A lease held by someone else that nobody renews is taken only after it expires.
    let fake = FakeApi::with_names(LEASE_NAMES);
    fake.insert(&json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "vpc-cni-tuner", "namespace": "operators", "resourceVersion": "7"},
        "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
    }));
    let api = Api::namespaced(fake.client("operators"), "operators");
    assert!(
        !leader::try_acquire_or_renew(&api, &config("me"))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        leader::try_acquire_or_renew(&api, &config("me"))
            .await
            .unwrap()
    );
    let holder = fake.get(LEASE_PATH).unwrap()["spec"]["holderIdentity"].clone();
    assert_eq!(holder, "me");
    fake.assert_clean();
}

#[tokio::test]
async fn shutdown_stops_the_operator_cleanly() {
    // An API server with no objects; watches end at once (and are retried with backoff).
    let api = FakeApi::new();
    let (stop, operator) = start(api.client("default"), run_args());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !operator.is_finished(),
        "the operator runs until told to stop"
    );
    stop_and_join(stop, operator).await;
    api.assert_clean();
}

/// SIGTERM while a reconcile is writing: the write in flight completes, the reconcile finishes
/// (its status patch goes out), and then the operator exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_reconcile_finishes_the_reconcile_then_exits() {
    let api = one_node_fleet();
    let mut patch_started = api.hold(Method::PATCH, DS_PATH, Duration::from_millis(500));
    let (stop, operator) = start(api.client("default"), run_args());
    tokio::time::timeout(Duration::from_secs(10), patch_started.recv())
        .await
        .expect("the reconcile starts writing");
    stop_and_join(stop, operator).await;
    assert!(
        status_patches(&api) > 0,
        "the reconcile in flight finished before exit"
    );
    api.assert_clean();
}

/// A task that ends before the shutdown signal stops the whole operator with an error: here the
/// admin port is taken, which would otherwise leave a pod without probes running on.
#[tokio::test]
async fn busy_admin_port_stops_the_operator_with_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let unavailable = FakeApi::new();
    unavailable.fail_all(503, "ServiceUnavailable");
    let mut args = run_args();
    args.admin_addr = addr;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        vpc_cni_tuner::operator::run_with_ec2(unavailable.client("default"), args, None, shutdown),
    )
    .await
    .expect("the operator stops instead of running without its admin server");
    let err = result.expect_err("a busy admin port is an error");
    let message = format!("{err:#}");
    assert!(
        message.contains("admin server") && message.contains(&addr.to_string()),
        "{message}"
    );
    drop(taken);
}

/// The Node watch asks for a streaming initial list (one watch, no LIST pages); an API server
/// that refuses it (422, no WatchList) gets a paged list instead, and the operator plans either
/// way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stream_their_initial_list_or_fall_back_to_pages() {
    for refuse in [false, true] {
        let api = one_node_fleet();
        if refuse {
            api.refuse_streaming_lists();
        }
        let (stop, operator) = start(api.client("default"), run_args());
        wait_for_status(&api, Duration::from_secs(10), &format!("refuse: {refuse}")).await;
        stop_and_join(stop, operator).await;
        let node_requests: Vec<String> = api
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v1/nodes")
            .map(|r| r.query.clone())
            .collect();
        let streamed = node_requests
            .iter()
            .any(|q| q.contains("sendInitialEvents=true"));
        let paged = node_requests
            .iter()
            .any(|q| !q.contains("watch=true") && q.contains("limit=250"));
        assert!(
            streamed,
            "a streaming list is tried first: {node_requests:?}"
        );
        assert_eq!(
            paged, refuse,
            "LIST pages only when refused: {node_requests:?}"
        );
        api.assert_clean();
    }
}

/// The debounce gathers bursts of changes once the fleet has been planned; the first plan after
/// start-up runs as soon as every watch has listed, not a debounce later: with a debounce of a
/// minute, the first status patch comes well within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_plan_does_not_wait_for_the_debounce() {
    let api = one_node_fleet();
    let mut args = run_args();
    args.debounce_millis = 60_000;
    let (stop, operator) = start(api.client("default"), args);
    wait_for_status(
        &api,
        Duration::from_secs(20),
        "the first plan waited for the 60 s debounce",
    )
    .await;
    stop_and_join(stop, operator).await;
    api.assert_clean();
}
