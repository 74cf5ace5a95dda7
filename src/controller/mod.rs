//! The controller: observe (watch caches) -> decide ([`crate::plan`], pure) -> apply (server-side
//! apply of the aws-node env) -> status (server-side apply of each policy's status).
//!
//! The aws-node env is one cluster-wide decision over every policy, so the controller runs one
//! fleet reconcile per batch of changes rather than one per object: any change to a policy, a
//! node's planning facts or the aws-node DaemonSet triggers it (debounced), and a periodic resync
//! catches anything missed.

pub mod apply;
pub mod cache;
pub mod context;
pub mod eks_addon;
pub mod error;
pub mod facts;
pub mod instance_lookup;
pub mod karpenter;
pub mod launch_templates;
pub mod node_view;
pub mod permissions;
pub mod status;
pub mod status_write;
pub mod template_sync;
pub mod watch;

use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kube::ResourceExt;
use tracing::debug;

pub use context::Context;
pub use error::{Error, retry_delay};
pub use permissions::{API_CALLS, ApiCall, EC2_ACTIONS, EKS_ACTIONS, Scope};
pub use watch::{LoopConfig, node_streaming_config, node_watch_config, run};

use crate::crd::NodeNetworkPolicy;
use crate::metrics::{ErrorLabels, InstanceTypeLabels, Metrics};
use crate::plan::{
    CniTarget, FleetInput, FleetPlan, KarpenterInput, NodeFacts, PolicyInput, plan_fleet,
    plan_node_classes,
};

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
    ctx.metrics.reconciles.inc();
    let result = reconcile_inner(ctx).await;
    ctx.metrics.observe_duration(started.elapsed());
    if let Err(err) = &result {
        ctx.metrics
            .failures
            .get_or_create(&ErrorLabels { kind: err.kind() })
            .inc();
    }
    result
}

/// Plans from the current caches without writing anything.
pub fn plan_now(ctx: &Context) -> (Vec<Arc<NodeNetworkPolicy>>, FleetPlan) {
    plan_with(ctx, &ctx.nodes.values(), &ctx.addon.last_target())
}

/// Plans from the policy and DaemonSet caches and a node snapshot.
fn plan_with(
    ctx: &Context,
    nodes: &[Arc<NodeFacts>],
    cni_target: &CniTarget,
) -> (Vec<Arc<NodeNetworkPolicy>>, FleetPlan) {
    let policies: Vec<Arc<NodeNetworkPolicy>> = ctx
        .policies
        .snapshot()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let aws_node = ctx.aws_node.get(&ctx.aws_node_key());
    let extra = ctx
        .extra_facts
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let names: Vec<String> = policies.iter().map(|p| p.name_any()).collect();
    let input = FleetInput {
        policies: policies
            .iter()
            .zip(&names)
            .map(|(p, name)| PolicyInput::from_policy(p, name))
            .collect(),
        nodes: nodes.iter().map(AsRef::as_ref).collect(),
        aws_node: aws_node.as_deref(),
        managed_daemonset: &ctx.managed,
        catalog: &ctx.catalog,
        extra_facts: &extra,
        cni_target,
        now: jiff::Timestamp::now(),
    };
    let mut plan = plan_fleet(&input);
    // Karpenter node classes, for the policies that list any.
    if input
        .policies
        .iter()
        .any(|p| !p.spec.ec2_node_classes().is_empty())
    {
        let pools = ctx.karpenter.node_pools.snapshot();
        let classes = ctx.karpenter.node_classes.snapshot();
        let karpenter = KarpenterInput {
            availability: ctx.karpenter.availability(),
            node_pools: pools.iter().map(|(_, p)| p.as_ref()).collect(),
            node_classes: classes
                .iter()
                .map(|(name, c)| (name.as_str(), c.as_ref()))
                .collect(),
            nodes: &input.nodes,
            aws_node: input.aws_node,
            catalog: &ctx.catalog,
        };
        plan_node_classes(&input.policies, &mut plan.policies, &karpenter);
    }
    (policies, plan)
}

async fn reconcile_inner(ctx: &Context) -> Result<ReconcileReport, Error> {
    // Observe: one node snapshot per reconcile, shared by every step; types the table lacks are
    // looked up live (by the leader only: it is the one that acts on them).
    let nodes = ctx.nodes.values();
    if ctx.leader.load(Ordering::Acquire) {
        instance_lookup::refresh_unknown_instance_types(ctx, &nodes).await;
    }
    // Where the env goes: the DaemonSet, or the EKS add-on (read by the leader only).
    let leader = ctx.leader.load(Ordering::Acquire);
    let aws_node = ctx.aws_node.get(&ctx.aws_node_key());
    let mut target = if leader {
        eks_addon::resolve(ctx, aws_node.as_deref(), false).await?
    } else {
        ctx.addon.last_target()
    };
    // Plan (pure).
    let (mut policies, mut plan) = plan_with(ctx, &nodes, &target);
    // An add-on write is planned from the add-on as it is now, never from a cached copy.
    if leader && matches!(target, CniTarget::EksAddon(_)) && eks_addon::wants_fresh_facts(&plan) {
        let fresh = eks_addon::resolve(ctx, aws_node.as_deref(), true).await?;
        // Planned again only when the add-on changed (not on a cached answer).
        if fresh != target {
            target = fresh;
            (policies, plan) = plan_with(ctx, &nodes, &target);
        }
    }
    ctx.metrics.cached_nodes.set(nodes.len() as i64);
    update_gauges(&ctx.metrics, &plan);
    if !leader {
        debug!("not the leader: planned, writing nothing");
        return Ok(ReconcileReport::default());
    }
    // Apply: the aws-node env (or the EKS add-on), then the launch templates and Karpenter node
    // classes.
    let daemonset_written = apply::apply_env(ctx, &policies, &plan).await?;
    let (addon_updated, requeue_after) =
        eks_addon::apply(ctx, &policies, &mut plan, &target).await?;
    let templates = template_sync::sync_launch_templates(ctx, &policies, &plan, &nodes).await;
    let node_classes_written = karpenter::apply_node_classes(ctx, &policies, &mut plan).await?;
    // Status.
    let statuses_written = status_write::write_statuses(ctx, &policies, &plan, &templates).await?;
    Ok(ReconcileReport {
        daemonset_written,
        node_classes_written,
        addon_updated,
        statuses_written,
        requeue_after,
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
