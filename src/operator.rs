//! Wires the running operator together: the controller loop, the admin server and (with
//! `--leader-elect`) the lease, all stopped by one shutdown signal.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::info;

use crate::aws::Ec2Endpoint;
use crate::cli::RunArgs;
use crate::controller::launch_templates::{Ec2Provider, SdkProvider};
use crate::controller::{self, Context, LoopConfig};
use crate::leader::{self, LeaseConfig};

/// Runs until `shutdown` flips, then lets the current reconcile finish, releases the lease and
/// stops the admin server. EC2 is reached through aws-config's standard chain with the
/// `--aws-region` / `--ec2-endpoint-url` overrides.
pub async fn run(
    client: Client,
    args: RunArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // EC2 clients are built on first use: a cluster without launch templates or unknown
    // instance types never loads AWS configuration and makes no AWS call.
    let ec2 = SdkProvider::new(Ec2Endpoint {
        region: args.aws_region.clone(),
        endpoint_url: args.ec2_endpoint_url.clone(),
    });
    run_with_ec2(client, args, Some(Arc::new(ec2)), shutdown).await
}

/// [`run`] with the given EC2 access (`None`: none at all).
pub async fn run_with_ec2(
    client: Client,
    args: RunArgs,
    ec2: Option<Arc<dyn Ec2Provider>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let leader_flag = Arc::new(AtomicBool::new(!args.leader_elect));
    let mut ctx = Context::new(client.clone(), args.daemonset.clone(), leader_flag.clone());
    ctx.ec2 = ec2;
    let ctx = Arc::new(ctx);
    info!(daemonset = %args.daemonset, leader_elect = args.leader_elect, "starting vpc-cni-tuner");

    let admin = tokio::spawn(crate::admin::serve(
        args.admin_addr,
        ctx.clone(),
        shutdown.clone(),
    ));
    let lease = args.leader_elect.then(|| {
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
            shutdown.clone(),
        ))
    });
    controller::run(
        ctx,
        LoopConfig {
            resync: Duration::from_secs(args.resync_seconds),
            debounce: Duration::from_millis(args.debounce_millis),
        },
        shutdown,
    )
    .await;
    if let Some(lease) = lease {
        lease.await?;
    }
    admin.await??;
    Ok(())
}
