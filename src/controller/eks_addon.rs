//! The EKS add-on step: decides where the aws-node env goes ([`resolve`]: `--cni-config-via`,
//! the DaemonSet's managedFields, eks:DescribeAddon) and, in add-on mode, carries out the plan's
//! [`AddonPlan`]: releases the env fields this operator's field manager still owns on the
//! DaemonSet, validates the new configurationValues against the add-on's schema, sends one
//! eks:UpdateAddon (`resolveConflicts: PRESERVE`) per change, follows it with eks:DescribeUpdate,
//! and puts what happened in the winning policy's conditions and Events.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

use super::apply::{count_write, publish};
use super::{Context, Error};
use crate::aws::AwsEndpoint;
use crate::aws::eks::{EksAddonApi, EksError};
use crate::crd::NodeNetworkPolicy;
use crate::crd::condition::{self, Reason};
use crate::eks_addon::{ADDON_NAME, CLUSTER_NAME_ENV, CniConfigVia};
use crate::plan::{AddonFacts, AwsNodeFacts, CniTarget, EnvChange, FleetPlan, UpdateFacts};

/// How long a DescribeAddon answer is used before it is asked again (a plan that wants a write,
/// or a DaemonSet that does not carry the settings, asks at once).
const ADDON_TTL: Duration = Duration::from_secs(300);
/// While an update runs, it is followed this often.
const FOLLOW_EVERY: Duration = Duration::from_secs(3);
/// Drift corrections back off: 10 s after the last write, then 20, 40, ... up to 15 minutes.
const DRIFT_BACKOFF: Duration = Duration::from_secs(10);
const DRIFT_BACKOFF_MAX: Duration = Duration::from_secs(900);
/// A document EKS (or IAM, or the schema) refused is not sent again for this long, unless it
/// changes; the condition keeps saying why.
const REFUSED_RETRY: Duration = Duration::from_secs(300);
/// A reconcile that needs the add-on as it is now still reuses an answer this young, so node
/// churn does not turn into a DescribeAddon per reconcile.
const FRESH_ENOUGH: Duration = Duration::from_secs(5);
/// A DescribeAddon that failed for a reason a retry does not fix soon (access denied, no
/// region) is asked again after this long, not on every reconcile.
const FAILED_READ_RETRY: Duration = Duration::from_secs(60);

/// The add-on mode's settings and what the operator knows of the add-on.
pub struct AddonState {
    pub via: CniConfigVia,
    /// `--eks-cluster-name` / `EKS_CLUSTER_NAME`.
    pub cluster: Option<String>,
    /// `--aws-region` and `--eks-endpoint-url`.
    pub endpoint: AwsEndpoint,
    inner: tokio::sync::Mutex<Inner>,
    /// The target the last reconcile used (for plans outside a reconcile).
    last_target: std::sync::Mutex<CniTarget>,
}

#[derive(Default)]
struct Inner {
    api: Option<EksAddonApi>,
    /// The last DescribeAddon (`None` inside: no such add-on) and when it was made.
    described: Option<(Instant, Option<AddonFacts>)>,
    /// The last DescribeAddon that failed (not transiently), and what it made of it.
    failed_read: Option<(Instant, CniTarget)>,
    schemas: HashMap<String, Option<String>>,
    last_update: Option<UpdateFacts>,
    last_write: Option<Instant>,
    drift_streak: u32,
    /// Since when the settings have not been on aws-node.
    pending_since: Option<Instant>,
    /// The last refused document: when, the text, and the condition that says why.
    refused: Option<(Instant, String, Reason, String)>,
}

impl Inner {
    /// Remembers that `document` was refused, and why, so it is not sent again for a while.
    fn refuse(&mut self, document: &str, reason: Reason, message: &str) {
        self.refused = Some((
            Instant::now(),
            document.to_owned(),
            reason,
            message.to_owned(),
        ));
    }
}

impl Default for AddonState {
    fn default() -> Self {
        Self::new(CniConfigVia::Auto, None, AwsEndpoint::default())
    }
}

impl AddonState {
    pub fn new(via: CniConfigVia, cluster: Option<String>, endpoint: AwsEndpoint) -> Self {
        Self {
            via,
            cluster: cluster.filter(|c| !c.trim().is_empty()),
            endpoint,
            inner: Default::default(),
            last_target: Default::default(),
        }
    }

