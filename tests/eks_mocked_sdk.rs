//! EKS add-on calls through the AWS SDK with a mocked HTTP layer (no network): the exact
//! UpdateAddon request (PRESERVE, the document, no version change), throttling retried with
//! backoff, AccessDenied not retried and named by action, and a missing add-on read as "none".
//! The wire-level EKS test double (tests/support/eks_double.rs) covers the rest end to end.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use aws_sdk_eks::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient, capture_request};
use aws_smithy_types::body::SdkBody;
use serde_json::{Value, json};
use vpc_cni_tuner::aws::eks::{EksAddonApi as _, SdkEks};
use vpc_cni_tuner::aws::{retry_config, timeout_config};

fn api(http: impl aws_sdk_eks::config::HttpClient + 'static) -> SdkEks {
    let config = aws_sdk_eks::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .http_client(http)
        .build();
    SdkEks::from_client(aws_sdk_eks::Client::from_conf(config), "prod")
}

fn response(status: u16, error_type: Option<&str>, body: Value) -> http::Response<SdkBody> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(code) = error_type {
        builder = builder.header("x-amzn-errortype", code);
    }
    builder.body(SdkBody::from(body.to_string())).unwrap()
}

fn any_request() -> http::Request<SdkBody> {
    http::Request::builder()
        .uri("https://eks.us-west-2.amazonaws.com/")
        .body(SdkBody::empty())
        .unwrap()
}

fn in_progress() -> Value {
    json!({"update": {"id": "u-1", "status": "InProgress", "type": "AddonUpdate", "errors": []}})
}

#[tokio::test]
async fn update_addon_sends_preserve_and_the_document_only() {
    let (http, request) = capture_request(Some(response(200, None, in_progress())));
    let document = r#"{"env":{"ENABLE_PREFIX_DELEGATION":"true"}}"#;
    let update = api(http).update_addon(document, "token-1").await.unwrap();
    assert_eq!(
        (update.id.as_str(), update.status.as_str()),
        ("u-1", "InProgress")
    );
    let sent = request.expect_request();
    assert_eq!(sent.method(), "POST");
    let uri: http::Uri = sent.uri().parse().unwrap();
    assert_eq!(uri.path(), "/clusters/prod/addons/vpc-cni/update");
    let body: Value = serde_json::from_slice(sent.body().bytes().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"configurationValues": document, "resolveConflicts": "PRESERVE",
               "clientRequestToken": "token-1"}),
        "no addonVersion, no role: only the document changes"
    );
}

#[tokio::test]
async fn throttling_is_retried_and_access_denied_is_not() {
    let throttled = || {
        ReplayEvent::new(
            any_request(),
            response(
                429,
                Some("ThrottlingException"),
                json!({"message": "Rate exceeded"}),
            ),
        )
    };
    let replay = StaticReplayClient::new(vec![
        throttled(),
        throttled(),
        ReplayEvent::new(any_request(), response(200, None, in_progress())),
    ]);
    let update = api(replay.clone()).update_addon("{}", "t").await.unwrap();
    assert_eq!(update.id, "u-1");
    assert_eq!(replay.actual_requests().count(), 3);

    let replay = StaticReplayClient::new(vec![ReplayEvent::new(
        any_request(),
        response(
            403,
            Some("AccessDeniedException"),
            json!({"message": "not authorized to perform: eks:UpdateAddon"}),
        ),
    )]);
    let err = api(replay.clone())
        .update_addon("{}", "t")
        .await
        .unwrap_err();
    assert_eq!(replay.actual_requests().count(), 1, "no retry storm");
    assert!(err.is_access_denied(), "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.action().as_deref(), Some("eks:UpdateAddon"));
}

#[tokio::test]
async fn a_missing_add_on_is_none_and_update_errors_are_read() {
    let replay = StaticReplayClient::new(vec![ReplayEvent::new(
        any_request(),
        response(
            404,
            Some("ResourceNotFoundException"),
            json!({"message": "No addon: vpc-cni found in cluster: prod"}),
        ),
    )]);
    assert_eq!(api(replay).describe_addon().await.unwrap(), None);

    let (http, request) = capture_request(Some(response(
        200,
        None,
        json!({"update": {"id": "u-2", "status": "Failed", "type": "AddonUpdate", "errors": [
            {"errorCode": "ConfigurationConflict", "errorMessage": "Conflicts found", "resourceIds": ["vpc-cni"]}]}}),
    )));
    let update = api(http).describe_update("u-2").await.unwrap();
    assert_eq!(update.status, "Failed");
    assert_eq!(update.errors, ["ConfigurationConflict: Conflicts found"]);
    let sent = request.expect_request();
    let uri: http::Uri = sent.uri().parse().unwrap();
    assert_eq!(uri.path(), "/clusters/prod/updates/u-2");
    assert_eq!(uri.query(), Some("addonName=vpc-cni"));
}
