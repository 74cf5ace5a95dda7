//! The rollout step of a policy's launch templates, after they were synced: per group that
//! launches from them, the nodes still behind; with `rollout.enabled`, follow the rollout in
//! progress (`DescribeUpdate`, `DescribeInstanceRefreshes`), let [`rollouts::decide`] pick the
//! next group, and start it (`UpdateNodegroupVersion`, `StartInstanceRefresh`). Each result's
//! `launchedBy` carries the records; Events go with the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use tracing::{info, warn};

use super::Writer;
use crate::aws::Ec2Error;
use crate::aws::launch_templates::LaunchTemplateApi;
use crate::crd::{GroupRolloutStatus, NodeNetworkPolicy, TemplateLauncherStatus};
use crate::plan::SyncResult;
pub(super) use crate::plan::launch_templates::NodeIndex;
use crate::plan::launch_templates::sync_key;
use crate::plan::rollouts::{self, GroupFacts, GroupStep, RolloutGate, TemplateFacts, state};
use crate::rollout::{Launcher, LauncherKind, UpdateState};

/// One policy's synced templates (by index in `spec.launchTemplates`), with their APIs.
pub(super) struct PolicyTemplates<'a> {
    pub policy: &'a NodeNetworkPolicy,
    pub results: &'a mut BTreeMap<usize, SyncResult>,
    pub apis: BTreeMap<usize, Arc<dyn LaunchTemplateApi>>,
    pub cluster: Option<&'a str>,
    pub max_pods: u32,
    pub dry_run: bool,
}

/// The rollout step for one policy.
pub(super) async fn apply(w: &Writer<'_>, mut p: PolicyTemplates<'_>, nodes: &NodeIndex<'_>) {
    let name = p.policy.name_any();
    let gate = RolloutGate {
        dry_run: p.dry_run,
        operator_allows: w.observed.rollouts,
        generation: p.policy.metadata.generation,
    };
    let facts = gather(w, &name, &mut p, nodes, gate).await;
    let templates: Vec<TemplateFacts> = facts.iter().map(|(_, t)| t.clone()).collect();
    let steps = rollouts::decide(&templates, gate);
    for ((index, t), steps) in facts.into_iter().zip(steps) {
        let Some(result) = p.results.get_mut(&index) else {
            continue;
        };
        let api = p.apis.get(&index).cloned();
        let mut statuses = Vec::new();
        for (g, step) in t.groups.iter().zip(steps) {
            let record = match step {
                GroupStep::Clear => None,
                GroupStep::Keep => g.previous.clone(),
                GroupStep::Show(record) => Some(record),
                GroupStep::Start {
                    version,
                    template_version,
                    min_healthy_percentage,
                } => {
                    let Some(api) = api.as_deref() else { continue };
                    let start = Start {
                        template_id: &t.template_id,
                        version,
                        template_version: template_version.as_deref(),
                        min_healthy_percentage,
                    };
                    let record = start_rollout(api, p.cluster, &g.launcher, &start, gate).await;
                    if record.state == state::IN_PROGRESS {
                        w.count_write("rollout");
                    }
                    note_start(result, &name, g, &record);
                    Some(record)
                }
            };
            statuses.push(TemplateLauncherStatus {
                kind: g.launcher.kind.as_str().to_owned(),
                name: g.launcher.name.clone(),
                version: g.launcher.version.clone(),
                version_wanted: t.wanted,
                nodes: Some(g.nodes),
                nodes_behind: Some(g.nodes_behind),
                rollout: record,
            });
        }
        let records = || statuses.iter().filter_map(|s| s.rollout.as_ref());
        let stopped =
            records().any(|r| matches!(r.state.as_str(), state::FAILED | state::CANCELLED));
        result.rollout_active = t.enabled
            && (records().any(|r| r.state == state::IN_PROGRESS)
                || (gate.operator_allows
                    && !gate.dry_run
                    && !stopped
                    && records()
                        .any(|r| matches!(r.state.as_str(), state::PENDING | state::WAITING))));
        if result.status.launched_by.is_some() {
            result.status.launched_by = Some(statuses);
        }
    }
}

