//! Kubernetes API faults: 500s, 429s, 409 conflicts on apply, and the aws-node DaemonSet deleted
//! and recreated. Each scenario shows the operator converges to the same result and that what
//! it applies is only what it owns; and a watch that expires with 410 Gone re-lists.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use http::Method;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::fake_api::*;
use vpc_cni_tuner::controller::Context;
use vpc_cni_tuner::observe::facts::aws_node_facts;
use vpc_cni_tuner::testing::{DEFAULT_ENV, PREFIX_ENV, PREFIX_OWNED, aws_node_ds, node};

fn owned_env_only(body: &Value) {
    assert_eq!(env_of(body), pairs(PREFIX_ENV));
}

fn setup() -> (Context, Verifier) {
    let (ctx, api) = MockApi::cluster(
        vec![node("t3.medium")],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    (ctx, api)
}

fn converge() -> Vec<Step> {
    vec![
        apply_env(owned_env_only),
        event(|_| {}),
        status("default", |body| {
            assert_eq!(condition(body, "Ready")["status"], "True")
        }),
    ]
}

/// The first apply of aws-node fails with `code`; the error is classified as `kind`, and the
/// next pass converges.
async fn apply_fails_then_converges(code: u16, reason: &str, kind: &str) {
    let (ctx, api) = setup();
    api.fail(Method::PATCH, DS_PATH, code, reason);
    let err = api
        .attempt(&ctx, vec![apply_env(owned_env_only)])
        .await
        .expect_err("the apply failed");
    assert_eq!(err.kind(), kind);
    let report = api.reconcile(&ctx, converge()).await;
    assert!(report.daemonset_written);
}

#[tokio::test]
async fn server_error_on_the_daemonset_patch_is_retried_and_converges() {
    apply_fails_then_converges(500, "InternalError", "server").await;
}

#[tokio::test]
async fn throttling_429_is_classified_and_retried() {
    apply_fails_then_converges(429, "TooManyRequests", "throttled").await;
}

#[tokio::test]
async fn conflict_409_on_apply_is_retried_and_converges() {
    apply_fails_then_converges(409, "Conflict", "conflict").await;
}

#[tokio::test]
async fn status_patch_failure_after_a_good_write_converges_without_rewriting_aws_node() {
    let (ctx, api) = setup();
    api.fail(
        Method::PATCH,
        &status_path("default"),
        503,
        "ServiceUnavailable",
    );
    let err = api
        .attempt(
            &ctx,
            vec![
                apply_env(owned_env_only),
                event(|_| {}),
                status("default", |_| {}),
            ],
        )
        .await
        .expect_err("503");
    assert_eq!(err.kind(), "server");
    // The DaemonSet write landed (its answer is in the cache): the retry patches status only.
    let report = api
        .reconcile(
            &ctx,
            vec![status("default", |body| {
                assert_eq!(condition(body, "CNIConfigured")["status"], "True")
            })],
        )
        .await;
    assert!(!report.daemonset_written);
}

#[tokio::test]
async fn daemonset_deleted_and_recreated() {
    let (ctx, api) = setup();
    api.reconcile(&ctx, converge()).await;

    // Deleted: Ready=False, nothing written to a DaemonSet that is not there.
    api.remove(DS_PATH);
    let ds = aws_node_ds(PREFIX_ENV, PREFIX_OWNED);
    assert!(
        ctx.observed()
            .aws_node
            .apply(watcher::Event::Delete(ds), aws_node_facts)
    );
    let report = api
        .reconcile(
            &ctx,
            vec![
                status("default", |body| {
                    assert_eq!(condition(body, "Ready")["reason"], "DaemonSetNotFound")
                }),
                event(|body| assert_eq!(body["type"], "Warning")),
            ],
        )
        .await;
    assert!(!report.daemonset_written);

    // Recreated by the add-on with its defaults: the same env is applied again.
    let fresh = aws_node_ds(DEFAULT_ENV, &[]);
    api.insert(&fresh);
    assert!(
        ctx.observed()
            .aws_node
            .apply(watcher::Event::Apply(fresh), aws_node_facts)
    );
    let report = api.reconcile(&ctx, converge()).await;
    assert!(report.daemonset_written);
}

#[tokio::test]
async fn throttling_429_with_retry_after_waits_at_least_that_long() {
    let (ctx, api) = setup();
    api.fail_with(Method::PATCH, DS_PATH, 429, "TooManyRequests", Some(7));
    let err = api
        .attempt(&ctx, vec![apply_env(|_| {})])
        .await
        .expect_err("429");
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

/// The real watcher against the fake API server: the first watch ends with 410 Gone (resource
/// version too old); the watcher re-lists, and the node cache drops the node deleted meanwhile.
#[tokio::test]
async fn watch_expired_with_410_relists_and_the_cache_follows() {
    use futures::StreamExt;
    use kube::Api;
    use vpc_cni_tuner::observe::facts::node_facts;
    use vpc_cni_tuner::observe::node_view::NodeView as Node;

    let (ctx, api) = MockApi::new();
    let node = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": {"node.kubernetes.io/instance-type": "m5.large"}}})
    };
    api.insert(&node("a"));
    api.insert(&node("b"));
    api.expire_next_watch(NODES_PATH);
    let nodes: Api<Node> = Api::all(ctx.client().clone());
    let mut events =
        watcher::watcher(nodes, vpc_cni_tuner::controller::node_watch_config()).boxed();
    let mut lists_done = 0;
    let mut errors = 0;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    ctx.observed().nodes.apply(event, node_facts);
                    if done {
                        lists_done += 1;
                        if lists_done == 2 {
                            break;
                        }
                        // While the watch is gone, a is deleted and c joins.
                        api.remove(&format!("{NODES_PATH}/a"));
                        api.insert(&node("c"));
                    }
                }
                Err(_) => errors += 1,
            }
        }
    })
    .await
    .expect("the watcher re-lists after 410");
    assert_eq!(errors, 1, "the 410 surfaces once");
    let keys: Vec<String> = ctx
        .observed()
        .nodes
        .snapshot()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        ["b", "c"],
        "a deleted while the watch was gone, c added"
    );
    let lists = api
        .api
        .requests()
        .iter()
        .filter(|r| r.path == NODES_PATH && !r.query.contains("watch=true"))
        .count();
    assert_eq!(lists, 2);
    api.assert_clean();
}

