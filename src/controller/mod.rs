//! The controller: observe (watch caches) -> decide ([`crate::plan`], pure) -> apply (server-side
//! apply of the aws-node env) -> status (server-side apply of each policy's status).
//!
//! The aws-node env is one cluster-wide decision over every policy, so the controller runs one
//! fleet reconcile per batch of changes rather than one per object: any change to a policy, a
//! node's planning facts or the aws-node DaemonSet triggers it (debounced), and a periodic resync
//! catches anything missed.

pub mod cache;
pub mod facts;
pub mod launch_templates;
pub mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::aws::Ec2Provider;
use crate::crd::condition::Reason;
use crate::crd::{
    DaemonSetRef, Enforcement, FIELD_MANAGER, LaunchTemplateStatus, NodeNetworkPolicy, condition,
};
use crate::instance::{InstanceCatalog, InstanceLimits};
use crate::metrics::{ErrorLabels, InstanceTypeLabels, Metrics, WriteLabels};
use crate::plan::{
    AwsNodeFacts, DaemonSetWrite, FleetInput, FleetPlan, NodeFacts, PolicyInput, plan_fleet,
};
use cache::ProjectedCache;
use facts::{AWS_NODE_CONTAINER, aws_node_facts, node_facts};
use launch_templates::{
    SyncCache, nodes_by_instance, sync_template, synced_condition, unreachable_template,
};
use status::LaunchTemplateReport;
use status::{desired_status, owned_part, status_changed};

/// Where an API call lands, which is what an RBAC rule can be narrowed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Cluster-wide (cluster-scoped resources, or every namespace).
    Cluster,
    /// The one DaemonSet of `--daemonset`: its namespace, `resourceNames: [its name]` (list and
    /// watch too: the watch asks for `fieldSelector=metadata.name=NAME`, which RBAC authorizes
    /// against `resourceNames`).
    ManagedDaemonSet,
    /// The leader Lease: `--lease-namespace`, `resourceNames: [--lease-name]`.
    Lease,
    /// `--lease-namespace`, any name: a create cannot be narrowed to a name.
    LeaseNamespace,
    /// The `default` namespace: Events about cluster-scoped objects (the policies) go there.
    DefaultNamespace,
}

/// One Kubernetes API call the controller makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub scope: Scope,
    /// Made only with `--leader-elect`.
    pub leader_election_only: bool,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    scope: Scope,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        scope,
        leader_election_only: false,
    }
}

const fn lease(verb: &'static str, scope: Scope) -> ApiCall {
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        verb,
        scope,
        leader_election_only: true,
    }
}

/// Every Kubernetes API call the controller makes: the whole RBAC an install needs. The mocked-API
/// tests check that every request the controller sends is on this list, and `tests/chart.rs`
/// that the Helm chart's RBAC grants exactly this list, no more.
pub const API_CALLS: &[ApiCall] = &[
    call("", "nodes", "list", Scope::Cluster),
    call("", "nodes", "watch", Scope::Cluster),
    call(
        "tuner.vpccni.io",
        "nodenetworkpolicies",
        "list",
        Scope::Cluster,
    ),
    call(
        "tuner.vpccni.io",
        "nodenetworkpolicies",
        "watch",
        Scope::Cluster,
    ),
    call(
        "tuner.vpccni.io",
        "nodenetworkpolicies/status",
        "patch",
        Scope::Cluster,
    ),
    call("apps", "daemonsets", "list", Scope::ManagedDaemonSet),
    call("apps", "daemonsets", "watch", Scope::ManagedDaemonSet),
    call("apps", "daemonsets", "patch", Scope::ManagedDaemonSet),
    call("events.k8s.io", "events", "create", Scope::DefaultNamespace),
    lease("get", Scope::Lease),
    lease("update", Scope::Lease),
    lease("create", Scope::LeaseNamespace),
];

/// Every EC2 action the operator calls; `tests/docs.rs` checks that the README's IAM policy grants
/// exactly these.
pub const EC2_ACTIONS: &[&str] = &[
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:CreateLaunchTemplateVersion",
    "ec2:ModifyLaunchTemplate",
    "ec2:DescribeInstances",
];

