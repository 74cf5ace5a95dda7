//! Drives kubelet maxPods into launch-template user data: read the source version, rewrite the
//! user data, and only when it changed, create a version carrying all the source's data and
//! (when asked) make it the default. Also reports how many running nodes launched from each
//! template still run another maxPods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::aws::Ec2Error;
use crate::aws::launch_templates::LaunchTemplateApi;
use crate::crd::condition::Reason;
use crate::crd::{LaunchTemplateSpec, LaunchTemplateStatus, condition};
use crate::plan::{ConditionPlan, NodeFacts};
use crate::userdata::{self, UserDataError};

/// One template's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub status: LaunchTemplateStatus,
    /// The note of a `LaunchTemplateUpdated` event, when a version was created.
    pub updated: Option<String>,
    /// Why it is not in sync (names the template and what is wrong).
    pub problem: Option<(Reason, String)>,
}

/// Description of versions the operator creates; also how it recognises them.
pub const VERSION_DESCRIPTION_PREFIX: &str = "vpc-cni-tuner";

/// Syncs one template to `wanted` maxPods. `nodes` maps instance ids to `capacity.pods`.
pub async fn sync_template(
    api: &dyn LaunchTemplateApi,
    spec: &LaunchTemplateSpec,
    wanted: u32,
    dry_run: bool,
    nodes: &BTreeMap<String, Option<u32>>,
) -> SyncResult {
    let template = spec.template_ref();
    let mut status = LaunchTemplateStatus {
        id: spec.id.clone(),
        name: spec.name.clone(),
        region: spec.region.clone(),
        max_pods_wanted: wanted,
        ..Default::default()
    };
    let fail = |mut status: LaunchTemplateStatus, reason: Reason, message: String| {
        status.in_sync = false;
        status.message = Some(message.clone());
        SyncResult {
            status,
            updated: None,
            problem: Some((reason, message)),
        }
    };
    let aws_failure = |status: LaunchTemplateStatus, err: Ec2Error| {
        fail(
            status,
            failure_reason(&err),
            format!("launch template {template}: {err}"),
        )
    };

    let source = match api.read_version(&template, &spec.source_version).await {
        Ok(source) => source,
        Err(err) => return aws_failure(status, err),
    };
    status.id = Some(source.template_id.clone());
    status.name = source.template_name.clone().or(status.name);
    status.version_read = Some(source.version);

    let raw = match source.data.user_data() {
        Some(encoded) => match BASE64.decode(encoded.trim()) {
            Ok(raw) => raw,
            Err(err) => {
                return fail(
                    status,
                    Reason::UserDataUnsupported,
                    format!(
                        "launch template {template} version {}: user data is not base64: {err}",
                        source.version
                    ),
                );
            }
        },
        None => {
            return fail(
                status,
                Reason::UserDataUnsupported,
                format!(
                    "launch template {template} version {} has no user data; add the AMI's bootstrap \
                     (a NodeConfig, a bootstrap.sh call or Bottlerocket settings) first",
                    source.version
                ),
            );
        }
    };
    let rewrite = match userdata::set_max_pods(&raw, spec.user_data_format.forced(), wanted) {
        Ok(rewrite) => rewrite,
        Err(err) => {
            let (reason, fix) = match err {
                UserDataError::TooLarge { .. } => (Reason::UserDataTooLarge, String::new()),
                UserDataError::Kops => (
                    Reason::KopsManagedUserData,
                    format!(
                        "; set it the kOps way: kops edit ig NAME with spec.kubelet.maxPods: \
                         {wanted} (or the cluster's spec.kubelet.maxPods), then kops update \
                         cluster --yes and kops rolling-update cluster --yes, and remove this \
                         template from spec.launchTemplates"
                    ),
                ),
                _ => (Reason::UserDataUnsupported, String::new()),
            };
            return fail(
                status,
                reason,
                format!(
                    "launch template {template} version {}: {err}{fix}",
                    source.version
                ),
            );
        }
    };
    status.format = Some(rewrite.format.to_string());
    status.max_pods_found = rewrite.previous_max_pods;
    report_rollout(api, &source.template_id, wanted, nodes, &mut status).await;

    let encoded = BASE64.encode(&rewrite.data);
    if !rewrite.changed {
        if spec.set_default_version
            && !source.default_version
            && !dry_run
            && let Err(err) = api
                .set_default_version(&source.template_id, source.version)
                .await
        {
            return aws_failure(status, err);
        }
        status.in_sync = true;
        return SyncResult {
            status,
            updated: None,
            problem: None,
        };
    }
    // Without setDefaultVersion the source stays as it was: a version this operator already
    // created with the same user data counts as the write.
    if !spec.set_default_version
        && let Ok(latest) = api.read_version(&template, "$Latest").await
        && latest.version != source.version
        && latest.data.user_data().map(str::trim) == Some(encoded.as_str())
    {
        status.version_written = Some(latest.version);
        status.in_sync = true;
        return SyncResult {
            status,
            updated: None,
            problem: None,
        };
    }
    if dry_run {
        status.in_sync = false;
        status.message = Some(format!(
            "would create a version of {template} from version {} with maxPods {wanted}",
            source.version
        ));
        return SyncResult {
            status,
            updated: None,
            problem: None,
        };
    }
    let description = format!("{VERSION_DESCRIPTION_PREFIX}: maxPods {wanted}");
    let version = match api.create_version(&source, &encoded, &description).await {
        Ok(version) => version,
        Err(err) => return aws_failure(status, err),
    };
    if spec.set_default_version
        && let Err(err) = api.set_default_version(&source.template_id, version).await
    {
        status.version_written = Some(version);
        return aws_failure(status, err);
    }
    status.version_written = Some(version);
    status.in_sync = true;
    let found = rewrite
        .previous_max_pods
        .map_or_else(|| "unset".to_owned(), |n| n.to_string());
    SyncResult {
        updated: Some(format!(
            "launch template {} ({}): version {} -> {version}{}, maxPods {found} -> {wanted}",
            source.template_id,
            source.template_name.as_deref().unwrap_or("-"),
            source.version,
            if spec.set_default_version {
                " (now default)"
            } else {
                ""
            },
        )),
        status,
        problem: None,
    }
}

