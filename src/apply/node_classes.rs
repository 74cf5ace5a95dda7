//! The Karpenter write: server-side apply of `spec.kubelet.maxPods` alone on each EC2NodeClass
//! the plan asks for; every other field keeps its owner.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tracing::{info, warn};

use super::Writer;
use crate::crd::FIELD_MANAGER;
use crate::error::Error;
use crate::karpenter::resources::{EC2NodeClass, node_class_facts};
use crate::plan::{FleetPlan, NodeClassWrite};

/// What became of one EC2NodeClass write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeClassOutcome {
    Written,
    /// The API refused it for good (gone, forbidden, invalid): the message for the status.
    Refused(String),
}

/// Makes the writes the plan asks for. A write the API refuses for good is an outcome; others
/// fail the reconcile, which is retried with backoff (`done` keeps what was written before).
pub(super) async fn apply(
    w: &Writer<'_>,
    plan: &FleetPlan,
    done: &mut Vec<(NodeClassWrite, NodeClassOutcome)>,
) -> Result<(), Error> {
    let writes = plan
        .policies
        .values()
        .filter_map(|p| p.karpenter.as_ref())
        .flat_map(|report| &report.writes);
    for write in writes {
        let outcome = match patch_max_pods(w, write).await {
            Ok(()) => NodeClassOutcome::Written,
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404 | 422) => {
                warn!(node_class = %write.node_class, %status.message, "EC2NodeClass write refused");
                NodeClassOutcome::Refused(format!(
                    "writing spec.kubelet.maxPods failed ({} {}): {}",
                    status.code, status.reason, status.message
                ))
            }
            Err(err) => return Err(err.into()),
        };
        done.push((write.clone(), outcome));
    }
    Ok(())
}

async fn patch_max_pods(w: &Writer<'_>, write: &NodeClassWrite) -> Result<(), kube::Error> {
    let api: Api<EC2NodeClass> = Api::all(w.client.clone());
    let body = json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": write.node_class},
        "spec": {"kubelet": {"maxPods": write.max_pods}},
    });
    let patched = api
        .patch(
            &write.node_class,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    w.count_write("ec2nodeclass");
    info!(node_class = %write.node_class, max_pods = write.max_pods, "applied EC2NodeClass maxPods");
    w.observed
        .karpenter
        .node_classes
        .apply(watcher::Event::Apply(patched), node_class_facts);
    Ok(())
}
