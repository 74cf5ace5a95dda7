//! The controller: the loop that runs the pipeline on every batch of changes:
//! [`crate::observe`] (caches, AWS reads) -> [`crate::plan`] (pure, one plan) ->
//! [`crate::apply`] (writes, outcomes) -> [`crate::report`] (status and Events from plan and
//! outcomes).
//!
//! The aws-node env is one cluster-wide decision over every policy, so the controller runs one
//! fleet reconcile per batch of changes rather than one per object: any change to a policy, a
//! node's planning facts or the aws-node DaemonSet triggers it (debounced), and a periodic resync
//! catches anything missed.
//!
//! May import every layer; nothing below imports it.

mod context;
pub mod permissions;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

pub use crate::error::{Error, retry_delay};
pub use context::{Clients, Context, NodeClient};
pub use permissions::{API_CALLS, ApiCall, EC2_ACTIONS, EKS_ACTIONS, ROLLOUT_ACTIONS, Scope};
pub use watch::{LoopConfig, node_watch_config, run};

use crate::crd::NodeNetworkPolicy;
use crate::metrics::{ErrorLabels, InstanceTypeLabels, Metrics};
use crate::plan::{FleetPlan, plan_fleet};

/// What one reconcile wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub daemonset_written: bool,
    /// Karpenter EC2NodeClasses whose maxPods was written.
    pub node_classes_written: usize,
    /// An eks:UpdateAddon was sent.
    pub addon_updated: bool,
    pub statuses_written: usize,
    /// Look again this soon (an EKS add-on update is being followed).
    pub requeue_after: Option<std::time::Duration>,
}

impl ReconcileReport {
    /// Whether the reconcile wrote anything (to Kubernetes or AWS).
    pub fn wrote(&self) -> bool {
        self.daemonset_written
            || self.node_classes_written > 0
            || self.addon_updated
            || self.statuses_written > 0
    }
}

/// Observes the caches, plans, applies the aws-node env if it must change, and patches each
/// policy's status if it changed.
pub async fn reconcile_fleet(ctx: &Context) -> Result<ReconcileReport, Error> {
    let started = Instant::now();
    ctx.metrics().reconciles.inc();
    let result = reconcile_inner(ctx).await;
    ctx.metrics().observe_duration(started.elapsed());
    if let Err(err) = &result {
        ctx.metrics()
            .failures
            .get_or_create(&ErrorLabels { kind: err.kind() })
            .inc();
    }
    result
}

/// Plans from the current caches without writing anything (no AWS call).
pub fn plan_now(ctx: &Context) -> (Vec<Arc<NodeNetworkPolicy>>, FleetPlan) {
    let observed = ctx.observed();
    let snapshot = observed.snapshot(observed.addon.last_target(), ctx.ec2().is_some());
    let plan = plan_fleet(&snapshot.input(observed));
    (snapshot.policies, plan)
}

/// observe -> plan -> apply -> report, once.
async fn reconcile_inner(ctx: &Context) -> Result<ReconcileReport, Error> {
    let leader = ctx.is_leader();
    let observed = ctx.observed();
    let snapshot = crate::observe::observe(observed, ctx.ec2(), leader).await?;
    let plan = plan_fleet(&snapshot.input(observed));
    observed
        .warm_table
        .set(crate::plan::warm_table::WarmTable::from_plan(
            &observed.managed,
            &snapshot.policies,
            &plan,
        ));
    let metrics = ctx.metrics();
    metrics.cached_nodes.set(snapshot.nodes.len() as i64);
    metrics.leader.set(i64::from(leader));
    if !leader {
        // The fleet's gauges are the leader's: a standby exports none, so sums do not double.
        metrics.recommended_max_pods.clear();
        metrics.nodes_not_at_target.clear();
        metrics.policy_condition.clear();
        metrics.subnets.clear();
        debug!("not the leader: planned, writing nothing");
        return Ok(ReconcileReport::default());
    }
    update_gauges(metrics, &plan);
    let policies = &snapshot.policies;
    let (mut outcomes, applied) = crate::apply::apply(
        &ctx.writer(),
        policies,
        &plan,
        &snapshot.cni_target,
        &snapshot.nodes,
    )
    .await;
    let events = ctx.events();
    if let Err(err) = applied {
        // What was written before the failure is still reported in Events.
        crate::report::events::publish_outcomes(&events, policies, &plan, &outcomes).await;
        return Err(err);
    }
    let reported = crate::report::report(
        &events,
        observed,
        ctx.metrics(),
        ctx.status_pacer(),
        policies,
        &plan,
        &outcomes,
    )
    .await?;
    if let Some(wait) = reported.wait {
        outcomes.look_again(wait);
    }
    Ok(ReconcileReport {
        daemonset_written: outcomes.daemonset_written,
        node_classes_written: outcomes
            .node_classes
            .iter()
            .filter(|(_, o)| *o == crate::apply::NodeClassOutcome::Written)
            .count(),
        addon_updated: matches!(outcomes.addon, crate::apply::AddonOutcome::Sent { .. }),
        statuses_written: reported.written,
        requeue_after: outcomes.requeue_after,
    })
}

fn update_gauges(metrics: &Metrics, plan: &FleetPlan) {
    metrics.recommended_max_pods.clear();
    metrics.nodes_not_at_target.clear();
    for (policy, p) in &plan.policies {
        for t in &p.instance_types {
            let labels = InstanceTypeLabels {
                policy: policy.clone(),
                instance_type: t.instance_type.clone(),
            };
            metrics
                .recommended_max_pods
                .get_or_create(&labels)
                .set(i64::from(t.max_pods));
            metrics
                .nodes_not_at_target
                .get_or_create(&labels)
                .set(i64::from(t.nodes - t.nodes_at_target));
        }
    }
}
