//! The parts of Karpenter's `NodePool` (`karpenter.sh/v1`) and `EC2NodeClass`
//! (`karpenter.k8s.aws/v1`) the operator reads, as typed resources for watches. Every field is
//! optional and unknown fields are ignored, so a newer Karpenter's objects still parse; the
//! operator writes only `EC2NodeClass.spec.kubelet.maxPods`.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::Requirement;

/// `NodePool.spec`: the template's requirements and node class.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodePool",
    plural = "nodepools",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    #[serde(default)]
    pub template: NodeClaimTemplate,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    #[serde(default)]
    pub spec: NodeClaimTemplateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateSpec {
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    #[serde(default)]
    pub node_class_ref: NodeClassRef,
}

/// `nodeClassRef`: Karpenter's AWS provider only launches from `karpenter.k8s.aws`
/// `EC2NodeClass`es.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassRef {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

impl NodeClassRef {
    /// The EC2NodeClass this reference names, if it names one.
    pub(crate) fn ec2_node_class(&self) -> Option<&str> {
        let group_ok = self.group.is_empty() || self.group == EC2_NODE_CLASS_GROUP;
        let kind_ok = self.kind.is_empty() || self.kind == "EC2NodeClass";
        (group_ok && kind_ok && !self.name.is_empty()).then_some(self.name.as_str())
    }
}

pub(crate) const EC2_NODE_CLASS_GROUP: &str = "karpenter.k8s.aws";

/// `EC2NodeClass.spec`: only the kubelet settings.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "karpenter.k8s.aws",
    version = "v1",
    kind = "EC2NodeClass",
    plural = "ec2nodeclasses",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<i64>,
}

/// What the plan needs of a NodePool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePoolFacts {
    pub name: String,
    /// The EC2NodeClass it launches from.
    pub node_class: Option<String>,
    pub requirements: Vec<Requirement>,
}

/// What the plan needs of an EC2NodeClass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeClassFacts {
    /// `spec.kubelet.maxPods` as it is now.
    pub max_pods: Option<i64>,
}

pub(crate) fn node_pool_facts(pool: &NodePool) -> NodePoolFacts {
    NodePoolFacts {
        name: pool.metadata.name.clone().unwrap_or_default(),
        node_class: pool
            .spec
            .template
            .spec
            .node_class_ref
            .ec2_node_class()
            .map(str::to_owned),
        requirements: pool.spec.template.spec.requirements.clone(),
    }
}

pub(crate) fn node_class_facts(class: &EC2NodeClass) -> NodeClassFacts {
    NodeClassFacts {
        max_pods: class.spec.kubelet.as_ref().and_then(|k| k.max_pods),
    }
}