/// How long live instance-type answers are kept: found types for a day, unknown ones briefly.
const INSTANCE_TYPE_TTL: Duration = Duration::from_secs(24 * 3600);
const UNKNOWN_INSTANCE_TYPE_TTL: Duration = Duration::from_secs(600);

/// Errors of one fleet reconcile. Invalid input never gets here: it becomes a condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) => match status.code {
                429 => "throttled",
                409 => "conflict",
                404 => "not_found",
                401 | 403 => "forbidden",
                500..=599 => "server",
                _ => "client",
            },
            Self::Kube(_) => "transport",
        }
    }

    /// The wait the API server asked for (`Retry-After`, carried in a 429 or 503 Status as
    /// `details.retryAfterSeconds`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Kube(kube::Error::Api(status)) => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            Self::Kube(_) => None,
        }
    }
}

/// How long to wait before retrying after `err`: the exponential backoff, but never less than the
/// API server's `Retry-After`.
pub fn retry_delay(err: &Error, backoff: Duration) -> Duration {
    backoff.max(err.retry_after().unwrap_or_default())
}

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
    /// When each unknown instance type was last looked up live, and whether EC2 knew it.
    type_lookups: std::sync::Mutex<std::collections::HashMap<String, (Instant, bool)>>,
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
            type_lookups: Default::default(),
        }
    }

    /// Gives the controller EC2 access (launch templates, live instance types).
    pub fn with_ec2(mut self, provider: Arc<dyn Ec2Provider>) -> Self {
        self.ec2 = Some(provider);
        self
    }

    /// All watch caches have their first full list.
    pub fn caches_ready(&self) -> bool {
        self.policies.is_ready() && self.nodes.is_ready() && self.aws_node.is_ready()
    }

    fn aws_node_key(&self) -> String {
        format!("{}/{}", self.managed.namespace, self.managed.name)
    }
}

/// What one reconcile wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub daemonset_written: bool,
    pub statuses_written: usize,
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
    plan_with(ctx, &ctx.nodes.snapshot())
}

/// Plans from the policy and DaemonSet caches and a node snapshot.
fn plan_with(
    ctx: &Context,
    nodes: &[(String, Arc<NodeFacts>)],
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
        .map(|e| e.clone())
        .unwrap_or_default();
    let names: Vec<String> = policies.iter().map(|p| p.name_any()).collect();
    let input = FleetInput {
        policies: policies
            .iter()
            .zip(&names)
            .map(|(p, name)| PolicyInput::from_policy(p, name))
            .collect(),
        nodes: nodes.iter().map(|(_, n)| n.as_ref()).collect(),
        aws_node: aws_node.as_deref(),
        managed_daemonset: &ctx.managed,
        catalog: &ctx.catalog,
        extra_facts: &extra,
    };
    let plan = plan_fleet(&input);
    (policies, plan)
}

