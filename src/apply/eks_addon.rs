//! The add-on write: in add-on mode, carries out the plan's [`AddonPlan`]: releases the env
//! fields this operator's field manager still owns on the DaemonSet, writes only from a read of
//! the add-on at most [`FRESH_ENOUGH`] old (else the next reconcile reads it again), validates the new configurationValues against the
//! add-on's schema, and sends one eks:UpdateAddon (`resolveConflicts: PRESERVE`) per change.
//! Returns an [`AddonOutcome`]; the report step turns it into conditions and Events.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use super::Writer;
use crate::aws::eks::EksError;
use crate::crd::conditions::Reason;
use crate::eks_addon::{ADDON_NAME, AddonFacts, UpdateFacts};
use crate::error::Error;
use crate::observe::eks_addon::{ADDON_TTL, AddonMemory, FRESH_ENOUGH};
use crate::plan::{AddonPlan, AddonWrite, CniTarget, EnvChange};

/// While an update runs, it is followed this often.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_secs(3);
/// Drift corrections back off: 10 s after the last write, then 20, 40, ... up to 15 minutes.
const DRIFT_BACKOFF: Duration = Duration::from_secs(10);
const DRIFT_BACKOFF_MAX: Duration = Duration::from_secs(900);
/// A document EKS (or IAM, or the schema) refused is not sent again for this long, unless it
/// changes; the condition keeps saying why.
const REFUSED_RETRY: Duration = Duration::from_secs(300);

/// What became of the planned add-on write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddonOutcome {
    /// Nothing was planned (or not in add-on mode).
    #[default]
    Unchanged,
    /// eks:UpdateAddon took it.
    Sent { update: UpdateFacts, drift: bool },
    /// Not sent: CNIConfigured says why (an update in progress, a refused document).
    Held { reason: Reason, message: String },
    /// A drift correction waits for the backoff this long.
    Backoff { left: Duration },
    /// The plan came from a read older than [`FRESH_ENOUGH`]: nothing sent or reported; the
    /// next reconcile, at once, reads the add-on and plans again.
    Stale,
}

/// How long after its last write the operator waits before it restores drifted keys, after
/// `streak` restorations in a row: 10 s, 20 s, 40 s, ... at most 15 minutes.
fn drift_wait(streak: u32) -> Duration {
    DRIFT_BACKOFF
        .saturating_mul(1 << streak.min(10))
        .min(DRIFT_BACKOFF_MAX)
}

/// Carries out the add-on side of the plan; returns its outcome and when to look again.
pub(super) async fn apply(
    w: &Writer<'_>,
    plan: &AddonPlan,
    target: &CniTarget,
) -> Result<(AddonOutcome, Option<Duration>), Error> {
    let CniTarget::EksAddon(facts) = target else {
        return Ok((AddonOutcome::Unchanged, None));
    };
    if !plan.release.is_empty() {
        release_daemonset_fields(w).await?;
    }
    let state = &w.observed.addon;
    let mut inner = state.inner.lock().await;
    inner.want_fresh = plan.write.is_some() || plan.pending;
    let following = inner
        .last_update
        .as_ref()
        .is_some_and(UpdateFacts::in_progress);
    let Some(write) = &plan.write else {
        return Ok((
            AddonOutcome::Unchanged,
            pending_requeue(&mut inner, plan, following),
        ));
    };
    // One update at a time: EKS refuses a second while one runs.
    if following || facts.status.as_deref() == Some("UPDATING") {
        let message = format!(
            "an update of the EKS add-on {ADDON_NAME} is in progress; the operator sends {} \
             when it ends",
            EnvChange::join(&write.changes)
        );
        let held = AddonOutcome::Held {
            reason: Reason::AddonUpdating,
            message,
        };
        return Ok((held, Some(FOLLOW_EVERY)));
    }
    // Drift: never correct faster than the backoff.
    if write.has_drift()
        && let Some(left) = drift_left(&mut inner)
    {
        return Ok((AddonOutcome::Backoff { left }, Some(left)));
    }
    if let Some((at, text, reason, message)) = &inner.refused
        && *text == write.configuration_values
        && at.elapsed() < REFUSED_RETRY
    {
        let held = AddonOutcome::Held {
            reason: *reason,
            message: message.clone(),
        };
        return Ok((held, None));
    }
    // Planned from a read older than FRESH_ENOUGH: read again first (at once).
    if !read_is_current(&inner) {
        return Ok((AddonOutcome::Stale, Some(Duration::ZERO)));
    }
    if let Some(held) = check_schema(&mut inner, facts, write).await? {
        return Ok((held, None));
    }
    send(w, &mut inner, facts, write).await
}

