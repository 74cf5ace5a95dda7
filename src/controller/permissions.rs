//! What the operator may call: every Kubernetes API call (the chart's RBAC is checked against
//! it) and every EC2 action (the README's IAM policy is checked against it).

/// Where an API call lands, which is what an RBAC rule can be narrowed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Cluster-wide (cluster-scoped resources, or every namespace).
    Cluster,
    /// The one DaemonSet of `--daemonset`: its namespace, `resourceNames: [its name]` (list and
    /// watch too: the watch asks for `fieldSelector=metadata.name=NAME`, which RBAC authorizes
    /// against `resourceNames`).
    ManagedDaemonSet,
    /// The leader Lease: `--lease-namespace`, `resourceNames: [--lease-name]`.
    Lease,
    /// `--lease-namespace`, any name: a create cannot be narrowed to a name.
    LeaseNamespace,
    /// The `default` namespace: Events about cluster-scoped objects (the policies) go there.
    DefaultNamespace,
    /// The webhook's certificate Secret: `--lease-namespace`, `resourceNames:
    /// [--webhook-secret]`.
    WebhookSecret,
    /// The webhook's MutatingWebhookConfiguration: `resourceNames: [--webhook-configuration]`.
    WebhookConfiguration,
    /// The managed DaemonSet's namespace, any name: its pods (the admission policy holds
    /// deletes to aws-node pods).
    AwsNodeNamespace,
}

/// One Kubernetes API call the controller makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub scope: Scope,
    /// Made only with `--leader-elect`.
    pub leader_election_only: bool,
    /// Made only with `--karpenter`.
    pub karpenter_only: bool,
    /// Made only with `--webhook-addr` (chart value `webhook.enabled`; the writes only with a
    /// self-managed certificate).
    pub webhook_only: bool,
    /// Granted only with the chart value `subnets.enabled` (the idle-address count and the
    /// ENIConfig subnets of `spec.subnets`; without it those are left out).
    pub subnets_only: bool,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    scope: Scope,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        scope,
        leader_election_only: false,
        karpenter_only: false,
        subnets_only: false,
        webhook_only: false,
    }
}

const fn subnets(group: &'static str, resource: &'static str) -> ApiCall {
    let mut c = call(group, resource, "list", Scope::Cluster);
    c.subnets_only = true;
    c
}

const fn webhook(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    scope: Scope,
) -> ApiCall {
    let mut c = call(group, resource, verb, scope);
    c.webhook_only = true;
    c
}

const fn lease(verb: &'static str, scope: Scope) -> ApiCall {
    let mut c = call("coordination.k8s.io", "leases", verb, scope);
    c.leader_election_only = true;
    c
}

const fn karpenter(group: &'static str, resource: &'static str, verb: &'static str) -> ApiCall {
    let mut c = call(group, resource, verb, Scope::Cluster);
    c.karpenter_only = true;
    c
}

/// Every Kubernetes API call the controller makes: the whole RBAC an install needs. The mocked-API
/// tests check that every request the controller sends is on this list, and `tests/chart.rs`
/// that the Helm chart's RBAC grants exactly this list, no more.
pub const API_CALLS: &[ApiCall] = &[
    call("", "nodes", "list", Scope::Cluster),
    call("", "nodes", "watch", Scope::Cluster),
    call(
        "tuner.vpccni.io",
        "nodenetworkpolicies",
        "list",
        Scope::Cluster,
    ),
    call(
        "tuner.vpccni.io",
        "nodenetworkpolicies",
        "watch",
        Scope::Cluster,
    ),
    call(
        "tuner.vpccni.io",
        "nodenetworkpolicies/status",
        "patch",
        Scope::Cluster,
    ),
    call("apps", "daemonsets", "list", Scope::ManagedDaemonSet),
    call("apps", "daemonsets", "watch", Scope::ManagedDaemonSet),
    call("apps", "daemonsets", "patch", Scope::ManagedDaemonSet),
    call("events.k8s.io", "events", "create", Scope::DefaultNamespace),
    lease("get", Scope::Lease),
    lease("update", Scope::Lease),
    lease("create", Scope::LeaseNamespace),
    karpenter("karpenter.sh", "nodepools", "list"),
    karpenter("karpenter.sh", "nodepools", "watch"),
    karpenter("karpenter.k8s.aws", "ec2nodeclasses", "list"),
    karpenter("karpenter.k8s.aws", "ec2nodeclasses", "watch"),
    subnets("", "pods"),
    webhook("", "pods", "list", Scope::AwsNodeNamespace),
    webhook("", "pods", "watch", Scope::AwsNodeNamespace),
    webhook("", "pods", "delete", Scope::AwsNodeNamespace),
    webhook("", "secrets", "get", Scope::WebhookSecret),
    webhook("", "secrets", "update", Scope::WebhookSecret),
    webhook("", "secrets", "create", Scope::LeaseNamespace),
    webhook(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "get",
        Scope::WebhookConfiguration,
    ),
    webhook(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "patch",
        Scope::WebhookConfiguration,
    ),
    subnets("crd.k8s.amazonaws.com", "eniconfigs"),
    karpenter("karpenter.k8s.aws", "ec2nodeclasses", "patch"),
];

/// Every EKS action the operator calls in add-on mode (`crate::aws::eks`); `tests/docs.rs` checks
/// that the README's add-on IAM policy grants exactly these.
pub const EKS_ACTIONS: &[&str] = &[
    "eks:DescribeAddon",
    "eks:DescribeAddonConfiguration",
    "eks:UpdateAddon",
    "eks:DescribeUpdate",
];

/// The AWS actions of rollouts (`--rollouts`), besides [`EC2_ACTIONS`]; `tests/docs.rs` checks
/// that the README's rollout IAM policy grants exactly these.
pub const ROLLOUT_ACTIONS: &[&str] = &[
    "eks:UpdateNodegroupVersion",
    "eks:DescribeUpdate",
    "autoscaling:StartInstanceRefresh",
    "autoscaling:DescribeInstanceRefreshes",
];

/// Every AWS action of the launch-template and instance-type work (EC2, and the Auto Scaling
/// and EKS reads of who launches from a template); `tests/docs.rs` checks that the README's IAM
/// policy grants exactly these.
pub const EC2_ACTIONS: &[&str] = &[
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:CreateLaunchTemplateVersion",
    "ec2:ModifyLaunchTemplate",
    "ec2:DescribeInstances",
    "ec2:DescribeSubnets",
    "ec2:DescribeNetworkInterfaces",
    "ec2:GetSubnetCidrReservations",
    "ec2:CreateSubnetCidrReservation",
    "autoscaling:DescribeAutoScalingGroups",
    "eks:ListNodegroups",
    "eks:DescribeNodegroup",
];