async fn reconcile_inner(ctx: &Context) -> Result<ReconcileReport, Error> {
    // One node snapshot per reconcile, shared by every step.
    let nodes = ctx.nodes.snapshot();
    if ctx.leader.load(Ordering::Acquire) {
        refresh_unknown_instance_types(ctx, &nodes).await;
    }
    let (policies, plan) = plan_with(ctx, &nodes);
    ctx.metrics.cached_nodes.set(nodes.len() as i64);
    update_gauges(&ctx.metrics, &plan);
    let mut report = ReconcileReport::default();
    if !ctx.leader.load(Ordering::Acquire) {
        debug!("not the leader: planned, writing nothing");
        return Ok(report);
    }

    if let Some(write) = &plan.daemonset_write {
        apply_daemonset(ctx, write).await?;
        report.daemonset_written = true;
        if let Some(policy) = policies.iter().find(|p| p.name_any() == write.policy) {
            let drift = write.changes.iter().any(|c| c.drift);
            let changes: Vec<String> = write.changes.iter().map(ToString::to_string).collect();
            publish(
                ctx,
                policy,
                if drift {
                    "AwsNodeEnvRestored"
                } else {
                    "AwsNodeEnvUpdated"
                },
                EventType::Normal,
                format!("{}: {}", write.reference, changes.join(", ")),
            )
            .await;
        }
    }

    let templates = sync_launch_templates(ctx, &policies, &plan, &nodes).await;

    let now = Time(jiff::Timestamp::now());
    for policy in &policies {
        let name = policy.name_any();
        let Some(policy_plan) = plan.policies.get(&name) else {
            continue;
        };
        let desired = desired_status(
            policy_plan,
            templates.get(&name),
            policy.status.as_ref(),
            now.clone(),
        );
        if !status_changed(&desired, policy.status.as_ref()) {
            continue;
        }
        let api: Api<NodeNetworkPolicy> = Api::all(ctx.client.clone());
        let body = json!({
            "apiVersion": "tuner.vpccni.io/v1alpha1",
            "kind": "NodeNetworkPolicy",
            "metadata": {"name": name},
            "status": owned_part(&desired),
        });
        let patched = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        ctx.metrics
            .writes
            .get_or_create(&WriteLabels { target: "status" })
            .inc();
        report.statuses_written += 1;
        // The watch will bring the same object; taking it now keeps the next pass from
        // patching again before it arrives.
        ctx.policies
            .apply(watcher::Event::Apply(patched), Clone::clone);
        if let Some(ready) = desired.conditions.iter().find(|c| c.type_ == "Ready")
            && ready.status == "False"
        {
            let was_false = policy
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "False" && c.reason == ready.reason);
            if !was_false {
                publish(
                    ctx,
                    policy,
                    &ready.reason,
                    EventType::Warning,
                    ready.message.clone(),
                )
                .await;
            }
        }
    }
    Ok(report)
}

/// Looks up, with EC2 `DescribeInstanceTypes`, node instance types the embedded table lacks, so
/// brand-new types work without a release. Batched; answers are cached with a TTL.
async fn refresh_unknown_instance_types(ctx: &Context, nodes: &[(String, Arc<NodeFacts>)]) {
    let Some(provider) = &ctx.ec2 else {
        return;
    };
    // Distinct types first: thousands of nodes share a handful of types.
    let types: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter_map(|(_, n)| n.instance_type().ok())
        .collect();
    let due: Vec<String> = {
        let known = ctx.extra_facts.read().unwrap_or_else(|p| p.into_inner());
        let lookups = ctx.type_lookups.lock().unwrap_or_else(|p| p.into_inner());
        types
            .into_iter()
            .filter(|t| ctx.catalog.lookup_with_source(t).is_none())
            .filter(|t| match lookups.get(*t) {
                Some((at, true)) => at.elapsed() > INSTANCE_TYPE_TTL || !known.contains_key(*t),
                Some((at, false)) => at.elapsed() > UNKNOWN_INSTANCE_TYPE_TTL,
                None => true,
            })
            .map(str::to_owned)
            .collect()
    };
    if due.is_empty() {
        return;
    }
    let mut found = Vec::new();
    match provider.api(None).await {
        Err(err) => warn!(%err, types = ?due, "live instance-type lookup impossible"),
        Ok(api) => match api.instance_types(&due).await {
            Ok(answer) => found = answer,
            // One bad name fails the whole call: ask one by one.
            Err(err) if err.code() == Some("InvalidInstanceType") => {
                for name in &due {
                    if let Ok(answer) = api.instance_types(std::slice::from_ref(name)).await {
                        found.extend(answer);
                    }
                }
            }
            Err(err) => warn!(%err, types = ?due, "live instance-type lookup failed"),
        },
    }
    let now = Instant::now();
    let mut lookups = ctx.type_lookups.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(mut extra) = ctx.extra_facts.write() {
        for (name, limits) in &found {
            extra.insert(name.clone(), *limits);
        }
    }
    for name in due {
        let known = found.iter().any(|(n, _)| *n == name);
        lookups.insert(name, (now, known));
    }
}

