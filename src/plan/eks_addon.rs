//! The aws-node env through the EKS managed add-on `vpc-cni`: when EKS owns aws-node, the
//! winning policy's env goes into the add-on's `configurationValues` (eks:UpdateAddon), never
//! into the DaemonSet, so an add-on update never conflicts with this operator. Pure: the
//! controller reads the add-on ([`AddonFacts`]), this decides the edit and the conditions.

use super::*;
use crate::crd::{CniConfigStatus, EksAddonStatus};
use crate::eks_addon::{ADDON_NAME, ConfigurationValues, edit};

/// The add-on as the controller last read it (eks:DescribeAddon, eks:DescribeUpdate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddonFacts {
    pub cluster: String,
    pub version: Option<String>,
    /// ACTIVE, UPDATING, DEGRADED, ...
    pub status: Option<String>,
    pub configuration_values: Option<String>,
    /// The operator's last UpdateAddon, as DescribeUpdate last reported it.
    pub last_update: Option<UpdateFacts>,
}

/// One add-on update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFacts {
    pub id: String,
    /// InProgress, Successful, Failed, Cancelled.
    pub status: String,
    /// EKS's `errors` (`errorCode: errorMessage`).
    pub errors: Vec<String>,
}

impl UpdateFacts {
    pub fn in_progress(&self) -> bool {
        self.status == "InProgress"
    }
}

/// Where the aws-node env is written (the controller decides it from `--cni-config-via`, the
/// DaemonSet's managedFields and eks:DescribeAddon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniTarget {
    /// Server-side apply of the env. `addon_warning`: the DaemonSet is the EKS add-on's and the
    /// operator was told to write it anyway (`--cni-config-via daemonset`).
    DaemonSet { addon_warning: bool },
    /// The EKS add-on's configurationValues.
    EksAddon(AddonFacts),
    /// EKS owns aws-node, but the add-on cannot be read now (no cluster name, access denied, no
    /// add-on): nothing is written.
    Unavailable { reason: Reason, message: String },
}

impl Default for CniTarget {
    fn default() -> Self {
        Self::DaemonSet {
            addon_warning: false,
        }
    }
}

/// The add-on update the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonWrite {
    pub policy: String,
    pub cluster: String,
    /// The whole new document, in the format the add-on had.
    pub configuration_values: String,
    /// The same as JSON, for the add-on's configuration schema.
    pub document: serde_json::Value,
    pub changes: Vec<EnvChange>,
    /// The `configurationValues.env` keys the operator owns after the update.
    pub env: BTreeMap<String, String>,
}

impl AddonWrite {
    pub fn drift(&self) -> Vec<&EnvChange> {
        self.changes.iter().filter(|c| c.drift).collect()
    }
}

/// The add-on side of the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddonPlan {
    pub write: Option<AddonWrite>,
    /// Env names this operator's field manager still owns on the DaemonSet (from a DaemonSet-mode
    /// run): released, values untouched, so EKS can apply them.
    pub release: BTreeSet<String>,
    /// The winning policy's env is not on the DaemonSet yet (a write is planned, or EKS has not
    /// applied it).
    pub pending: bool,
}

