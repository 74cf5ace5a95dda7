//! Prometheus metrics (served on the admin port at `/metrics`). Label values are bounded: error
//! kinds are a fixed set; policy and instance-type labels follow the fleet.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceTypeLabels {
    pub policy: String,
    pub instance_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListModeLabels {
    /// `streaming` (sendInitialEvents) or `paged` (LIST pages).
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub target: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub recommended_max_pods: Family<InstanceTypeLabels, Gauge>,
    pub nodes_not_at_target: Family<InstanceTypeLabels, Gauge>,
    pub cached_nodes: Gauge,
    /// 1 for the way the Node watch gets its initial list.
    pub node_initial_list: Family<ListModeLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vpc_cni_tuner");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let writes = Family::<WriteLabels, Counter>::default();
        let recommended_max_pods = Family::<InstanceTypeLabels, Gauge>::default();
        let nodes_not_at_target = Family::<InstanceTypeLabels, Gauge>::default();
        let cached_nodes = Gauge::default();
        let node_initial_list = Family::<ListModeLabels, Gauge>::default();
        registry.register("reconciles", "Fleet reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Fleet reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one fleet reconcile takes",
            duration.clone(),
        );
        registry.register(
            "writes",
            "Writes to the API server, by target (daemonset, status)",
            writes.clone(),
        );
        registry.register(
            "recommended_max_pods",
            "Recommended kubelet maxPods per policy and instance type",
            recommended_max_pods.clone(),
        );
        registry.register(
            "nodes_not_at_target",
            "Nodes whose capacity.pods differs from the policy's maxPods",
            nodes_not_at_target.clone(),
        );
        registry.register(
            "cached_nodes",
            "Nodes in the node cache",
            cached_nodes.clone(),
        );
        registry.register(
            "node_initial_list",
            "How the Node watch lists: streaming (sendInitialEvents) or paged",
            node_initial_list.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            writes,
            recommended_max_pods,
            nodes_not_at_target,
            cached_nodes,
            node_initial_list,
        }
    }
}

impl Metrics {
    pub(crate) fn observe_duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
