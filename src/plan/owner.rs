//! Who else manages aws-node, and how the operator lives with that owner without a fight.
//!
//! aws-node always has another owner: the EKS add-on, the aws-vpc-cni Helm chart (often through
//! Argo CD or Flux), kOps, Terraform or a person with kubectl. Each puts its own values back:
//! Helm 3 on every upgrade (three-way merge), Argo CD self-heal and Flux drift detection within
//! seconds, and every change to aws-node's pod template restarts the CNI on every node. So:
//! - a value another manager holds by **server-side apply** (Helm 4, Argo CD or Flux in SSA
//!   mode, `kubectl apply --server-side`) is never taken with force: the owner's next apply would
//!   fail with a conflict (Helm 4, EKS with resolveConflicts NONE) or force it back (a loop);
//! - a value another manager set by a client-side update (Helm 3, Argo CD's default, Flux's
//!   helm-controller, `kubectl edit`) is put back once; a second revert within
//!   [`REVERT_WINDOW`] hands aws-node over to its owner;
//! - handed over, the operator writes nothing and names the owner-native fix until the owner's
//!   values for the operator's keys change.
//!
//! Pure: the controller projects the DaemonSet's metadata into [`OwnerMetadata`]; the clock comes
//! in as a value.

use std::collections::BTreeMap;

use crate::crd::conditions::Reason;
use crate::crd::{AwsNodeOwnerStatus, HandoverStatus};

use super::{AwsNodeFacts, Blocked, EnvChange};

/// Reverts further apart than this are each put back once (a person's one-off edit); a second
/// revert inside it means an owner that will keep putting its values back.
pub const REVERT_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The field manager of the EKS managed add-on (handled by add-on mode, not here).
const EKS: &str = "eks";

/// What kind of owner applies aws-node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OwnerKind {
    EksAddon,
    Helm,
    ArgoCd,
    Flux,
    Kops,
    Terraform,
    /// Field managers none of the above: `kubectl`, a script, another controller.
    Other,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EksAddon => "EksAddon",
            Self::Helm => "Helm",
            Self::ArgoCd => "ArgoCD",
            Self::Flux => "Flux",
            Self::Kops => "kOps",
            Self::Terraform => "Terraform",
            Self::Other => "Other",
        }
    }

    /// The CNIConfigured reason when the operator hands aws-node over to this owner.
    pub(crate) fn handover_reason(self) -> Reason {
        match self {
            Self::EksAddon | Self::Other => Reason::AnotherManagerOwnsAwsNode,
            Self::Helm => Reason::HelmOwnsAwsNode,
            Self::ArgoCd => Reason::ArgoCdOwnsAwsNode,
            Self::Flux => Reason::FluxOwnsAwsNode,
            Self::Kops => Reason::KopsOwnsAwsNode,
            Self::Terraform => Reason::TerraformOwnsAwsNode,
        }
    }
}

/// A field manager of aws-node's metadata.managedFields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldManager {
    pub name: String,
    /// `operation: Apply` (server-side apply), else `Update`.
    pub server_side: bool,
}

/// The parts of aws-node's metadata that tell who applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerMetadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Every field manager other than this operator's (main resource, not subresources).
    pub managers: Vec<FieldManager>,
}

/// The owner of aws-node as detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNodeOwner {
    pub kind: OwnerKind,
    /// The Helm release, Argo CD application, Flux HelmRelease or Kustomization, kOps addon.
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// `HelmRelease` or `Kustomization` for Flux.
    pub object: Option<String>,
    pub managers: Vec<FieldManager>,
}

fn manager_like(managers: &[FieldManager], names: &[&str]) -> bool {
    managers.iter().any(|m| {
        let name = m.name.to_ascii_lowercase();
        names
            .iter()
            .any(|n| name == *n || name.starts_with(&format!("{n}-")))
    })
}

