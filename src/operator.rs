//! Wires the running operator together: the controller loop, the admin server and (with
//! `--leader-elect`) the lease, all stopped by one shutdown signal.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::info;

use crate::cli::RunArgs;
use crate::controller::{self, Context, LoopConfig};
use crate::leader::{self, LeaseConfig};

/// Runs until `shutdown` flips, then lets the current reconcile finish, releases the lease and
/// stops the admin server.
pub async fn run(
    client: Client,
    args: RunArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let leader_flag = Arc::new(AtomicBool::new(!args.leader_elect));
    let ctx = Arc::new(Context::new(
        client.clone(),
        args.daemonset.clone(),
        leader_flag.clone(),
    ));
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
