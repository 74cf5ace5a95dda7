//! Test fixtures, once for every test: the unit tests (`cfg(test)`), the integration tests and
//! the benches (the `test-util` feature, which the crate's dev-dependency on itself turns on).
//! Not part of the operator's API.
//!
//! - [`aws_node_ds`]: the aws-node DaemonSet as the EKS managed add-on ships it (VPC CNI
//!   v1.19.2), with the aws-node container's literal env given and, when `owned` is not empty,
//!   this operator's field manager owning those env entries.
//! - [`node`]: the plan's view of a Node of one instance type.
//! - [`policy`]: a `NodeNetworkPolicy` from a JSON spec; [`default_policy`] and
//!   [`pool_policies`] for the common fleets.

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{Value, json};

use crate::crd::{FIELD_MANAGER, NodeNetworkPolicy};
use crate::plan::{NodeFacts, labels};

/// The VPC CNI image of the fixtures' aws-node (the EKS add-on's build of v1.19.2).
pub const CNI_IMAGE: &str =
    "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1";

/// A small aws-node env before the operator: prefix delegation off, one warm ENI.
pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
    ("ENABLE_PREFIX_DELEGATION", "false"),
    ("WARM_ENI_TARGET", "1"),
];

/// The literal env of the EKS add-on's aws-node container (v1.19.2, default configuration).
pub const EKS_ADDON_ENV: &[(&str, &str)] = &[
    ("ADDITIONAL_ENI_TAGS", "{}"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "true"),
    ("AWS_VPC_ENI_MTU", "9001"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false"),
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
    ("ENABLE_POD_ENI", "false"),
    ("ENABLE_PREFIX_DELEGATION", "false"),
    ("WARM_ENI_TARGET", "1"),
];

/// The env the operator applies for a prefix-delegation fleet with the balanced profile.
pub const PREFIX_ENV: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_PREFIX_TARGET", "1"),
];

/// The env names the operator owns after applying [`PREFIX_ENV`].
pub const PREFIX_OWNED: &[&str] = &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"];

/// `[{"name": .., "value": ..}]` for literal env entries.
pub fn env_json(entries: &[(&str, &str)]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The `managedFields` entry of this operator's field manager owning the env entries `owned`
/// of the aws-node container.
pub fn owned_env_fields(manager: &str, owned: &[&str]) -> Value {
    let env: serde_json::Map<String, Value> = owned
        .iter()
        .map(|name| {
            (
                format!("k:{{\"name\":\"{name}\"}}"),
                json!({".": {}, "f:name": {}, "f:value": {}}),
            )
        })
        .collect();
    json!({"manager": manager, "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"aws-node\"}": {"f:env": env}}}}}}})
}