/// Syncs every policy's launch templates to its maxPods and returns the status parts.
async fn sync_launch_templates(
    ctx: &Context,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    nodes: &[(String, Arc<NodeFacts>)],
) -> BTreeMap<String, LaunchTemplateReport> {
    let mut reports = BTreeMap::new();
    if policies.iter().all(|p| p.spec.launch_templates.is_empty()) {
        return reports;
    }
    let nodes = nodes_by_instance(nodes);
    for policy in policies
        .iter()
        .filter(|p| !p.spec.launch_templates.is_empty())
    {
        let name = policy.name_any();
        let Some(policy_plan) = plan.policies.get(&name) else {
            continue;
        };
        let dry_run = policy.spec.enforcement == Enforcement::DryRun;
        let ready = policy_plan
            .conditions
            .iter()
            .any(|c| c.type_ == condition::READY && c.status);
        let unsynced = |message: &str| -> Vec<LaunchTemplateStatus> {
            policy
                .spec
                .launch_templates
                .iter()
                .map(|t| LaunchTemplateStatus {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    region: t.region.clone(),
                    max_pods_wanted: policy_plan.max_pods.unwrap_or_default(),
                    message: Some(message.to_owned()),
                    ..Default::default()
                })
                .collect()
        };
        let report = match (&ctx.ec2, policy_plan.max_pods) {
            (None, _) => {
                let message =
                    "the operator has no EC2 access configured; it cannot write launch templates";
                LaunchTemplateReport {
                    statuses: unsynced(message),
                    condition: crate::plan::ConditionPlan {
                        type_: condition::LAUNCH_TEMPLATES_SYNCED,
                        status: false,
                        reason: Reason::NoAwsAccess,
                        message: message.to_owned(),
                    },
                }
            }
            (Some(_), Some(wanted)) if ready => {
                let mut results = Vec::new();
                for spec in &policy.spec.launch_templates {
                    let key = format!("{name}/{}", spec.key());
                    let result = match ctx.template_cache.fresh(
                        &key,
                        wanted,
                        dry_run,
                        ctx.template_ttl,
                    ) {
                        Some(result) => result,
                        None => {
                            let Some(provider) = &ctx.ec2 else {
                                continue;
                            };
                            let result = match provider.api(spec.region.as_deref()).await {
                                Ok(api) => {
                                    sync_template(api.as_ref(), spec, wanted, dry_run, &nodes).await
                                }
                                Err(err) => {
                                    warn!(policy = %name, %err, "no EC2 API for a launch template");
                                    unreachable_template(spec, wanted, &err)
                                }
                            };
                            ctx.template_cache.store(key, wanted, dry_run, &result);
                            result
                        }
                    };
                    if let Some(note) = &result.updated {
                        ctx.metrics
                            .writes
                            .get_or_create(&WriteLabels {
                                target: "launch_template",
                            })
                            .inc();
                        info!(policy = %name, %note, "launch template updated");
                        publish(
                            ctx,
                            policy,
                            "LaunchTemplateUpdated",
                            EventType::Normal,
                            note.clone(),
                        )
                        .await;
                    }
                    results.push(result);
                }
                LaunchTemplateReport {
                    condition: synced_condition(&results, dry_run),
                    statuses: results.into_iter().map(|r| r.status).collect(),
                }
            }
            _ => {
                let message = "the policy has no maxPods to write yet; see the Ready condition";
                LaunchTemplateReport {
                    statuses: unsynced(message),
                    condition: crate::plan::ConditionPlan {
                        type_: condition::LAUNCH_TEMPLATES_SYNCED,
                        status: false,
                        reason: Reason::PolicyNotReady,
                        message: message.to_owned(),
                    },
                }
            }
        };
        reports.insert(name, report);
    }
    reports
}

/// Server-side apply of the env entries the operator owns in the aws-node container, and
/// nothing else: other env vars, containers, labels and annotations keep their owners.
async fn apply_daemonset(ctx: &Context, write: &DaemonSetWrite) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &write.reference.namespace);
    let env: Vec<serde_json::Value> = write
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": write.reference.name, "namespace": write.reference.namespace},
        "spec": {"template": {"spec": {"containers": [{"name": AWS_NODE_CONTAINER, "env": env}]}}},
    });
    let patched = api
        .patch(
            &write.reference.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    ctx.metrics
        .writes
        .get_or_create(&WriteLabels {
            target: "daemonset",
        })
        .inc();
    info!(daemonset = %write.reference, policy = %write.policy, changes = ?write.changes, "applied aws-node env");
    ctx.aws_node
        .apply(watcher::Event::Apply(patched), aws_node_facts);
    Ok(())
}