/// What this operator wrote into configurationValues before: from the policies' status, the
/// oldest first.
fn written_before(input: &FleetInput<'_>) -> BTreeMap<String, String> {
    let mut written = BTreeMap::new();
    for p in PolicyInput::oldest_first(&input.policies).into_iter().rev() {
        if let Some(env) = p.addon_env {
            written.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    written
}

/// The add-on's configurationValues, or why the operator cannot edit them.
pub(super) fn parse_configuration(facts: &AddonFacts) -> Result<ConfigurationValues, Blocked> {
    ConfigurationValues::parse(facts.configuration_values.as_deref()).map_err(|err| Blocked {
        reason: Reason::AddonConfigurationInvalid,
        message: format!(
            "the EKS add-on {ADDON_NAME} of cluster {}: {err}; fix it with aws eks update-addon \
             --configuration-values",
            facts.cluster
        ),
    })
}

/// Plans the add-on update for the winner's env (`current`: the add-on's document) and fills
/// each policy's `cniConfig`, and the CNIConfigured condition of each policy that has a
/// recommendation.
pub(super) fn plan_addon(
    input: &FleetInput<'_>,
    facts: &AddonFacts,
    current: &ConfigurationValues,
    winner: Option<(&str, &BTreeMap<String, String>)>,
    policies: &mut BTreeMap<String, PolicyPlan>,
) -> AddonPlan {
    let ds = input.aws_node;
    let mut plan = AddonPlan {
        release: ds.map(|d| d.owned_env.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let written = written_before(input);
    let where_ = format!(
        "the configurationValues of the EKS add-on {ADDON_NAME} (cluster {})",
        facts.cluster
    );
    let carries = |env: &BTreeMap<String, String>| {
        ds.is_some_and(|d| {
            env.iter()
                .all(|(k, v)| d.env_value(k).and_then(|e| e.value.as_ref()) == Some(v))
        })
    };
    for (name, p) in policies.iter_mut() {
        let status = |env: BTreeMap<String, String>, sent: Option<String>| CniConfigStatus {
            via: "EksAddon".to_owned(),
            eks_addon: Some(EksAddonStatus {
                cluster_name: facts.cluster.clone(),
                addon_name: ADDON_NAME.to_owned(),
                addon_version: facts.version.clone(),
                env,
                configuration_values: sent,
                last_update_id: None,
                last_update_status: None,
            }),
        };
        let ready = p
            .conditions
            .iter()
            .any(|c| c.type_ == condition::READY && c.status);
        let has_env = !p.cni_env.is_empty() && ready;
        let is_winner = winner.is_some_and(|(w, _)| w == name);
        let dry_run = p
            .conditions
            .iter()
            .any(|c| c.type_ == condition::READY && c.reason == Reason::DryRun);
        if is_winner && let Some((_, env)) = winner {
            let mut s = status(env.clone(), None);
            if let (Some(a), Some(u)) = (s.eks_addon.as_mut(), &facts.last_update) {
                a.last_update_id = Some(u.id.clone());
                a.last_update_status = Some(u.status.clone());
            }
            p.cni_config = Some(s);
            let in_sync = carries(env);
            plan.pending = !in_sync;
            let cni = match edit(current, env, &written) {
                Some((doc, changes)) => {
                    let drift: Vec<String> = changes
                        .iter()
                        .filter(|c| c.drift)
                        .map(ToString::to_string)
                        .collect();
                    let cond = if drift.is_empty() {
                        (
                            Reason::AddonUpdating,
                            format!(
                                "setting env {} in {where_} (eks:UpdateAddon)",
                                changes
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    } else {
                        (
                            Reason::AddonDrift,
                            format!(
                                "someone else changed env {} in {where_} (an infrastructure-as-code tool \
                             that owns configurationValues?); restoring the policy's values. Set \
                             them in that tool so the two stop undoing each other",
                                drift.join(", ")
                            ),
                        )
                    };
                    plan.pending = true;
                    // Until the update is sent, the status keeps what was written before (the
                    // controller records the new keys once EKS takes the update).
                    if let Some(a) = p.cni_config.as_mut().and_then(|c| c.eks_addon.as_mut()) {
                        a.env = written.clone();
                    }
                    plan.write = Some(AddonWrite {
                        policy: name.clone(),
                        cluster: facts.cluster.clone(),
                        configuration_values: doc.render(),
                        document: doc.as_json(),
                        changes,
                        env: env.clone(),
                    });
                    Some(cond)
                }
                None if in_sync => None,
                None => Some(match &facts.last_update {
                    Some(u) if u.status == "Failed" || u.status == "Cancelled" => (
                        Reason::AddonUpdateFailed,
                        format!(
                            "add-on update {} {}: {}; {where_} has the settings but {} does not",
                            u.id,
                            u.status.to_lowercase(),
                            if u.errors.is_empty() {
                                "no error given".to_owned()
                            } else {
                                u.errors.join("; ")
                            },
                            input.managed_daemonset
                        ),
                    ),
                    Some(u) if !u.in_progress() => (
                        Reason::AddonUpdating,
                        format!(
                            "{where_} has the settings and update {} succeeded, but {} does not carry \
                             them: another field manager owns these env entries on the DaemonSet and \
                             EKS preserves its values; remove them there (kubectl edit) or update \
                             the add-on with --resolve-conflicts OVERWRITE",
                            u.id, input.managed_daemonset
                        ),
                    ),
                    _ => (
                        Reason::AddonUpdating,
                        format!(
                            "waiting for EKS to apply {where_} to {}",
                            input.managed_daemonset
                        ),
                    ),
                }),
            };
            if let Some((reason, message)) = cni {
                set_condition(p, condition::CNI_CONFIGURED, false, reason, message);
            } else if ready {
                set_condition(
                    p,
                    condition::CNI_CONFIGURED,
                    true,
                    Reason::InSync,
                    format!(
                        "{} carries these settings, set in {where_}",
                        input.managed_daemonset
                    ),
                );
            }
        } else if dry_run && has_env {
            let env = p.cni_env.clone();
            let send = edit(current, &env, &BTreeMap::new()).map(|(doc, _)| doc.render());
            if let Some(text) = &send {
                set_condition(
                    p,
                    condition::CNI_CONFIGURED,
                    false,
                    Reason::DryRun,
                    format!(
                        "would send configurationValues {text} to the EKS add-on {ADDON_NAME} \
                         (cluster {}, eks:UpdateAddon); set enforcement: Enforce to apply",
                        facts.cluster
                    ),
                );
            }
            p.cni_config = Some(status(BTreeMap::new(), send));
        } else {
            p.cni_config = Some(status(BTreeMap::new(), None));
        }
    }
    plan
}

/// Replaces a planned condition of `p`.
pub fn set_condition(
    p: &mut PolicyPlan,
    type_: &'static str,
    status: bool,
    reason: Reason,
    message: String,
) {
    p.conditions.retain(|c| c.type_ != type_);
    p.conditions.push(ConditionPlan {
        type_,
        status,
        reason,
        message,
    });
}
