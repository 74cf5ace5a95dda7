//! Kubernetes API faults: 500s, 429s, 409 conflicts on apply, and the aws-node DaemonSet deleted
//! and recreated. Each scenario shows the operator converges to the same result and that what
//! it applies is only what it owns. (A watch that expires with 410 Gone re-lists; the cache's
//! handling of that is tested in `controller::cache`.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::mock_api::*;
use vpc_cni_tuner::controller::Context;
use vpc_cni_tuner::controller::facts::aws_node_facts;

fn owned_env_only(body: &Value) {
    assert_eq!(
        env_of(body),
        PREFIX_ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    );
}

fn setup() -> (Context, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let ds = aws_node_ds(env(DEFAULT_ENV), &[]);
    fill(
        &ctx,
        vec![policy("default", "2026-01-01T00:00:00Z", json!({}), None)],
        vec![node("t3.medium", &[])],
        Some(&ds),
    );
    (ctx, handle)
}

fn next_handle(ctx: Context) -> (Context, Handle) {
    // Same caches, a fresh mocked connection for the next pass.
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let next = context(Client::new(service, "default"));
    next.policies.replace_all(
        ctx.policies
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, (*v).clone())),
    );
    next.nodes.replace_all(
        ctx.nodes
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, (*v).clone())),
    );
    next.aws_node.replace_all(
        ctx.aws_node
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, (*v).clone())),
    );
    (next, handle)
}

fn converge() -> Vec<Expect> {
    vec![
        expect(
            "PATCH",
            DS_PATH,
            owned_env_only,
            ds_response(PREFIX_ENV, PREFIX_OWNED),
        ),
        expect("POST", EVENTS_PATH, |_| {}, event_response()),
        expect(
            "PATCH",
            status_path("default"),
            |body| assert_eq!(condition(body, "Ready")["status"], "True"),
            echo_policy("default"),
        ),
    ]
}

#[tokio::test]
async fn server_error_on_the_daemonset_patch_is_retried_and_converges() {
    let (ctx, handle) = setup();
    let (ctx, result) = attempt(
        ctx,
        handle,
        vec![expect_error("PATCH", DS_PATH, 500, "InternalError")],
    )
    .await;
    let err = result.expect_err("500");
    assert_eq!(err.kind(), "server");
    let (ctx, handle) = next_handle(ctx);
    let (_, report) = scenario(ctx, handle, converge()).await;
    assert!(report.daemonset_written);
}

#[tokio::test]
async fn throttling_429_is_classified_and_retried() {
    let (ctx, handle) = setup();
    let (ctx, result) = attempt(
        ctx,
        handle,
        vec![expect_error("PATCH", DS_PATH, 429, "TooManyRequests")],
    )
    .await;
    assert_eq!(result.expect_err("429").kind(), "throttled");
    let (ctx, handle) = next_handle(ctx);
    scenario(ctx, handle, converge()).await;
}

#[tokio::test]
async fn conflict_409_on_apply_is_retried_and_converges() {
    let (ctx, handle) = setup();
    let (ctx, result) = attempt(
        ctx,
        handle,
        vec![expect_error("PATCH", DS_PATH, 409, "Conflict")],
    )
    .await;
    assert_eq!(result.expect_err("409").kind(), "conflict");
    let (ctx, handle) = next_handle(ctx);
    scenario(ctx, handle, converge()).await;
}

#[tokio::test]
async fn status_patch_failure_after_a_good_write_converges_without_rewriting_aws_node() {
    let (ctx, handle) = setup();
    let (ctx, result) = attempt(
        ctx,
        handle,
        vec![
            expect(
                "PATCH",
                DS_PATH,
                owned_env_only,
                ds_response(PREFIX_ENV, PREFIX_OWNED),
            ),
            expect("POST", EVENTS_PATH, |_| {}, event_response()),
            expect_error("PATCH", status_path("default"), 503, "ServiceUnavailable"),
        ],
    )
    .await;
    assert_eq!(result.expect_err("503").kind(), "server");
    // The DaemonSet write landed (its answer is in the cache): the retry patches status only.
    let (ctx, handle) = next_handle(ctx);
    let (_, report) = scenario(
        ctx,
        handle,
        vec![expect(
            "PATCH",
            status_path("default"),
            |body| assert_eq!(condition(body, "CNIConfigured")["status"], "True"),
            echo_policy("default"),
        )],
    )
    .await;
    assert!(!report.daemonset_written);
}

