//! `status` of a `NodeNetworkPolicy`: what the operator found and did.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator found and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetworkPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, CNIConfigured, Conflict, Degraded. Other controllers' conditions are kept.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Nodes the selector picks that the VPC CNI serves.
    #[serde(default)]
    pub matched_nodes: u32,
    /// Selected nodes left out, by reason (Fargate, HybridNode, Windows, NoInstanceType).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded_nodes: BTreeMap<String, u32>,
    /// The VPC CNI version read from the aws-node image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    /// `ENABLE_PREFIX_DELEGATION` as set (or as it would be set in DryRun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_delegation: Option<bool>,
    /// The aws-node env entries this policy set (or would set).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cni_env: BTreeMap<String, String>,
    /// The minimum maxPods over the matched instance types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    #[serde(default)]
    pub instance_types: Vec<InstanceTypeStatus>,
    /// Per launch template in `spec.launchTemplates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launch_templates: Vec<LaunchTemplateStatus>,
    /// Per EC2NodeClass in `spec.karpenter.ec2NodeClasses`.
    #[serde(
        default,
        rename = "ec2NodeClasses",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ec2_node_classes: Vec<super::NodeClassStatus>,
    /// Where the aws-node env is written: the DaemonSet, or the EKS add-on's configurationValues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_config: Option<CniConfigStatus>,
    /// The rolling restart of aws-node pods (`warmPool.restartPods: Rolling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_restart: Option<WarmPoolRestartStatus>,
    /// The subnets the fleet's pods draw from (`spec.subnets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<SubnetStatus>,
}

/// One subnet's capacity for pods. The same names as `vpc-cni-tuner subnets -o json`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    pub subnet_id: String,
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Why it is watched: `Nodes` (the fleet's ENIs are in it), `ENIConfig` (custom
    /// networking), `Discovery` (tagged `kubernetes.io/role/cni`).
    #[serde(default)]
    pub sources: Vec<String>,
    pub total_addresses: u32,
    /// Addresses EC2 can still assign one by one (not allocated, delegated, reserved).
    pub free_addresses: u32,
    /// Free /28 blocks on /28 boundaries: the prefixes EC2 can still delegate.
    pub free_aligned_prefixes: u32,
    /// Free addresses in no free aligned /28.
    pub fragmented_addresses: u32,
    /// The largest free aligned block outside every reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_free_block: Option<String>,
    /// Addresses on the fleet's ENIs in this subnet not used by a pod (warm pools), estimated
    /// from up to 10 sampled nodes (exact with 10 nodes or fewer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_addresses: Option<u32>,
    /// Fleet nodes with an ENI in this subnet.
    #[serde(default)]
    pub fleet_nodes: u32,
    /// Per instance type of the fleet: how many more nodes and pods fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headroom: Vec<SubnetHeadroom>,
    /// What to do about it (the reservation command, the warm setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// The subnet's `prefix` CIDR reservations, whoever created them: blocks EC2 keeps for
    /// delegated prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_reservations: Vec<String>,
    /// The id of the prefix reservation this operator created (`spec.subnets.reservePrefixes`;
    /// known by its description `vpc-cni-tuner: prefixes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_created: Option<String>,
}

/// Room for more nodes and pods of one instance type in a subnet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetHeadroom {
    pub instance_type: String,
    pub nodes: u32,
    pub pods: u32,
}

/// How the operator writes the aws-node env (`--cni-config-via`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CniConfigStatus {
    /// `DaemonSet` (server-side apply of the aws-node env) or `EksAddon` (the EKS managed add-on
    /// vpc-cni's configurationValues, through eks:UpdateAddon).
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks_addon: Option<EksAddonStatus>,
    /// Who else applies aws-node (from its labels, annotations and managedFields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<AwsNodeOwnerStatus>,
    /// Reverts of the operator's env by that owner, and the handover that ends a fight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverStatus>,
    /// Writes of the aws-node env this policy decided (each one rolls aws-node on every node).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub aws_node_rollouts: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The other owner of aws-node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsNodeOwnerStatus {
    /// EksAddon, Helm, ArgoCD, Flux, kOps, Terraform or Other.
    pub kind: String,
    /// The Helm release, Argo CD application, Flux object or kOps addon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Application, HelmRelease or Kustomization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Its field managers, with their operation: `helm (Update)`, `argocd-controller (Apply)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managers: Vec<String>,
}

