//! A mocked Kubernetes API for fleet-reconcile scenarios (kube's `tower_test`): every request is
//! asserted (method, path, field manager, body) and answered; a request nobody expected hangs
//! the reconcile, which the scenario's timeout turns into a failure.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use vpc_cni_tuner::controller::facts::aws_node_facts;
use vpc_cni_tuner::controller::{Context, ReconcileReport, reconcile_fleet};
use vpc_cni_tuner::crd::{DaemonSetRef, NodeNetworkPolicy};
use vpc_cni_tuner::plan::{NodeFacts, labels};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and the answer to give.
pub struct Expect {
    pub status: u16,
    method: &'static str,
    path: &'static str,
    check: Box<dyn Fn(&Value) + Send>,
    pub respond: Value,
}

pub fn expect(
    method: &'static str,
    path: &'static str,
    check: impl Fn(&Value) + Send + 'static,
    respond: Value,
) -> Expect {
    Expect {
        status: 200,
        method,
        path,
        check: Box::new(check),
        respond,
    }
}

/// An expected request answered with an API error status.
pub fn expect_error(method: &'static str, path: &'static str, code: u16, reason: &str) -> Expect {
    Expect {
        status: code,
        method,
        path,
        check: Box::new(|_| {}),
        respond: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("{reason} (injected)"), "reason": reason, "code": code}),
    }
}

pub const DS_PATH: &str = "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node";
pub const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

pub fn status_path(name: &str) -> &'static str {
    Box::leak(
        format!("/apis/tuner.vpccni.io/v1alpha1/nodenetworkpolicies/{name}/status")
            .into_boxed_str(),
    )
}

pub async fn verify(mut handle: Handle, expects: Vec<Expect>) {
    for (i, e) in expects.into_iter().enumerate() {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("request #{i} ({} {}) never came", e.method, e.path))
            .expect("service not called");
        assert_eq!(
            request.method().as_str(),
            e.method,
            "request #{i}: {}",
            request.uri()
        );
        assert_eq!(request.uri().path(), e.path, "request #{i}");
        super::rbac::assert_permitted(
            request.method().as_str(),
            request.uri(),
            &super::rbac::DEFAULT_NAMES,
        );
        let query = request.uri().query().unwrap_or_default().to_owned();
        if e.method == "PATCH" {
            assert!(query.contains("fieldManager=vpc-cni-tuner"), "{query}");
            assert!(query.contains("force=true"), "{query}");
            assert_eq!(
                request.headers()["content-type"],
                "application/apply-patch+yaml",
                "server-side apply"
            );
        }
        let body = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("json body")
        };
        (e.check)(&body);
        send.send_response(
            Response::builder()
                .status(e.status)
                .body(Body::from(serde_json::to_vec(&e.respond).expect("json")))
                .expect("response"),
        );
    }
}

pub fn context(client: Client) -> Context {
    Context::new(
        client,
        DaemonSetRef::default(),
        Arc::new(AtomicBool::new(true)),
    )
}

pub async fn scenario(
    ctx: Context,
    handle: Handle,
    expects: Vec<Expect>,
) -> (Context, ReconcileReport) {
    let (ctx, result) = attempt(ctx, handle, expects).await;
    (ctx, result.expect("reconcile succeeds"))
}

/// Like [`scenario`], returning the reconcile's result instead of requiring success.
pub async fn attempt(
    ctx: Context,
    handle: Handle,
    expects: Vec<Expect>,
) -> (
    Context,
    Result<ReconcileReport, vpc_cni_tuner::controller::Error>,
) {
    let verifier = tokio::spawn(verify(handle, expects));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile_fleet(&ctx))
        .await
        .expect("reconcile made a request nobody expected, or hung");
    verifier.await.expect("verifier");
    (ctx, result)
}

pub fn policy(name: &str, created: &str, spec: Value, status: Option<Value>) -> NodeNetworkPolicy {
    let mut object = json!({
        "apiVersion": "tuner.vpccni.io/v1alpha1",
        "kind": "NodeNetworkPolicy",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1, "creationTimestamp": created},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).expect("policy")
}

pub fn aws_node_ds(env: Value, owned: &[&str]) -> DaemonSet {
    let owned_fields: serde_json::Map<String, Value> = owned
        .iter()
        .map(|name| {
            (
                format!("k:{{\"name\":\"{name}\"}}"),
                json!({".": {}, "f:name": {}, "f:value": {}}),
            )
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "aws-node", "namespace": "kube-system",
            "labels": {"k8s-app": "aws-node"},
            "managedFields": [{"manager": "vpc-cni-tuner", "operation": "Apply", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"aws-node\"}": {"f:env": owned_fields}}}}}}}]},
        "spec": {"selector": {"matchLabels": {"k8s-app": "aws-node"}}, "template": {
            "metadata": {"labels": {"k8s-app": "aws-node"}},
            "spec": {"containers": [{
                "name": "aws-node",
                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1",
                "env": env
            }]}}}
    }))
    .expect("daemonset")
}

/// The env the operator applies for a prefix-delegation fleet with the balanced profile, and the
/// names it then owns.
pub const PREFIX_ENV: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_PREFIX_TARGET", "1"),
];
pub const PREFIX_OWNED: &[&str] = &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"];

pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
    ("ENABLE_PREFIX_DELEGATION", "false"),
    ("WARM_ENI_TARGET", "1"),
];

pub fn env(entries: &[(&str, &str)]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

pub fn node(instance_type: &str, extra: &[(&str, &str)]) -> NodeFacts {
    let mut labels: std::collections::BTreeMap<String, String> =
        [(labels::INSTANCE_TYPE.to_owned(), instance_type.to_owned())].into();
    labels.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    NodeFacts {
        labels,
        capacity_pods: Some(17),
        instance_id: None,
    }
}

pub fn fill(
    ctx: &Context,
    policies: Vec<NodeNetworkPolicy>,
    nodes: Vec<NodeFacts>,
    ds: Option<&DaemonSet>,
) {
    ctx.policies
        .replace_all(policies.into_iter().map(|p| (p.name_any(), p)));
    ctx.nodes.replace_all(
        nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| (format!("node-{i}"), n)),
    );
    ctx.aws_node
        .replace_all(ds.map(|ds| ("kube-system/aws-node".to_owned(), aws_node_facts(ds))));
}

pub fn env_of(body: &Value) -> Vec<(String, String)> {
    body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env list")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

pub fn condition<'a>(status_body: &'a Value, type_: &str) -> &'a Value {
    status_body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status_body}"))
}

pub fn echo_policy(name: &str) -> Value {
    json!({"apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
           "metadata": {"name": name, "generation": 1}, "spec": {}})
}

pub fn event_response() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
           "eventTime": "2026-01-01T00:00:00.000000Z"})
}

pub fn ds_response(env_entries: &[(&str, &str)], owned: &[&str]) -> Value {
    serde_json::to_value(aws_node_ds(env(env_entries), owned)).expect("json")
}
