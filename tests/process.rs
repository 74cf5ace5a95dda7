//! Process-level faults: two replicas with leader election never both write, a released lease is
//! taken over at once, and a shutdown signal stops the whole operator cleanly.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use vpc_cni_tuner::leader::{self, LeaseConfig};

mod support;
use support::rbac::{DEFAULT_NAMES, Names, assert_permitted};

/// The lease names of [`config`].
const LEASE_NAMES: Names = Names {
    daemonset: DEFAULT_NAMES.daemonset,
    lease: ("operators", "vpc-cni-tuner"),
};

/// An in-process Lease store with the API server's optimistic concurrency: a PUT whose
/// resourceVersion is stale fails with 409, a POST of an existing lease fails with 409.
fn lease_server(store: Arc<Mutex<Option<Value>>>) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let store = store.clone();
        async move {
            let method = request.method().clone();
            assert_permitted(method.as_str(), request.uri(), &LEASE_NAMES);
            let body = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let mut lease = store.lock().unwrap();
            let status = |code: u16, reason: &str| {
                (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}),
                )
            };
            let (code, answer) = match method {
                Method::GET => match lease.as_ref() {
                    Some(current) => (200, current.clone()),
                    None => status(404, "NotFound"),
                },
                Method::POST if lease.is_some() => status(409, "AlreadyExists"),
                Method::POST => {
                    let mut created: Value = serde_json::from_slice(&body).unwrap();
                    created["metadata"]["resourceVersion"] = json!("1");
                    *lease = Some(created.clone());
                    (201, created)
                }
                Method::PUT => {
                    let mut replaced: Value = serde_json::from_slice(&body).unwrap();
                    let current_rv = lease
                        .as_ref()
                        .and_then(|l| l["metadata"]["resourceVersion"].as_str())
                        .unwrap_or("0")
                        .to_owned();
                    if replaced["metadata"]["resourceVersion"].as_str() != Some(current_rv.as_str())
                    {
                        status(409, "Conflict")
                    } else {
                        let next: u64 = current_rv.parse::<u64>().unwrap_or(0) + 1;
                        replaced["metadata"]["resourceVersion"] = json!(next.to_string());
                        *lease = Some(replaced.clone());
                        (200, replaced)
                    }
                }
                _ => status(405, "MethodNotAllowed"),
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            )
        }
    });
    Client::new(service, "operators")
}

/// `run` flags for an in-process operator: admin server on a free loopback port, a short
/// debounce.
fn run_args() -> vpc_cni_tuner::cli::RunArgs {
    vpc_cni_tuner::cli::RunArgs {
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        leader_elect: false,
        lease_namespace: "default".into(),
        lease_name: "vpc-cni-tuner".into(),
        identity: None,
        daemonset: Default::default(),
        resync_seconds: 300,
        debounce_millis: 10,
        log_format: vpc_cni_tuner::cli::LogFormat::Text,
        aws_region: None,
        ec2_endpoint_url: None,
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
    let store = Arc::new(Mutex::new(None));
    let (flag_a, flag_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (stop_a, shutdown_a) = tokio::sync::watch::channel(false);
    let (stop_b, shutdown_b) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(leader::run(
        Api::namespaced(lease_server(store.clone()), "operators"),
        config("replica-a"),
        flag_a.clone(),
        shutdown_a,
    ));
    let b = tokio::spawn(leader::run(
        Api::namespaced(lease_server(store.clone()), "operators"),
        config("replica-b"),
        flag_b.clone(),
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
    support::rbac::assert_none_denied();
}

#[tokio::test]
async fn lease_decision_respects_expiry() {
    // A lease held by someone else that nobody renews is taken only after it expires.
    let store = Arc::new(Mutex::new(Some(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "vpc-cni-tuner", "namespace": "operators", "resourceVersion": "7"},
        "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
    }))));
    let api = Api::namespaced(lease_server(store.clone()), "operators");
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
    let holder = store.lock().unwrap().as_ref().unwrap()["spec"]["holderIdentity"].clone();
    assert_eq!(holder, "me");
}

#[tokio::test]
async fn shutdown_stops_the_operator_cleanly() {
    // An API server with no objects; watches end at once (and are retried with backoff).
    let service = tower::service_fn(|request: Request<Body>| async move {
        assert_permitted(request.method().as_str(), request.uri(), &DEFAULT_NAMES);
        let path = request.uri().path().to_owned();
        let kind = if path.contains("nodenetworkpolicies") {
            "NodeNetworkPolicyList"
        } else if path.contains("daemonsets") {
            "DaemonSetList"
        } else {
            "NodeList"
        };
        let watch = request
            .uri()
            .query()
            .unwrap_or_default()
            .contains("watch=true");
        let body = if watch {
            Vec::new()
        } else {
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []})).unwrap()
        };
        Ok::<_, Infallible>(Response::new(Body::from(body)))
    });
    let client = Client::new(service, "default");
    let args = run_args();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(vpc_cni_tuner::operator::run_with_ec2(
        client, args, None, shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !operator.is_finished(),
        "the operator runs until told to stop"
    );
    stop.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), operator)
        .await
        .expect("stops within 5 s of the signal")
        .expect("task");
    result.expect("clean exit");
    support::rbac::assert_none_denied();
}

