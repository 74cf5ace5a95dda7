//! Prometheus metrics (served on the admin port at `/metrics`; the README's metrics reference
//! lists each). Label values are bounded: error kinds, write targets and AWS operations are fixed
//! sets; policy and instance-type labels follow the fleet. Gauges about the fleet's plan and the
//! policies' conditions are exported by the leader only, so sums over replicas do not double;
//! `vpc_cni_tuner_leader` says which replica that is.

mod process;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusWriteLabels {
    /// `conditions`, `values` (a decision or a written value) or `counts` (node counts only,
    /// coalesced).
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub policy: String,
    /// Ready, CNIConfigured, Conflict, Degraded, LaunchTemplatesSynced, KarpenterSynced.
    pub r#type: String,
    /// True or False.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsLabels {
    /// `ec2` or `eks`.
    pub service: &'static str,
    /// The API operation (`DescribeLaunchTemplateVersions`, `UpdateAddon`, ...).
    pub operation: &'static str,
    /// `ok` or `error` (after the SDK's own retries).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// How the aws-node pod webhook answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub result: &'static str,
}

/// A subnet of a policy's fleet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabels {
    pub policy: String,
    pub subnet: String,
}

/// A subnet and an instance type of a policy's fleet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeadroomLabels {
    pub policy: String,
    pub subnet: String,
    pub instance_type: String,
}

/// The fleet's subnets (`spec.subnets`; leader only).
#[derive(Default)]
pub struct SubnetGauges {
    pub free_addresses: Family<SubnetLabels, Gauge>,
    pub free_aligned_prefixes: Family<SubnetLabels, Gauge>,
    pub fragmented_addresses: Family<SubnetLabels, Gauge>,
    pub headroom_nodes: Family<HeadroomLabels, Gauge>,
}

impl SubnetGauges {
    pub fn clear(&self) {
        self.free_addresses.clear();
        self.free_aligned_prefixes.clear();
        self.fragmented_addresses.clear();
        self.headroom_nodes.clear();
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub status_writes: Family<StatusWriteLabels, Counter>,
    pub recommended_max_pods: Family<InstanceTypeLabels, Gauge>,
    pub nodes_not_at_target: Family<InstanceTypeLabels, Gauge>,
    pub cached_nodes: Gauge,
    /// 1 for the way the Node watch gets its initial list.
    pub node_initial_list: Family<ListModeLabels, Gauge>,
    /// 1 per policy and condition, with the condition's status (leader only).
    pub policy_condition: Family<ConditionLabels, Gauge>,
    /// 1 while this replica leads (writes), else 0.
    pub leader: Gauge,
    pub aws_requests: Family<AwsLabels, Counter>,
    pub subnets: SubnetGauges,
    pub webhook_requests: Family<WebhookLabels, Counter>,
}

/// Reconciles take milliseconds against the API server, but AWS calls (with the SDK's retries)
/// can take a minute or more: 1 ms to about 2 minutes.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 18)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let metrics = Self {
            registry: Registry::default(),
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(duration_buckets()),
            writes: Family::default(),
            status_writes: Family::default(),
            recommended_max_pods: Family::default(),
            nodes_not_at_target: Family::default(),
            cached_nodes: Gauge::default(),
            node_initial_list: Family::default(),
            policy_condition: Family::default(),
            leader: Gauge::default(),
            aws_requests: Family::default(),
            subnets: SubnetGauges::default(),
            webhook_requests: Family::default(),
        };
        metrics.register(root.sub_registry_with_prefix("vpc_cni_tuner"));
        Self {
            registry: root,
            ..metrics
        }
    }
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The operator's version (value 1)", build_info);
        registry.register(
            "reconciles",
            "Fleet reconciles run",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Fleet reconciles that failed, by error kind",
            self.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one fleet reconcile takes, AWS calls included",
            self.duration.clone(),
        );
        registry.register(
            "writes",
            "Writes by target: Kubernetes (daemonset, status, ec2nodeclass) and AWS \
             (launch_template, eks_addon, rollout, subnet_reservation)",
            self.writes.clone(),
        );
        registry.register(
            "status_writes",
            "Policy status writes by cause: conditions (a condition changed), values (a \
             decision or a written value changed), counts (only node counts changed; at most one \
             per policy per --status-count-seconds)",
            self.status_writes.clone(),
        );
        registry.register(
            "recommended_max_pods",
            "Recommended kubelet maxPods per policy and instance type (leader only)",
            self.recommended_max_pods.clone(),
        );
        registry.register(
            "nodes_not_at_target",
            "Nodes whose capacity.pods differs from the policy's maxPods (leader only)",
            self.nodes_not_at_target.clone(),
        );
        registry.register(
            "cached_nodes",
            "Nodes in this replica's node cache",
            self.cached_nodes.clone(),
        );
        registry.register(
            "node_initial_list",
            "How the Node watch lists: streaming (sendInitialEvents) or paged",
            self.node_initial_list.clone(),
        );
        registry.register(
            "policy_condition",
            "1 per NodeNetworkPolicy condition, labelled with its type and status (leader only)",
            self.policy_condition.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader (the one that writes)",
            self.leader.clone(),
        );
        registry.register(
            "aws_requests",
            "AWS API requests by service, operation and result (ok or error, after the SDK's \
             retries)",
            self.aws_requests.clone(),
        );
        registry.register(
            "webhook_requests",
            "aws-node pod admissions by result: patched, or why the pod was let through \
             unchanged (in_sync, unknown_node, no_policy, mode_mismatch, ...)",
            self.webhook_requests.clone(),
        );
        registry.register(
            "subnet_free_addresses",
            "Addresses EC2 can still assign one by one in a subnet of a policy's fleet (leader only)",
            self.subnets.free_addresses.clone(),
        );
        registry.register(
            "subnet_free_aligned_prefixes",
            "Free /28 blocks on /28 boundaries (delegable prefixes) in a subnet (leader only)",
            self.subnets.free_aligned_prefixes.clone(),
        );
        registry.register(
            "subnet_fragmented_addresses",
            "Free addresses in no free aligned /28 of a subnet (leader only)",
            self.subnets.fragmented_addresses.clone(),
        );
        registry.register(
            "subnet_headroom_nodes",
            "How many more nodes of an instance type fit in a subnet (leader only)",
            self.subnets.headroom_nodes.clone(),
        );
    }

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
