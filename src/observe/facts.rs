//! Projections of Kubernetes objects into the plain facts the plan reads.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;

use super::node_view::NodeView;
use crate::crd::{DaemonSetRef, FIELD_MANAGER};
use crate::plan::{AwsNodeFacts, EnvEntry, FieldManager, NodeFacts, OwnerMetadata, owner};

/// The container in the aws-node DaemonSet whose env the operator manages.
pub(crate) const AWS_NODE_CONTAINER: &str = "aws-node";

/// An aws-node pod: its node, readiness and the aws-node container's warm entries.
pub fn aws_node_pod_facts(pod: &k8s_openapi::api::core::v1::Pod) -> crate::plan::AwsNodePodFacts {
    let warm_env = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name == AWS_NODE_CONTAINER)
        .flat_map(|c| c.env.iter().flatten())
        .filter(|e| crate::engine::warm_pool::PER_NODE_ENV_VARS.contains(&e.name.as_str()))
        .filter_map(|e| {
            let value = e.value.as_deref().filter(|v| !v.is_empty())?;
            Some((e.name.clone(), value.to_owned()))
        })
        .collect();
    crate::plan::AwsNodePodFacts {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ready: pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        warm_env,
    }
}

/// A Node's labels, `status.capacity.pods`, EC2 instance id and readiness; the watch never parses the rest
/// ([`NodeView`]).
pub fn node_facts(node: &NodeView) -> NodeFacts {
    NodeFacts {
        labels: node.labels.clone(),
        capacity_pods: node
            .status
            .capacity
            .as_ref()
            .and_then(|c| c.pods.as_ref())
            .and_then(|q| q.0.trim().parse().ok()),
        instance_id: node
            .spec
            .provider_id
            .as_deref()
            .and_then(|id| id.strip_prefix("aws://"))
            .and_then(|rest| rest.rsplit('/').next())
            .filter(|id| id.starts_with("i-"))
            .map(compact_str::CompactString::from),
        not_ready: node.status.ready == Some(false),
    }
}

/// The aws-node container's image and env, and the env names this operator owns.
/// The DaemonSet's rollout from its status; `None` before the controller wrote one.
fn rollout(ds: &DaemonSet) -> Option<crate::plan::DaemonSetRollout> {
    let status = ds.status.as_ref()?;
    Some(crate::plan::DaemonSetRollout {
        generation: ds.metadata.generation.unwrap_or_default(),
        observed_generation: status.observed_generation?,
        desired: status.desired_number_scheduled,
        updated: status.updated_number_scheduled.unwrap_or_default(),
        unavailable: status.number_unavailable.unwrap_or_default(),
    })
}

pub fn aws_node_facts(ds: &DaemonSet) -> AwsNodeFacts {
    let reference = DaemonSetRef {
        namespace: ds.namespace().unwrap_or_default(),
        name: ds.name_any(),
    };
    let container = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == AWS_NODE_CONTAINER));
    let owner = owner::detect(&owner_metadata(ds));
    let (value_managers, item_managers) = env_managers(ds);
    let Some(container) = container else {
        return AwsNodeFacts {
            reference,
            owner,
            ..Default::default()
        };
    };
    AwsNodeFacts {
        reference,
        image: container.image.clone(),
        container_found: true,
        env: container
            .env
            .iter()
            .flatten()
            .map(|e| EnvEntry {
                name: e.name.clone(),
                value: if e.value_from.is_some() {
                    None
                } else {
                    Some(e.value.clone().unwrap_or_default())
                },
                from_source: e.value_from.is_some(),
            })
            .collect(),
        owned_env: owned_env_names(ds),
        rollout: rollout(ds),
        eks_addon: ds
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some(EKS_FIELD_MANAGER)),
        owned_field_entries: ds
            .managed_fields()
            .iter()
            .enumerate()
            .filter(|(_, m)| m.manager.as_deref() == Some(FIELD_MANAGER) && m.subresource.is_none())
            .map(|(i, _)| i)
            .collect(),
        owner,
        value_managers,
        item_managers,
    }
}

/// Labels, annotations and the other field managers of aws-node, for [`owner::detect`].
fn owner_metadata(ds: &DaemonSet) -> OwnerMetadata {
    let mut managers: Vec<FieldManager> = ds
        .managed_fields()
        .iter()
        .filter(|m| m.subresource.is_none())
        .filter_map(|m| {
            let name = m.manager.clone()?;
            (name != FIELD_MANAGER).then(|| FieldManager {
                name,
                server_side: m.operation.as_deref() == Some("Apply"),
            })
        })
        .collect();
    managers.sort();
    managers.dedup();
    OwnerMetadata {
        labels: ds.labels().clone(),
        annotations: ds.annotations().clone(),
        managers,
    }
}

/// The aws-node container's env fields in one managedFields entry, by env name.
fn env_fields(entry: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    let containers = entry
        .pointer("/f:spec/f:template/f:spec/f:containers")
        .and_then(|v| v.as_object());
    containers
        .into_iter()
        .flatten()
        .filter(|(key, _)| list_key_name(key).as_deref() == Some(AWS_NODE_CONTAINER))
        .filter_map(|(_, c)| c.get("f:env").and_then(|v| v.as_object()))
        .flatten()
        .filter_map(|(k, v)| Some((list_key_name(k)?, v)))
        .collect()
}

