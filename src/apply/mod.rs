//! The apply step: carries out a [`FleetPlan`] and returns [`Outcomes`] (written, refused with a
//! reason, unchanged); it never edits the plan. One module per target: [`aws_node`] (server-side
//! apply of the env), [`eks_addon`] (eks:UpdateAddon), [`launch_templates`] (EC2) and
//! [`node_classes`] (Karpenter EC2NodeClasses).
//!
//! May import: the pure core, `crd`, `plan`, `aws`, `observe` (to put applied objects into the
//! caches), `metrics`.

pub mod aws_node;
pub mod eks_addon;
pub mod launch_templates;
pub mod node_classes;
mod rollouts;
mod subnets;
pub mod warm_pods;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::aws::Ec2Provider;
use crate::crd::NodeNetworkPolicy;
use crate::error::Error;
use crate::metrics::{Metrics, WriteLabels};
use crate::observe::Observed;
use crate::plan::{CniTarget, FleetPlan, NodeClassWrite, NodeFacts, SyncResult};
pub use eks_addon::AddonOutcome;
pub use node_classes::NodeClassOutcome;

/// What the apply step writes through.
pub struct Writer<'a> {
    pub client: &'a Client,
    pub observed: &'a Observed,
    pub metrics: &'a Metrics,
    pub ec2: Option<&'a dyn Ec2Provider>,
}

impl Writer<'_> {
    /// Counts one write in `vpc_cni_tuner_writes_total{target}`.
    pub(crate) fn count_write(&self, target: &'static str) {
        self.metrics
            .writes
            .get_or_create(&WriteLabels { target })
            .inc();
    }
}

/// What the apply step did.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// The planned aws-node env was applied.
    pub daemonset_written: bool,
    pub addon: AddonOutcome,
    /// Launch-template syncs by policy name and index in `spec.launchTemplates` (the ones the
    /// plan did not reuse a recent result for).
    pub templates: BTreeMap<String, BTreeMap<usize, SyncResult>>,
    pub node_classes: Vec<(NodeClassWrite, NodeClassOutcome)>,
    /// Subnet reports by policy name (`spec.subnets`).
    pub subnets: BTreeMap<String, crate::plan::subnets::SubnetsReport>,
    /// aws-node pods per policy with `warmPool.perInstanceType`: who runs other warm values,
    /// and the rolling restart.
    pub warm_pods: BTreeMap<String, warm_pods::WarmPodsReport>,
    /// Events of the subnet and aws-node restart steps: policy, reason, whether a warning,
    /// note.
    pub policy_events: Vec<(String, &'static str, bool, String)>,
    /// Look again this soon: an EKS add-on update or a rollout is being followed, aws-node
    /// pods are being restarted, or a subnet reservation was just created.
    pub requeue_after: Option<Duration>,
}

/// How soon a pass that started something looks at it again.
const SOON: Duration = Duration::from_secs(2);

impl Outcomes {
    /// Requeue within `after` (the earliest of the steps' asks wins).
    pub(crate) fn look_again(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }
}

/// Carries out `plan` in order: the aws-node env (or the EKS add-on), the launch templates, the
/// node classes. A failure that a retry may fix (throttling, a 5xx, a conflict) stops the step:
/// it comes back with what was done before it, and the error.
pub async fn apply(
    w: &Writer<'_>,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    target: &CniTarget,
    nodes: &[Arc<NodeFacts>],
) -> (Outcomes, Result<(), Error>) {
    let mut outcomes = Outcomes::default();
    let result = apply_all(w, policies, plan, target, nodes, &mut outcomes).await;
    (outcomes, result)
}

/// A rollout runs or waits to start in a template synced now or reused: look again soon.
fn rollout_followed(
    plan: &FleetPlan,
    synced: &BTreeMap<String, BTreeMap<usize, SyncResult>>,
) -> bool {
    let reused = plan.templates.values().flat_map(|step| match step {
        crate::plan::TemplateStep::Sync { reuse, .. } => reuse.iter().flatten().collect(),
        _ => Vec::new(),
    });
    synced
        .values()
        .flat_map(BTreeMap::values)
        .chain(reused)
        .any(|r| r.rollout_active)
}

async fn apply_all(
    w: &Writer<'_>,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    target: &CniTarget,
    nodes: &[Arc<NodeFacts>],
    outcomes: &mut Outcomes,
) -> Result<(), Error> {
    if let Some(write) = &plan.daemonset_write {
        aws_node::apply(w, write).await?;
        outcomes.daemonset_written = true;
    }
    (outcomes.addon, outcomes.requeue_after) = eks_addon::apply(w, &plan.addon, target).await?;
    outcomes.templates = launch_templates::apply(w, policies, plan, nodes).await;
    if rollout_followed(plan, &outcomes.templates) {
        outcomes.look_again(w.observed.template_syncs.follow_interval());
    }
    (outcomes.subnets, outcomes.policy_events) = subnets::apply(w, policies, plan).await;
    if outcomes.subnets.values().any(|r| r.reserved) {
        // The reservation's subnet is read again (its cache entry expired): the status shows
        // the reserved block now, not at the next resync.
        outcomes.look_again(SOON);
    }
    let (warm, restarting) = warm_pods::apply(w, policies, plan).await;
    outcomes.warm_pods = warm;
    for report in outcomes.warm_pods.values_mut() {
        outcomes.policy_events.append(&mut report.events);
    }
    if restarting {
        outcomes.look_again(SOON);
    }
    node_classes::apply(w, plan, &mut outcomes.node_classes).await
}
