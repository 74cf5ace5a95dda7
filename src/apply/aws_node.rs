//! The aws-node write: server-side apply of the env entries the operator owns in the aws-node
//! container, and nothing else: other env vars, containers, labels and annotations keep their
//! owners.

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tracing::info;

use super::Writer;
use crate::crd::FIELD_MANAGER;
use crate::error::Error;
use crate::observe::facts::{AWS_NODE_CONTAINER, aws_node_facts};
use crate::plan::DaemonSetWrite;

/// Applies `write`; the applied object goes into the aws-node cache at once.
pub(super) async fn apply(w: &Writer<'_>, write: &DaemonSetWrite) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(w.client.clone(), &write.reference.namespace);
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
    w.count_write("daemonset");
    info!(daemonset = %write.reference, policy = %write.policy, changes = ?write.changes, "applied aws-node env");
    w.observed
        .aws_node
        .apply(watcher::Event::Apply(patched), aws_node_facts);
    Ok(())
}