async fn publish(
    ctx: &Context,
    policy: &NodeNetworkPolicy,
    reason: &str,
    type_: EventType,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        // Event notes are limited to 1 kB.
        note: Some(status::truncate(&note, 1000)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // A Recorder per Event: kube's Recorder folds every later Event with the same reason about
    // the same object into the first one's series, keeping the first note, so the second of
    // three launch-template updates (or a later env change) would never be seen. The operator
    // publishes only on changes, so there is nothing to fold.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(err) = recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(%err, reason, "could not record event");
    }
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

/// Settings of the run loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Re-plan at least this often, even without events.
    pub resync: Duration,
    /// Wait this long after an event for more before planning.
    pub debounce: Duration,
}

/// Watches policies, nodes and the aws-node DaemonSet into the context's caches and reconciles
/// on every change until `shutdown` flips. A reconcile in progress finishes before it returns.
pub async fn run(ctx: Arc<Context>, config: LoopConfig, mut shutdown: watch::Receiver<bool>) {
    let trigger = Arc::new(Notify::new());
    let watchers = {
        let policies: Api<NodeNetworkPolicy> = Api::all(ctx.client.clone());
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let daemonsets: Api<DaemonSet> =
            Api::namespaced(ctx.client.clone(), &ctx.managed.namespace);
        let ds_config =
            watcher::Config::default().fields(&format!("metadata.name={}", ctx.managed.name));
        let (c1, c2, c3) = (ctx.clone(), ctx.clone(), ctx.clone());
        let (t1, t2, t3) = (trigger.clone(), trigger.clone(), trigger.clone());
        vec![
            tokio::spawn(async move {
                feed(policies, watcher::Config::default(), &t1, |e| {
                    c1.policies.apply(e, Clone::clone)
                })
                .await
            }),
            tokio::spawn(async move {
                feed(nodes, node_watch_config(), &t2, |e| {
                    c2.nodes.apply(e, node_facts)
                })
                .await
            }),
            tokio::spawn(async move {
                feed(daemonsets, ds_config, &t3, |e| {
                    c3.aws_node.apply(e, aws_node_facts)
                })
                .await
            }),
        ]
    };

    let mut backoff = retry_backoff();
    loop {
        let was_leader = ctx.leader.load(Ordering::Acquire);
        tokio::select! {
            _ = trigger.notified() => {}
            _ = tokio::time::sleep(config.resync) => debug!("periodic resync"),
            // What a follower saw (drift, new nodes) is acted on as soon as it leads, not at the
            // next resync.
            _ = became_leader(&ctx.leader, was_leader) => info!("became the leader; reconciling"),
            _ = shutdown.changed() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(config.debounce) => {}
            _ = shutdown.changed() => break,
        }
        if !ctx.caches_ready() {
            continue;
        }
        match reconcile_fleet(&ctx).await {
            Ok(report) => {
                backoff = retry_backoff();
                if report != ReconcileReport::default() {
                    info!(?report, "reconciled");
                }
            }
            Err(err) => {
                let delay = retry_delay(&err, backoff.next().unwrap_or(Duration::from_secs(300)));
                warn!(%err, kind = err.kind(), ?delay, "reconcile failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => trigger.notify_one(),
                    _ = shutdown.changed() => break,
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    for task in watchers {
        task.abort();
    }
    info!("controller stopped");
}

/// Resolves when `leader` turns true, if it was not (the lease task flips it; polling a flag
/// four times a second costs nothing and keeps the lease task unaware of the controller).
async fn became_leader(leader: &AtomicBool, was_leader: bool) {
    if was_leader {
        return std::future::pending().await;
    }
    while !leader.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Nodes are listed 100 at a time: kubelet-written Nodes are 10-20 KiB each, and smaller pages
/// keep the transient memory of a (re-)list low in large clusters.
pub fn node_watch_config() -> watcher::Config {
    watcher::Config::default().page_size(100)
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    trigger: &Notify,
    mut apply: impl FnMut(watcher::Event<K>) -> bool,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if apply(event) {
                    trigger.notify_one();
                }
            }
            Err(err) => warn!(%err, "watch error; the watcher retries with backoff"),
        }
    }
}
