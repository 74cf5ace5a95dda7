//! Live instance-type lookup: node types the embedded table lacks are asked of EC2
//! `DescribeInstanceTypes`, batched and cached, so brand-new types work without a release.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use tracing::warn;

use super::Context;
use crate::plan::NodeFacts;

/// How long live instance-type answers are kept: found types for a day, unknown ones briefly.
pub(super) const INSTANCE_TYPE_TTL: Duration = Duration::from_secs(24 * 3600);
pub(super) const UNKNOWN_INSTANCE_TYPE_TTL: Duration = Duration::from_secs(600);

/// Looks up, with EC2 `DescribeInstanceTypes`, node instance types the embedded table lacks, so
/// brand-new types work without a release. Batched; answers are cached with a TTL.
pub(super) async fn refresh_unknown_instance_types(ctx: &Context, nodes: &[Arc<NodeFacts>]) {
    let Some(provider) = &ctx.ec2 else {
        return;
    };
    // Distinct types first: thousands of nodes share a handful of types.
    let types: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.instance_type().ok())
        .collect();
    let due: Vec<String> = {
        let known = ctx
            .extra_facts
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let lookups = ctx
            .type_lookups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
    let mut lookups = ctx
        .type_lookups
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut extra = ctx
        .extra_facts
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    for (name, limits) in &found {
        extra.insert(name.clone(), *limits);
    }
    for name in due {
        let known = found.iter().any(|(n, _)| *n == name);
        lookups.insert(name, (now, known));
    }
}
