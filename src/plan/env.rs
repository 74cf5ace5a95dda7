//! The aws-node env: what a write would change, what blocks it, and what other managers set.

use super::*;

/// The changes that make the DaemonSet carry `env`, or why it cannot be written safely.
pub(super) fn env_changes(
    ds: &AwsNodeFacts,
    env: &BTreeMap<String, String>,
) -> Result<Vec<EnvChange>, Blocked> {
    if !ds.container_found {
        return Err(Blocked {
            reason: Reason::AwsNodeContainerMissing,
            message: format!(
                "DaemonSet {} has no container named aws-node; the operator only writes that \
                 container's env",
                ds.reference
            ),
        });
    }
    for name in warm_pool::MANAGED_ENV_VARS {
        let entries: Vec<&EnvEntry> = ds.env.iter().filter(|e| e.name == name).collect();
        if entries.len() > 1 {
            return Err(Blocked {
                reason: Reason::DuplicateEnv,
                message: format!(
                    "the aws-node container of {} lists {name} {} times; remove the duplicates so \
                     the operator can manage it",
                    ds.reference,
                    entries.len()
                ),
            });
        }
        if entries.first().is_some_and(|e| e.from_source) && env.contains_key(name) {
            return Err(Blocked {
                reason: Reason::EnvFromSource,
                message: format!(
                    "{name} in the aws-node container of {} comes from valueFrom (a ConfigMap or \
                     Secret); remove valueFrom so the operator can set it",
                    ds.reference
                ),
            });
        }
    }
    let mut changes = Vec::new();
    for (name, value) in env {
        let current = ds.env_value(name).and_then(|e| e.value.clone());
        if current.as_ref() != Some(value) {
            changes.push(EnvChange {
                name: name.clone(),
                drift: current.is_some() && ds.owned_env.contains(name),
                from: current,
                to: Some(value.clone()),
            });
        }
    }
    // Entries this operator set before and no longer wants: leaving them out of the apply
    // removes them.
    for name in &ds.owned_env {
        if !env.contains_key(name) && ds.env_value(name).is_some() {
            changes.push(EnvChange {
                name: name.clone(),
                from: ds.env_value(name).and_then(|e| e.value.clone()),
                to: None,
                drift: false,
            });
        }
    }
    Ok(changes)
}

/// Warm targets someone else set that override the operator's settings.
pub(super) fn foreign_overrides(ds: &AwsNodeFacts, env: &BTreeMap<String, String>) -> Vec<String> {
    [warm_pool::WARM_IP_TARGET, warm_pool::MINIMUM_IP_TARGET]
        .into_iter()
        .filter(|name| !env.contains_key(*name) && !ds.owned_env.contains(*name))
        .filter_map(|name| {
            let value = ds.env_value(name)?.value.clone()?;
            (value.trim() != "0" && !value.trim().is_empty()).then(|| format!("{name}={value}"))
        })
        .collect()
}

pub(super) fn describe_env_diff(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> String {
    let differing: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if differing.is_empty() {
        "no other settings".to_owned()
    } else {
        differing.join(", ")
    }
}