#[tokio::test]
async fn daemonset_deleted_and_recreated() {
    let (ctx, handle) = setup();
    let (ctx, _) = scenario(ctx, handle, converge()).await;

    // Deleted: Ready=False, nothing written to a DaemonSet that is not there.
    let ds = aws_node_ds(env(PREFIX_ENV), PREFIX_OWNED);
    assert!(
        ctx.aws_node
            .apply(watcher::Event::Delete(ds), aws_node_facts)
    );
    let (ctx, handle) = next_handle(ctx);
    let (ctx, report) = scenario(
        ctx,
        handle,
        vec![
            expect(
                "PATCH",
                status_path("default"),
                |body| assert_eq!(condition(body, "Ready")["reason"], "DaemonSetNotFound"),
                echo_policy("default"),
            ),
            expect(
                "POST",
                EVENTS_PATH,
                |body| assert_eq!(body["type"], "Warning"),
                event_response(),
            ),
        ],
    )
    .await;
    assert!(!report.daemonset_written);

    // Recreated by the add-on with its defaults: the same env is applied again.
    let fresh = aws_node_ds(env(DEFAULT_ENV), &[]);
    assert!(
        ctx.aws_node
            .apply(watcher::Event::Apply(fresh), aws_node_facts)
    );
    let (ctx, handle) = next_handle(ctx);
    let (_, report) = scenario(ctx, handle, converge()).await;
    assert!(report.daemonset_written);
}

#[tokio::test]
async fn throttling_429_with_retry_after_waits_at_least_that_long() {
    let (ctx, handle) = setup();
    let mut throttled = expect_error("PATCH", DS_PATH, 429, "TooManyRequests");
    throttled.respond["details"] = json!({"retryAfterSeconds": 7});
    let (_, result) = attempt(ctx, handle, vec![throttled]).await;
    let err = result.expect_err("429");
    assert_eq!(err.kind(), "throttled");
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(7)));
    let short = std::time::Duration::from_millis(500);
    assert_eq!(
        vpc_cni_tuner::controller::retry_delay(&err, short),
        std::time::Duration::from_secs(7)
    );
    let long = std::time::Duration::from_secs(60);
    assert_eq!(vpc_cni_tuner::controller::retry_delay(&err, long), long);
}

/// The real watcher against a mocked API server: the first watch ends with 410 Gone (resource
/// version too old); the watcher re-lists, and the node cache drops the node deleted meanwhile.
#[tokio::test]
async fn watch_expired_with_410_relists_and_the_cache_follows() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Node;
    use kube::Api;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vpc_cni_tuner::controller::facts::node_facts;

    let lists = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = lists.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let counter = counter.clone();
        async move {
            support::rbac::assert_permitted(
                request.method().as_str(),
                request.uri(),
                &support::rbac::DEFAULT_NAMES,
            );
            let node = |name: &str| json!({"metadata": {"name": name, "labels": {"node.kubernetes.io/instance-type": "m5.large"}}});
            let watch = request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("watch=true");
            let body = if watch {
                if counter.load(Ordering::SeqCst) == 1 {
                    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
                    format!("{gone}\n").into_bytes()
                } else {
                    Vec::new()
                }
            } else {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (rv, items) = if n == 0 {
                    ("10", vec![node("a"), node("b")])
                } else {
                    ("20", vec![node("b"), node("c")])
                };
                serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": rv}, "items": items})).unwrap()
            };
            Ok::<_, std::convert::Infallible>(Response::new(Body::from(body)))
        }
    });
    let ctx = context(Client::new(service, "default"));
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut events =
        watcher::watcher(nodes, vpc_cni_tuner::controller::node_watch_config()).boxed();
    let mut lists_done = 0;
    let mut errors = 0;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    ctx.nodes.apply(event, node_facts);
                    if done {
                        lists_done += 1;
                        if lists_done == 2 {
                            break;
                        }
                    }
                }
                Err(_) => errors += 1,
            }
        }
    })
    .await
    .expect("the watcher re-lists after 410");
    assert_eq!(errors, 1, "the 410 surfaces once");
    let keys: Vec<String> = ctx.nodes.snapshot().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["b", "c"],
        "a deleted while the watch was gone, c added"
    );
    assert_eq!(lists.load(Ordering::SeqCst), 2);
}
