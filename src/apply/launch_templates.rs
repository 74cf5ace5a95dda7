//! The launch-template write: kubelet maxPods into each policy's templates' user data. Per
//! template: read the source version, rewrite the user data, and only when it changed, create a
//! version carrying all the source's data and (when asked) make it the default. Also counts how
//! many running nodes launched from each template still run another maxPods. Each template's
//! [`SyncResult`] is its outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use kube::ResourceExt;
use tracing::{info, warn};

use super::{Writer, rollouts};
use crate::aws::Ec2Error;
use crate::aws::launch_templates::{LaunchTemplateApi, TemplateVersion};
use crate::crd::conditions::Reason;
use crate::crd::{
    LaunchTemplateSpec, LaunchTemplateStatus, NodeNetworkPolicy, TemplateLauncherStatus,
};
use crate::plan::launch_templates::sync_key;
use crate::plan::{FleetPlan, NodeFacts, SyncResult, TemplateStep};
use crate::rollout::Launcher;
use crate::userdata::{self, UserDataError};

/// Syncs the launch templates the plan's [`TemplateStep::Sync`] steps do not reuse a recent
/// result for, to the maxPods the step asks for; the results by policy name and by index in
/// `spec.launchTemplates`. Each result is remembered in the observed template syncs.
pub(super) async fn apply(
    w: &Writer<'_>,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    nodes: &[Arc<NodeFacts>],
) -> BTreeMap<String, BTreeMap<usize, SyncResult>> {
    let mut outcomes = BTreeMap::new();
    let (Some(provider), true) = (
        w.ec2,
        plan.templates.values().any(
            |s| matches!(s, TemplateStep::Sync { reuse, .. } if reuse.iter().any(Option::is_none)),
        ),
    ) else {
        return outcomes;
    };
    let groups = rollouts::NodeIndex::new(nodes.iter().map(AsRef::as_ref));
    let nodes = nodes_by_instance(nodes);
    let observed = w.observed;
    let cluster = crate::observe::eks_addon::cluster_name(
        observed.addon.cluster.as_deref(),
        observed.aws_node().as_deref(),
    );
    for policy in policies {
        let name = policy.name_any();
        let Some(TemplateStep::Sync {
            max_pods,
            dry_run,
            reuse,
            ..
        }) = plan.templates.get(&name)
        else {
            continue;
        };
        let (max_pods, dry_run) = (*max_pods, *dry_run);
        let mut results = BTreeMap::new();
        let mut apis = BTreeMap::new();
        for (index, spec) in policy.spec.launch_templates.iter().enumerate() {
            if reuse.get(index).is_some_and(Option::is_some) {
                continue;
            }
            let result = match provider.api(spec.region.as_deref()).await {
                Ok(api) => {
                    let cluster = cluster.as_deref();
                    let result =
                        sync_template_in(api.as_ref(), spec, max_pods, dry_run, &nodes, cluster)
                            .await;
                    apis.insert(index, api);
                    result
                }
                Err(err) => {
                    warn!(policy = %name, %err, "no EC2 API for a launch template");
                    unreachable_template(spec, max_pods, &err)
                }
            };
            if let Some(note) = &result.updated {
                w.count_write("launch_template");
                info!(policy = %name, %note, "launch template updated");
            }
            results.insert(index, result);
        }
        let templates = rollouts::PolicyTemplates {
            policy,
            results: &mut results,
            apis,
            cluster: cluster.as_deref(),
            max_pods,
            dry_run,
        };
        rollouts::apply(w, templates, &groups).await;
        for (index, result) in &results {
            if let Some(spec) = policy.spec.launch_templates.get(*index) {
                let key = sync_key(&name, spec);
                w.observed
                    .template_syncs
                    .store(key, max_pods, dry_run, result);
            }
        }
        outcomes.insert(name, results);
    }
    outcomes
}

/// Description of versions the operator creates; also how it recognises them.
pub(crate) const VERSION_DESCRIPTION_PREFIX: &str = "vpc-cni-tuner";

/// Syncs one template to `wanted` maxPods. `nodes` maps instance ids to `capacity.pods`.
pub async fn sync_template(
    api: &dyn LaunchTemplateApi,
    spec: &LaunchTemplateSpec,
    wanted: u32,
    dry_run: bool,
    nodes: &BTreeMap<String, Option<u32>>,
) -> SyncResult {
    sync_template_in(api, spec, wanted, dry_run, nodes, None).await
}

