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

const OWNED: &[&str] = &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"];
const APPLIED: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_PREFIX_TARGET", "1"),
];

fn owned_env_only(body: &Value) {
    assert_eq!(
        env_of(body),
        APPLIED
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
            ds_response(APPLIED, OWNED),
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
                ds_response(APPLIED, OWNED),
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
    let ds = aws_node_ds(env(APPLIED), OWNED);
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