/// Who applies aws-node: `None` when nobody but this operator has fields in it. Labels and
/// annotations win over field-manager names (Helm 4 library callers apply under their own
/// process name). Argo CD and Flux come before Helm: both render the chart (Argo CD with
/// `helm template`, Flux's helm-controller as a real release), so the chart's Helm labels are
/// there too, but the one that puts values back is the GitOps controller.
pub fn detect(meta: &OwnerMetadata) -> Option<AwsNodeOwner> {
    let label = |k: &str| meta.labels.get(k).cloned();
    let annotation = |k: &str| meta.annotations.get(k).cloned();
    let owner = |kind, name: Option<String>, namespace: Option<String>, object: Option<&str>| {
        Some(AwsNodeOwner {
            kind,
            name,
            namespace,
            object: object.map(str::to_owned),
            managers: meta.managers.clone(),
        })
    };
    let managers = &meta.managers;
    if managers.iter().any(|m| m.name == EKS) {
        return owner(OwnerKind::EksAddon, Some("vpc-cni".into()), None, None);
    }
    // Flux: helm-controller labels what it installs with the HelmRelease, kustomize-controller
    // with the Kustomization (fluxcd/helm-controller, fluxcd/kustomize-controller).
    if let Some(name) = label("helm.toolkit.fluxcd.io/name") {
        let ns = label("helm.toolkit.fluxcd.io/namespace");
        return owner(OwnerKind::Flux, Some(name), ns, Some("HelmRelease"));
    }
    if let Some(name) = label("kustomize.toolkit.fluxcd.io/name") {
        let ns = label("kustomize.toolkit.fluxcd.io/namespace");
        return owner(OwnerKind::Flux, Some(name), ns, Some("Kustomization"));
    }
    if manager_like(managers, &["helm-controller"]) {
        return owner(OwnerKind::Flux, None, None, Some("HelmRelease"));
    }
    if manager_like(managers, &["kustomize-controller"]) {
        return owner(OwnerKind::Flux, None, None, Some("Kustomization"));
    }
    // Argo CD: the tracking annotation `APP:GROUP/KIND:NAMESPACE/NAME` (APP may be
    // `NAMESPACE_APP` for apps outside argocd's namespace), or the instance label with Argo CD's
    // field manager.
    if let Some(tracking) = annotation("argocd.argoproj.io/tracking-id") {
        let app = tracking.split(':').next().unwrap_or_default().to_owned();
        let (namespace, app) = match app.split_once('_') {
            Some((ns, app)) => (Some(ns.to_owned()), app.to_owned()),
            None => (None, app),
        };
        return owner(OwnerKind::ArgoCd, Some(app), namespace, Some("Application"));
    }
    if manager_like(
        managers,
        &["argocd-controller", "argocd-application-controller"],
    ) {
        let app = label("app.kubernetes.io/instance");
        return owner(OwnerKind::ArgoCd, app, None, Some("Application"));
    }
    // kOps' channels tool labels every addon object (kops: upup/pkg/fi/cloudup/bootstrapchannel
    // builder, channels/pkg/channels/addon).
    if label("app.kubernetes.io/managed-by").as_deref() == Some("kops")
        || label("addon.kops.k8s.io/name").is_some()
    {
        return owner(OwnerKind::Kops, label("addon.kops.k8s.io/name"), None, None);
    }
    if manager_like(managers, &["kops", "channels"]) {
        return owner(OwnerKind::Kops, None, None, None);
    }
    // Helm: `helm install` annotates the release; the chart labels managed-by Helm.
    if let Some(release) = annotation("meta.helm.sh/release-name") {
        let ns = annotation("meta.helm.sh/release-namespace");
        return owner(OwnerKind::Helm, Some(release), ns, None);
    }
    if label("app.kubernetes.io/managed-by").is_some_and(|v| v.eq_ignore_ascii_case("helm"))
        || manager_like(managers, &["helm"])
    {
        let release = label("app.kubernetes.io/instance");
        return owner(OwnerKind::Helm, release, None, None);
    }
    // The Terraform kubernetes provider's field manager is `Terraform` (kubernetes_manifest)
    // or `terraform-provider-kubernetes`.
    if manager_like(managers, &["terraform", "terraform-provider-kubernetes"]) {
        return owner(OwnerKind::Terraform, None, None, None);
    }
    if managers.is_empty() {
        return None;
    }
    owner(OwnerKind::Other, None, None, None)
}

