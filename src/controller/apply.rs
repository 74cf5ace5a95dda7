//! The apply step: server-side apply of the aws-node env entries the operator owns, and the
//! Events that report what the operator did.

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::facts::{AWS_NODE_CONTAINER, aws_node_facts};
use super::{Context, Error};
use crate::crd::{FIELD_MANAGER, NodeNetworkPolicy};
use crate::metrics::WriteLabels;
use crate::plan::{DaemonSetWrite, FleetPlan};

/// Applies the planned aws-node env, if any, and records an Event about the deciding policy.
/// Returns whether it wrote.
pub(super) async fn apply_env(
    ctx: &Context,
    policies: &[std::sync::Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
) -> Result<bool, Error> {
    if let Some(write) = &plan.daemonset_write {
        apply_daemonset(ctx, write).await?;
        if let Some(policy) = policies.iter().find(|p| p.name_any() == write.policy) {
            let drift = write.changes.iter().any(|c| c.drift);
            let reverted = write.reverted_by.as_ref().map(|by| {
                format!(
                    " (field manager {by} put its value back; a second revert within {} h hands \
                     aws-node over to its owner)",
                    crate::plan::owner::REVERT_WINDOW.as_hours()
                )
            });
            publish(
                ctx,
                policy,
                if drift {
                    "AwsNodeEnvRestored"
                } else {
                    "AwsNodeEnvUpdated"
                },
                if reverted.is_some() {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                format!(
                    "{}: {}{}",
                    write.reference,
                    crate::plan::EnvChange::join(&write.changes),
                    reverted.unwrap_or_default()
                ),
            )
            .await;
        }
    }
    if let Some((name, message)) = &plan.handover
        && let Some(policy) = policies.iter().find(|p| &p.name_any() == name)
    {
        warn!(policy = %name, %message, "aws-node handed over to its owner");
        publish(
            ctx,
            policy,
            "AwsNodeHandedOver",
            EventType::Warning,
            message.clone(),
        )
        .await;
    }

    Ok(plan.daemonset_write.is_some())
}

/// Server-side apply of the env entries the operator owns in the aws-node container, and
/// nothing else: other env vars, containers, labels and annotations keep their owners.
async fn apply_daemonset(ctx: &Context, write: &DaemonSetWrite) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &write.reference.namespace);
    let env: Vec<serde_json::Value> = write
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": write.reference.name, "namespace": write.reference.namespace},
        "spec": {"template": {"spec": {"containers": [{"name": AWS_NODE_CONTAINER, "env": env}]}}},
    });
    let patched = api
        .patch(
            &write.reference.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    count_write(ctx, "daemonset");
    info!(daemonset = %write.reference, policy = %write.policy, changes = ?write.changes, "applied aws-node env");
    ctx.aws_node
        .apply(watcher::Event::Apply(patched), aws_node_facts);
    Ok(())
}

/// Counts one write in `vpc_cni_tuner_writes_total{target}`.
pub(super) fn count_write(ctx: &Context, target: &'static str) {
    ctx.metrics
        .writes
        .get_or_create(&WriteLabels { target })
        .inc();
}

pub(super) async fn publish(
    ctx: &Context,
    policy: &NodeNetworkPolicy,
    reason: &str,
    type_: EventType,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        // Event notes are limited to 1 kB.
        note: Some(super::status::truncate(&note, 1000)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // A Recorder per Event: kube's Recorder folds every later Event with the same reason about
    // the same object into the first one's series, keeping the first note, so the second of
    // three launch-template updates (or a later env change) would never be seen. The operator
    // publishes only on changes, so there is nothing to fold.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(err) = recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(%err, reason, "could not record event");
    }
}
