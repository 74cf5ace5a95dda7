//! Condition types this operator owns in `status.conditions` (others are left alone), and the
//! reasons it writes in them.

pub const READY: &str = "Ready";
pub const CNI_CONFIGURED: &str = "CNIConfigured";
pub const CONFLICT: &str = "Conflict";
pub const DEGRADED: &str = "Degraded";
pub const LAUNCH_TEMPLATES_SYNCED: &str = "LaunchTemplatesSynced";
pub const KARPENTER_SYNCED: &str = "KarpenterSynced";
/// Present when a launch template has `rollout`: whether its groups launch the wanted version.
pub const NODES_ROLLED_OUT: &str = "NodesRolledOut";
/// Present when a policy sets `spec.subnets`: whether its subnets have room for more nodes.
pub const SUBNET_CAPACITY: &str = "SubnetCapacity";
pub(crate) const OWNED: [&str; 8] = [
    READY,
    CNI_CONFIGURED,
    CONFLICT,
    DEGRADED,
    LAUNCH_TEMPLATES_SYNCED,
    KARPENTER_SYNCED,
    NODES_ROLLED_OUT,
    SUBNET_CAPACITY,
];

/// Declares [`Reason`]: each variant's name is the reason string the API shows.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Every reason the operator writes in a condition it owns. The README's
        /// troubleshooting table names each one (`tests/docs.rs`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // Ready
    /// The policy's spec cannot be planned (a bad selector, a fixed maxPods the IPs cannot carry).
    InvalidSpec,
    /// The policy names a DaemonSet other than `--daemonset`.
    DaemonSetNotManaged,
    /// A matched node's type is in neither the table nor `DescribeInstanceTypes`.
    UnknownInstanceType,
    /// The managed DaemonSet has no `aws-node` container.
    AwsNodeContainerMissing,
    /// An owned env var appears twice in the aws-node container.
    DuplicateEnv,
    /// An owned env var comes from `valueFrom`, which the operator does not override.
    EnvFromSource,
    /// The managed DaemonSet does not exist.
    DaemonSetNotFound,
    /// The env cannot be written for another reason.
    Blocked,
    /// The selector matches no node the VPC CNI serves.
    NoMatchingNodes,
    /// Planned; DryRun writes nothing.
    DryRun,
    /// Planned and applied.
    Reconciled,
    // CNIConfigured
    /// Ready is False.
    NotReady,
    /// The DaemonSet (or the launch templates) carry the settings.
    InSync,
    /// An older policy decides the env.
    Conflict,
    /// The aws-vpc-cni Helm release keeps (or holds by server-side apply) its own values of the
    /// operator's env: aws-node is left to Helm; the message has the chart values to set.
    HelmOwnsAwsNode,
    /// An Argo CD application does: the message has the values for Git or the
    /// ignoreDifferences snippet.
    ArgoCdOwnsAwsNode,
    /// A Flux HelmRelease or Kustomization does: the message has its values or drift rule.
    FluxOwnsAwsNode,
    /// kOps does: the message has the `kops edit cluster` snippet.
    KopsOwnsAwsNode,
    /// Terraform does.
    TerraformOwnsAwsNode,
    /// Another field manager (kubectl, a script) does.
    AnotherManagerOwnsAwsNode,
    /// The add-on's configurationValues were put back twice within 24 hours by their owner
    /// (infrastructure as code): the operator stops writing them; the message has the fix.
    AddonHandedOver,
    /// aws-node's last rollout is not done (pods not updated or unavailable): the env change
    /// waits for it, so a change never lands on a rollout in progress.
    AwsNodeRollingOut,
    // Conflict
    /// An older policy decides the env and disagrees.
    LostToOlderPolicy,
    /// No other policy disagrees.
    NoConflict,
    // Degraded
    /// Nothing to report.
    AsExpected,
    /// Xen types, settings another manager overrides, and the like.
    Warnings,
    // LaunchTemplatesSynced
    /// The user data is not AL2023, AL2 or Bottlerocket (or not base64, or empty).
    UserDataUnsupported,
    /// The user data is kOps' nodeup bootstrap: maxPods belongs in the kOps instance group.
    KopsManagedUserData,
    /// The rewritten user data would exceed EC2's 16 KiB.
    UserDataTooLarge,
    /// No AWS region is configured.
    NoAwsRegion,
    /// The launch template (or its version) does not exist.
    LaunchTemplateNotFound,
    /// EC2 refused the call (IAM policy or tag condition).
    AccessDenied,
    /// Another EC2 error.
    AwsError,
    /// The operator was started without EC2 access.
    NoAwsAccess,
    /// The policy has no maxPods to write yet.
    PolicyNotReady,
    // KarpenterSynced (also InSync, DryRun, Conflict, AccessDenied)
    /// The operator runs without `--karpenter` (chart value `karpenter.enabled`).
    KarpenterDisabled,
    /// Karpenter's NodePool or EC2NodeClass CRD is not installed.
    KarpenterNotInstalled,
    /// The NodePool and EC2NodeClass watches have not listed yet.
    KarpenterPending,
    /// A listed EC2NodeClass does not exist.
    NodeClassNotFound,
    /// No NodePool launches from a listed EC2NodeClass.
    NoNodePools,
    /// A NodePool's requirements cannot be evaluated, allow no known instance type, or the
    /// policy's maxPods cannot fit them.
    InvalidNodePool,
    /// Writing the EC2NodeClass failed.
    NodeClassWriteFailed,
    // The EKS managed add-on vpc-cni (Ready and CNIConfigured; also AccessDenied, AwsError,
    // NoAwsRegion, DryRun, InSync)
    /// aws-node is the EKS add-on but no cluster name is known (`--eks-cluster-name`).
    EksClusterUnknown,
    /// EKS applies aws-node (or `--cni-config-via eks-addon`), and EKS has no add-on `vpc-cni` in
    /// the cluster.
    AddonNotFound,
    /// The add-on's `configurationValues` cannot be parsed, or the edit fails the add-on's
    /// configuration schema.
    AddonConfigurationInvalid,
    /// An add-on update is in progress (this operator's or someone else's).
    AddonUpdating,
    /// The add-on update failed; the message has EKS's errors.
    AddonUpdateFailed,
    /// Someone changed the operator's keys in `configurationValues` back; corrected after a
    /// backoff (Enforce), reported (DryRun).
    AddonDrift,
    // NodesRolledOut (also DryRun)
    /// Every group that launches from a template with `rollout` launches the wanted version.
    RolledOut,
    /// A node-group update or instance refresh the operator started is running.
    RolloutInProgress,
    /// A group needs a rollout that cannot start yet: another update of it runs, some of its
    /// nodes are NotReady, or the operator runs without `--rollouts`.
    RolloutWaiting,
    /// A rollout failed or was cancelled (the message has AWS's reason); no further rollout
    /// starts until the wanted version or the policy's spec changes.
    RolloutFailed,
    // SubnetCapacity (also AccessDenied, AwsError, NoAwsAccess, NoAwsRegion)
    /// Every subnet has room for `spec.subnets.minHeadroomNodes` more nodes.
    HeadroomAvailable,
    /// A subnet has room for fewer: the message names it, the figure and the fix.
    LowHeadroom,
    /// No fleet node has an instance id yet, so no subnet is known.
    NoSubnets,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