/// How the operator and another owner of aws-node settled who writes the env.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoverStatus {
    /// The operator writes nothing to aws-node until the owner's values change.
    #[serde(default)]
    pub handed_over: bool,
    /// Reverts of the operator's values seen inside the revert window (24 h).
    #[serde(default)]
    pub reverts: u32,
    /// RFC 3339 time of the last revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revert_time: Option<String>,
    /// The field manager that put its value back, or holds it by server-side apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_by: Option<String>,
    /// RFC 3339 time of the handover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The owner's values of the operator's env keys at the handover: when they change, the
    /// operator looks again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owner_env: BTreeMap<String, String>,
    /// Why, and the owner-native fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// EKS add-on mode: the operator's last add-on update when the last revert was seen. A
    /// revert counts once per restore: while the restore waits (a backoff), the same revert is
    /// not counted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_after_update: Option<String>,
}

/// The EKS managed add-on as the operator last saw it, and what it sets there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EksAddonStatus {
    pub cluster_name: String,
    pub addon_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon_version: Option<String>,
    /// The `configurationValues.env` keys this policy set (Enforce); the operator removes a key
    /// of these when the policy no longer wants it, and reports a changed one as drift.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// DryRun: the exact configurationValues the operator would send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_values: Option<String>,
    /// The operator's last UpdateAddon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_id: Option<String>,
    /// InProgress, Successful, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_status: Option<String>,
}

/// What the operator found in, and wrote to, one launch template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaunchTemplateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The user-data format found (AL2023, AL2, Bottlerocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The version read (the source version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_read: Option<i64>,
    /// The version the operator created, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_written: Option<i64>,
    /// maxPods in the version read (none: the AMI computes its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_found: Option<u32>,
    pub max_pods_wanted: u32,
    pub in_sync: bool,
    /// Running nodes launched from the template (by the `aws:ec2launchtemplate:id` tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Of those, nodes whose capacity.pods is not maxPodsWanted: replace them (node-group
    /// update, instance refresh) to roll the new maxPods out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_behind: Option<u32>,
    /// The EKS managed node groups and Auto Scaling groups that launch from the template, and
    /// the version each launches (`null` when they could not be read; the message says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_by: Option<Vec<TemplateLauncherStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A group that launches nodes from a launch template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateLauncherStatus {
    /// `NodeGroup` (an EKS managed node group) or `AutoScalingGroup`.
    pub kind: String,
    pub name: String,
    /// The template version it launches: a number, `$Default` or `$Latest` (a managed node
    /// group always pins a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The template version that carries the wanted maxPods, when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_wanted: Option<i64>,
    /// The group's nodes: Nodes labelled `eks.amazonaws.com/nodegroup` with its name (node
    /// group), or running its instances (Auto Scaling group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Of those, nodes whose `capacity.pods` is not the wanted maxPods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_behind: Option<u32>,
    /// The rollout of the wanted version to this group (`spec.launchTemplates[].rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<GroupRolloutStatus>,
}

/// A rollout of a template version to one group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupRolloutStatus {
    /// `Pending` (queued behind another group), `Waiting` (held: the group is busy, nodes are
    /// NotReady, rollouts are off in the operator), `WouldStart` (DryRun), `InProgress`,
    /// `Successful`, `Failed` or `Cancelled`.
    pub state: String,
    /// The template version rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The EKS update id or the instance refresh id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// RFC 3339 time the operator started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Percentage done (instance refreshes report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<u32>,
    /// The policy's generation when it failed: a failed rollout stops further ones until the
    /// wanted version or the policy's spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<i64>,
    /// Why it waits, what it would do, or AWS's reason for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Per instance type in the matched fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeStatus {
    pub instance_type: String,
    pub nodes: u32,
    pub prefix_delegation: bool,
    /// `null` in IPv6 clusters, where IPs do not limit pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods_ip_limit: Option<u32>,
    pub max_pods: u32,
    /// Nodes whose `status.capacity.pods` equals the policy's maxPods.
    pub nodes_at_target: u32,
    /// `warmPool.perInstanceType`: the warm env this type's aws-node pods are started with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warm_env: BTreeMap<String, String>,
    /// `warmPool.perInstanceType`: nodes of this type whose running aws-node pod has other
    /// warm values (it started before); a restart gives it `warmEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_with_other_warm_env: Option<u32>,
}

/// The rolling restart of aws-node pods (`warmPool.restartPods: Rolling`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmPoolRestartStatus {
    /// `Idle` (nothing to restart), `Restarting` (waiting for a node's new pod to be Ready),
    /// `Waiting` (an aws-node pod is not Ready; no restart meanwhile) or `Failed`.
    pub state: String,
    /// The node being restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Pods restarted so far by this operator.
    pub restarted: u32,
    /// Nodes still running other warm values.
    pub remaining: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