type EnvManagers = BTreeMap<String, Vec<FieldManager>>;

/// Per env name, the field managers other than this operator that own its `value`, and those
/// that own the entry but not its value.
fn env_managers(ds: &DaemonSet) -> (EnvManagers, EnvManagers) {
    let (mut values, mut items) = (EnvManagers::new(), EnvManagers::new());
    for entry in ds.managed_fields() {
        let Some(name) = entry.manager.as_deref() else {
            continue;
        };
        if name == FIELD_MANAGER || entry.subresource.is_some() {
            continue;
        }
        let Some(fields) = entry.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        for (env, field) in env_fields(fields) {
            let holders = if field.get("f:value").is_some() {
                &mut values
            } else {
                &mut items
            };
            holders.entry(env).or_default().push(FieldManager {
                name: name.to_owned(),
                server_side: entry.operation.as_deref() == Some("Apply"),
            });
        }
    }
    (values, items)
}

/// The field manager EKS applies its managed add-ons with.
pub(crate) const EKS_FIELD_MANAGER: &str = "eks";

/// Env names of the aws-node container that this operator's field manager owns, read from
/// `managedFields` (`f:spec.f:template.f:spec.f:containers.k:{"name":"aws-node"}.f:env`).
pub(crate) fn owned_env_names(ds: &DaemonSet) -> BTreeSet<String> {
    let mut owned = BTreeSet::new();
    for entry in ds.managed_fields() {
        if entry.manager.as_deref() != Some(FIELD_MANAGER) || entry.subresource.is_some() {
            continue;
        }
        let Some(fields) = entry.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        owned.extend(env_fields(fields).into_iter().map(|(name, _)| name));
    }
    owned
}

/// `k:{"name":"X"}` -> `X`.
fn list_key_name(key: &str) -> Option<String> {
    let json = key.strip_prefix("k:")?;
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value.get("name")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_env_image_and_owned_names() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "aws-node", "namespace": "kube-system", "managedFields": [
                {"manager": "eks", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1":
                    {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"aws-node\"}":
                        {"f:env": {"k:{\"name\":\"WARM_ENI_TARGET\"}": {}}}}}}}}},
                {"manager": "vpc-cni-tuner", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1":
                    {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"aws-node\"}":
                        {".": {}, "f:name": {}, "f:env": {
                            "k:{\"name\":\"ENABLE_PREFIX_DELEGATION\"}": {".": {}, "f:name": {}, "f:value": {}},
                            "k:{\"name\":\"WARM_PREFIX_TARGET\"}": {}}}}}}}}}
            ]},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "aws-vpc-cni-init", "image": "init:v1"},
                {"name": "aws-node", "image": "x/amazon-k8s-cni:v1.19.2", "env": [
                    {"name": "WARM_ENI_TARGET", "value": "1"},
                    {"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ]}
            ]}}}
        }))
        .expect("daemonset");
        let facts = aws_node_facts(&ds);
        assert!(facts.container_found);
        assert_eq!(facts.image.as_deref(), Some("x/amazon-k8s-cni:v1.19.2"));
        assert_eq!(facts.env.len(), 2);
        assert!(facts.env[1].from_source);
        assert_eq!(
            facts.owned_env.into_iter().collect::<Vec<_>>(),
            ["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"]
        );
        assert_eq!(facts.reference.to_string(), "kube-system/aws-node");
    }

    #[test]
    fn node_keeps_labels_and_pod_capacity_only() {
        let node: NodeView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"node.kubernetes.io/instance-type": "m5.large"}},
            "spec": {"providerID": "aws:///us-west-2a/i-0123456789abcdef0"},
            "status": {"capacity": {"pods": "29", "cpu": "2"}, "images": [{"names": ["a"]}]}
        }))
        .expect("node");
        let facts = node_facts(&node);
        assert_eq!(facts.capacity_pods, Some(29));
        assert_eq!(facts.instance_type(), Ok("m5.large"));
        assert_eq!(facts.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        let bad: NodeView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n2"}, "status": {"capacity": {"pods": "lots"}}
        }))
        .expect("node");
        assert_eq!(node_facts(&bad).capacity_pods, None);
    }

    #[test]
    fn node_readiness_comes_from_the_ready_condition_only() {
        let with = |conditions: serde_json::Value| {
            let text = serde_json::json!({"metadata": {"name": "n"},
                "status": {"conditions": conditions}})
            .to_string();
            // As the watch parses: from bytes, and from a Value.
            let from_bytes: NodeView = serde_json::from_str(&text).expect("node");
            let from_value: NodeView =
                serde_json::from_value(serde_json::from_str(&text).unwrap()).expect("node");
            assert_eq!(
                node_facts(&from_bytes).not_ready,
                node_facts(&from_value).not_ready
            );
            node_facts(&from_bytes).not_ready
        };
        let c = |t: &str, s: &str| serde_json::json!({"type": t, "status": s, "reason": "r"});
        assert!(!with(serde_json::json!([
            c("MemoryPressure", "False"),
            c("Ready", "True")
        ])));
        assert!(with(serde_json::json!([
            c("Ready", "False"),
            c("DiskPressure", "False")
        ])));
        assert!(with(serde_json::json!([c("Ready", "Unknown")])));
        assert!(!with(serde_json::json!([c("MemoryPressure", "True")])));
        assert!(!with(serde_json::Value::Null));
    }
}
