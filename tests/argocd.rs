//! The Argo CD install path: the NodeNetworkPolicy health check (deploy/argocd/health.lua) run on
//! Lua 5.1 (Argo CD's gopher-lua dialect) against statuses the operator's own planner produces
//! and against hand-made edge cases; the example Applications' ignoreDifferences and sync
//! options; the chart's sync waves.

// The crate lints functions over 100 lines; the scenario reads top to bottom as one script.
#![allow(clippy::too_many_lines)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use serde_json::{Value, json};
use support::argocd::{health, health_script};
use support::fake_api::MockApi;
use vpc_cni_tuner::controller::plan_now;
use vpc_cni_tuner::crd::{FIELD_MANAGER, NodeNetworkPolicy, conditions as cond};
use vpc_cni_tuner::report::desired::desired_status;
use vpc_cni_tuner::testing::{DEFAULT_ENV, aws_node_ds, default_policy, node, policy};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The policy `name` with the status the operator would write for this fleet.
fn planned(
    policies: Vec<NodeNetworkPolicy>,
    nodes: &[&str],
    env_entries: &[(&str, &str)],
    name: &str,
) -> Value {
    let (ctx, api) = MockApi::new();
    api.fill(
        &ctx,
        policies,
        nodes.iter().map(|t| node(t)).collect(),
        Some(&aws_node_ds(env_entries, &[])),
    );
    let (policies, plan) = plan_now(&ctx);
    let policy = policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap();
    let status = desired_status(
        &plan.policies[name],
        None,
        None,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let mut object = serde_json::to_value(policy.as_ref()).unwrap();
    object["status"] = serde_json::to_value(status).unwrap();
    object
}

/// A runtime, because a kube Client spawns its buffer task.
#[tokio::test]
async fn statuses_the_operator_writes_map_to_argo_health() {
    let healthy = planned(
        vec![default_policy()],
        &["t3.medium", "m5.large"],
        DEFAULT_ENV,
        "default",
    );
    let (status, message) = health(&healthy);
    assert_eq!(status, "Healthy", "{message}");
    assert!(message.starts_with("Reconciled"), "{message}");

    let unknown = planned(
        vec![default_policy()],
        &["m5.large", "q9.enormous"],
        DEFAULT_ENV,
        "default",
    );
    let (status, message) = health(&unknown);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("UnknownInstanceType: "), "{message}");
    assert!(message.contains("q9.enormous"), "{message}");

    // Two policies disagree on prefix delegation: the younger one loses.
    let policies = || {
        vec![
            policy(
                "older",
                "2026-01-01T00:00:00Z",
                json!({"prefixDelegation": "Disabled"}),
                None,
            ),
            policy(
                "younger",
                "2026-02-01T00:00:00Z",
                json!({"prefixDelegation": "Enabled"}),
                None,
            ),
        ]
    };
    let (status, _) = health(&planned(policies(), &["m5.large"], DEFAULT_ENV, "older"));
    assert_eq!(status, "Healthy");
    let (status, message) = health(&planned(policies(), &["m5.large"], DEFAULT_ENV, "younger"));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("Conflict: "), "{message}");
    assert!(message.contains("older"), "names the winner: {message}");

    let dry_run = planned(
        vec![policy(
            "default",
            "2026-01-01T00:00:00Z",
            json!({"enforcement": "DryRun"}),
            None,
        )],
        &["t3.medium"],
        DEFAULT_ENV,
        "default",
    );
    let (status, message) = health(&dry_run);
    assert_eq!(status, "Healthy");
    assert!(message.starts_with("DryRun"), "{message}");

    let nothing = planned(
        vec![policy(
            "default",
            "2026-01-01T00:00:00Z",
            json!({"nodeSelector": {"matchLabels": {"pool": "none"}}}),
            None,
        )],
        &["t3.medium"],
        DEFAULT_ENV,
        "default",
    );
    let (status, message) = health(&nothing);
    assert_eq!(status, "Healthy");
    assert!(message.starts_with("NoMatchingNodes"), "{message}");
}

fn with_conditions(generation: i64, observed: Option<i64>, conditions: Value) -> Value {
    json!({
        "apiVersion": "tuner.vpccni.io/v1alpha1",
        "kind": "NodeNetworkPolicy",
        "metadata": {"name": "default", "generation": generation},
        "spec": {},
        "status": {"observedGeneration": observed, "conditions": conditions}
    })
}