/// Not on aws-node yet: look again, soon while an update runs, then less and less often
/// (another manager may hold a value that EKS preserves).
fn pending_requeue(inner: &mut AddonMemory, plan: &AddonPlan, following: bool) -> Option<Duration> {
    if !plan.pending {
        inner.pending_since = None;
        return None;
    }
    // As long again as it has been pending: 5 s, then growing to the TTL. The add-on is read
    // again then (the cached answer is older than FRESH_ENOUGH by that time).
    let pending_for = inner
        .pending_since
        .get_or_insert_with(Instant::now)
        .elapsed();
    Some(if following {
        FOLLOW_EVERY
    } else {
        pending_for.clamp(FRESH_ENOUGH, ADDON_TTL)
    })
}

/// How long a drift correction must still wait, if it must.
fn drift_left(inner: &mut AddonMemory) -> Option<Duration> {
    if inner
        .last_write
        .is_some_and(|at| at.elapsed() > DRIFT_BACKOFF_MAX * 2)
    {
        inner.drift_streak = 0;
    }
    let wait = drift_wait(inner.drift_streak);
    let since = inner.last_write.map(|at| at.elapsed()).unwrap_or(wait);
    (since < wait).then(|| wait - since)
}

/// Whether the plan came from a read of the add-on younger than [`FRESH_ENOUGH`]: a write is
/// planned only from the add-on as it is now. An older read is not written from; the next
/// observe step reads the add-on again (`want_fresh`).
fn read_is_current(inner: &AddonMemory) -> bool {
    inner
        .described
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() <= FRESH_ENOUGH)
}

/// The add-on's own schema first: a value EKS would refuse is reported, not sent.
async fn check_schema(
    inner: &mut AddonMemory,
    facts: &AddonFacts,
    write: &AddonWrite,
) -> Result<Option<AddonOutcome>, Error> {
    let Some((_, api)) = inner.api.clone() else {
        return Ok(None);
    };
    let version = facts.version.clone().unwrap_or_default();
    if !version.is_empty() && !inner.schemas.contains_key(&version) {
        match api.configuration_schema(&version).await {
            Ok(schema) => {
                inner.schemas.insert(version.clone(), schema);
            }
            Err(err) if err.is_transient() => return Err(Error::Eks(err)),
            Err(err) => return Ok(Some(refuse(inner, facts, write, &err))),
        }
    }
    let Some(Some(schema)) = inner.schemas.get(&version) else {
        return Ok(None);
    };
    let Err(problems) = validate(schema, &write.document) else {
        return Ok(None);
    };
    let message = format!(
        "the configurationValues the operator would send ({}) fail the configuration schema of \
         the EKS add-on {ADDON_NAME} {version}: {problems}; nothing was sent",
        write.configuration_values
    );
    inner.refuse(
        &write.configuration_values,
        Reason::AddonConfigurationInvalid,
        &message,
    );
    Ok(Some(AddonOutcome::Held {
        reason: Reason::AddonConfigurationInvalid,
        message,
    }))
}

/// A refusal by EKS or IAM: remembered, so the same document is not sent again for a while.
fn refuse(
    inner: &mut AddonMemory,
    facts: &AddonFacts,
    write: &AddonWrite,
    err: &EksError,
) -> AddonOutcome {
    let reason = if err.is_access_denied() {
        Reason::AccessDenied
    } else {
        Reason::AddonUpdateFailed
    };
    let message = err.with_fix(&facts.cluster);
    inner.refuse(&write.configuration_values, reason, &message);
    AddonOutcome::Held { reason, message }
}

