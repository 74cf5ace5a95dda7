//! Where the aws-node env goes (`resolve`: `--cni-config-via`, the DaemonSet's managedFields,
//! eks:DescribeAddon), and what the operator knows of the EKS add-on between reconciles: the last
//! DescribeAddon, the update it follows (eks:DescribeUpdate), and the write-side memory the apply
//! step keeps ([`AddonState`]).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

use super::Observed;
use crate::aws::AwsEndpoint;
use crate::aws::eks::{EksAddonApi, EksError, EksProvider, SdkEksProvider};
use crate::crd::conditions::Reason;
use crate::eks_addon::{ADDON_NAME, AddonFacts, CLUSTER_NAME_ENV, CniConfigVia, UpdateFacts};
use crate::error::Error;
use crate::plan::{AwsNodeFacts, CniTarget};

/// How long a DescribeAddon answer is used before it is asked again (while a write is wanted, or
/// the DaemonSet does not carry the settings, [`FRESH_ENOUGH`]).
pub(crate) const ADDON_TTL: Duration = Duration::from_secs(300);
/// A reconcile that needs the add-on as it is now still reuses an answer this young, so node
/// churn does not turn into a DescribeAddon per reconcile.
pub(crate) const FRESH_ENOUGH: Duration = Duration::from_secs(5);
/// A DescribeAddon that failed for a reason a retry does not fix soon (access denied, no
/// region) is asked again after this long, not on every reconcile.
const FAILED_READ_RETRY: Duration = Duration::from_secs(60);

/// The add-on mode's settings and what the operator knows of the add-on.
pub struct AddonState {
    pub via: CniConfigVia,
    /// `--eks-cluster-name` / `EKS_CLUSTER_NAME`.
    pub cluster: Option<String>,
    /// The EKS API per cluster (the SDK, or a fake in tests).
    provider: Arc<dyn EksProvider>,
    /// Reads and the write-side memory, one lock: one add-on call at a time.
    pub(crate) inner: tokio::sync::Mutex<AddonMemory>,
    /// The target the last reconcile used (for plans outside a reconcile).
    last_target: std::sync::Mutex<CniTarget>,
}

/// What the operator remembers of the add-on between reconciles.
#[derive(Default)]
pub(crate) struct AddonMemory {
    /// The cluster's add-on API, once made.
    pub(crate) api: Option<(String, Arc<dyn EksAddonApi>)>,
    /// The last DescribeAddon (`None` inside: no such add-on) and when it was made.
    pub(crate) described: Option<(Instant, Option<AddonFacts>)>,
    /// The last DescribeAddon that failed (not transiently), and what it made of it.
    failed_read: Option<(Instant, CniTarget)>,
    /// The last plan wanted a write, or the settings were not on aws-node yet: read the add-on
    /// with [`FRESH_ENOUGH`] rather than [`ADDON_TTL`].
    pub(crate) want_fresh: bool,
    pub(crate) schemas: HashMap<String, Option<String>>,
    pub(crate) last_update: Option<UpdateFacts>,
    pub(crate) last_write: Option<Instant>,
    pub(crate) drift_streak: u32,
    /// Since when the settings have not been on aws-node.
    pub(crate) pending_since: Option<Instant>,
    /// The last refused document: when, the text, and the condition that says why.
    pub(crate) refused: Option<(Instant, String, Reason, String)>,
}

impl AddonMemory {
    /// Remembers that `document` was refused, and why, so it is not sent again for a while.
    pub(crate) fn refuse(&mut self, document: &str, reason: Reason, message: &str) {
        self.refused = Some((
            Instant::now(),
            document.to_owned(),
            reason,
            message.to_owned(),
        ));
    }
}

impl Default for AddonState {
    fn default() -> Self {
        Self::new(
            CniConfigVia::Auto,
            None,
            Arc::new(SdkEksProvider::new(AwsEndpoint::default())),
        )
    }
}

impl AddonState {
    pub fn new(via: CniConfigVia, cluster: Option<String>, provider: Arc<dyn EksProvider>) -> Self {
        Self {
            via,
            cluster: cluster.filter(|c| !c.trim().is_empty()),
            provider,
            inner: Default::default(),
            last_target: Default::default(),
        }
    }

