//! The admin server's endpoints, through the real router.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use http::{Request, StatusCode};
use support::fake_api::MockApi;
use tower::ServiceExt;
use vpc_cni_tuner::controller::{Context, plan_now};

async fn get(ctx: Arc<Context>, path: &str) -> (StatusCode, String) {
    let response = vpc_cni_tuner::admin::router(ctx)
        .oneshot(
            Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn livez_readyz_and_metrics() {
    let (ctx, _api) = MockApi::new();
    let ctx = Arc::new(ctx);
    assert_eq!(get(ctx.clone(), "/livez").await.0, StatusCode::OK);
    assert_eq!(
        get(ctx.clone(), "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before the caches sync"
    );
    ctx.observed().policies.replace_all([]);
    ctx.observed().nodes.replace_all([]);
    ctx.observed().aws_node.replace_all([]);
    assert_eq!(get(ctx.clone(), "/readyz").await.0, StatusCode::OK);

    ctx.metrics().reconciles.inc();
    let _ = plan_now(&ctx);
    let (status, text) = get(ctx, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("vpc_cni_tuner_reconciles_total 1"), "{text}");
    assert!(
        text.contains("vpc_cni_tuner_reconcile_duration_seconds"),
        "{text}"
    );
    assert!(text.contains("# EOF"), "{text}");
}
