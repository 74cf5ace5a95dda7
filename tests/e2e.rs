//! End-to-end against a real cluster, opt-in: runs only when `VPC_CNI_TUNER_E2E_KUBECONFIG`
//! names a kubeconfig (never the default context). It applies `crds/`, creates a throw-away
//! namespace with an aws-node DaemonSet (which schedules on no node), fake Nodes and a policy
//! selecting them, runs the operator in-process, checks the env, the status and that foreign env
//! vars survive, and deletes what it created.
//!
//!     VPC_CNI_TUNER_E2E_KUBECONFIG=~/.kube/kind.yaml cargo test --test e2e -- --ignored

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use vpc_cni_tuner::crd::NodeNetworkPolicy;

async fn client() -> Option<Client> {
    let path = std::env::var_os("VPC_CNI_TUNER_E2E_KUBECONFIG")?;
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Some(Client::try_from(config).expect("client"))
}

#[tokio::test]
#[ignore = "needs a cluster: set VPC_CNI_TUNER_E2E_KUBECONFIG and run with --ignored"]
async fn operator_converges_aws_node_and_reports_ready() {
    let Some(client) = client().await else {
        panic!("VPC_CNI_TUNER_E2E_KUBECONFIG is not set");
    };
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

    let args = vpc_cni_tuner::cli::RunArgs {
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        leader_elect: false,
        lease_namespace: namespace.clone(),
        lease_name: "vpc-cni-tuner".into(),
        identity: None,
        daemonset: vpc_cni_tuner::crd::DaemonSetRef {
            namespace: namespace.clone(),
            name: "aws-node".into(),
        },
        resync_seconds: 30,
        debounce_millis: 200,
        log_format: vpc_cni_tuner::cli::LogFormat::Text,
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(vpc_cni_tuner::operator::run(client.clone(), args, shutdown));

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
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    assert!(converged, "aws-node did not converge within 90s");
}
