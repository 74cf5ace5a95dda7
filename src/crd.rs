//! `NodeNetworkPolicy` (`tuner.vpccni.io/v1alpha1`, cluster-scoped, short name `nnp`): what the
//! operator manages. The CRD YAML in `crds/` is generated from these types (`vpc-cni-tuner crd`);
//! a test fails when it is stale.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine;

/// The server-side apply field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "vpc-cni-tuner";

/// Condition types this operator owns in `status.conditions`; others are left alone.
pub mod conditions;
pub mod manifest;
pub mod node_classes;
pub mod status;

pub use node_classes::{KarpenterSpec, NodeClassStatus};
pub use status::{
    AwsNodeOwnerStatus, CniConfigStatus, EksAddonStatus, GroupRolloutStatus, HandoverStatus,
    InstanceTypeStatus, LaunchTemplateStatus, NodeNetworkPolicyStatus, SubnetHeadroom,
    SubnetStatus, TemplateLauncherStatus, WarmPoolRestartStatus,
};

/// What the operator should manage for the nodes a selector picks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tuner.vpccni.io",
    version = "v1alpha1",
    kind = "NodeNetworkPolicy",
    plural = "nodenetworkpolicies",
    shortname = "nnp",
    status = "NodeNetworkPolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.matchedNodes"}"#,
    printcolumn = r#"{"name":"Prefix-Delegation","type":"boolean","jsonPath":".status.prefixDelegation"}"#,
    printcolumn = r#"{"name":"Max-Pods","type":"integer","jsonPath":".status.maxPods"}"#,
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetworkPolicySpec {
    /// Nodes this policy covers; empty selects every node the VPC CNI serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub node_selector: Option<LabelSelector>,
    /// `Enforce` writes the aws-node env; `DryRun` computes and reports, and writes nothing.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// `ENABLE_PREFIX_DELEGATION`: `Auto` turns it on when it raises maxPods for a Nitro type.
    #[serde(default)]
    pub prefix_delegation: PrefixDelegation,
    /// Pods use ENIConfig subnets (`AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true`): one ENI fewer.
    #[serde(default)]
    pub custom_networking: bool,
    /// Security groups for pods (`ENABLE_POD_ENI=true`): the trunk ENI takes one ENI.
    #[serde(default)]
    pub security_groups_for_pods: bool,
    /// `MAX_ENI`: use at most this many ENIs per node.
    #[serde(default, rename = "maxENI", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_eni: Option<u32>,
    /// Warm-pool settings: a profile, and explicit values that override it one by one.
    #[serde(default)]
    pub warm_pool: WarmPool,
    /// How kubelet maxPods is chosen.
    #[serde(default)]
    pub max_pods: MaxPods,
    /// EC2 launch templates whose user data gets this policy's kubelet maxPods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launch_templates: Vec<LaunchTemplateSpec>,
    /// Watch the subnets the fleet's pods draw from (`status.subnets`, condition
    /// `SubnetCapacity`); absent: not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<SubnetsSpec>,
    /// Karpenter EC2NodeClasses whose kubelet maxPods this policy manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub karpenter: Option<KarpenterSpec>,
    /// The aws-node DaemonSet whose env this policy manages.
    #[serde(default)]
    pub daemon_set: DaemonSetRef,
}

/// A launch template whose user data carries kubelet maxPods. Exactly one of `id` and `name`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.id) != has(self.name)")
        .message("set exactly one of launchTemplates[].id and launchTemplates[].name")
)]
pub struct LaunchTemplateSpec {
    /// `lt-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^lt-[0-9a-f]+$"))]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 128))]
    pub name: Option<String>,
    /// The template's region; the operator's region by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The AMI family the user data is written for; `Auto` detects it.
    #[serde(default)]
    pub user_data_format: UserDataFormatSpec,
    /// Make the new version the template's default.
    #[serde(default = "default_true")]
    pub set_default_version: bool,
    /// The version to start from: `$Default`, `$Latest` or a number.
    #[serde(default = "default_source_version")]
    #[schemars(regex(pattern = r"^(\$Default|\$Latest|[0-9]+)$"))]
    pub source_version: String,
    /// Replace the nodes of the managed node groups and Auto Scaling groups that launch from
    /// this template once it carries the wanted maxPods (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// What the operator watches in the fleet's subnets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetsSpec {
    /// `SubnetCapacity` turns False when a subnet has room for fewer than this many more nodes
    /// of the fleet's instance type that takes the most (at the policy's prefix delegation and
    /// warm settings).
    #[serde(default = "default_min_headroom")]
    #[schemars(range(min = 0, max = 100000))]
    pub min_headroom_nodes: u32,
    /// With prefix delegation, when fragmentation leaves no free aligned /28 outside the
    /// largest free aligned block: create a `prefix` subnet CIDR reservation of that block
    /// (`CreateSubnetCidrReservation`), once; existing reservations are never touched.
    #[serde(default)]
    pub reserve_prefixes: bool,
}

