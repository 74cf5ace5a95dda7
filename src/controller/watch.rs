//! The run loop: watches policies, nodes and the aws-node DaemonSet into the caches and runs a
//! debounced fleet reconcile on every change, on a periodic resync and when this replica becomes
//! the leader; retries failures with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use super::{Context, reconcile_fleet, retry_delay};
use crate::crd::NodeNetworkPolicy;
use crate::karpenter::resources::{EC2NodeClass, NodePool};
use crate::karpenter::resources::{node_class_facts, node_pool_facts};
use crate::metrics::ListModeLabels;
use crate::observe::facts::{aws_node_facts, node_facts};
use crate::observe::node_classes::{self as karpenter, Watched};
use crate::observe::node_view::NodeView;
use tokio::task::JoinHandle;

/// Settings of the run loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Re-plan at least this often, even without events.
    pub resync: Duration,
    /// Wait this long after an event for more before planning, once the fleet has been
    /// planned: the first plan runs as soon as every cache holds its initial list.
    pub debounce: Duration,
}

/// Watches policies, nodes and the aws-node DaemonSet into the context's caches and reconciles
/// on every change until `shutdown` flips. A reconcile in progress finishes before it returns.
pub async fn run(ctx: Arc<Context>, config: LoopConfig, mut shutdown: watch::Receiver<bool>) {
    let trigger = Arc::new(Notify::new());
    let mut watchers = {
        let policies: Api<NodeNetworkPolicy> = Api::all(ctx.client().clone());
        let daemonsets: Api<DaemonSet> =
            Api::namespaced(ctx.client().clone(), &ctx.observed().managed.namespace);
        let ds_config = watcher::Config::default()
            .fields(&format!("metadata.name={}", ctx.observed().managed.name));
        let (c1, c2, c3) = (ctx.clone(), ctx.clone(), ctx.clone());
        let (t1, t2, t3) = (trigger.clone(), trigger.clone(), trigger.clone());
        vec![
            tokio::spawn(async move {
                feed(
                    policies,
                    watcher::Config::default(),
                    &t1,
                    |e| c1.observed().policies.apply(e, Clone::clone),
                    |_| false,
                )
                .await
            }),
            tokio::spawn(async move { watch_nodes(&c2, &t2).await }),
            tokio::spawn(async move {
                feed(
                    daemonsets,
                    ds_config,
                    &t3,
                    |e| c3.observed().aws_node.apply(e, aws_node_facts),
                    |_| false,
                )
                .await
            }),
        ]
    };

    let mut backoff = retry_backoff();
    let mut requeue: Option<Duration> = None;
    // The debounce gathers a burst of changes into one plan. Until the first plan there is
    // nothing to gather: each cache triggers once, when its initial list is complete, and the
    // plan waits for the last of them anyway. Nor when this replica has just become the
    // leader: it acts on what it saw as a follower.
    let mut planned = false;
    loop {
        let was_leader = ctx.is_leader();
        let requeued = async {
            match requeue {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = trigger.notified() => {}
            _ = requeued => debug!("a step asked to look again"),
            _ = tokio::time::sleep(config.resync) => debug!("periodic resync"),
            // What a follower saw (drift, new nodes) is acted on as soon as it leads, not at the
            // next resync.
            _ = became_leader(ctx.leader(), was_leader) => {
                info!("became the leader; reconciling");
                planned = false;
            }
            _ = shutdown.changed() => break,
        }
        if planned {
            tokio::select! {
                _ = tokio::time::sleep(config.debounce) => {}
                _ = shutdown.changed() => break,
            }
        }
        start_wanted_watches(&ctx, &trigger, &mut watchers);
        if !ctx.caches_ready() {
            continue;
        }
        planned = true;
        match reconcile_fleet(&ctx).await {
            Ok(report) => {
                backoff = retry_backoff();
                requeue = report.requeue_after;
                if report.wrote() {
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

/// Starts the watches only some policies need, once one does: Karpenter's NodePools and
/// EC2NodeClasses, and the aws-node pods.
fn start_wanted_watches(
    ctx: &Arc<Context>,
    trigger: &Arc<Notify>,
    watchers: &mut Vec<JoinHandle<()>>,
) {
    let (ctx, trigger) = (ctx.clone(), trigger.clone());
    if !ctx.observed().karpenter.started.load(Ordering::Acquire)
        && ctx.observed().policies.is_ready()
        && karpenter::wanted(ctx.observed())
    {
        info!("a policy lists Karpenter EC2NodeClasses: watching NodePools and EC2NodeClasses");
        ctx.observed()
            .karpenter
            .started
            .store(true, Ordering::Release);
        watchers.extend(watch_karpenter(&ctx, &trigger));
    }
    if !ctx.observed().aws_node_pods_started.load(Ordering::Acquire)
        && ctx.observed().policies.is_ready()
        && ctx
            .observed()
            .policies
            .snapshot()
            .iter()
            .any(|(_, p)| p.spec.warm_pool.per_instance_type)
    {
        info!("a policy sets warmPool.perInstanceType: watching the aws-node pods");
        ctx.observed()
            .aws_node_pods_started
            .store(true, Ordering::Release);
        watchers.push(watch_aws_node_pods(&ctx, &trigger));
    }
}

/// The NodePool and EC2NodeClass watches. A list that fails because a CRD is missing or RBAC
/// refuses it is recorded (the policies' status says so) and retried with backoff.
fn watch_karpenter(ctx: &Arc<Context>, trigger: &Arc<Notify>) -> Vec<JoinHandle<()>> {
    let pools: Api<NodePool> = Api::all(ctx.client().clone());
    let classes: Api<EC2NodeClass> = Api::all(ctx.client().clone());
    let (c1, c2) = (ctx.clone(), ctx.clone());
    let (t1, t2) = (trigger.clone(), trigger.clone());
    vec![
        tokio::spawn(async move {
            feed(
                pools,
                watcher::Config::default(),
                &t1,
                |e| {
                    let done = matches!(e, watcher::Event::InitDone);
                    let changed = c1.observed().karpenter.node_pools.apply(e, node_pool_facts);
                    (done
                        && c1
                            .observed()
                            .karpenter
                            .set_unavailable(Watched::NodePools, None))
                        || changed
                },
                |err| {
                    karpenter::list_problem("NodePool (karpenter.sh/v1)", err).is_some_and(|p| {
                        c1.observed()
                            .karpenter
                            .set_unavailable(Watched::NodePools, Some(p))
                    })
                },
            )
            .await
        }),
        tokio::spawn(async move {
            feed(
                classes,
                watcher::Config::default(),
                &t2,
                |e| {
                    let done = matches!(e, watcher::Event::InitDone);
                    let changed = c2
                        .observed()
                        .karpenter
                        .node_classes
                        .apply(e, node_class_facts);
                    (done
                        && c2
                            .observed()
                            .karpenter
                            .set_unavailable(Watched::NodeClasses, None))
                        || changed
                },
                |err| {
                    karpenter::list_problem("EC2NodeClass (karpenter.k8s.aws/v1)", err).is_some_and(
                        |p| {
                            c2.observed()
                                .karpenter
                                .set_unavailable(Watched::NodeClasses, Some(p))
                        },
                    )
                },
            )
            .await
        }),
    ]
}

/// The managed DaemonSet's pods (label `k8s-app=aws-node` in its namespace), for the warm env
/// they run with and the rolling restart.
fn watch_aws_node_pods(ctx: &Arc<Context>, trigger: &Arc<Notify>) -> JoinHandle<()> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(ctx.client().clone(), &ctx.observed().managed.namespace);
    let config = watcher::Config::default().labels("k8s-app=aws-node");
    let (c, t) = (ctx.clone(), trigger.clone());
    tokio::spawn(async move {
        feed(
            pods,
            config,
            &t,
            |e| {
                c.observed()
                    .aws_node_pods
                    .apply(e, crate::observe::facts::aws_node_pod_facts)
            },
            |_| false,
        )
        .await
    })
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

/// The Node watch's paged initial list, 250 Nodes a page. Every page makes etcd count the rest
/// of the range (`remainingItemCount`), so fewer pages cost etcd far less; every page is also
/// held in memory while it is read. Measured at 100,000 nodes (`benches/scale.rs`): 100 a page,
/// Ready in 37 s with etcd at 22 CPU seconds, peak 85 MiB; 500 a page, 25 s and 8 CPU seconds,
/// but 101 MiB.
pub fn node_watch_config() -> watcher::Config {
    watcher::Config::default().page_size(250)
}

/// The Node watch's streaming initial list (`sendInitialEvents=true`, the WatchList feature):
/// one watch the API server answers from its watch cache, instead of a LIST of pages.
pub(crate) fn node_streaming_config() -> watcher::Config {
    watcher::Config::default().streaming_lists()
}

/// Whether the API server refused a streaming initial list: WatchList off or a Kubernetes before
/// 1.27 (`sendInitialEvents` and `resourceVersionMatch` are invalid on a watch: 400 or 422), or
/// storage that cannot serve it (etcd before 3.4.31 / 3.5.13 lacks the progress notifications
/// it needs: 500 "the required storage feature RequestWatchProgress is disabled").
fn streaming_refused(err: &watcher::Error) -> bool {
    let status = match err {
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status,
        watcher::Error::WatchError(status) => status,
        _ => return false,
    };
    matches!(status.code, 400 | 422)
        || ["RequestWatchProgress", "sendInitialEvents", "WatchList"]
            .iter()
            .any(|word| status.message.contains(word))
}

/// Streaming initial lists that fail this many times in a row, before ever completing, are
/// given up for paged lists.
const STREAMING_ATTEMPTS: u32 = 3;

/// Feeds Nodes into the cache: a streaming initial list where the API server serves one, else
/// (it refuses `sendInitialEvents`) a paged list, for the rest of the process.
async fn watch_nodes(ctx: &Arc<Context>, trigger: &Notify) {
    let nodes: Api<NodeView> = Api::all(ctx.node_client().client.clone());
    let mode = |streaming: bool| ListModeLabels {
        mode: if streaming { "streaming" } else { "paged" },
    };
    let mut streaming = true;
    loop {
        ctx.metrics().node_initial_list.clear();
        ctx.metrics()
            .node_initial_list
            .get_or_create(&mode(streaming))
            .set(1);
        let config = if streaming {
            node_streaming_config()
        } else {
            node_watch_config()
        };
        let mut refused = false;
        let mut listed = false;
        let mut failures = 0;
        let mut events = watcher(nodes.clone(), config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    if ctx.observed().nodes.apply(event, node_facts) {
                        trigger.notify_one();
                    }
                    if done {
                        listed = true;
                        // After the list took effect: the count is the new one.
                        info!(
                            mode = mode(streaming).mode,
                            encoding = ctx.node_client().encoding(),
                            nodes = ctx.observed().nodes.len(),
                            "listed nodes"
                        );
                    }
                }
                Err(err) if streaming && !listed => {
                    failures += 1;
                    if streaming_refused(&err) || failures >= STREAMING_ATTEMPTS {
                        warn!(%err, "the API server does not serve streaming lists; listing nodes in pages");
                        refused = true;
                        break;
                    }
                    warn!(%err, "streaming node list failed; retrying");
                }
                Err(err) => warn!(%err, "watch error; the watcher retries with backoff"),
            }
        }
        if !refused {
            return;
        }
        streaming = false;
    }
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Feeds a watch into a cache: `apply` takes each event, `on_error` each error; either returns
/// whether the change calls for a reconcile.
async fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    trigger: &Notify,
    mut apply: impl FnMut(watcher::Event<K>) -> bool,
    mut on_error: impl FnMut(&watcher::Error) -> bool,
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
            Err(err) => {
                warn!(%err, "watch error; the watcher retries with backoff");
                if on_error(&err) {
                    trigger.notify_one();
                }
            }
        }
    }
}
