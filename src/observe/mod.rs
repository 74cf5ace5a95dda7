//! The observe step: watch caches of projected objects ([`cache`], [`facts`], [`node_view`]),
//! Karpenter's NodePools and EC2NodeClasses ([`node_classes`]), instance types the embedded table
//! lacks ([`instance_types`], EC2) and where the aws-node env goes ([`eks_addon`], EKS); and
//! [`Snapshot`], the one value a reconcile plans from.
//!
//! May import: the pure core, `crd`, `plan` (the facts types it fills), `aws`, `metrics`.

pub mod cache;
mod cache_key;
pub mod eks_addon;
pub mod facts;
pub mod instance_types;
pub mod launch_templates;
pub mod node_classes;
pub mod node_view;
pub mod node_wire;
pub mod restarts;
pub mod subnets;

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;

use crate::aws::Ec2Provider;
use crate::crd::{DaemonSetRef, NodeNetworkPolicy};
use crate::error::Error;
use crate::instance::{InstanceCatalog, InstanceLimits};
use crate::karpenter::resources::{NodeClassFacts, NodePoolFacts};
use crate::plan::{
    AwsNodeFacts, CniTarget, FleetInput, KarpenterAvailability, KarpenterFacts, LastSync,
    NodeFacts, PolicyInput,
};
use cache::ProjectedCache;
use eks_addon::AddonState;
use instance_types::LiveInstanceTypes;
use launch_templates::TemplateSyncs;
use node_classes::KarpenterState;

/// What the operator knows of the cluster and AWS between reconciles: the watch caches and the
/// AWS reads it keeps.
pub struct Observed {
    pub policies: ProjectedCache<NodeNetworkPolicy>,
    pub nodes: ProjectedCache<NodeFacts>,
    pub aws_node: ProjectedCache<AwsNodeFacts>,
    /// NodePools and EC2NodeClasses, with `--karpenter`.
    pub karpenter: KarpenterState,
    /// Where the aws-node env goes (`--cni-config-via`) and the EKS add-on, in add-on mode.
    pub addon: AddonState,
    /// Facts looked up live for types the embedded table lacks.
    pub instance_types: LiveInstanceTypes,
    /// Each launch template's last sync.
    pub template_syncs: TemplateSyncs,
    /// The one aws-node DaemonSet this instance manages (`--daemonset`).
    pub managed: DaemonSetRef,
    pub catalog: InstanceCatalog,
    /// `--rollouts`: the operator may start node-group updates and instance refreshes.
    pub rollouts: bool,
    /// Each policy's last subnet read (`spec.subnets`).
    pub subnets: subnets::SubnetCache,
    /// The per-type warm env the aws-node pod webhook answers from (every replica).
    pub warm_table: crate::plan::warm_table::SharedTable,
    /// The managed DaemonSet's pods (`k8s-app=aws-node`), watched once a policy sets
    /// `warmPool.perInstanceType`.
    pub aws_node_pods: ProjectedCache<crate::plan::AwsNodePodFacts>,
    pub aws_node_pods_started: std::sync::atomic::AtomicBool,
    /// Each policy's rolling restart of aws-node pods.
    pub warm_restarts: std::sync::Mutex<std::collections::HashMap<String, restarts::Restart>>,
    /// How long a restarted node's new aws-node pod may take to be Ready.
    pub restart_timeout: std::time::Duration,
}

impl Observed {
    pub fn new(managed: DaemonSetRef) -> Self {
        Self {
            policies: ProjectedCache::default(),
            nodes: ProjectedCache::default(),
            aws_node: ProjectedCache::default(),
            karpenter: KarpenterState::default(),
            addon: AddonState::default(),
            instance_types: LiveInstanceTypes::default(),
            template_syncs: TemplateSyncs::default(),
            managed,
            catalog: InstanceCatalog::embedded(),
            rollouts: false,
            subnets: subnets::SubnetCache::default(),
            warm_table: crate::plan::warm_table::SharedTable::default(),
            aws_node_pods: ProjectedCache::default(),
            aws_node_pods_started: std::sync::atomic::AtomicBool::new(false),
            warm_restarts: std::sync::Mutex::default(),
            restart_timeout: std::time::Duration::from_secs(300),
        }
    }

    /// All watch caches have their first full list (the Karpenter ones, once started, or know
    /// why they cannot have it).
    pub(crate) fn caches_ready(&self) -> bool {
        self.policies.is_ready()
            && self.nodes.is_ready()
            && self.aws_node.is_ready()
            && self.karpenter.settled()
    }

    /// The managed aws-node's cache key.
    pub(crate) fn aws_node_key(&self) -> String {
        format!("{}/{}", self.managed.namespace, self.managed.name)
    }