impl AwsNodeOwner {
    pub fn status(&self) -> AwsNodeOwnerStatus {
        AwsNodeOwnerStatus {
            kind: self.kind.as_str().to_owned(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            object: self.object.clone(),
            managers: self
                .managers
                .iter()
                .map(|m| {
                    format!(
                        "{} ({})",
                        m.name,
                        if m.server_side { "Apply" } else { "Update" }
                    )
                })
                .collect(),
        }
    }

    fn describe(&self) -> String {
        let at = |name: &Option<String>| match (name, &self.namespace) {
            (Some(n), Some(ns)) => format!(" {ns}/{n}"),
            (Some(n), None) => format!(" {n}"),
            _ => String::new(),
        };
        match self.kind {
            OwnerKind::EksAddon => "the EKS managed add-on vpc-cni".to_owned(),
            OwnerKind::Helm => format!("Helm release{}", at(&self.name)),
            OwnerKind::ArgoCd => format!("Argo CD application{}", at(&self.name)),
            OwnerKind::Flux => format!(
                "Flux {}{}",
                self.object.as_deref().unwrap_or("controller"),
                at(&self.name)
            ),
            OwnerKind::Kops => "kOps (the cluster spec's networking.amazonVPC)".to_owned(),
            OwnerKind::Terraform => "Terraform".to_owned(),
            OwnerKind::Other => "another field manager".to_owned(),
        }
    }

    /// What to change in the owner's own configuration so it and the operator agree, for `env`
    /// (the operator's settings).
    pub fn fix(&self, env: &BTreeMap<String, String>) -> String {
        let yaml_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
        let set_strings: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("--set-string env.{k}={v}"))
            .collect();
        let release = self.name.as_deref().unwrap_or("aws-vpc-cni");
        let namespace = self.namespace.as_deref().unwrap_or("kube-system");
        match self.kind {
            OwnerKind::Helm => format!(
                "set these values in the aws-vpc-cni chart (env: {{{}}}): helm upgrade {release} \
                 eks/aws-vpc-cni -n {namespace} --reuse-values {}",
                yaml_env.join(", "),
                set_strings.join(" ")
            ),
            OwnerKind::ArgoCd => format!(
                "put the values in Git (the aws-vpc-cni chart values of application {}: env: \
                 {{{}}}), or let the operator own the env: add to the Application \
                 spec.ignoreDifferences [{{group: apps, kind: DaemonSet, name: aws-node, \
                 namespace: kube-system, managedFieldsManagers: [{}]}}] and \
                 spec.syncPolicy.syncOptions [RespectIgnoreDifferences=true]",
                self.name
                    .as_deref()
                    .unwrap_or("(see the tracking annotation)"),
                yaml_env.join(", "),
                crate::crd::FIELD_MANAGER
            ),
            OwnerKind::Flux if self.object.as_deref() == Some("HelmRelease") => format!(
                "set spec.values.env in HelmRelease {namespace}/{release}: {{{}}}, or add to its \
                 spec.driftDetection.ignore [{{paths: [\"/spec/template/spec/containers/0/env\"], \
                 target: {{kind: DaemonSet, name: aws-node}}}}]",
                yaml_env.join(", ")
            ),
            OwnerKind::Flux => format!(
                "set the env in the aws-node manifest of Kustomization {namespace}/{release} in \
                 Git: {{{}}}",
                yaml_env.join(", ")
            ),
            OwnerKind::Kops => {
                let entries: Vec<String> = env
                    .iter()
                    .map(|(k, v)| format!("{{name: {k}, value: \"{v}\"}}"))
                    .collect();
                format!(
                    "kops edit cluster: spec.networking.amazonVPC.env: [{}], then kops update \
                     cluster --yes and kops rolling-update cluster --yes",
                    entries.join(", ")
                )
            }
            OwnerKind::Terraform => format!(
                "set the env in the Terraform resource that applies aws-node (for a helm_release \
                 of aws-vpc-cni: set {{ name = \"env.NAME\", value = \"VALUE\" }} for {})",
                yaml_env.join(", ")
            ),
            OwnerKind::EksAddon | OwnerKind::Other => format!(
                "set {} where aws-node's manifest comes from (field manager {}), or remove \
                 these entries from it so the operator can own them",
                yaml_env.join(", "),
                self.managers
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What the owner check decides about a planned aws-node write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OwnerDecision {
    /// `Err`: write nothing; the CNIConfigured reason and message.
    pub write: Result<(), Blocked>,
    /// The record to keep in the deciding policy's `status.cniConfig.handover`.
    pub handover: Option<HandoverStatus>,
    /// The manager whose revert this write puts back (for the Event).
    pub reverted_by: Option<String>,
}

/// Another manager's hold on one of the operator's env values.
fn holders<'a>(ds: &'a AwsNodeFacts, name: &str) -> impl Iterator<Item = &'a FieldManager> {
    ds.value_managers
        .get(name)
        .into_iter()
        .flatten()
        .filter(|m| m.name != EKS)
}

/// Decides whether the planned `changes` (towards `env`) may be written, given who owns
/// aws-node, the record kept in the policy's status (`previous`) and the time.
pub(super) fn check_write(
    ds: &AwsNodeFacts,
    env: &BTreeMap<String, String>,
    changes: &[EnvChange],
    previous: Option<&HandoverStatus>,
    now: jiff::Timestamp,
) -> OwnerDecision {
    let current: BTreeMap<String, String> = env
        .keys()
        .filter_map(|k| Some((k.clone(), ds.env_value(k)?.value.clone()?)))
        .collect();
    let owner = ds.owner.as_ref();
    let handed_over = |previous: Option<&HandoverStatus>, reverts: u32, by: Option<String>| {
        let owner = owner.cloned().unwrap_or(AwsNodeOwner {
            kind: OwnerKind::Other,
            name: None,
            namespace: None,
            object: None,
            managers: Vec::new(),
        });
        HandoverStatus {
            handed_over: true,
            reverts,
            last_revert_time: previous.and_then(|p| p.last_revert_time.clone()),
            reverted_by: by.or_else(|| previous.and_then(|p| p.reverted_by.clone())),
            owner_env: current.clone(),
            since: Some(
                previous
                    .filter(|p| p.handed_over)
                    .and_then(|p| p.since.clone())
                    .unwrap_or_else(|| now.to_string()),
            ),
            message: None,
            revert_after_update: None,
        }
        .with_message(&owner, env)
    };
    if changes.is_empty() {
        // In sync: a handover ends once the owner carries the operator's values.
        let keep = previous.filter(|p| !p.handed_over).cloned();
        return OwnerDecision {
            write: Ok(()),
            handover: keep,
            reverted_by: None,
        };
    }
    // Handed over before, and the owner's values are still those it kept putting back.
    if let Some(p) = previous.filter(|p| p.handed_over && p.owner_env == current) {
        let record = handed_over(Some(p), p.reverts, None);
        return OwnerDecision {
            write: Err(record.blocked(owner)),
            handover: Some(record),
            reverted_by: None,
        };
    }
    let previous = previous.filter(|p| !p.handed_over);
    // A value held by server-side apply is the owner's: taking it with force would make the
    // owner's next apply fail (a conflict) or force it back.
    let held: Vec<&FieldManager> = changes
        .iter()
        .filter(|c| c.to.is_some())
        .flat_map(|c| holders(ds, &c.name).filter(|m| m.server_side))
        .collect();
    if let Some(manager) = held.first() {
        let record = handed_over(previous, 0, Some(manager.name.clone()));
        return OwnerDecision {
            write: Err(record.blocked(owner)),
            handover: Some(record),
            reverted_by: None,
        };
    }
    // A revert: a value this operator set that another manager has since changed.
    let reverted_by = changes
        .iter()
        .filter(|c| c.drift)
        .flat_map(|c| holders(ds, &c.name))
        .map(|m| m.name.clone())
        .next();
    let Some(by) = reverted_by else {
        return OwnerDecision {
            write: Ok(()),
            handover: previous.cloned(),
            reverted_by: None,
        };
    };
    let recent = previous
        .filter(|p| p.reverts > 0)
        .and_then(|p| p.last_revert_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| now.duration_since(t) < REVERT_WINDOW);
    if recent {
        let reverts = previous.map_or(1, |p| p.reverts) + 1;
        let mut record = handed_over(previous, reverts, Some(by));
        record.last_revert_time = Some(now.to_string());
        return OwnerDecision {
            write: Err(record.blocked(owner)),
            handover: Some(record),
            reverted_by: None,
        };
    }
    OwnerDecision {
        write: Ok(()),
        handover: Some(HandoverStatus {
            reverts: 1,
            last_revert_time: Some(now.to_string()),
            reverted_by: Some(by.clone()),
            ..Default::default()
        }),
        reverted_by: Some(by),
    }
}

/// Entries another manager applies server-side whose value this operator holds (an earlier
/// version took it with force): that manager's next apply fails with a conflict unless it sets
/// the operator's value. A warning with the fix; nothing is written for it.
pub(super) fn held_from_server_side_owner(
    ds: &AwsNodeFacts,
    env: &BTreeMap<String, String>,
) -> Option<String> {
    let held: Vec<String> = env
        .iter()
        .filter(|(name, _)| ds.owned_env.contains(*name))
        .filter_map(|(name, value)| {
            let managers: Vec<&str> = ds
                .item_managers
                .get(name)?
                .iter()
                .filter(|m| m.server_side && m.name != EKS)
                .map(|m| m.name.as_str())
                .collect();
            (!managers.is_empty()).then(|| format!("{name}={value} ({})", managers.join(", ")))
        })
        .collect();
    if held.is_empty() {
        return None;
    }
    let fix = ds
        .owner
        .as_ref()
        .map(|o| o.fix(env))
        .unwrap_or_else(|| "set these values where aws-node's manifest comes from".to_owned());
    Some(format!(
        "this operator holds the values of {} that another manager applies server-side: its next \
         apply conflicts unless it sets the same values. {fix}",
        held.join(", ")
    ))
}

impl HandoverStatus {
    fn with_message(mut self, owner: &AwsNodeOwner, env: &BTreeMap<String, String>) -> Self {
        let why = if self.reverts >= 2 {
            format!(
                "{} put its values back {} times (last by field manager {})",
                owner.describe(),
                self.reverts,
                self.reverted_by.as_deref().unwrap_or("unknown")
            )
        } else {
            format!(
                "{} holds these env values by server-side apply (field manager {}); taking them \
                 would make its next apply fail or put them back",
                owner.describe(),
                self.reverted_by.as_deref().unwrap_or("unknown")
            )
        };
        self.message = Some(format!(
            "{why}: aws-node is left to its owner, and the operator writes it again only when \
             the owner's values change. To get {}: {}",
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            owner.fix(env)
        ));
        self
    }

    fn blocked(&self, owner: Option<&AwsNodeOwner>) -> Blocked {
        Blocked {
            reason: owner.map_or(Reason::AnotherManagerOwnsAwsNode, |o| {
                o.kind.handover_reason()
            }),
            message: self.message.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[path = "owner_tests.rs"]
pub(super) mod tests;