/// SIGTERM while a reconcile is writing: the write in flight completes, the reconcile finishes
/// (its status patch goes out), and then the operator exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_reconcile_finishes_the_reconcile_then_exits() {
    let (patch_started_tx, mut patch_started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let status_patched = Arc::new(AtomicBool::new(false));
    let status_flag = status_patched.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let patch_started_tx = patch_started_tx.clone();
        let status_flag = status_flag.clone();
        async move {
            assert_permitted(request.method().as_str(), request.uri(), &DEFAULT_NAMES);
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let method = request.method().clone();
            let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "aws-node", "namespace": "kube-system", "resourceVersion": "5"},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "aws-node",
                    "image": "x/amazon-k8s-cni:v1.19.2", "env": [{"name": "ENABLE_PREFIX_DELEGATION", "value": "false"}]}]}}}});
            let policy = json!({"apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
                "metadata": {"name": "default", "generation": 1, "resourceVersion": "3",
                             "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}});
            let answer: Value = if query.contains("watch=true") {
                return Ok::<_, Infallible>(Response::new(Body::from(Vec::new())));
            } else if method == Method::PATCH && path.contains("/daemonsets/") {
                let _ = patch_started_tx.send(());
                tokio::time::sleep(Duration::from_millis(500)).await;
                ds
            } else if method == Method::PATCH && path.ends_with("/status") {
                status_flag.store(true, Ordering::Release);
                policy
            } else if method == Method::POST {
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
                       "eventTime": "2026-01-01T00:00:00.000000Z"})
            } else if path.contains("nodenetworkpolicies") {
                json!({"apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicyList",
                       "metadata": {"resourceVersion": "3"}, "items": [policy]})
            } else if path.contains("daemonsets") {
                json!({"apiVersion": "apps/v1", "kind": "DaemonSetList", "metadata": {"resourceVersion": "5"}, "items": [ds]})
            } else {
                json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "7"}, "items": [
                    {"metadata": {"name": "n1", "labels": {"node.kubernetes.io/instance-type": "t3.medium"}}}]})
            };
            Ok(Response::new(Body::from(
                serde_json::to_vec(&answer).unwrap(),
            )))
        }
    });
    let args = run_args();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(vpc_cni_tuner::operator::run_with_ec2(
        Client::new(service, "default"),
        args,
        None,
        shutdown,
    ));
    tokio::time::timeout(Duration::from_secs(10), patch_started.recv())
        .await
        .expect("the reconcile starts writing");
    stop.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), operator)
        .await
        .expect("stops within 5 s of the signal")
        .expect("task");
    result.expect("clean exit");
    assert!(
        status_patched.load(Ordering::Acquire),
        "the reconcile in flight finished before exit"
    );
    support::rbac::assert_none_denied();
}

/// A task that ends before the shutdown signal stops the whole operator with an error: here the
/// admin port is taken, which would otherwise leave a pod without probes running on.
#[tokio::test]
async fn busy_admin_port_stops_the_operator_with_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let unavailable = tower::service_fn(|_request: Request<Body>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Body::from(
                    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": "ServiceUnavailable", "code": 503}))
                    .unwrap(),
                ))
                .unwrap(),
        )
    });
    let mut args = run_args();
    args.admin_addr = addr;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        vpc_cni_tuner::operator::run_with_ec2(
            Client::new(unavailable, "default"),
            args,
            None,
            shutdown,
        ),
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