impl Default for SubnetsSpec {
    fn default() -> Self {
        Self {
            min_headroom_nodes: default_min_headroom(),
            reserve_prefixes: false,
        }
    }
}

fn default_min_headroom() -> u32 {
    10
}

/// How the operator rolls a template's new version out to the nodes: one group at a time per
/// policy, EKS's node-group update (`UpdateNodegroupVersion`) or an Auto Scaling instance refresh
/// (`StartInstanceRefresh`). The operator must run with `--rollouts` (chart value
/// `rollout.enabled`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Start rollouts for this template. `false`: report only (`DryRun` policies report what
    /// would be started either way).
    #[serde(default)]
    pub enabled: bool,
    /// An instance refresh keeps at least this percentage of the Auto Scaling group in
    /// service (EKS node-group updates use the node group's own `updateConfig`).
    #[serde(default = "default_min_healthy")]
    #[schemars(range(min = 0, max = 100))]
    pub min_healthy_percentage: u32,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            min_healthy_percentage: default_min_healthy(),
        }
    }
}

fn default_min_healthy() -> u32 {
    90
}

fn default_true() -> bool {
    true
}

fn default_source_version() -> String {
    "$Default".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum UserDataFormatSpec {
    #[default]
    Auto,
    #[serde(rename = "AL2023")]
    Al2023,
    #[serde(rename = "AL2")]
    Al2,
    Bottlerocket,
}

impl UserDataFormatSpec {
    pub fn forced(self) -> Option<crate::userdata::UserDataFormat> {
        use crate::userdata::UserDataFormat;
        match self {
            Self::Auto => None,
            Self::Al2023 => Some(UserDataFormat::Al2023),
            Self::Al2 => Some(UserDataFormat::Al2),
            Self::Bottlerocket => Some(UserDataFormat::Bottlerocket),
        }
    }
}

/// Which template: by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateRef {
    Id(String),
    Name(String),
}

impl std::fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => f.write_str(id),
            Self::Name(name) => write!(f, "name={name}"),
        }
    }
}

impl LaunchTemplateSpec {
    pub(crate) fn template_ref(&self) -> TemplateRef {
        match (&self.id, &self.name) {
            (Some(id), _) => TemplateRef::Id(id.clone()),
            (None, Some(name)) => TemplateRef::Name(name.clone()),
            (None, None) => TemplateRef::Name(String::new()),
        }
    }

    /// A stable key for caches and status.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.region.as_deref().unwrap_or("-"),
            self.template_ref()
        )
    }
}

/// A LabelSelector schema the API server can check: operators are an enum, values go with `In`
/// and `NotIn` only, and the lists are bounded (which keeps the CEL rule's cost small).
fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "description": "A label query over nodes (matchLabels and matchExpressions are ANDed).",
        "properties": {
            "matchLabels": {
                "type": "object",
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "maxLength": 63}
            },
            "matchExpressions": {
                "type": "array",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": 317},
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63}
                        }
                    },
                    "x-kubernetes-validations": [{
                        "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                        "message": "nodeSelector.matchExpressions[].values must be non-empty for In and NotIn and absent for Exists and DoesNotExist"
                    }]
                }
            }
        }
    })
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Enforcement {
    #[default]
    Enforce,
    DryRun,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PrefixDelegation {
    #[default]
    Auto,
    Enabled,
    Disabled,
}

impl From<PrefixDelegation> for engine::PrefixDelegationMode {
    fn from(value: PrefixDelegation) -> Self {
        match value {
            PrefixDelegation::Auto => Self::Auto,
            PrefixDelegation::Enabled => Self::Enabled,
            PrefixDelegation::Disabled => Self::Disabled,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum WarmPoolProfile {
    #[default]
    Balanced,
    #[serde(rename = "ConserveIPs")]
    ConserveIps,
    FastScaling,
}

impl From<WarmPoolProfile> for engine::WarmPoolProfile {
    fn from(value: WarmPoolProfile) -> Self {
        match value {
            WarmPoolProfile::Balanced => Self::Balanced,
            WarmPoolProfile::ConserveIps => Self::ConserveIps,
            WarmPoolProfile::FastScaling => Self::FastScaling,
        }
    }
}

/// Warm-pool settings; explicit values override the profile's, one by one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmPool {
    #[serde(default)]
    pub profile: WarmPoolProfile,
    /// `WARM_IP_TARGET` (at most 1024; the operator also refuses a value above what a matched
    /// instance type can hold).
    #[serde(
        default,
        rename = "warmIPTarget",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 1024))]
    pub warm_ip_target: Option<u32>,
    /// `MINIMUM_IP_TARGET`.
    #[serde(
        default,
        rename = "minimumIPTarget",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 1024))]
    pub minimum_ip_target: Option<u32>,
    /// `WARM_ENI_TARGET`.
    #[serde(
        default,
        rename = "warmENITarget",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 16))]
    pub warm_eni_target: Option<u32>,
    /// `WARM_PREFIX_TARGET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 64))]
    pub warm_prefix_target: Option<u32>,
    /// Each aws-node pod starts with the warm env of its own node's instance type (the same
    /// profile and values, computed for that type alone), set by the operator's mutating
    /// webhook when the pod is created (chart value `webhook.enabled`). The DaemonSet keeps the
    /// fleet's values, and `ENABLE_PREFIX_DELEGATION` stays the fleet's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_instance_type: bool,
    /// With `perInstanceType`, aws-node pods that run other warm values (they started before):
    /// `Never` (reported only) or `Rolling` (restarted one node at a time, each new pod Ready
    /// before the next; stops on a failure).
    #[serde(default)]
    pub restart_pods: RestartPods,
    /// With `perInstanceType`: explicit values for single instance types, over the ones above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub instance_types: BTreeMap<String, WarmTargets>,
}

