//! The Karpenter part of a `NodeNetworkPolicy`: which EC2NodeClasses it manages (spec) and
//! what it found and wrote in each (status).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Karpenter node classes whose kubelet maxPods this policy keeps right.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KarpenterSpec {
    /// EC2NodeClass names (`karpenter.k8s.aws/v1`). The operator writes each one's
    /// `spec.kubelet.maxPods`: the policy's maxPods for the smallest instance type the
    /// NodePools that use it may launch, with the prefix delegation aws-node has.
    #[serde(default, rename = "ec2NodeClasses")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = 64))]
    #[schemars(inner(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    ))]
    pub ec2_node_classes: Vec<String>,
}

impl super::NodeNetworkPolicySpec {
    /// The EC2NodeClasses this policy manages (none without `spec.karpenter`).
    pub fn ec2_node_classes(&self) -> &[String] {
        self.karpenter
            .as_ref()
            .map_or(&[], |k| k.ec2_node_classes.as_slice())
    }
}

/// What the operator found in, and wrote to, one EC2NodeClass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassStatus {
    pub name: String,
    /// The NodePools that launch from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<String>,
    /// How many instance types those NodePools' requirements allow.
    #[serde(default)]
    pub instance_types: u32,
    /// `spec.kubelet.maxPods` as found (before any write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_found: Option<i64>,
    /// The value the operator writes (DryRun: would write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_wanted: Option<u32>,
    /// The allowed instance type that bounds the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounding_instance_type: Option<String>,
    /// The allowed instance type with the most pods of its own, and the pods each of its nodes
    /// loses to the shared value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_instance_type: Option<String>,
    #[serde(default)]
    pub pods_lost_on_largest: u32,
    /// The node class carries maxPodsWanted.
    pub in_sync: bool,
    /// Running nodes of this node class (label `karpenter.k8s.aws/ec2nodeclass`), and those whose
    /// capacity.pods is not maxPodsWanted yet (Karpenter's drift detection replaces them).
    #[serde(default)]
    pub nodes: u32,
    #[serde(default)]
    pub nodes_behind: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
