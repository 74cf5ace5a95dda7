//! The controller's context: clients, watch caches, EC2 access, metrics and the leader flag.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::Reporter;

use super::cache::ProjectedCache;
use super::karpenter::KarpenterState;
use super::launch_templates::SyncCache;
use crate::aws::Ec2Provider;
use crate::crd::{DaemonSetRef, FIELD_MANAGER, NodeNetworkPolicy};
use crate::instance::{InstanceCatalog, InstanceLimits};
use crate::metrics::Metrics;
use crate::plan::{AwsNodeFacts, NodeFacts};

/// What the controller reads and writes through.
pub struct Context {
    pub client: Client,
    pub policies: ProjectedCache<NodeNetworkPolicy>,
    pub nodes: ProjectedCache<NodeFacts>,
    pub aws_node: ProjectedCache<AwsNodeFacts>,
    /// The one aws-node DaemonSet this instance manages (`--daemonset`).
    pub managed: DaemonSetRef,
    pub catalog: InstanceCatalog,
    /// Facts looked up live for types the embedded table lacks.
    pub extra_facts: RwLock<BTreeMap<String, InstanceLimits>>,
    /// Who reports Events (this controller, this pod).
    pub reporter: Reporter,
    pub metrics: Metrics,
    /// Writes happen only while this is true (always, without leader election).
    pub leader: Arc<AtomicBool>,
    /// EC2 access for launch templates and live instance types; `None`: no AWS at all.
    pub ec2: Option<Arc<dyn Ec2Provider>>,
    pub template_cache: SyncCache,
    /// How often an unchanged launch template is checked again.
    pub template_ttl: Duration,
    /// NodePools and EC2NodeClasses, with `--karpenter`.
    pub karpenter: KarpenterState,
    /// Where the aws-node env goes (`--cni-config-via`) and the EKS add-on, in add-on mode.
    pub addon: super::eks_addon::AddonState,
    /// When each unknown instance type was last looked up live, and whether EC2 knew it.
    pub(super) type_lookups: std::sync::Mutex<std::collections::HashMap<String, (Instant, bool)>>,
}

impl Context {
    pub fn new(client: Client, managed: DaemonSetRef, leader: Arc<AtomicBool>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            reporter,
            client,
            policies: ProjectedCache::default(),
            nodes: ProjectedCache::default(),
            aws_node: ProjectedCache::default(),
            managed,
            catalog: InstanceCatalog::embedded(),
            extra_facts: RwLock::new(BTreeMap::new()),
            metrics: Metrics::default(),
            leader,
            ec2: None,
            template_cache: SyncCache::default(),
            template_ttl: Duration::from_secs(300),
            karpenter: KarpenterState::default(),
            addon: Default::default(),
            type_lookups: Default::default(),
        }
    }

    /// Gives the controller EC2 access (launch templates, live instance types).
    pub fn with_ec2(mut self, provider: Arc<dyn Ec2Provider>) -> Self {
        self.ec2 = Some(provider);
        self
    }

    /// All watch caches have their first full list (the Karpenter ones, once started, or
    /// know why they cannot have it).
    pub fn caches_ready(&self) -> bool {
        self.policies.is_ready()
            && self.nodes.is_ready()
            && self.aws_node.is_ready()
            && self.karpenter.settled()
    }

    pub(super) fn aws_node_key(&self) -> String {
        format!("{}/{}", self.managed.namespace, self.managed.name)
    }
}