/// The condition reason of an EC2 failure.
fn failure_reason(err: &Ec2Error) -> Reason {
    match (err, err.code()) {
        (Ec2Error::NoRegion, _) => Reason::NoAwsRegion,
        (_, Some(code)) if code.contains("NotFound") || code.contains("Malformed") => {
            Reason::LaunchTemplateNotFound
        }
        (_, Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException")) => {
            Reason::AccessDenied
        }
        _ => Reason::AwsError,
    }
}

/// The outcome for a template whose EC2 API could not be had at all (no region).
pub fn unreachable_template(spec: &LaunchTemplateSpec, wanted: u32, err: &Ec2Error) -> SyncResult {
    let message = format!("launch template {}: {err}", spec.template_ref());
    SyncResult {
        status: LaunchTemplateStatus {
            id: spec.id.clone(),
            name: spec.name.clone(),
            region: spec.region.clone(),
            max_pods_wanted: wanted,
            message: Some(message.clone()),
            ..Default::default()
        },
        updated: None,
        problem: Some((failure_reason(err), message)),
    }
}

/// Counts running nodes launched from the template, and those not at `wanted`.
async fn report_rollout(
    api: &dyn LaunchTemplateApi,
    template_id: &str,
    wanted: u32,
    nodes: &BTreeMap<String, Option<u32>>,
    status: &mut LaunchTemplateStatus,
) {
    if let Ok(instances) = api.instances_of(template_id).await {
        let capacities: Vec<Option<u32>> = instances
            .iter()
            .filter_map(|id| nodes.get(id).copied())
            .collect();
        status.nodes = Some(capacities.len() as u32);
        status.nodes_behind =
            Some(capacities.iter().filter(|c| **c != Some(wanted)).count() as u32);
    }
}

/// The `LaunchTemplatesSynced` condition over a policy's templates.
pub fn synced_condition(results: &[SyncResult], dry_run: bool) -> ConditionPlan {
    let problems: Vec<&(Reason, String)> =
        results.iter().filter_map(|r| r.problem.as_ref()).collect();
    if let Some(&&(reason, _)) = problems.first() {
        return ConditionPlan {
            type_: condition::LAUNCH_TEMPLATES_SYNCED,
            status: false,
            reason,
            message: problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        };
    }
    let pending = results.iter().filter(|r| !r.status.in_sync).count();
    if dry_run && pending > 0 {
        return ConditionPlan {
            type_: condition::LAUNCH_TEMPLATES_SYNCED,
            status: false,
            reason: Reason::DryRun,
            message: format!(
                "{pending} launch template(s) would get a new version; DryRun writes nothing"
            ),
        };
    }
    let behind: u32 = results.iter().filter_map(|r| r.status.nodes_behind).sum();
    ConditionPlan {
        type_: condition::LAUNCH_TEMPLATES_SYNCED,
        status: true,
        reason: Reason::InSync,
        message: if behind == 0 {
            format!("{} launch template(s) carry maxPods", results.len())
        } else {
            format!(
                "{} launch template(s) carry maxPods; {behind} running node(s) still have another \
                 maxPods: update the node group or start an instance refresh",
                results.len()
            )
        },
    }
}

/// Remembers recent results so node churn does not turn into EC2 calls: a template is checked
/// again when the wanted maxPods changes, after `ttl`, or sooner after a failure.
#[derive(Default)]
pub struct SyncCache {
    entries: std::sync::Mutex<HashMap<String, (u32, bool, Instant, SyncResult)>>,
}

impl SyncCache {
    pub fn fresh(
        &self,
        key: &str,
        wanted: u32,
        dry_run: bool,
        ttl: Duration,
    ) -> Option<SyncResult> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (cached_wanted, cached_dry_run, at, result) = entries.get(key)?;
        let ttl = if result.problem.is_some() {
            ttl / 5
        } else {
            ttl
        };
        (*cached_wanted == wanted && *cached_dry_run == dry_run && at.elapsed() < ttl).then(|| {
            // An event is reported once, when it happened.
            SyncResult {
                updated: None,
                ..result.clone()
            }
        })
    }

    pub fn store(&self, key: String, wanted: u32, dry_run: bool, result: &SyncResult) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.insert(key, (wanted, dry_run, Instant::now(), result.clone()));
    }
}

/// Instance id -> capacity.pods, for rollout reports.
pub fn nodes_by_instance(nodes: &[Arc<NodeFacts>]) -> BTreeMap<String, Option<u32>> {
    nodes
        .iter()
        .filter_map(|n| n.instance_id.clone().map(|id| (id, n.capacity_pods)))
        .collect()
}

#[cfg(test)]
mod tests;
