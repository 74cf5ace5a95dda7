//! The controller's context: the API client, what is observed, AWS access, the apply step's
//! memory, metrics and the leader flag. Fields are private: callers build it with the `with_*`
//! methods and reach the caches through [`Context::observed`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube::runtime::events::Reporter;

use crate::apply::Writer;
use crate::aws::Ec2Provider;
use crate::aws::eks::EksProvider;
use crate::crd::{DaemonSetRef, FIELD_MANAGER};
use crate::eks_addon::CniConfigVia;
use crate::metrics::Metrics;
use crate::observe::Observed;
use crate::observe::eks_addon::AddonState;
use crate::report::EventSink;

/// What the controller reads and writes through.
pub struct Context {
    client: Client,
    observed: Observed,
    /// Who reports Events (this controller, this pod).
    reporter: Reporter,
    metrics: Metrics,
    /// Writes happen only while this is true (always, without leader election).
    leader: Arc<AtomicBool>,
    /// EC2 access for launch templates and live instance types; `None`: no AWS at all.
    ec2: Option<Arc<dyn Ec2Provider>>,
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
            observed: Observed::new(managed),
            metrics: Metrics::default(),
            leader,
            ec2: None,
        }
    }

    /// Gives the controller EC2 access (launch templates, live instance types).
    pub fn with_ec2(mut self, provider: Arc<dyn Ec2Provider>) -> Self {
        self.ec2 = Some(provider);
        self
    }

    /// EC2 access, or none at all.
    pub(crate) fn with_ec2_access(mut self, provider: Option<Arc<dyn Ec2Provider>>) -> Self {
        self.ec2 = provider;
        self
    }

    /// Where the aws-node env goes (`--cni-config-via`), the cluster's name and the EKS API.
    pub fn with_eks(
        mut self,
        via: CniConfigVia,
        cluster: Option<String>,
        provider: Arc<dyn EksProvider>,
    ) -> Self {
        self.observed.addon = AddonState::new(via, cluster, provider);
        self
    }

    /// `--karpenter`: the operator may watch NodePools and EC2NodeClasses and patch the latter.
    pub fn with_karpenter(mut self, enabled: bool) -> Self {
        self.observed.karpenter.enabled = enabled;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The watch caches and AWS reads.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn leader(&self) -> &AtomicBool {
        &self.leader
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub(super) fn ec2(&self) -> Option<&dyn Ec2Provider> {
        self.ec2.as_deref()
    }

    /// All watch caches have their first full list.
    pub(crate) fn caches_ready(&self) -> bool {
        self.observed.caches_ready()
    }

    pub(super) fn writer(&self) -> Writer<'_> {
        Writer {
            client: &self.client,
            observed: &self.observed,
            metrics: &self.metrics,
            ec2: self.ec2(),
        }
    }

    pub(super) fn events(&self) -> EventSink<'_> {
        EventSink {
            client: &self.client,
            reporter: &self.reporter,
        }
    }
}
