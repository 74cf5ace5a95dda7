//! End-to-end against a real cluster, opt-in: runs only when `VPC_CNI_TUNER_E2E_KUBECONFIG`
//! names a kubeconfig (never the default context). It applies `crds/`, creates a throw-away
//! namespace with an aws-node DaemonSet (which schedules on no node), fake Nodes and a policy
//! selecting them, applies the Helm chart's RBAC rendered for that namespace, runs the operator
//! in-process as the chart's ServiceAccount (impersonated, with leader election), checks the env,
//! the status, the Event and that foreign env vars survive, and deletes what it created. Any
//! call the chart's RBAC does not allow keeps it from converging.
//!
//!     VPC_CNI_TUNER_E2E_KUBECONFIG=~/.kube/kind.yaml cargo test --test e2e -- --ignored

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

mod support;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use vpc_cni_tuner::crd::NodeNetworkPolicy;

async fn config() -> Option<Config> {
    let path = std::env::var_os("VPC_CNI_TUNER_E2E_KUBECONFIG")?;
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    Some(
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config"),
    )
}

/// The chart's ServiceAccount and RBAC, rendered (release `release`, namespace `namespace`) to
/// manage the DaemonSet `namespace/aws-node` with leader election.
fn chart_rbac(release: &str, namespace: &str) -> Vec<serde_json::Value> {
    let values = json!({"awsNode": {"namespace": namespace, "name": "aws-node"},
                        "leaderElection": {"enabled": true}, "crds": {"install": false}});
    let rendered =
        support::chart::render_with(&values, &["--name", release, "--namespace", namespace]);
    rendered
        .into_iter()
        .filter(|o| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&o["kind"].as_str().unwrap())
        })
        .collect()
}

/// Applies (or, with `delete`, deletes) one rendered RBAC object.
async fn rbac_object(client: &Client, object: &serde_json::Value, delete: bool) {
    let pp = PatchParams::apply("vpc-cni-tuner-e2e").force();
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    macro_rules! go {
        ($api:expr, $ty:ty) => {{
            let api: Api<$ty> = $api;
            if delete {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            } else {
                let typed: $ty = serde_json::from_value(object.clone()).unwrap();
                api.patch(&name, &pp, &Patch::Apply(&typed)).await.unwrap();
            }
        }};
    }
    match object["kind"].as_str().unwrap() {
        "ServiceAccount" => go!(Api::namespaced(client.clone(), namespace), ServiceAccount),
        "ClusterRole" => go!(Api::all(client.clone()), ClusterRole),
        "ClusterRoleBinding" => go!(Api::all(client.clone()), ClusterRoleBinding),
        "Role" => go!(Api::namespaced(client.clone(), namespace), Role),
        "RoleBinding" => go!(Api::namespaced(client.clone(), namespace), RoleBinding),
        other => panic!("not RBAC: {other}"),
    }
}