/// Each synced template's rollout facts, after following the rollouts in progress.
async fn gather(
    w: &Writer<'_>,
    name: &str,
    p: &mut PolicyTemplates<'_>,
    nodes: &NodeIndex<'_>,
    gate: RolloutGate,
) -> Vec<(usize, TemplateFacts)> {
    let mut facts: Vec<(usize, TemplateFacts)> = Vec::new();
    for (&index, result) in p.results.iter_mut() {
        let Some(spec) = p.policy.spec.launch_templates.get(index) else {
            continue;
        };
        let rollout = spec.rollout.clone().unwrap_or_default();
        let previous = previous_records(w, p.policy, &sync_key(name, spec), result);
        let wanted = result.wanted_version();
        let mut groups = Vec::new();
        for launcher in &result.launchers {
            let (count, behind, not_ready) = nodes.count(launcher, p.max_pods);
            groups.push(GroupFacts {
                launcher: launcher.clone(),
                nodes: count,
                nodes_behind: behind,
                not_ready,
                previous: previous
                    .get(&(launcher.kind.as_str().to_owned(), launcher.name.clone()))
                    .cloned(),
            });
        }
        if rollout.enabled
            && let Some(api) = p.apis.get(&index)
        {
            follow(api.as_ref(), p.cluster, &mut groups, result, gate).await;
        }
        facts.push((
            index,
            TemplateFacts {
                template_id: result.status.id.clone().unwrap_or_default(),
                enabled: rollout.enabled,
                min_healthy_percentage: rollout.min_healthy_percentage,
                wanted,
                would_write: p.dry_run && result.problem.is_none() && !result.status.in_sync,
                groups,
            },
        ));
    }
    facts
}

/// The groups' last records: this operator's memory of the template, else the policy's status
/// (after a restart); by (kind, name).
fn previous_records(
    w: &Writer<'_>,
    policy: &NodeNetworkPolicy,
    key: &str,
    result: &SyncResult,
) -> BTreeMap<(String, String), GroupRolloutStatus> {
    let remembered = w.observed.template_syncs.last(key).map(|r| r.status);
    let from_status = || {
        policy
            .status
            .as_ref()?
            .launch_templates
            .iter()
            .find(|t| t.id.is_some() && t.id == result.status.id)
            .cloned()
    };
    remembered
        .or_else(from_status)
        .and_then(|s| s.launched_by)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| l.rollout.map(|r| ((l.kind, l.name), r)))
        .collect()
}

/// Follows each group's rollout in progress, and marks Auto Scaling groups busy with someone
/// else's instance refresh.
async fn follow(
    api: &dyn LaunchTemplateApi,
    cluster: Option<&str>,
    groups: &mut [GroupFacts],
    result: &mut SyncResult,
    gate: RolloutGate,
) {
    for g in groups.iter_mut() {
        let ours = g
            .previous
            .as_ref()
            .filter(|r| r.state == state::IN_PROGRESS)
            .and_then(|r| r.id.clone());
        let name = g.launcher.name.clone();
        let progress = match (g.launcher.kind, &ours, cluster) {
            (LauncherKind::NodeGroup, Some(id), Some(cluster)) => {
                api.node_group_update(cluster, &name, id).await
            }
            (LauncherKind::AutoScalingGroup, _, _) => {
                match api.instance_refreshes(&name, None).await {
                    Ok(refreshes) => {
                        if let Some(other) = refreshes
                            .iter()
                            .find(|r| !r.state.is_done() && Some(&r.id) != ours.as_ref())
                        {
                            g.launcher.busy =
                                Some(format!("instance refresh {} is {}", other.id, other.status));
                        }
                        match &ours {
                            Some(id) => {
                                refreshes.into_iter().find(|r| &r.id == id).ok_or_else(|| {
                                    Ec2Error::BadResponse {
                                        operation: "DescribeInstanceRefreshes",
                                        reason: format!("no instance refresh {id}"),
                                    }
                                })
                            }
                            None => continue,
                        }
                    }
                    Err(err) => Err(err),
                }
            }
            _ => continue,
        };
        let Some(previous) = g.previous.clone() else {
            continue;
        };
        match progress {
            Ok(progress) => {
                let next = rollouts::followed(&previous, &progress, gate.generation);
                if progress.state.is_done() {
                    let failed = progress.state != UpdateState::Successful;
                    let note = format!(
                        "rollout of version {} to {} {} ended {}{}",
                        previous.version.unwrap_or_default(),
                        g.launcher.kind,
                        name,
                        progress.status,
                        progress
                            .reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default(),
                    );
                    let reason = if failed {
                        "RolloutFailed"
                    } else {
                        "RolloutSucceeded"
                    };
                    info!(%note, "rollout finished");
                    result.rollout_events.push((reason, failed, note));
                }
                g.previous = Some(next);
            }
            Err(err) => {
                warn!(group = %name, %err, "cannot follow a rollout");
                let mut next = previous;
                next.message = Some(format!("cannot read its progress: {err}"));
                g.previous = Some(next);
            }
        }
    }
}