/// One eks:UpdateAddon.
async fn send(
    w: &Writer<'_>,
    inner: &mut AddonMemory,
    facts: &AddonFacts,
    write: &AddonWrite,
) -> Result<(AddonOutcome, Option<Duration>), Error> {
    let Some((_, api)) = inner.api.clone() else {
        return Ok((AddonOutcome::Unchanged, None));
    };
    let token = format!("vpc-cni-tuner-{}", jiff::Timestamp::now().as_millisecond());
    match api.update_addon(&write.configuration_values, &token).await {
        Ok(update) => {
            w.count_write("eks_addon");
            info!(cluster = %facts.cluster, update = %update.id, changes = %EnvChange::join(&write.changes), "updated the EKS add-on configurationValues");
            let drift = write.has_drift();
            inner.drift_streak = if drift { inner.drift_streak + 1 } else { 0 };
            inner.last_write = Some(Instant::now());
            inner.last_update = Some(update.clone());
            inner.refused = None;
            inner.pending_since = None;
            // The next plan reads the add-on again.
            inner.described = None;
            let sent = AddonOutcome::Sent { update, drift };
            Ok((sent, Some(FOLLOW_EVERY)))
        }
        Err(err) if err.is_transient() => Err(Error::Eks(err)),
        Err(err) => {
            warn!(%err, "eks:UpdateAddon refused");
            Ok((refuse(inner, facts, write, &err), None))
        }
    }
}

/// `document` against the add-on's configuration schema (JSON Schema); the problems, one per
/// line, when it fails.
pub fn validate(schema: &str, document: &serde_json::Value) -> Result<(), String> {
    let schema: serde_json::Value = match serde_json::from_str(schema) {
        Ok(schema) => schema,
        // A schema the operator cannot read does not stop the update: EKS checks it too.
        Err(_) => return Ok(()),
    };
    let Ok(validator) = jsonschema::validator_for(&schema) else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(document)
        .map(|e| {
            let path = e.instance_path.to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Drops this operator's entries from the DaemonSet's managedFields (a JSON patch that tests each
/// entry's manager first): the env values stay, now owned by whoever else applied them, so EKS
/// can apply its configuration without a conflict with `vpc-cni-tuner`.
async fn release_daemonset_fields(w: &Writer<'_>) -> Result<(), Error> {
    let observed = w.observed;
    let Some(ds) = observed.aws_node() else {
        return Ok(());
    };
    if ds.owned_field_entries.is_empty() {
        return Ok(());
    }
    let mut ops = Vec::new();
    for index in ds.owned_field_entries.iter().rev() {
        ops.push(json!({"op": "test", "path": format!("/metadata/managedFields/{index}/manager"), "value": crate::crd::FIELD_MANAGER}));
        ops.push(json!({"op": "remove", "path": format!("/metadata/managedFields/{index}")}));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|e| {
            Error::Eks(EksError::Api {
                action: "release",
                code: "BadPatch".into(),
                message: e.to_string(),
                status: None,
            })
        })?;
    let api: Api<DaemonSet> = Api::namespaced(w.client.clone(), &observed.managed.namespace);
    let patched = api
        .patch(
            &observed.managed.name,
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    w.count_write("daemonset");
    info!(daemonset = %observed.managed, released = ?ds.owned_env, "released the aws-node env fields this operator owned: EKS applies them now");
    observed.aws_node.apply(
        kube::runtime::watcher::Event::Apply(patched),
        crate::observe::facts::aws_node_facts,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_restorations_back_off_to_fifteen_minutes() {
        let waits: Vec<u64> = (0..9).map(|n| drift_wait(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 900, 900]);
        assert_eq!(drift_wait(u32::MAX), DRIFT_BACKOFF_MAX);
    }

    #[test]
    fn schema_problems_name_the_path() {
        let schema = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
            "additionalProperties":false,
            "properties":{"env":{"type":"object","additionalProperties":false,
              "properties":{"ENABLE_PREFIX_DELEGATION":{"type":"string","enum":["true","false"]},
                            "WARM_PREFIX_TARGET":{"type":"string"}}}}}"#;
        assert_eq!(
            validate(
                schema,
                &json!({"env": {"ENABLE_PREFIX_DELEGATION": "true"}})
            ),
            Ok(())
        );
        let err = validate(
            schema,
            &json!({"env": {"ENABLE_PREFIX_DELEGATION": "yes", "WARM_IP_TARGETT": "1"}}),
        )
        .unwrap_err();
        assert!(err.contains("/env/ENABLE_PREFIX_DELEGATION"), "{err}");
        assert!(err.contains("WARM_IP_TARGETT"), "{err}");
        // A schema that is not JSON does not block: EKS checks too.
        assert_eq!(validate("not json", &json!({})), Ok(()));
    }
}