fn c(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

#[test]
fn edge_cases_map_to_argo_health() {
    let ready = || c(cond::READY, "True", "Reconciled", "3 nodes planned");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
                   "metadata": {"name": "new", "generation": 1}, "spec": {}}),
            "Progressing",
            "Waiting for vpc-cni-tuner",
        ),
        (
            with_conditions(1, Some(1), json!([])),
            "Progressing",
            "Waiting",
        ),
        (
            with_conditions(1, None, Value::Null),
            "Progressing",
            "Waiting",
        ),
        (
            with_conditions(3, Some(2), json!([ready()])),
            "Progressing",
            "generation 3",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([c(cond::READY, "Unknown", "Pending", "")]),
            ),
            "Progressing",
            "Ready condition",
        ),
        (
            with_conditions(2, Some(2), json!([ready()])),
            "Healthy",
            "Reconciled: 3 nodes planned",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(
                        cond::CNI_CONFIGURED,
                        "False",
                        "AddonUpdating",
                        "waiting for EKS"
                    )
                ]),
            ),
            "Progressing",
            "AddonUpdating: waiting for EKS",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(
                        cond::CNI_CONFIGURED,
                        "False",
                        "AccessDenied",
                        "eks:UpdateAddon denied"
                    )
                ]),
            ),
            "Degraded",
            "EKS add-on: AccessDenied: eks:UpdateAddon",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(cond::CNI_CONFIGURED, "False", "DryRun", "would send")
                ]),
            ),
            "Healthy",
            "Reconciled",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(
                        cond::NODES_ROLLED_OUT,
                        "False",
                        "RolloutInProgress",
                        "ng-a: InProgress"
                    )
                ]),
            ),
            "Progressing",
            "Rollout: RolloutInProgress: ng-a: InProgress",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(
                        cond::NODES_ROLLED_OUT,
                        "False",
                        "RolloutWaiting",
                        "ng-a: Waiting"
                    )
                ]),
            ),
            "Progressing",
            "Rollout: RolloutWaiting",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(
                        cond::NODES_ROLLED_OUT,
                        "False",
                        "RolloutFailed",
                        "ng-a: Failed (PodEvictionFailure)"
                    )
                ]),
            ),
            "Degraded",
            "Rollout: RolloutFailed: ng-a: Failed (PodEvictionFailure)",
        ),
        (
            with_conditions(
                2,
                Some(2),
                json!([
                    ready(),
                    c(cond::NODES_ROLLED_OUT, "True", "RolledOut", "every group")
                ]),
            ),
            "Healthy",
            "Reconciled",
        ),
        (
            with_conditions(
                1,
                Some(1),
                json!([
                    ready(),
                    c(
                        cond::LAUNCH_TEMPLATES_SYNCED,
                        "False",
                        "AccessDenied",
                        "lt-0abc: not authorized to ec2:CreateLaunchTemplateVersion"
                    )
                ]),
            ),
            "Degraded",
            "Launch templates: AccessDenied: lt-0abc",
        ),
        (
            with_conditions(
                1,
                Some(1),
                json!([
                    ready(),
                    c(
                        cond::KARPENTER_SYNCED,
                        "False",
                        "KarpenterNotInstalled",
                        "default: the EC2NodeClass (karpenter.k8s.aws/v1) CRD is not installed"
                    )
                ]),
            ),
            "Degraded",
            "Karpenter node classes: KarpenterNotInstalled",
        ),
        (
            with_conditions(
                1,
                Some(1),
                json!([
                    c(
                        cond::READY,
                        "True",
                        "DryRun",
                        "computed; DryRun writes nothing"
                    ),
                    c(
                        cond::LAUNCH_TEMPLATES_SYNCED,
                        "False",
                        "DryRun",
                        "1 launch template(s) would get a new version"
                    )
                ]),
            ),
            "Healthy",
            "would get a new version",
        ),
        (
            with_conditions(
                1,
                Some(1),
                json!([
                    ready(),
                    c(
                        cond::LAUNCH_TEMPLATES_SYNCED,
                        "True",
                        "InSync",
                        "1 launch template(s) carry maxPods; 4 running node(s) still have another maxPods"
                    )
                ]),
            ),
            "Healthy",
            "4 running node(s)",
        ),
        (
            with_conditions(
                1,
                Some(1),
                json!([
                    ready(),
                    c(
                        cond::DEGRADED,
                        "True",
                        "Warnings",
                        "WARM_IP_TARGET set by another manager"
                    )
                ]),
            ),
            "Degraded",
            "Warnings: WARM_IP_TARGET",
        ),
        (
            with_conditions(
                1,
                Some(1),
                json!([
                    c(
                        cond::READY,
                        "False",
                        "DaemonSetNotManaged",
                        "run with --daemonset"
                    ),
                    c("example.com/Audited", "True", "Done", "")
                ]),
            ),
            "Degraded",
            "DaemonSetNotManaged: run with --daemonset",
        ),
        // A foreign condition alone says nothing about this operator's work.
        (
            with_conditions(
                1,
                Some(1),
                json!([c("example.com/Audited", "True", "Done", "")]),
            ),
            "Progressing",
            "Ready condition",
        ),
    ];
    for (object, want, message_part) in cases {
        let (status, message) = health(&object);
        assert_eq!(status, want, "{object}: {message}");
        assert!(
            message.contains(message_part),
            "{object}: {message:?} lacks {message_part:?}"
        );
    }
}

