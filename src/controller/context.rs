//! The controller's context: the API client, what is observed, AWS access, the apply step's
//! memory, metrics and the leader flag. Fields are private: callers build it with the `with_*`
//! methods and reach the caches through [`Context::observed`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube::runtime::events::Reporter;

use crate::apply::Writer;
use crate::aws::Ec2Provider;
use crate::aws::counted::{CallObserver, counted_ec2, counted_eks};
use crate::aws::eks::EksProvider;
use crate::crd::{DaemonSetRef, FIELD_MANAGER};
use crate::eks_addon::CniConfigVia;
use crate::metrics::{AwsLabels, ErrorLabels, Metrics};
use crate::observe::Observed;
use crate::observe::eks_addon::AddonState;
use crate::observe::node_wire::NodeProtobuf;
use crate::report::EventSink;

/// What the controller reads and writes through.
pub struct Context {
    client: Client,
    /// The Node watch's client: the same as `client`, or one that asks for protobuf.
    nodes: NodeClient,
    observed: Observed,
    /// Who reports Events (this controller, this pod).
    reporter: Reporter,
    metrics: Metrics,
    /// Writes happen only while this is true (always, without leader election).
    leader: Arc<AtomicBool>,
    /// EC2 access for launch templates and live instance types; `None`: no AWS at all.
    ec2: Option<Arc<dyn Ec2Provider>>,
    /// When each policy's status was last written (count-only changes are paced).
    status_pacer: crate::report::pacing::StatusPacer,
}

impl Context {
    pub fn new(client: Client, managed: DaemonSetRef, leader: Arc<AtomicBool>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        // Every error kind and AWS operation from zero: rate() and increase() see the first one.
        let metrics = Metrics::default();
        for kind in crate::error::Error::KINDS {
            metrics
                .failures
                .get_or_create(&ErrorLabels { kind })
                .inc_by(0);
        }
        for (service, operation) in crate::aws::counted::OPERATIONS {
            for result in ["ok", "error"] {
                metrics
                    .aws_requests
                    .get_or_create(&AwsLabels {
                        service,
                        operation,
                        result,
                    })
                    .inc_by(0);
            }
        }
        Self {
            reporter,
            nodes: client.clone().into(),
            client,
            observed: Observed::new(managed),
            metrics,
            leader,
            ec2: None,
            status_pacer: crate::report::pacing::StatusPacer::default(),
        }
    }

    /// Gives the controller EC2 access (launch templates, live instance types).
    pub fn with_ec2(self, provider: Arc<dyn Ec2Provider>) -> Self {
        self.with_ec2_access(Some(provider))
    }

    /// EC2 access, or none at all. Every request is counted in `aws_requests_total`.
    pub(crate) fn with_ec2_access(mut self, provider: Option<Arc<dyn Ec2Provider>>) -> Self {
        let observe = self.aws_observer();
        self.ec2 = provider.map(|p| counted_ec2(p, observe));
        self
    }

    /// Reports AWS requests to the metrics.
    fn aws_observer(&self) -> CallObserver {
        let requests = self.metrics.aws_requests.clone();
        Arc::new(move |service, operation, ok| {
            let result = if ok { "ok" } else { "error" };
            requests
                .get_or_create(&AwsLabels {
                    service,
                    operation,
                    result,
                })
                .inc();
        })
    }

    /// Where the aws-node env goes (`--cni-config-via`), the cluster's name and the EKS API.
    pub fn with_eks(
        mut self,
        via: CniConfigVia,
        cluster: Option<String>,
        provider: Arc<dyn EksProvider>,
    ) -> Self {
        let provider = counted_eks(provider, self.aws_observer());
        self.observed.addon = AddonState::new(via, cluster, provider);
        self
    }

    /// `--rollouts`: the operator may start node-group updates and instance refreshes for
    /// templates with `rollout.enabled`; a running or waiting rollout is looked at every
    /// `follow`.
    pub fn with_rollouts(mut self, enabled: bool, follow: std::time::Duration) -> Self {
        self.observed.rollouts = enabled;
        self.observed.template_syncs.set_follow_interval(follow);
        self
    }

    /// `--restart-ready-timeout-seconds`.
    pub fn with_restart_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.observed.restart_timeout = timeout;
        self
    }

    /// `--status-count-seconds`: a status change that is only node counts is written at most
    /// once per `window` per policy.
    pub fn with_status_count_window(mut self, window: std::time::Duration) -> Self {
        self.status_pacer = crate::report::pacing::StatusPacer::new(window);
        self
    }

    pub(crate) fn status_pacer(&self) -> &crate::report::pacing::StatusPacer {
        &self.status_pacer
    }

    /// `--karpenter`: the operator may watch NodePools and EC2NodeClasses and patch the latter.
    pub fn with_karpenter(mut self, enabled: bool) -> Self {
        self.observed.karpenter.enabled = enabled;
        self
    }

    /// The client the Node watch lists and watches with (see [`NodeClient`]).
    pub fn with_node_client(mut self, nodes: NodeClient) -> Self {
        self.nodes = nodes;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn node_client(&self) -> &NodeClient {
        &self.nodes
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

/// The client of the Node watch. Built from a kubeconfig ([`NodeClient::protobuf`]) it asks the
/// API server for Nodes in protobuf ([`crate::observe::node_wire`]); built from an existing
/// client (tests, fake API servers) it is that client.
#[derive(Clone)]
pub struct NodeClient {
    pub(crate) client: Client,
    protobuf: Option<NodeProtobuf>,
}

impl NodeClient {
    /// A client of its own for the Node watch, with the protobuf layer.
    pub fn protobuf(config: kube::Config) -> Result<Self, kube::Error> {
        let layer = NodeProtobuf::default();
        let client = kube::client::ClientBuilder::try_from(config)?
            .with_layer(&layer)
            .build();
        Ok(Self {
            client,
            protobuf: Some(layer),
        })
    }

    /// The encoding the API server answered the Node watch in: `protobuf` or `json`.
    pub fn encoding(&self) -> &'static str {
        self.protobuf
            .as_ref()
            .map_or("json", NodeProtobuf::encoding)
    }
}

impl From<Client> for NodeClient {
    fn from(client: Client) -> Self {
        Self {
            client,
            protobuf: None,
        }
    }
}

/// The operator's Kubernetes clients: one for everything, one for the Node watch; and the
/// fence their writes (and the AWS clients' writes) pass.
pub struct Clients {
    pub api: Client,
    /// Open until `run --leader-elect` elects; then writes need the lease.
    pub fence: crate::fence::Fence,
    pub nodes: NodeClient,
}

impl Clients {
    /// Both from a kubeconfig (or the in-cluster config); the Node watch asks for protobuf.
    pub fn from_config(config: kube::Config) -> Result<Self, kube::Error> {
        let fence = crate::fence::Fence::open();
        let api = kube::client::ClientBuilder::try_from(config.clone())?
            .with_layer(&crate::fence::FenceLayer(fence.clone()))
            .build();
        Ok(Self {
            api,
            fence,
            nodes: NodeClient::protobuf(config)?,
        })
    }
}

impl From<Client> for Clients {
    fn from(client: Client) -> Self {
        Self {
            nodes: client.clone().into(),
            api: client,
            fence: crate::fence::Fence::open(),
        }
    }
}