/// [`sync_template`], also reporting the managed node groups of EKS cluster `cluster` (when
/// known) and the Auto Scaling groups that launch from the template.
pub async fn sync_template_in(
    api: &dyn LaunchTemplateApi,
    spec: &LaunchTemplateSpec,
    wanted: u32,
    dry_run: bool,
    nodes: &BTreeMap<String, Option<u32>>,
    cluster: Option<&str>,
) -> SyncResult {
    let template = spec.template_ref();
    let mut status = LaunchTemplateStatus {
        id: spec.id.clone(),
        name: spec.name.clone(),
        region: spec.region.clone(),
        max_pods_wanted: wanted,
        ..Default::default()
    };
    let aws_failure = |status: LaunchTemplateStatus, err: Ec2Error| {
        failed(
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
                return failed(
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
            return failed(
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
            return failed(
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
    let instances = report_rollout(api, &source.template_id, wanted, nodes, &mut status).await;
    let launchers = report_launchers(api, &source.template_id, cluster, &mut status).await;

    let mut result = write_version(api, spec, source, &rewrite, wanted, dry_run, status).await;
    result.launchers = launchers;
    result.instances = instances;
    result
}

/// The user data rewritten to `wanted`: create (and make default) a version when it changed.
async fn write_version(
    api: &dyn LaunchTemplateApi,
    spec: &LaunchTemplateSpec,
    source: TemplateVersion,
    rewrite: &userdata::Rewrite,
    wanted: u32,
    dry_run: bool,
    mut status: LaunchTemplateStatus,
) -> SyncResult {
    let template = spec.template_ref();
    let aws_failure = |status: LaunchTemplateStatus, err: Ec2Error| {
        failed(
            status,
            failure_reason(&err),
            format!("launch template {template}: {err}"),
        )
    };
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
            ..Default::default()
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
            ..Default::default()
        };
    }
    if dry_run {
        status.in_sync = false;
        let would = format!(
            "would create a version of {template} from version {} with maxPods {wanted}",
            source.version
        );
        // A note already there (who launches from it could not be read) is kept.
        status.message = Some(match status.message.take() {
            Some(note) => format!("{would}; {note}"),
            None => would,
        });
        return SyncResult {
            status,
            updated: None,
            problem: None,
            ..Default::default()
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
        ..Default::default()
    }
}

/// A template that is not in sync, and why.
fn failed(mut status: LaunchTemplateStatus, reason: Reason, message: String) -> SyncResult {
    status.in_sync = false;
    status.message = Some(message.clone());
    SyncResult {
        status,
        updated: None,
        problem: Some((reason, message)),
        ..Default::default()
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
pub(crate) fn unreachable_template(
    spec: &LaunchTemplateSpec,
    wanted: u32,
    err: &Ec2Error,
) -> SyncResult {
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
        ..Default::default()
    }
}

/// The Auto Scaling groups and (in `cluster`) managed node groups that launch from the template,
/// with the version each launches, into the status; when they cannot be read, the message says
/// why.
async fn report_launchers(
    api: &dyn LaunchTemplateApi,
    template_id: &str,
    cluster: Option<&str>,
    status: &mut LaunchTemplateStatus,
) -> Vec<Launcher> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    match api.auto_scaling_groups_of(template_id).await {
        Ok(groups) => found.extend(groups),
        Err(err) => problems.push(err.to_string()),
    }
    if let Some(cluster) = cluster {
        match api.node_groups_of(template_id, cluster).await {
            Ok(groups) => found.extend(groups),
            Err(err) => problems.push(err.to_string()),
        }
    }
    if problems.is_empty() {
        found.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
        status.launched_by = Some(
            found
                .iter()
                .map(|l| TemplateLauncherStatus {
                    kind: l.kind.as_str().to_owned(),
                    name: l.name.clone(),
                    version: l.version.clone(),
                    ..Default::default()
                })
                .collect(),
        );
        found
    } else {
        let note = format!(
            "cannot tell which node groups launch from it: {}",
            problems.join("; ")
        );
        status.message = Some(match status.message.take() {
            Some(message) => format!("{message}; {note}"),
            None => note,
        });
        Vec::new()
    }
}

/// Counts running nodes launched from the template, and those not at `wanted`; the template's
/// instances, so later passes count from the Node watch ([`crate::plan::launch_templates`]).
async fn report_rollout(
    api: &dyn LaunchTemplateApi,
    template_id: &str,
    wanted: u32,
    nodes: &BTreeMap<String, Option<u32>>,
    status: &mut LaunchTemplateStatus,
) -> Option<Vec<String>> {
    let instances = api.instances_of(template_id).await.ok()?;
    let capacities: Vec<Option<u32>> = instances
        .iter()
        .filter_map(|id| nodes.get(id).copied())
        .collect();
    status.nodes = Some(capacities.len() as u32);
    status.nodes_behind = Some(capacities.iter().filter(|c| **c != Some(wanted)).count() as u32);
    Some(instances)
}

/// Instance id -> capacity.pods, for rollout reports.
fn nodes_by_instance(nodes: &[Arc<NodeFacts>]) -> BTreeMap<String, Option<u32>> {
    nodes
        .iter()
        .filter_map(|n| {
            n.instance_id
                .as_deref()
                .map(|id| (id.to_owned(), n.capacity_pods.map(u32::from)))
        })
        .collect()
}

#[cfg(test)]
mod tests;