/// The Lua names the conditions the operator writes (not stale copies).
#[test]
fn health_check_uses_the_operators_condition_types() {
    let script = health_script();
    for type_ in [
        cond::READY,
        cond::CONFLICT,
        cond::DEGRADED,
        cond::LAUNCH_TEMPLATES_SYNCED,
        cond::KARPENTER_SYNCED,
        cond::CNI_CONFIGURED,
    ] {
        assert!(script.contains(&format!("\"{type_}\"")), "{type_}");
    }
}

fn applications() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/argocd/application.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn example_applications_do_not_fight_the_operator() {
    let apps = applications();
    assert_eq!(apps.len(), 2);
    for app in &apps {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(app["kind"], "Application");
        assert!(app["spec"]["destination"]["server"].is_string());
        assert!(app["spec"]["project"].is_string());
    }
    let operator = &apps[0];
    assert_eq!(operator["spec"]["source"]["path"], "charts/vpc-cni-tuner");
    assert!(
        root()
            .join(operator["spec"]["source"]["path"].as_str().unwrap())
            .join("Chart.yaml")
            .exists()
    );
    let options = operator["spec"]["syncPolicy"]["syncOptions"].to_string();
    assert!(options.contains("ServerSideApply=true"), "{options}");
    assert!(options.contains("CreateNamespace=true"), "{options}");
    // caBundle of the chart's webhook configuration is filled in by the operator: not drift.
    let ignore = &operator["spec"]["ignoreDifferences"][0];
    let rendered = support::chart::render(&json!({"webhook": {"enabled": true}}));
    let configuration = rendered
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("rendered with webhook.enabled");
    assert_eq!(ignore["kind"], "MutatingWebhookConfiguration");
    assert_eq!(ignore["name"], configuration["metadata"]["name"]);
    assert_eq!(
        ignore["jqPathExpressions"],
        json!([".webhooks[].clientConfig.caBundle"])
    );
    assert!(
        options.contains("RespectIgnoreDifferences=true"),
        "{options}"
    );

    let cni = &apps[1];
    let ignore = &cni["spec"]["ignoreDifferences"][0];
    assert_eq!(ignore["group"], "apps");
    assert_eq!(ignore["kind"], "DaemonSet");
    assert_eq!(ignore["name"], "aws-node");
    assert_eq!(ignore["namespace"], "kube-system");
    assert_eq!(ignore["managedFieldsManagers"], json!([FIELD_MANAGER]));
    let options: Vec<&str> = cni["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        options.contains(&"RespectIgnoreDifferences=true"),
        "{options:?}"
    );
    // The operator's values in the example pass the chart's schema, validate strictly, and
    // its default policy passes the CRD's schema and CEL rules.
    let values = &operator["spec"]["source"]["helm"]["valuesObject"];
    let report = support::chart::run_json("validate", values, &["--upgrade"]);
    assert_eq!(report["errors"], json!([]), "{report:#}");
    let rendered = support::chart::render_with(values, &["--upgrade"]);
    let policies: Vec<&Value> = rendered
        .iter()
        .filter(|o| o["kind"] == "NodeNetworkPolicy")
        .collect();
    assert_eq!(policies.len(), 1);
    assert_eq!(support::crd_schema::rejection(policies[0]), None);
}

/// The argocd-cm entry carries health.lua verbatim (the file is generated; `chart.py manifests
/// --check` in tests/chart.rs fails when it is stale) under the key Argo CD looks up.
#[test]
fn argocd_cm_carries_the_health_check() {
    let text = std::fs::read_to_string(root().join("deploy/argocd/argocd-cm.yaml")).unwrap();
    let patch: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(
        patch["data"]["resource.customizations.health.tuner.vpccni.io_NodeNetworkPolicy"],
        health_script()
    );
}