    pub fn last_target(&self) -> CniTarget {
        self.last_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where the aws-node env goes. `fresh`: ask EKS now, not from the cache.
pub(super) async fn resolve(
    ctx: &Context,
    ds: Option<&AwsNodeFacts>,
    fresh: bool,
) -> Result<CniTarget, Error> {
    let target = resolve_inner(ctx, ds, fresh).await?;
    *ctx.addon
        .last_target
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = target.clone();
    Ok(target)
}

async fn resolve_inner(
    ctx: &Context,
    ds: Option<&AwsNodeFacts>,
    fresh: bool,
) -> Result<CniTarget, Error> {
    let state = &ctx.addon;
    let eks_applies = ds.is_some_and(|d| d.eks_addon);
    match state.via {
        CniConfigVia::DaemonSet => {
            return Ok(CniTarget::DaemonSet {
                addon_warning: eks_applies,
            });
        }
        CniConfigVia::Auto if !eks_applies => {
            return Ok(CniTarget::DaemonSet {
                addon_warning: false,
            });
        }
        _ => {}
    }
    let Some(cluster) = cluster_name(state.cluster.as_deref(), ds) else {
        return Ok(CniTarget::Unavailable {
            reason: Reason::EksClusterUnknown,
            message: format!(
                "{} is applied by EKS (the managed add-on {ADDON_NAME}), so the operator writes \
                 its settings into the add-on's configurationValues, but it does not know the \
                 cluster's name: set --eks-cluster-name or EKS_CLUSTER_NAME (chart value \
                 eks.clusterName). To write the DaemonSet anyway, use --cni-config-via daemonset \
                 (add-on updates with resolveConflicts NONE then fail)",
                ctx.managed
            ),
        });
    };
    let mut inner = ctx.addon.inner.lock().await;
    if let Some((at, target)) = &inner.failed_read
        && at.elapsed() < FAILED_READ_RETRY
    {
        return Ok(target.clone());
    }
    let stale = inner
        .described
        .as_ref()
        .is_none_or(|(at, _)| at.elapsed() > if fresh { FRESH_ENOUGH } else { ADDON_TTL });
    if stale {
        match describe(ctx, &mut inner, &cluster).await {
            Ok(described) => {
                inner.described = Some((Instant::now(), described));
                inner.failed_read = None;
            }
            Err(err) if err.is_transient() => return Err(Error::Eks(err)),
            Err(err) => {
                let target = unavailable(&err, &cluster);
                inner.failed_read = Some((Instant::now(), target.clone()));
                return Ok(target);
            }
        }
    }
    let described = inner.described.as_ref().and_then(|(_, d)| d.clone());
    Ok(match described {
        Some(mut facts) => {
            facts.last_update = inner.last_update.clone();
            CniTarget::EksAddon(facts)
        }
        // Nothing is written: a wrong cluster name must not make the operator take the fields of
        // an add-on it cannot see.
        None => CniTarget::Unavailable {
            reason: Reason::AddonNotFound,
            message: format!(
                "{} is applied by EKS (field manager eks), but EKS has no add-on {ADDON_NAME} in \
                 cluster {cluster}: fix the cluster name (--eks-cluster-name, chart value \
                 eks.clusterName); if the add-on was deleted with --preserve, run with \
                 --cni-config-via daemonset",
                ctx.managed
            ),
        },
    })
}

/// The cluster of the add-on calls: `--eks-cluster-name` / `EKS_CLUSTER_NAME`, else aws-node's
/// `CLUSTER_NAME` env.
fn cluster_name(flag: Option<&str>, ds: Option<&AwsNodeFacts>) -> Option<String> {
    let from_daemonset = ds
        .and_then(|d| d.env_value(CLUSTER_NAME_ENV))
        .and_then(|e| e.value.as_deref());
    flag.or(from_daemonset)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// How long after its last write the operator waits before it restores drifted keys, after
/// `streak` restorations in a row: 10 s, 20 s, 40 s, ... at most 15 minutes.
fn drift_wait(streak: u32) -> Duration {
    DRIFT_BACKOFF
        .saturating_mul(1 << streak.min(10))
        .min(DRIFT_BACKOFF_MAX)
}

/// DescribeAddon, and DescribeUpdate of the operator's update while it runs.
async fn describe(
    ctx: &Context,
    inner: &mut Inner,
    cluster: &str,
) -> Result<Option<AddonFacts>, EksError> {
    let api = match &inner.api {
        Some(api) if api.cluster == cluster => api.clone(),
        _ => {
            let api = EksAddonApi::new(cluster, &ctx.addon.endpoint).await?;
            inner.api = Some(api.clone());
            api
        }
    };
    let facts = api.describe_addon().await?;
    if let Some(update) = inner.last_update.clone().filter(UpdateFacts::in_progress) {
        match api.describe_update(&update.id).await {
            Ok(update) => inner.last_update = Some(update),
            Err(err) if err.is_transient() => return Err(err),
            // Not followed any further (the add-on's own status still says UPDATING while it
            // runs); aws-node shows whether it landed.
            Err(err) => {
                warn!(%err, update = %update.id, "cannot follow the add-on update");
                inner.last_update = None;
            }
        }
    }
    Ok(facts)
}

fn unavailable(err: &EksError, cluster: &str) -> CniTarget {
    if let EksError::NoRegion = err {
        return CniTarget::Unavailable {
            reason: Reason::NoAwsRegion,
            message: err.to_string(),
        };
    }
    CniTarget::Unavailable {
        reason: if err.is_access_denied() {
            Reason::AccessDenied
        } else {
            Reason::AwsError
        },
        message: access_message(err, cluster),
    }
}

fn access_message(err: &EksError, cluster: &str) -> String {
    if err.is_access_denied() {
        format!(
            "{err}: allow {} on the add-on arn:aws:eks:REGION:ACCOUNT:addon/{cluster}/{ADDON_NAME}/* \
             in the operator's IAM role (README, EKS add-on mode)",
            err.action().unwrap_or_default()
        )
    } else {
        format!("{err}")
    }
}

/// Whether the plan's add-on side needs the add-on as it is now, not as cached.
pub(super) fn wants_fresh_facts(plan: &FleetPlan) -> bool {
    plan.addon.write.is_some() || plan.addon.pending
}

/// Carries out the add-on side of `plan`; returns whether it sent an update, and when to look
/// again.
pub(super) async fn apply(
    ctx: &Context,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &mut FleetPlan,
    target: &CniTarget,
) -> Result<(bool, Option<Duration>), Error> {
    let CniTarget::EksAddon(facts) = target else {
        return Ok((false, None));
    };
    if !plan.addon.release.is_empty() {
        release_daemonset_fields(ctx).await?;
    }
    let mut inner = ctx.addon.inner.lock().await;
    let following = inner
        .last_update
        .as_ref()
        .is_some_and(UpdateFacts::in_progress);
    let Some(write) = plan.addon.write.clone() else {
        // Not on aws-node yet: look again, soon while an update runs, then less and less often
        // (another manager may hold a value that EKS preserves).
        if !plan.addon.pending {
            inner.pending_since = None;
            return Ok((false, None));
        }
        // As long again as it has been pending: 5 s, then growing to the TTL. The add-on is
        // read again then (the cached answer is older than FRESH_ENOUGH by that time).
        let pending_for = inner
            .pending_since
            .get_or_insert_with(Instant::now)
            .elapsed();
        let after = if following {
            FOLLOW_EVERY
        } else {
            pending_for.clamp(FRESH_ENOUGH, ADDON_TTL)
        };
        return Ok((false, Some(after)));
    };
    let set = |plan: &mut FleetPlan, reason: Reason, message: String| {
        if let Some(p) = plan.policies.get_mut(&write.policy) {
            crate::plan::eks_addon::set_condition(
                p,
                condition::CNI_CONFIGURED,
                false,
                reason,
                message,
            );
        }
    };
    // One update at a time: EKS refuses a second while one runs.
    if following || facts.status.as_deref() == Some("UPDATING") {
        set(
            plan,
            Reason::AddonUpdating,
            format!(
                "an update of the EKS add-on {ADDON_NAME} is in progress; the operator sends {} \
                 when it ends",
                EnvChange::join(&write.changes)
            ),
        );
        return Ok((false, Some(FOLLOW_EVERY)));
    }
    // Drift: never correct faster than the backoff.
    let drift = write.has_drift();
    if drift {
        if inner
            .last_write
            .is_some_and(|at| at.elapsed() > DRIFT_BACKOFF_MAX * 2)
        {
            inner.drift_streak = 0;
        }
        let wait = drift_wait(inner.drift_streak);
        let since = inner.last_write.map(|at| at.elapsed()).unwrap_or(wait);
        if since < wait {
            let left = wait - since;
            let message = plan
                .policies
                .get(&write.policy)
                .and_then(|p| {
                    p.conditions
                        .iter()
                        .find(|c| c.type_ == condition::CNI_CONFIGURED)
                })
                .map(|c| c.message.clone())
                .unwrap_or_default();
            set(
                plan,
                Reason::AddonDrift,
                format!(
                    "{message}; next correction in {}s (backoff)",
                    left.as_secs().max(1)
                ),
            );
            return Ok((false, Some(left)));
        }
    }
    if let Some((at, text, reason, message)) = &inner.refused
        && *text == write.configuration_values
        && at.elapsed() < REFUSED_RETRY
    {
        set(plan, *reason, message.clone());
        return Ok((false, None));
    }
    let Some(api) = inner.api.clone() else {
        return Ok((false, None));
    };
    // The add-on's own schema first: a value EKS would refuse is reported, not sent.
    let version = facts.version.clone().unwrap_or_default();
    if !version.is_empty() && !inner.schemas.contains_key(&version) {
        match api.configuration_schema(&version).await {
            Ok(schema) => {
                inner.schemas.insert(version.clone(), schema);
            }
            Err(err) if err.is_transient() => return Err(Error::Eks(err)),
            Err(err) => {
                let (reason, message) = (reason_of(&err), access_message(&err, &facts.cluster));
                inner.refuse(&write.configuration_values, reason, &message);
                set(plan, reason, message);
                return Ok((false, None));
            }
        }
    }
    if let Some(Some(schema)) = inner.schemas.get(&version)
        && let Err(problems) = validate(schema, &write.document)
    {
        let message = format!(
            "the configurationValues the operator would send ({}) fail the configuration \
             schema of the EKS add-on {ADDON_NAME} {version}: {problems}; nothing was sent",
            write.configuration_values
        );
        inner.refuse(
            &write.configuration_values,
            Reason::AddonConfigurationInvalid,
            &message,
        );
        set(plan, Reason::AddonConfigurationInvalid, message);
        return Ok((false, None));
    }
    let token = format!("vpc-cni-tuner-{}", jiff::Timestamp::now().as_millisecond());
    match api.update_addon(&write.configuration_values, &token).await {
        Ok(update) => {
            count_write(ctx, "eks_addon");
            info!(cluster = %facts.cluster, update = %update.id, changes = %EnvChange::join(&write.changes), "updated the EKS add-on configurationValues");
            inner.drift_streak = if drift { inner.drift_streak + 1 } else { 0 };
            inner.last_write = Some(Instant::now());
            inner.last_update = Some(update.clone());
            inner.refused = None;
            inner.pending_since = None;
            // The next plan reads the add-on again.
            inner.described = None;
            drop(inner);
            if let Some(p) = plan.policies.get_mut(&write.policy)
                && let Some(a) = p.cni_config.as_mut().and_then(|c| c.eks_addon.as_mut())
            {
                a.env = write.env.clone();
                a.last_update_id = Some(update.id.clone());
                a.last_update_status = Some(update.status.clone());
            }
            if let Some(policy) = policies.iter().find(|p| p.name_any() == write.policy) {
                let (reason, type_) = if drift {
                    ("EksAddonDriftRestored", EventType::Warning)
                } else {
                    ("EksAddonUpdated", EventType::Normal)
                };
                publish(
                    ctx,
                    policy,
                    reason,
                    type_,
                    format!(
                        "EKS add-on {ADDON_NAME} (cluster {}) configurationValues.env: {}; update {}",
                        facts.cluster,
                        EnvChange::join(&write.changes),
                        update.id
                    ),
                )
                .await;
            }
            Ok((true, Some(FOLLOW_EVERY)))
        }
        Err(err) if err.is_transient() => Err(Error::Eks(err)),
        Err(err) => {
            warn!(%err, "eks:UpdateAddon refused");
            let (reason, message) = (reason_of(&err), access_message(&err, &facts.cluster));
            inner.refuse(&write.configuration_values, reason, &message);
            set(plan, reason, message);
            Ok((false, None))
        }
    }
}

fn reason_of(err: &EksError) -> Reason {
    if err.is_access_denied() {
        Reason::AccessDenied
    } else {
        Reason::AddonUpdateFailed
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
async fn release_daemonset_fields(ctx: &Context) -> Result<(), Error> {
    let Some(ds) = ctx.aws_node.get(&ctx.aws_node_key()) else {
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
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ctx.managed.namespace);
    let patched = api
        .patch(
            &ctx.managed.name,
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    count_write(ctx, "daemonset");
    info!(daemonset = %ctx.managed, released = ?ds.owned_env, "released the aws-node env fields this operator owned: EKS applies them now");
    ctx.aws_node.apply(
        kube::runtime::watcher::Event::Apply(patched),
        super::facts::aws_node_facts,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_from_the_flag_then_aws_node() {
        let ds = |env: &[(&str, &str)]| {
            crate::controller::facts::aws_node_facts(&crate::testing::aws_node_ds(env, &[]))
        };
        let named = ds(&[("CLUSTER_NAME", "prod-eu")]);
        assert_eq!(
            cluster_name(Some("flag"), Some(&named)).as_deref(),
            Some("flag")
        );
        assert_eq!(cluster_name(None, Some(&named)).as_deref(), Some("prod-eu"));
        assert_eq!(
            cluster_name(None, Some(&ds(&[("CLUSTER_NAME", " ")]))),
            None
        );
        assert_eq!(cluster_name(None, Some(&ds(&[]))), None);
        assert_eq!(cluster_name(None, None), None);
    }

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