/// What to do with aws-node pods that run other warm values than their node's type wants.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartPods {
    #[default]
    Never,
    Rolling,
}

/// Explicit warm-pool values of one instance type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmTargets {
    #[serde(
        default,
        rename = "warmIPTarget",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 1024))]
    pub warm_ip_target: Option<u32>,
    #[serde(
        default,
        rename = "minimumIPTarget",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 1024))]
    pub minimum_ip_target: Option<u32>,
    #[serde(
        default,
        rename = "warmENITarget",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 16))]
    pub warm_eni_target: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 64))]
    pub warm_prefix_target: Option<u32>,
}

impl From<WarmTargets> for engine::WarmPoolTargets {
    fn from(t: WarmTargets) -> Self {
        Self {
            warm_eni_target: t.warm_eni_target,
            warm_ip_target: t.warm_ip_target,
            minimum_ip_target: t.minimum_ip_target,
            warm_prefix_target: t.warm_prefix_target,
        }
    }
}

impl From<&WarmPool> for engine::WarmPoolSpec {
    fn from(value: &WarmPool) -> Self {
        Self {
            profile: value.profile.into(),
            explicit: engine::WarmPoolTargets {
                warm_eni_target: value.warm_eni_target,
                warm_ip_target: value.warm_ip_target,
                minimum_ip_target: value.minimum_ip_target,
                warm_prefix_target: value.warm_prefix_target,
            },
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum MaxPodsPolicy {
    /// EKS recommended: the IP limit capped at 110 (<= 30 vCPUs) or 250.
    #[default]
    Recommended,
    /// As many pods as the node's IPs carry.
    #[serde(rename = "IPLimit")]
    IpLimit,
    /// `value` for every type; rejected where the IPs cannot carry it.
    Fixed,
}

/// How kubelet maxPods is chosen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.policy == 'Fixed' ? has(self.value) : !has(self.value)")
        .message("maxPods.value is required with policy Fixed and only allowed with it")
)]
pub struct MaxPods {
    #[serde(default)]
    pub policy: MaxPodsPolicy,
    /// The fixed maxPods (policy `Fixed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub value: Option<u32>,
    /// Upper bound applied after the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ceiling: Option<u32>,
}

impl MaxPods {
    /// The engine's policy; `Fixed` without a value (which the schema rejects) reads as
    /// `Recommended`.
    pub(crate) fn engine_policy(&self) -> engine::MaxPodsPolicy {
        match (self.policy, self.value) {
            (MaxPodsPolicy::Fixed, Some(value)) => engine::MaxPodsPolicy::Fixed(value),
            (MaxPodsPolicy::IpLimit, _) => engine::MaxPodsPolicy::IpLimit,
            _ => engine::MaxPodsPolicy::Recommended,
        }
    }
}

/// Where the aws-node DaemonSet lives.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetRef {
    #[serde(default = "default_daemonset_namespace")]
    #[schemars(length(min = 1))]
    pub namespace: String,
    #[serde(default = "default_daemonset_name")]
    #[schemars(length(min = 1))]
    pub name: String,
}

fn default_daemonset_namespace() -> String {
    "kube-system".to_owned()
}

fn default_daemonset_name() -> String {
    "aws-node".to_owned()
}

impl Default for DaemonSetRef {
    fn default() -> Self {
        Self {
            namespace: default_daemonset_namespace(),
            name: default_daemonset_name(),
        }
    }
}

impl std::fmt::Display for DaemonSetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