/// What a rollout is started with.
struct Start<'a> {
    template_id: &'a str,
    version: i64,
    template_version: Option<&'a str>,
    min_healthy_percentage: u32,
}

/// Starts the rollout of `launcher`; its record (InProgress, or why it did not start).
async fn start_rollout(
    api: &dyn LaunchTemplateApi,
    cluster: Option<&str>,
    launcher: &Launcher,
    s: &Start<'_>,
    gate: RolloutGate,
) -> GroupRolloutStatus {
    let started = match (launcher.kind, cluster) {
        (LauncherKind::NodeGroup, Some(cluster)) => {
            api.start_node_group_update(cluster, &launcher.name, s.template_id, s.version)
                .await
        }
        (LauncherKind::NodeGroup, None) => Err(Ec2Error::BadResponse {
            operation: "UpdateNodegroupVersion",
            reason: "the EKS cluster's name is not known (--eks-cluster-name)".into(),
        }),
        (LauncherKind::AutoScalingGroup, _) => {
            let template = s.template_version.map(|v| (s.template_id, v));
            api.start_instance_refresh(&launcher.name, template, s.min_healthy_percentage)
                .await
        }
    };
    let mut record = GroupRolloutStatus {
        version: Some(s.version),
        ..Default::default()
    };
    match started {
        Ok(id) => {
            record.state = state::IN_PROGRESS.to_owned();
            record.id = Some(id);
            record.started_at = Some(jiff::Timestamp::now().to_string());
            record.percent_complete = Some(0);
        }
        // Someone else started an update meanwhile: wait for it.
        Err(err)
            if matches!(
                err.code(),
                Some("ResourceInUseException" | "InstanceRefreshInProgress")
            ) =>
        {
            record.state = state::WAITING.to_owned();
            record.message = Some(format!("another update of the group runs: {err}"));
        }
        Err(err) => {
            record.state = state::FAILED.to_owned();
            record.failed_generation = gate.generation;
            record.message = Some(format!("could not start: {err}"));
        }
    }
    record
}

/// The Event of a start (or of a start AWS refused).
fn note_start(result: &mut SyncResult, policy: &str, g: &GroupFacts, record: &GroupRolloutStatus) {
    let version = record.version.unwrap_or_default();
    let (reason, warning, note) = match record.state.as_str() {
        state::IN_PROGRESS => (
            "RolloutStarted",
            false,
            format!(
                "started the rollout of version {version} to {} {} ({} node(s) behind; {} {})",
                g.launcher.kind,
                g.launcher.name,
                g.nodes_behind,
                match g.launcher.kind {
                    LauncherKind::NodeGroup => "update",
                    LauncherKind::AutoScalingGroup => "instance refresh",
                },
                record.id.as_deref().unwrap_or("-"),
            ),
        ),
        state::FAILED => (
            "RolloutFailed",
            true,
            format!(
                "rollout of version {version} to {} {}: {}",
                g.launcher.kind,
                g.launcher.name,
                record.message.as_deref().unwrap_or_default()
            ),
        ),
        _ => return,
    };
    info!(%policy, %note, "rollout");
    result.rollout_events.push((reason, warning, note));
}