/// The aws-node DaemonSet as the EKS add-on ships it: an init container, the aws-node container
/// (the literal `env` given, then the downward-API `MY_NODE_NAME` and `MY_POD_NAME`) and the
/// network-policy agent. With `owned` not empty, `managedFields` says this operator owns those
/// env entries.
pub fn aws_node_ds(env: &[(&str, &str)], owned: &[&str]) -> DaemonSet {
    let image = |repo: &str, tag: &str| {
        format!("602401143452.dkr.ecr.us-west-2.amazonaws.com/{repo}:{tag}")
    };
    let mut container_env = env_json(env);
    if let Value::Array(entries) = &mut container_env {
        for (name, path) in [
            ("MY_NODE_NAME", "spec.nodeName"),
            ("MY_POD_NAME", "metadata.name"),
        ] {
            entries.push(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}));
        }
    }
    let mut ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "aws-node", "namespace": "kube-system", "labels": {
            "app.kubernetes.io/name": "aws-node", "app.kubernetes.io/instance": "aws-vpc-cni",
            "k8s-app": "aws-node", "app.kubernetes.io/version": "v1.19.2"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "aws-node"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "aws-node", "k8s-app": "aws-node"}},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "aws-node",
                    "hostNetwork": true,
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [{
                        "name": "aws-vpc-cni-init",
                        "image": image("amazon-k8s-cni-init", "v1.19.2-eksbuild.1"),
                        "env": [{"name": "DISABLE_TCP_EARLY_DEMUX", "value": "false"},
                                {"name": "ENABLE_IPv6", "value": "false"}],
                        "securityContext": {"privileged": true},
                        "volumeMounts": [{"mountPath": "/host/opt/cni/bin", "name": "cni-bin-dir"}]
                    }],
                    "containers": [{
                        "name": "aws-node",
                        "image": CNI_IMAGE,
                        "ports": [{"containerPort": 61678, "name": "metrics"}],
                        "env": container_env,
                        "resources": {"requests": {"cpu": "25m"}},
                        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                        "volumeMounts": [{"mountPath": "/host/opt/cni/bin", "name": "cni-bin-dir"}]
                    }, {
                        "name": "aws-eks-nodeagent",
                        "image": image("amazon/aws-network-policy-agent", "v1.1.6-eksbuild.1"),
                        "args": ["--enable-ipv6=false", "--enable-network-policy=false"],
                        "env": [{"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": true}
                    }],
                    "volumes": [{"name": "cni-bin-dir", "hostPath": {"path": "/opt/cni/bin"}}]
                }
            }
        }
    });
    if !owned.is_empty() {
        ds["metadata"]["managedFields"] = json!([owned_env_fields(FIELD_MANAGER, owned)]);
    }
    #[allow(clippy::expect_used)]
    serde_json::from_value(ds).expect("the fixture is a DaemonSet")
}

/// A Linux node of `instance_type`, as the plan sees it; no pods capacity reported.
pub fn node(instance_type: &str) -> NodeFacts {
    NodeFacts {
        labels: [
            (labels::INSTANCE_TYPE, instance_type),
            (labels::OS, "linux"),
        ]
        .into_iter()
        .collect(),
        capacity_pods: None,
        instance_id: None,
    }
}

impl NodeFacts {
    /// The node with one more label.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels = self.labels.with(key, value);
        self
    }

    /// The node reporting `status.capacity.pods`.
    pub fn with_capacity(mut self, pods: u32) -> Self {
        self.capacity_pods = Some(pods);
        self
    }
}

/// The policy `name`, created at `created` (RFC 3339), with a JSON `spec` and, optionally, a
/// current `status`.
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
    #[allow(clippy::expect_used)]
    serde_json::from_value(object).expect("the fixture is a NodeNetworkPolicy")
}

/// The policy `default`: every node, the defaults.
pub fn default_policy() -> NodeNetworkPolicy {
    policy("default", "2026-01-01T00:00:00Z", json!({}), None)
}

/// `count` policies `pool-0`, `pool-1`, ... selecting the nodes labelled `pool=<name>`,
/// `pool-0` the oldest.
pub fn pool_policies(count: usize) -> Vec<NodeNetworkPolicy> {
    (0..count)
        .map(|i| {
            policy(
                &format!("pool-{i}"),
                &format!("2026-01-{:02}T00:00:00Z", i % 28 + 1),
                json!({"nodeSelector": {"matchLabels": {"pool": format!("pool-{i}")}}}),
                None,
            )
        })
        .collect()
}

/// The plan's view of policies given as (name, RFC 3339 creation time, spec), generation 1.
pub fn policy_inputs<'a>(
    specs: &'a [(&'a str, &'a str, crate::crd::NodeNetworkPolicySpec)],
) -> Vec<crate::plan::PolicyInput<'a>> {
    specs
        .iter()
        .map(|(name, created, spec)| crate::plan::PolicyInput {
            name,
            created: Some((*created).to_owned()),
            generation: Some(1),
            spec,
            addon_env: None,
            handover: None,
            aws_node_rollouts: 0,
        })
        .collect()
}
