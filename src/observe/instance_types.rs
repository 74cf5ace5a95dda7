//! Live instance-type lookup: node types the embedded table lacks are asked of EC2
//! `DescribeInstanceTypes`, batched and cached, so brand-new types work without a release.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::aws::Ec2Provider;
use crate::instance::{InstanceCatalog, InstanceLimits};
use crate::plan::NodeFacts;

/// How long live instance-type answers are kept: found types for a day, unknown ones briefly.
const INSTANCE_TYPE_TTL: Duration = Duration::from_secs(24 * 3600);
const UNKNOWN_INSTANCE_TYPE_TTL: Duration = Duration::from_secs(600);

/// Instance types looked up live, and when each was last asked for.
#[derive(Default)]
pub struct LiveInstanceTypes {
    known: RwLock<BTreeMap<String, InstanceLimits>>,
    /// When each unknown instance type was last looked up live, and whether EC2 knew it.
    lookups: Mutex<HashMap<String, (Instant, bool)>>,
}

impl LiveInstanceTypes {
    /// The types EC2 answered for.
    pub fn known(&self) -> BTreeMap<String, InstanceLimits> {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Looks up, with EC2 `DescribeInstanceTypes`, node instance types `catalog` lacks, so
    /// brand-new types work without a release. Batched; answers are cached with a TTL.
    pub(crate) async fn refresh(
        &self,
        provider: &dyn Ec2Provider,
        catalog: &InstanceCatalog,
        nodes: &[Arc<NodeFacts>],
    ) {
        refresh(self, provider, catalog, nodes).await;
    }
}

async fn refresh(
    live: &LiveInstanceTypes,
    provider: &dyn Ec2Provider,
    catalog: &InstanceCatalog,
    nodes: &[Arc<NodeFacts>],
) {
    // Distinct types first: thousands of nodes share a handful of types.
    let types: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.instance_type().ok())
        .collect();
    let due: Vec<String> = {
        let known = live.known.read().unwrap_or_else(PoisonError::into_inner);
        let lookups = live.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        types
            .into_iter()
            .filter(|t| catalog.lookup_with_source(t).is_none())
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
    let mut lookups = live.lookups.lock().unwrap_or_else(PoisonError::into_inner);
    let mut extra = live.known.write().unwrap_or_else(PoisonError::into_inner);
    for (name, limits) in &found {
        extra.insert(name.clone(), *limits);
    }
    for name in due {
        let known = found.iter().any(|(n, _)| *n == name);
        lookups.insert(name, (now, known));
    }
}