    /// The managed aws-node as the cache holds it.
    pub fn aws_node(&self) -> Option<Arc<AwsNodeFacts>> {
        self.aws_node.get(&self.aws_node_key())
    }

    /// What the caches hold now, with `cni_target` as where the env goes; no AWS call.
    pub fn snapshot(&self, cni_target: CniTarget, ec2_access: bool) -> Snapshot {
        self.snapshot_of(self.nodes.values(), cni_target, ec2_access)
    }

    fn snapshot_of(
        &self,
        nodes: Vec<Arc<NodeFacts>>,
        cni_target: CniTarget,
        ec2_access: bool,
    ) -> Snapshot {
        let policies: Vec<Arc<NodeNetworkPolicy>> = self
            .policies
            .snapshot()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let names = policies.iter().map(|p| p.name_any()).collect();
        let karpenter = policies
            .iter()
            .any(|p| !p.spec.ec2_node_classes().is_empty())
            .then(|| KarpenterSnapshot {
                availability: self.karpenter.availability(),
                node_pools: self.karpenter.node_pools.snapshot(),
                node_classes: self.karpenter.node_classes.snapshot(),
            });
        Snapshot {
            policies,
            names,
            nodes,
            aws_node: self.aws_node(),
            extra_facts: self.instance_types.known(),
            template_syncs: self.template_syncs.fresh(),
            cni_target,
            karpenter,
            ec2_access,
            now: jiff::Timestamp::now(),
        }
    }
}

/// Karpenter's objects in a snapshot.
pub struct KarpenterSnapshot {
    pub availability: KarpenterAvailability,
    pub node_pools: Vec<(String, Arc<NodePoolFacts>)>,
    pub node_classes: Vec<(String, Arc<NodeClassFacts>)>,
}

/// One reconcile's view: everything [`crate::plan::plan_fleet`] reads.
pub struct Snapshot {
    pub policies: Vec<Arc<NodeNetworkPolicy>>,
    /// The policies' names, in the same order.
    names: Vec<String>,
    pub nodes: Vec<Arc<NodeFacts>>,
    pub aws_node: Option<Arc<AwsNodeFacts>>,
    pub extra_facts: BTreeMap<String, InstanceLimits>,
    /// The launch templates' recent syncs.
    pub template_syncs: BTreeMap<String, LastSync>,
    pub cni_target: CniTarget,
    /// When a policy lists EC2NodeClasses.
    pub karpenter: Option<KarpenterSnapshot>,
    pub ec2_access: bool,
    pub now: jiff::Timestamp,
}

impl Snapshot {
    /// The plan's input, borrowing this snapshot.
    pub(crate) fn input<'a>(&'a self, observed: &'a Observed) -> FleetInput<'a> {
        FleetInput {
            policies: self
                .policies
                .iter()
                .zip(&self.names)
                .map(|(p, name)| PolicyInput::from_policy(p, name))
                .collect(),
            nodes: self.nodes.iter().map(AsRef::as_ref).collect(),
            aws_node: self.aws_node.as_deref(),
            managed_daemonset: &observed.managed,
            catalog: &observed.catalog,
            extra_facts: &self.extra_facts,
            cni_target: &self.cni_target,
            now: self.now,
            karpenter: self.karpenter.as_ref().map(|k| KarpenterFacts {
                availability: k.availability.clone(),
                node_pools: k.node_pools.iter().map(|(_, p)| p.as_ref()).collect(),
                node_classes: k
                    .node_classes
                    .iter()
                    .map(|(name, c)| (name.as_str(), c.as_ref()))
                    .collect(),
            }),
            ec2_access: self.ec2_access,
            template_syncs: &self.template_syncs,
        }
    }
}

/// The leader's observe step: node types the table lacks are looked up in EC2, and the EKS
/// add-on is read when EKS applies aws-node. A follower (`leader` false) calls no AWS API and
/// plans with the last target the leader saw.
pub async fn observe(
    observed: &Observed,
    ec2: Option<&dyn Ec2Provider>,
    leader: bool,
) -> Result<Snapshot, Error> {
    if !leader {
        return Ok(observed.snapshot(observed.addon.last_target(), ec2.is_some()));
    }
    // One node snapshot per reconcile, shared by every step.
    let nodes = observed.nodes.values();
    if let Some(ec2) = ec2 {
        observed
            .instance_types
            .refresh(ec2, &observed.catalog, &nodes)
            .await;
    }
    let target = eks_addon::resolve(observed, observed.aws_node().as_deref()).await?;
    Ok(observed.snapshot_of(nodes, target, ec2.is_some()))
}