#[tokio::test]
#[ignore = "needs a cluster: set VPC_CNI_TUNER_E2E_KUBECONFIG and run with --ignored"]
async fn operator_converges_aws_node_and_reports_ready() {
    let Some(admin_config) = config().await else {
        panic!("VPC_CNI_TUNER_E2E_KUBECONFIG is not set");
    };
    let client = Client::try_from(admin_config.clone()).expect("client");
    let run = format!("e2e{}", std::process::id());
    let namespace = format!("vpc-cni-tuner-{run}");
    let pp = PatchParams::apply("vpc-cni-tuner-e2e").force();

    let crd: CustomResourceDefinition = serde_yaml::from_str(include_str!(
        "../crds/nodenetworkpolicies.tuner.vpccni.io.yaml"
    ))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "nodenetworkpolicies.tuner.vpccni.io",
        &pp,
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    daemonsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "aws-node"},
                "spec": {"selector": {"matchLabels": {"app": "aws-node-e2e"}}, "template": {
                    "metadata": {"labels": {"app": "aws-node-e2e"}},
                    "spec": {"nodeSelector": {"vpc-cni-tuner-e2e/never": "true"}, "containers": [{
                        "name": "aws-node", "image": "example.invalid/amazon-k8s-cni:v1.19.2-eksbuild.1",
                        "env": [{"name": "AWS_VPC_K8S_CNI_LOGLEVEL", "value": "DEBUG"},
                                {"name": "ENABLE_PREFIX_DELEGATION", "value": "false"},
                                {"name": "WARM_ENI_TARGET", "value": "1"}]}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..2 {
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": format!("{run}-node-{i}"), "labels": {
                    "node.kubernetes.io/instance-type": "t3.medium", "vpc-cni-tuner-e2e": run}}}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let policies: Api<NodeNetworkPolicy> = Api::all(client.clone());
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
                "metadata": {"name": run},
                "spec": {"nodeSelector": {"matchLabels": {"vpc-cni-tuner-e2e": run}},
                         "daemonSet": {"namespace": namespace, "name": "aws-node"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    // The chart's RBAC for this namespace; the operator runs as its ServiceAccount.
    let release = format!("{run}-tuner");
    let rbac = chart_rbac(&release, &namespace);
    for object in &rbac {
        rbac_object(&client, object, false).await;
    }
    let account = rbac
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .unwrap();
    let mut operator_config = admin_config.clone();
    operator_config.auth_info.impersonate =
        Some(format!("system:serviceaccount:{namespace}:{account}"));
    let operator_client = Client::try_from(operator_config).expect("impersonating client");

    let args = vpc_cni_tuner::cli::RunArgs {
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        leader_elect: true,
        lease_namespace: namespace.clone(),
        lease_name: "vpc-cni-tuner".into(),
        identity: Some(format!("{run}-operator")),
        daemonset: vpc_cni_tuner::crd::DaemonSetRef {
            namespace: namespace.clone(),
            name: "aws-node".into(),
        },
        resync_seconds: 30,
        debounce_millis: 200,
        log_format: vpc_cni_tuner::cli::LogFormat::Text,
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(vpc_cni_tuner::operator::run(
        operator_client,
        args,
        shutdown,
    ));

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut converged = false;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ds = daemonsets.get("aws-node").await.unwrap();
        let env = ds.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        let policy = policies.get(&run).await.unwrap();
        let ready = policy
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if value("ENABLE_PREFIX_DELEGATION").as_deref() == Some("true") && ready {
            assert_eq!(value("WARM_PREFIX_TARGET").as_deref(), Some("1"));
            assert_eq!(
                value("AWS_VPC_K8S_CNI_LOGLEVEL").as_deref(),
                Some("DEBUG"),
                "foreign env survives"
            );
            assert_eq!(
                value("WARM_ENI_TARGET").as_deref(),
                Some("1"),
                "foreign env survives"
            );
            let status = policy.status.unwrap();
            assert_eq!(status.matched_nodes, 2);
            assert_eq!(status.max_pods, Some(110));
            // The Event about the policy, in the default namespace the chart's Role allows.
            let events: Api<Event> = Api::namespaced(client.clone(), "default");
            let listed = events.list(&ListParams::default()).await.unwrap();
            assert!(
                listed.items.iter().any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(run.as_str())
                        && e.reason.as_deref() == Some("AwsNodeEnvUpdated")
                }),
                "an AwsNodeEnvUpdated Event about the policy"
            );
            converged = true;
            break;
        }
    }
    stop.send(true).unwrap();
    let _ = operator.await;

    let _ = policies.delete(&run, &DeleteParams::default()).await;
    for i in 0..2 {
        let _ = nodes
            .delete(&format!("{run}-node-{i}"), &DeleteParams::default())
            .await;
    }
    for object in &rbac {
        rbac_object(&client, object, true).await;
    }
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    assert!(converged, "aws-node did not converge within 90s");
}
