//! The aws-node env through the EKS managed add-on `vpc-cni`: when EKS owns aws-node, the
//! winning policy's env goes into the add-on's `configurationValues` (eks:UpdateAddon), never
//! into the DaemonSet, so an add-on update never conflicts with this operator. Pure: the
//! controller reads the add-on ([`AddonFacts`]), this decides the edit and the conditions.

use super::*;
use crate::crd::{CniConfigStatus, EksAddonStatus};
use crate::eks_addon::{ADDON_NAME, ConfigurationValues, edit};
pub use crate::eks_addon::{AddonFacts, UpdateFacts};

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
    /// Some of the changes restore keys someone else changed (IaC drift).
    pub(crate) fn has_drift(&self) -> bool {
        self.changes.iter().any(|c| c.drift)
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
    /// The policy and the message, when this plan hands the add-on's keys over to their owner:
    /// an Event.
    pub handover_event: Option<(String, String)>,
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
    // Released only for an Enforce policy's update: DryRun changes nothing on aws-node either.
    let mut plan = AddonPlan {
        release: input
            .aws_node
            .filter(|_| winner.is_some())
            .map(|d| d.owned_env.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let written = written_before(input);
    for (name, p) in policies.iter_mut() {
        match winner {
            Some((w, env)) if w == name => {
                plan_winner(input, facts, current, &written, name, env, p, &mut plan);
            }
            // A DryRun policy whose own env is not blocked on aws-node.
            _ if is_dry_run(p)
                && !p.cni_env.is_empty()
                && p.conditions.iter().any(|c| {
                    c.type_ == conditions::CNI_CONFIGURED
                        && matches!(c.reason, Reason::DryRun | Reason::InSync)
                }) =>
            {
                let send = edit(current, &p.cni_env, &BTreeMap::new()).map(|(doc, _)| doc.render());
                if let Some(text) = &send {
                    set_condition(
                        p,
                        conditions::CNI_CONFIGURED,
                        false,
                        Reason::DryRun,
                        format!(
                            "would send configurationValues {text} to the EKS add-on {ADDON_NAME} \
                             (cluster {}, eks:UpdateAddon); set enforcement: Enforce to apply",
                            facts.cluster
                        ),
                    );
                }
                p.cni_config = Some(addon_status(facts, BTreeMap::new(), send));
            }
            _ => p.cni_config = Some(addon_status(facts, BTreeMap::new(), None)),
        }
    }
    plan
}

/// A policy in DryRun with a recommendation (Ready says DryRun).
pub(super) fn is_dry_run(p: &PolicyPlan) -> bool {
    p.conditions
        .iter()
        .any(|c| c.type_ == conditions::READY && c.reason == Reason::DryRun)
}

/// `status.cniConfig` in add-on mode.
fn addon_status(
    facts: &AddonFacts,
    env: BTreeMap<String, String>,
    configuration_values: Option<String>,
) -> CniConfigStatus {
    CniConfigStatus {
        via: "EksAddon".to_owned(),
        eks_addon: Some(EksAddonStatus {
            cluster_name: facts.cluster.clone(),
            addon_name: ADDON_NAME.to_owned(),
            addon_version: facts.version.clone(),
            env,
            configuration_values,
            last_update_id: None,
            last_update_status: None,
        }),
        owner: Some(crate::crd::AwsNodeOwnerStatus {
            kind: super::OwnerKind::EksAddon.as_str().to_owned(),
            name: Some(ADDON_NAME.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `status.cniConfig` of the winning policy: with the operator's last update.
fn winner_status(facts: &AddonFacts, env: BTreeMap<String, String>) -> CniConfigStatus {
    let mut status = addon_status(facts, env, None);
    if let (Some(a), Some(u)) = (status.eks_addon.as_mut(), &facts.last_update) {
        a.last_update_id = Some(u.id.clone());
        a.last_update_status = Some(u.status.clone());
    }
    status
}

/// The winning policy: the update that gives the add-on its `env`, its status and its
/// CNIConfigured condition.
#[allow(clippy::too_many_arguments)]
fn plan_winner(
    input: &FleetInput<'_>,
    facts: &AddonFacts,
    current: &ConfigurationValues,
    written: &BTreeMap<String, String>,
    name: &str,
    env: &BTreeMap<String, String>,
    p: &mut PolicyPlan,
    plan: &mut AddonPlan,
) {
    let where_ = format!(
        "the configurationValues of the EKS add-on {ADDON_NAME} (cluster {})",
        facts.cluster
    );
    let in_sync = input.aws_node.is_some_and(|d| {
        env.iter()
            .all(|(k, v)| d.env_value(k).and_then(|e| e.value.as_ref()) == Some(v))
    });
    plan.pending = !in_sync;
    let edited = edit(current, env, written);
    let drift = edited
        .as_ref()
        .is_some_and(|(_, changes)| changes.iter().any(|c| c.drift));
    let owner_env: BTreeMap<String, String> = {
        let values = current.env();
        env.keys()
            .map(|k| (k.clone(), values.get(k).cloned().unwrap_or_default()))
            .collect()
    };
    let revert = Revert {
        drift,
        owner_env: &owner_env,
        after_update: facts.last_update.as_ref().map(|u| u.id.clone()),
    };
    let (record, newly) = addon_handover(input, name, env, &revert, &where_);
    let handed_over = record.as_ref().is_some_and(|r| r.handed_over);
    if newly {
        // Handed over by this plan: an Event.
        plan.handover_event = record
            .as_ref()
            .and_then(|r| r.message.clone())
            .map(|m| (name.to_owned(), m));
    }
    if handed_over {
        handed_over_status(p, facts, written, record);
        return;
    }
    let Some((doc, changes)) = edited else {
        // configurationValues has the settings: in sync, or waiting for EKS to apply them.
        let mut status = winner_status(facts, env.clone());
        status.handover = record;
        p.cni_config = Some(status);
        let (status, reason, message) = if in_sync {
            (
                true,
                Reason::InSync,
                format!(
                    "{} carries these settings, set in {where_}",
                    input.managed_daemonset
                ),
            )
        } else {
            let (reason, message) = waiting(facts, &where_, input.managed_daemonset);
            (false, reason, message)
        };
        if !status
            || p.conditions
                .iter()
                .any(|c| c.type_ == conditions::READY && c.status)
        {
            set_condition(p, conditions::CNI_CONFIGURED, status, reason, message);
        }
        return;
    };
    let (reason, message) = if changes.iter().any(|c| c.drift) {
        (
            Reason::AddonDrift,
            format!(
                "someone else changed env {} in {where_} (an infrastructure-as-code tool that \
                 owns configurationValues?); restoring the policy's values. Set them in that tool \
                 so the two stop undoing each other",
                EnvChange::join(changes.iter().filter(|c| c.drift))
            ),
        )
    } else {
        (
            Reason::AddonUpdating,
            format!(
                "setting env {} in {where_} (eks:UpdateAddon)",
                EnvChange::join(&changes)
            ),
        )
    };
    set_condition(p, conditions::CNI_CONFIGURED, false, reason, message);
    // Until the update is sent, the status keeps what was written before (the controller
    // records the new keys once EKS takes the update).
    let mut status = winner_status(facts, written.clone());
    status.handover = record;
    p.cni_config = Some(status);
    plan.pending = true;
    plan.write = Some(AddonWrite {
        policy: name.to_owned(),
        cluster: facts.cluster.clone(),
        configuration_values: doc.render(),
        document: doc.as_json(),
        changes,
        env: env.clone(),
    });
}

/// What the plan sees of a revert of the add-on's keys.
struct Revert<'a> {
    /// Keys the operator wrote are gone or changed in configurationValues.
    drift: bool,
    /// The owner's values of the operator's keys (`""`: absent).
    owner_env: &'a BTreeMap<String, String>,
    /// The operator's last add-on update (its id), when known.
    after_update: Option<String>,
}

/// The winner's status and CNIConfigured while the add-on's keys are handed over.
fn handed_over_status(
    p: &mut PolicyPlan,
    facts: &AddonFacts,
    written: &BTreeMap<String, String>,
    record: Option<crate::crd::HandoverStatus>,
) {
    let mut status = winner_status(facts, written.clone());
    let message = record
        .as_ref()
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    status.handover = record;
    p.cni_config = Some(status);
    set_condition(
        p,
        conditions::CNI_CONFIGURED,
        false,
        Reason::AddonHandedOver,
        message,
    );
}

/// The add-on's owner (infrastructure as code: Terraform's `aws_eks_addon`, eksctl,
/// CloudFormation) puts its configurationValues back: the first revert is restored, a second
/// within [`super::owner::REVERT_WINDOW`] hands the keys over (no more `UpdateAddon` for them,
/// each of which restarts aws-node on every node), until the owner's values change. The record
/// lives in the winner's `status.cniConfig.handover`, so it survives a restart. Returns the
/// record (`handedOver` says whether the keys are the owner's) and whether this plan hands them
/// over.
fn addon_handover(
    input: &FleetInput<'_>,
    name: &str,
    env: &BTreeMap<String, String>,
    revert: &Revert<'_>,
    where_: &str,
) -> (Option<crate::crd::HandoverStatus>, bool) {
    let (drift, owner_env) = (revert.drift, revert.owner_env);
    let previous = input
        .policies
        .iter()
        .find(|q| q.name == name)
        .and_then(|q| q.handover);
    if let Some(p) = previous.filter(|p| p.handed_over && &p.owner_env == owner_env) {
        return (Some(p.clone()), false);
    }
    // Handed over before, and the owner now sets other values: look again from scratch.
    let previous = previous.filter(|p| !p.handed_over);
    // No drift; or the revert already counted, its restore not sent yet (a backoff).
    let counted = previous.is_some_and(|p| {
        p.reverts > 0
            && p.revert_after_update.is_some()
            && p.revert_after_update == revert.after_update
    });
    if !drift || counted {
        return (previous.cloned(), false);
    }
    let now = input.now;
    let recent = previous
        .filter(|p| p.reverts > 0)
        .and_then(|p| p.last_revert_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| now.duration_since(t) < super::owner::REVERT_WINDOW);
    let by = "the add-on's configurationValues (eks:UpdateAddon by another client)".to_owned();
    if !recent {
        let record = crate::crd::HandoverStatus {
            reverts: 1,
            last_revert_time: Some(now.to_string()),
            reverted_by: Some(by),
            revert_after_update: revert.after_update.clone(),
            ..Default::default()
        };
        return (Some(record), false);
    }
    let keys: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let message = format!(
        "{where_} was put back twice within 24 hours by whoever owns it (infrastructure as \
         code); the operator stops writing it so the two do not restart aws-node on every node \
         at each apply. Set env {} in that owner: Terraform aws_eks_addon \
         configuration_values, eksctl addons[].configurationValues, or CloudFormation \
         AWS::EKS::Addon ConfigurationValues; the operator looks again when the add-on's values \
         change",
        keys.join(", ")
    );
    let record = crate::crd::HandoverStatus {
        handed_over: true,
        reverts: previous.map_or(1, |p| p.reverts) + 1,
        last_revert_time: Some(now.to_string()),
        reverted_by: Some(by),
        since: Some(now.to_string()),
        owner_env: owner_env.clone(),
        message: Some(message),
        revert_after_update: revert.after_update.clone(),
    };
    (Some(record), true)
}

/// CNIConfigured while configurationValues has the settings and aws-node does not yet.
fn waiting(facts: &AddonFacts, where_: &str, daemonset: &DaemonSetRef) -> (Reason, String) {
    match &facts.last_update {
        Some(u) if u.status == "Failed" || u.status == "Cancelled" => (
            Reason::AddonUpdateFailed,
            format!(
                "add-on update {} {}: {}; {where_} has the settings but {daemonset} does not",
                u.id,
                u.status.to_lowercase(),
                if u.errors.is_empty() {
                    "no error given".to_owned()
                } else {
                    u.errors.join("; ")
                },
            ),
        ),
        Some(u) if !u.in_progress() => (
            Reason::AddonUpdating,
            format!(
                "{where_} has the settings and update {} succeeded, but {daemonset} does not \
                 carry them: another field manager owns these env entries on the DaemonSet and \
                 EKS preserves its values; remove them there (kubectl edit) or update the add-on \
                 with --resolve-conflicts OVERWRITE",
                u.id
            ),
        ),
        _ => (
            Reason::AddonUpdating,
            format!("waiting for EKS to apply {where_} to {daemonset}"),
        ),
    }
}

/// Replaces a planned condition of `p`.
pub(crate) fn set_condition(
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