/// EKS add-on mode against the in-process EKS: throttling and server faults fail the reconcile
/// (retried with backoff) and converge; a refusal is a condition and is not sent again.
mod eks_addon {
    use super::*;
    use vpc_cni_tuner::testing::{FakeEks, default_policy};

    fn setup() -> (Context, Verifier, FakeEks) {
        MockApi::addon_cluster(default_policy(), vec![node("t3.medium")], &[])
    }

    fn sent() -> Vec<Step> {
        vec![
            event(|body| assert_eq!(body["reason"], "EksAddonUpdated")),
            status("default", |body| {
                assert_eq!(condition(body, "CNIConfigured")["reason"], "AddonUpdating")
            }),
        ]
    }

    #[tokio::test]
    async fn throttled_update_addon_is_retried_and_converges() {
        let (ctx, api, eks) = setup();
        eks.fail_next("UpdateAddon", "ThrottlingException", 400);
        let err = api.attempt(&ctx, vec![]).await.expect_err("throttled");
        assert_eq!(err.kind(), "aws");
        assert_eq!(
            eks.take_calls(),
            ["DescribeAddon", "DescribeAddonConfiguration", "UpdateAddon"]
        );
        let report = api.reconcile(&ctx, sent()).await;
        assert!(report.addon_updated);
        assert_eq!(eks.take_calls(), ["UpdateAddon"], "schema and read cached");
        assert_eq!(eks.state().updates.len(), 1);
    }

    #[tokio::test]
    async fn server_error_on_describe_addon_is_retried_and_converges() {
        let (ctx, api, eks) = setup();
        eks.fail_next("DescribeAddon", "ServerException", 500);
        let err = api.attempt(&ctx, vec![]).await.expect_err("5xx");
        assert_eq!(err.kind(), "aws");
        let report = api.reconcile(&ctx, sent()).await;
        assert!(report.addon_updated);
    }

    #[tokio::test]
    async fn access_denied_is_a_condition_naming_the_action_and_not_resent() {
        let (ctx, api, eks) = setup();
        eks.fail_next("UpdateAddon", "AccessDeniedException", 403);
        let report = api
            .reconcile(
                &ctx,
                vec![status("default", |body| {
                    let cni = condition(body, "CNIConfigured");
                    assert_eq!(cni["status"], "False");
                    assert_eq!(cni["reason"], "AccessDenied");
                    let message = cni["message"].as_str().unwrap();
                    assert!(message.contains("allow eks:UpdateAddon"), "{message}");
                })],
            )
            .await;
        assert!(!report.addon_updated);
        eks.take_calls();
        api.sync_policies(&ctx);
        assert_eq!(api.reconcile(&ctx, vec![]).await, Default::default());
        assert_eq!(eks.take_calls(), Vec::<&str>::new(), "not sent again");
    }

    #[tokio::test]
    async fn a_change_while_an_update_runs_waits_for_it() {
        let (ctx, api, eks) = setup();
        api.reconcile(&ctx, sent()).await;
        // The policy changes while EKS still applies the first update: the operator follows
        // it and waits instead of sending a second one, which EKS would refuse.
        eks.take_calls();
        api.sync_policies(&ctx);
        eks.state().status = "UPDATING".into();
        ctx.observed()
            .nodes
            .replace_all([("node-0".to_owned(), node("m5.24xlarge"))]);
        let report = api
            .reconcile(
                &ctx,
                vec![status("default", |body| {
                    let cni = condition(body, "CNIConfigured");
                    assert_eq!(cni["reason"], "AddonUpdating");
                })],
            )
            .await;
        assert!(!report.addon_updated);
        assert!(!eks.take_calls().contains(&"UpdateAddon"));
    }
}
