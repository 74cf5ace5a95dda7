//! Wires the running operator together: the controller loop, the admin server and (with
//! `--leader-elect`) the lease, all stopped by one shutdown signal.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{error, info};

use crate::aws::AwsEndpoint;
use crate::aws::eks::SdkEksProvider;
use crate::aws::{Ec2Provider, SdkProvider};
use crate::cli::RunArgs;
use crate::controller::{self, Clients, Context, LoopConfig};
use crate::fence::Fence;
use crate::leader::{self, LeaseConfig};

/// Runs until `shutdown` flips, then lets the current reconcile finish, releases the lease and
/// stops the admin server. EC2 is reached through aws-config's standard chain with the
/// `--aws-region` / `--ec2-endpoint-url` overrides.
pub async fn run(
    clients: Clients,
    args: RunArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // EC2 clients are built on first use: a cluster without launch templates or unknown
    // instance types never loads AWS configuration and makes no AWS call.
    let ec2 = SdkProvider::new(AwsEndpoint {
        region: args.aws_region.clone(),
        endpoint_url: args.ec2_endpoint_url.clone(),
        fence: clients.fence.clone(),
    });
    run_with_ec2(clients, args, Some(Arc::new(ec2)), shutdown).await
}

/// The leader-election task, with `--leader-elect`.
fn lease(
    args: &RunArgs,
    client: &Client,
    leader_flag: &Arc<AtomicBool>,
    fence: &Fence,
    stopped: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    args.leader_elect.then(|| {
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("{}-{}", crate::crd::FIELD_MANAGER, std::process::id()));
        let config = LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity,
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(4),
        };
        let api = kube::Api::namespaced(client.clone(), &config.namespace);
        tokio::spawn(leader::run(
            api,
            config,
            leader_flag.clone(),
            fence.clone(),
            stopped.clone(),
        ))
    })
}

/// The webhook task, with `--webhook-addr`.
fn webhook(
    args: &RunArgs,
    client: &Client,
    ctx: &Arc<Context>,
    stopped: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<std::io::Result<()>>> {
    let addr = args.webhook_addr?;
    let config = crate::webhook::server::WebhookConfig {
        addr,
        namespace: args.lease_namespace.clone(),
        secret: args.webhook_secret.clone(),
        configuration: args.webhook_configuration.clone(),
        hosts: args.webhook_hosts.clone(),
        source: args.webhook_cert_source,
    };
    Some(tokio::spawn(crate::webhook::server::run(
        config,
        client.clone(),
        ctx.clone(),
        stopped.clone(),
    )))
}

/// The controller's context from the flags.
fn context(
    client: Client,
    args: &RunArgs,
    ec2: Option<Arc<dyn Ec2Provider>>,
    leader_flag: Arc<AtomicBool>,
    fence: &Fence,
) -> Context {
    let eks = SdkEksProvider::new(AwsEndpoint {
        region: args.aws_region.clone(),
        endpoint_url: args.eks_endpoint_url.clone(),
        fence: fence.clone(),
    });
    Context::new(client, args.daemonset.clone(), leader_flag)
        .with_ec2_access(ec2)
        .with_karpenter(args.karpenter)
        .with_status_count_window(Duration::from_secs(args.status_count_seconds))
        .with_restart_timeout(Duration::from_secs(
            args.restart_ready_timeout_seconds.max(1),
        ))
        .with_rollouts(
            args.rollouts,
            std::time::Duration::from_secs(args.rollout_follow_seconds.max(1)),
        )
        .with_eks(
            args.cni_config_via,
            args.eks_cluster_name.clone(),
            Arc::new(eks),
        )
}

/// [`run`] with the given EC2 access (`None`: none at all).
pub async fn run_with_ec2(
    clients: impl Into<Clients>,
    args: RunArgs,
    ec2: Option<Arc<dyn Ec2Provider>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Clients {
        api: client,
        nodes,
        fence,
    } = clients.into();
    let leader_flag = Arc::new(AtomicBool::new(!args.leader_elect));
    if args.leader_elect {
        // Every write waits for the lease, checked right before it is sent.
        fence.elect();
    }
    let ctx =
        context(client.clone(), &args, ec2, leader_flag.clone(), &fence).with_node_client(nodes);
    let ctx = Arc::new(ctx);
    info!(daemonset = %args.daemonset, leader_elect = args.leader_elect, karpenter = args.karpenter, rollouts = args.rollouts, cni_config_via = ?args.cni_config_via, "starting vpc-cni-tuner");

    // One stop signal for every task: the caller's shutdown, or a task that ended unexpectedly.
    let (stop, stopped) = watch::channel(false);
    let mut caller_shutdown = shutdown.clone();
    let forward_stop = stop.clone();
    tokio::spawn(async move {
        if caller_shutdown.changed().await.is_ok() && *caller_shutdown.borrow() {
            let _ = forward_stop.send(true);
        }
    });

    let mut admin = tokio::spawn(crate::admin::serve(
        args.admin_addr,
        ctx.clone(),
        stopped.clone(),
    ));
    let mut lease = lease(&args, &client, &leader_flag, &fence, &stopped);
    let mut webhook = webhook(&args, &client, &ctx, &stopped);
    let mut controller = tokio::spawn(controller::run(
        ctx,
        LoopConfig {
            resync: Duration::from_secs(args.resync_seconds),
            debounce: Duration::from_millis(args.debounce_millis),
        },
        stopped,
    ));

    // Supervise: every task runs until the stop signal; one that ends before it is a failure
    // (a busy admin port, a panic), which stops the others and makes the process exit non-zero
    // so that Kubernetes restarts it.
    let lease_ended = async {
        match lease.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let webhook_ended = async {
        match webhook.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let failure: Option<anyhow::Error> = tokio::select! {
        ended = webhook_ended => match ended {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(anyhow::Error::new(err).context("the webhook server failed")),
            Err(err) => Some(anyhow::anyhow!("the webhook task failed: {err}")),
        },
        ended = &mut controller => ended.err().map(|e| anyhow::anyhow!("the controller task failed: {e}")),
        ended = &mut admin => match ended {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(anyhow::Error::new(err).context(format!("the admin server on {} failed", args.admin_addr))),
            Err(err) => Some(anyhow::anyhow!("the admin server task failed: {err}")),
        },
        ended = lease_ended => ended.err().map(|e| anyhow::anyhow!("the leader-election task failed: {e}")),
    };
    let expected = *shutdown.borrow();
    let failure = match failure {
        Some(err) => Some(err),
        None if !expected => Some(anyhow::anyhow!(
            "a task of the operator stopped before the shutdown signal"
        )),
        None => None,
    };
    if let Some(err) = &failure {
        error!("{err:#}; stopping");
    }
    let _ = stop.send(true);
    // The rest finish: the reconcile in flight, the lease release, the admin server.
    if !controller.is_finished() {
        let _ = controller.await;
    }
    if let Some(lease) = lease.filter(|l| !l.is_finished()) {
        let _ = lease.await;
    }
    if !admin.is_finished() {
        let _ = admin.await;
    }
    if let Some(webhook) = webhook.filter(|w| !w.is_finished()) {
        let _ = webhook.await;
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
