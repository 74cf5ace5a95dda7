//! Karpenter in the controller: the NodePool and EC2NodeClass caches (watched only once a policy
//! lists a node class, and only with `--karpenter`), whether Karpenter is there at all, and the
//! write of `spec.kubelet.maxPods` the plan asks for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use serde_json::json;
use tracing::{info, warn};

use super::apply::{count_write, publish};
use super::cache::ProjectedCache;
use super::{Context, Error};
use crate::crd::condition::Reason;
use crate::crd::{FIELD_MANAGER, NodeNetworkPolicy};
use crate::karpenter::resources::{
    EC2NodeClass, NodeClassFacts, NodePool, NodePoolFacts, node_class_facts,
};
use crate::plan::{FleetPlan, KarpenterAvailability, NodeClassWrite};

/// The controller's view of Karpenter.
#[derive(Default)]
pub struct KarpenterState {
    /// `--karpenter`: the operator may watch NodePools and EC2NodeClasses and patch the latter.
    pub enabled: bool,
    pub node_pools: ProjectedCache<NodePoolFacts>,
    pub node_classes: ProjectedCache<NodeClassFacts>,
    /// The watches run (started once a policy lists a node class).
    pub(super) started: AtomicBool,
    /// Why each watch (NodePools, EC2NodeClasses) cannot list (a CRD missing, RBAC), until it
    /// can.
    unavailable: Mutex<[Option<(Reason, String)>; 2]>,
}

/// Which Karpenter watch a list result is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Watched {
    NodePools = 0,
    NodeClasses = 1,
}

impl KarpenterState {
    pub fn availability(&self) -> KarpenterAvailability {
        if !self.enabled {
            return KarpenterAvailability::Disabled;
        }
        let problem = self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .next()
            .cloned();
        if let Some((reason, message)) = problem {
            return KarpenterAvailability::Unavailable { reason, message };
        }
        if self.node_pools.is_ready() && self.node_classes.is_ready() {
            KarpenterAvailability::Ready
        } else {
            KarpenterAvailability::Pending
        }
    }

    /// Whether the plan can be made: the watches are not needed, or listed, or known to fail.
    pub fn settled(&self) -> bool {
        !self.started.load(Ordering::Acquire)
            || self.availability() != KarpenterAvailability::Pending
    }

    /// Records a watch's list result; returns whether it changed.
    pub(super) fn set_unavailable(
        &self,
        watch: Watched,
        problem: Option<(Reason, String)>,
    ) -> bool {
        let mut all = self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = &mut all[watch as usize];
        let changed = *current != problem;
        *current = problem;
        changed
    }
}

/// Whether a policy lists an EC2NodeClass, so the watches are wanted.
pub(super) fn wanted(ctx: &Context) -> bool {
    ctx.karpenter.enabled
        && ctx
            .policies
            .snapshot()
            .iter()
            .any(|(_, p)| !p.spec.ec2_node_classes().is_empty())
}

/// What a failed list of `what` means for the status, if it is a lasting problem.
pub(super) fn list_problem(what: &str, err: &watcher::Error) -> Option<(Reason, String)> {
    let watcher::Error::InitialListFailed(kube::Error::Api(status)) = err else {
        return None;
    };
    match status.code {
        404 => Some((
            Reason::KarpenterNotInstalled,
            format!(
                "the {what} CRD (Karpenter v1) is not installed: install Karpenter, or remove \
                 spec.karpenter from the policy"
            ),
        )),
        403 => Some((
            Reason::AccessDenied,
            format!(
                "the operator may not list {what}: {}; set the chart value \
                 karpenter.enabled=true, which grants it",
                status.message
            ),
        )),
        _ => None,
    }
}

/// Makes the EC2NodeClass writes the plan asks for, with an Event each. A write the API refuses
/// for good (gone, forbidden, invalid) is reported in the policy's status; others fail the
/// reconcile, which is retried with backoff. Returns how many it wrote.
pub(super) async fn apply_node_classes(
    ctx: &Context,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &mut FleetPlan,
) -> Result<usize, Error> {
    let mut written = 0;
    for policy_plan in plan.policies.values_mut() {
        let Some(report) = policy_plan.karpenter.as_mut() else {
            continue;
        };
        for write in report.writes.clone() {
            match patch_max_pods(ctx, &write).await {
                Ok(()) => {
                    written += 1;
                    if let Some(policy) = policies
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(write.policy.as_str()))
                    {
                        publish(
                            ctx,
                            policy,
                            "EC2NodeClassUpdated",
                            EventType::Normal,
                            describe(&write),
                        )
                        .await;
                    }
                }
                Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404 | 422) => {
                    warn!(node_class = %write.node_class, %status.message, "EC2NodeClass write refused");
                    report.write_failed(
                        &write,
                        format!(
                            "writing spec.kubelet.maxPods failed ({} {}): {}",
                            status.code, status.reason, status.message
                        ),
                    );
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    Ok(written)
}

fn describe(write: &NodeClassWrite) -> String {
    let from = write
        .from
        .map_or_else(|| "unset".to_owned(), |v| v.to_string());
    let mut note = format!(
        "EC2NodeClass {}: spec.kubelet.maxPods {from} -> {} (bounded by {})",
        write.node_class, write.max_pods, write.bounding_type
    );
    if let Some((instance_type, ip_limit)) = &write.from_above_ip_limit {
        note.push_str(&format!(
            "; {from} was more than the {ip_limit} pods the IPs of {instance_type} carry"
        ));
    }
    note
}

/// Server-side apply of `spec.kubelet.maxPods` alone: every other field keeps its owner.
async fn patch_max_pods(ctx: &Context, write: &NodeClassWrite) -> Result<(), kube::Error> {
    let api: Api<EC2NodeClass> = Api::all(ctx.client.clone());
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
    count_write(ctx, "ec2nodeclass");
    info!(node_class = %write.node_class, max_pods = write.max_pods, "applied EC2NodeClass maxPods");
    ctx.karpenter
        .node_classes
        .apply(watcher::Event::Apply(patched), node_class_facts);
    Ok(())
}

/// The watches' resources, for `watch::run`.
pub(super) fn apis(ctx: &Context) -> (Api<NodePool>, Api<EC2NodeClass>) {
    (Api::all(ctx.client.clone()), Api::all(ctx.client.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One watch listing fine does not clear the other's problem.
    #[test]
    fn each_watch_keeps_its_own_problem() {
        let state = KarpenterState {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(state.availability(), KarpenterAvailability::Pending);
        let missing = (
            Reason::KarpenterNotInstalled,
            "no EC2NodeClass CRD".to_owned(),
        );
        assert!(state.set_unavailable(Watched::NodeClasses, Some(missing.clone())));
        assert!(!state.set_unavailable(Watched::NodePools, None));
        assert_eq!(
            state.availability(),
            KarpenterAvailability::Unavailable {
                reason: missing.0,
                message: missing.1
            }
        );
        assert!(state.set_unavailable(Watched::NodeClasses, None));
        state.node_pools.replace_all([]);
        state.node_classes.replace_all([]);
        assert_eq!(state.availability(), KarpenterAvailability::Ready);
        let disabled = KarpenterState::default();
        assert_eq!(disabled.availability(), KarpenterAvailability::Disabled);
    }
}