    pub(crate) fn last_target(&self) -> CniTarget {
        self.last_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where the aws-node env goes.
pub(super) async fn resolve(
    observed: &Observed,
    ds: Option<&AwsNodeFacts>,
) -> Result<CniTarget, Error> {
    let target = resolve_inner(observed, ds).await?;
    *observed
        .addon
        .last_target
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = target.clone();
    Ok(target)
}

async fn resolve_inner(observed: &Observed, ds: Option<&AwsNodeFacts>) -> Result<CniTarget, Error> {
    let state = &observed.addon;
    let eks_applies = ds.is_some_and(|d| d.eks_addon);
    match state.via {
        CniConfigVia::DaemonSet => {
            return Ok(CniTarget::DaemonSet {
                addon_warning: eks_applies,
            });
        }
        CniConfigVia::Auto if !eks_applies => {
            return Ok(CniTarget::DaemonSet {
                addon_warning: false,
            });
        }
        _ => {}
    }
    let Some(cluster) = cluster_name(state.cluster.as_deref(), ds) else {
        return Ok(CniTarget::Unavailable {
            reason: Reason::EksClusterUnknown,
            message: format!(
                "{} is applied by EKS (the managed add-on {ADDON_NAME}), so the operator writes \
                 its settings into the add-on's configurationValues, but it does not know the \
                 cluster's name: set --eks-cluster-name or EKS_CLUSTER_NAME (chart value \
                 eks.clusterName). To write the DaemonSet anyway, use --cni-config-via daemonset \
                 (add-on updates with resolveConflicts NONE then fail)",
                observed.managed
            ),
        });
    };
    let mut inner = state.inner.lock().await;
    if let Some((at, target)) = &inner.failed_read
        && at.elapsed() < FAILED_READ_RETRY
    {
        return Ok(target.clone());
    }
    let ttl = if inner.want_fresh {
        FRESH_ENOUGH
    } else {
        ADDON_TTL
    };
    let stale = inner
        .described
        .as_ref()
        .is_none_or(|(at, _)| at.elapsed() > ttl);
    if stale {
        match describe(state, &mut inner, &cluster).await {
            Ok(described) => {
                inner.described = Some((Instant::now(), described));
                inner.failed_read = None;
            }
            Err(err) if err.is_transient() => return Err(Error::Eks(err)),
            Err(err) => {
                let target = unavailable(&err, &cluster);
                inner.failed_read = Some((Instant::now(), target.clone()));
                return Ok(target);
            }
        }
    }
    let described = inner.described.as_ref().and_then(|(_, d)| d.clone());
    Ok(match described {
        Some(mut facts) => {
            facts.last_update = inner.last_update.clone();
            CniTarget::EksAddon(facts)
        }
        // Nothing is written: a wrong cluster name must not make the operator take the fields of
        // an add-on it cannot see.
        None => CniTarget::Unavailable {
            reason: Reason::AddonNotFound,
            message: format!(
                "{} is applied by EKS (field manager eks), but EKS has no add-on {ADDON_NAME} in \
                 cluster {cluster}: fix the cluster name (--eks-cluster-name, chart value \
                 eks.clusterName); if the add-on was deleted with --preserve, run with \
                 --cni-config-via daemonset",
                observed.managed
            ),
        },
    })
}

/// The cluster of the add-on calls: `--eks-cluster-name` / `EKS_CLUSTER_NAME`, else aws-node's
/// `CLUSTER_NAME` env.
pub(crate) fn cluster_name(flag: Option<&str>, ds: Option<&AwsNodeFacts>) -> Option<String> {
    let from_daemonset = ds
        .and_then(|d| d.env_value(CLUSTER_NAME_ENV))
        .and_then(|e| e.value.as_deref());
    flag.or(from_daemonset)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// DescribeAddon, and DescribeUpdate of the operator's update while it runs.
async fn describe(
    state: &AddonState,
    inner: &mut AddonMemory,
    cluster: &str,
) -> Result<Option<AddonFacts>, EksError> {
    let api = match &inner.api {
        Some((of, api)) if of == cluster => api.clone(),
        _ => {
            let api = state.provider.api(cluster).await?;
            inner.api = Some((cluster.to_owned(), api.clone()));
            api
        }
    };
    let facts = api.describe_addon().await?;
    if let Some(update) = inner.last_update.clone().filter(UpdateFacts::in_progress) {
        match api.describe_update(&update.id).await {
            Ok(update) => inner.last_update = Some(update),
            Err(err) if err.is_transient() => return Err(err),
            // Not followed any further (the add-on's own status still says UPDATING while it
            // runs); aws-node shows whether it landed.
            Err(err) => {
                warn!(%err, update = %update.id, "cannot follow the add-on update");
                inner.last_update = None;
            }
        }
    }
    Ok(facts)
}

fn unavailable(err: &EksError, cluster: &str) -> CniTarget {
    if let EksError::NoRegion = err {
        return CniTarget::Unavailable {
            reason: Reason::NoAwsRegion,
            message: err.to_string(),
        };
    }
    CniTarget::Unavailable {
        reason: if err.is_access_denied() {
            Reason::AccessDenied
        } else {
            Reason::AwsError
        },
        message: err.with_fix(cluster),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_from_the_flag_then_aws_node() {
        let ds = |env: &[(&str, &str)]| {
            crate::observe::facts::aws_node_facts(&crate::testing::aws_node_ds(env, &[]))
        };
        let named = ds(&[("CLUSTER_NAME", "prod-eu")]);
        assert_eq!(
            cluster_name(Some("flag"), Some(&named)).as_deref(),
            Some("flag")
        );
        assert_eq!(cluster_name(None, Some(&named)).as_deref(), Some("prod-eu"));
        assert_eq!(
            cluster_name(None, Some(&ds(&[("CLUSTER_NAME", " ")]))),
            None
        );
        assert_eq!(cluster_name(None, Some(&ds(&[]))), None);
        assert_eq!(cluster_name(None, None), None);
    }
}
