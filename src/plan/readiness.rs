//! Each policy's conditions (Ready, CNIConfigured, Conflict, Degraded) from its evaluation and
//! the cluster-wide decision.

use super::*;

/// What keeps the cluster-wide aws-node write from happening.
#[derive(Clone, Copy, Default)]
pub(super) struct Blockers<'b> {
    /// The env cannot be written at all (Ready False): valueFrom, duplicates, no add-on.
    pub env: Option<&'b Blocked>,
    /// aws-node is left to its other owner (CNIConfigured False; the policy stays Ready).
    pub owner: Option<&'b Blocked>,
}

/// A condition the plan wants.
fn cond(type_: &'static str, status: bool, reason: Reason, message: String) -> ConditionPlan {
    ConditionPlan {
        type_,
        status,
        reason,
        message,
    }
}

/// Sets the policy's conditions: Ready, CNIConfigured, Conflict and Degraded.
pub(super) fn finish_conditions(
    e: &mut Evaluated<'_>,
    input: &FleetInput<'_>,
    conflict: Option<String>,
    blockers: Blockers<'_>,
    foreign: &[String],
) {
    let dry_run = e.input.spec.enforcement == Enforcement::DryRun;
    let ready = ready(e, input, blockers.env, dry_run);
    let ready_ok = ready.status;
    let cni_configured = cni_configured(e, input, ready_ok, conflict.is_some(), blockers);
    let degraded = degraded(e, input, ready_ok && conflict.is_none(), foreign);
    let conflict = match conflict {
        Some(message) => cond(
            conditions::CONFLICT,
            true,
            Reason::LostToOlderPolicy,
            message,
        ),
        None => cond(
            conditions::CONFLICT,
            false,
            Reason::NoConflict,
            "no other policy disagrees".to_owned(),
        ),
    };
    e.plan.conditions = vec![ready, cni_configured, conflict, degraded];
}

/// Ready: the policy has a recommendation and nothing keeps it from being applied.
fn ready(
    e: &Evaluated<'_>,
    input: &FleetInput<'_>,
    env_blocker: Option<&Blocked>,
    dry_run: bool,
) -> ConditionPlan {
    let spec = e.input.spec;
    let ds_missing = input.aws_node.is_none() && &spec.daemon_set == input.managed_daemonset;
    match (&e.outcome, ds_missing) {
        (Err(blocked), _) => cond(
            conditions::READY,
            false,
            blocked.reason,
            blocked.message.clone(),
        ),
        (Ok(_), true) => cond(
            conditions::READY,
            false,
            Reason::DaemonSetNotFound,
            format!(
                "DaemonSet {} does not exist; install the VPC CNI (the vpc-cni add-on) or set \
                 spec.daemonSet",
                input.managed_daemonset
            ),
        ),
        (Ok(_), false) if !dry_run && env_blocker.is_some() => {
            let blocked = env_blocker.map(|b| (b.reason, b.message.clone()));
            let (reason, message) = blocked.unwrap_or((Reason::Blocked, String::new()));
            cond(conditions::READY, false, reason, message)
        }
        (Ok(None), false) => cond(
            conditions::READY,
            true,
            Reason::NoMatchingNodes,
            "the node selector matches no node the VPC CNI serves; nothing to tune".to_owned(),
        ),
        (Ok(Some(_)), false) if dry_run => cond(
            conditions::READY,
            true,
            Reason::DryRun,
            "computed; DryRun writes nothing".to_owned(),
        ),
        (Ok(Some(_)), false) => cond(
            conditions::READY,
            true,
            Reason::Reconciled,
            format!("{} nodes planned", e.plan.matched_nodes),
        ),
    }
}

/// CNIConfigured: whether aws-node carries the policy's env, or what keeps it from it.
fn cni_configured(
    e: &Evaluated<'_>,
    input: &FleetInput<'_>,
    ready_ok: bool,
    conflict: bool,
    blockers: Blockers<'_>,
) -> ConditionPlan {
    if !ready_ok {
        cond(
            conditions::CNI_CONFIGURED,
            false,
            Reason::NotReady,
            "see the Ready condition".to_owned(),
        )
    } else if matches!(e.outcome, Ok(None)) {
        cond(
            conditions::CNI_CONFIGURED,
            false,
            Reason::NoMatchingNodes,
            "nothing to configure".to_owned(),
        )
    } else if e.input.spec.enforcement == Enforcement::DryRun {
        dry_run_cni_configured(e, input, blockers.env)
    } else if conflict {
        cond(
            conditions::CNI_CONFIGURED,
            false,
            Reason::Conflict,
            "an older policy decides the aws-node env; see the Conflict condition".to_owned(),
        )
    } else if let Some(owner) = blockers.owner {
        cond(
            conditions::CNI_CONFIGURED,
            false,
            owner.reason,
            owner.message.clone(),
        )
    } else {
        // The same message before and after the write, so a write costs one status patch; the
        // write itself is recorded as an Event.
        cond(
            conditions::CNI_CONFIGURED,
            true,
            Reason::InSync,
            format!("{} carries these settings", input.managed_daemonset),
        )
    }
}

/// CNIConfigured of a DryRun policy (which stays Ready): what the write would run into (a
/// blocker of the cluster-wide write, or of this policy's own env on aws-node).
fn dry_run_cni_configured(
    e: &Evaluated<'_>,
    input: &FleetInput<'_>,
    env_blocker: Option<&Blocked>,
) -> ConditionPlan {
    let would = input.aws_node.map(|ds| env_changes(ds, &e.plan.cni_env));
    let blocked = env_blocker
        .cloned()
        .or_else(|| would.clone().and_then(Result::err));
    let would_change = would
        .and_then(Result::ok)
        .map(|changes| changes.len())
        .unwrap_or(0);
    if let Some(blocked) = blocked {
        cond(
            conditions::CNI_CONFIGURED,
            false,
            blocked.reason,
            blocked.message,
        )
    } else if would_change == 0 {
        cond(
            conditions::CNI_CONFIGURED,
            true,
            Reason::InSync,
            format!("{} already carries these settings", input.managed_daemonset),
        )
    } else {
        cond(
            conditions::CNI_CONFIGURED,
            false,
            Reason::DryRun,
            format!(
                "would change {would_change} env var(s) on {}; set enforcement: Enforce to apply",
                input.managed_daemonset
            ),
        )
    }
}

/// Degraded: the policy's warnings, values another manager overrides, and an EKS-managed
/// aws-node written directly.
fn degraded(
    e: &Evaluated<'_>,
    input: &FleetInput<'_>,
    ready_and_conflict_free: bool,
    foreign: &[String],
) -> ConditionPlan {
    let dry_run = e.input.spec.enforcement == Enforcement::DryRun;
    let mut degraded: Vec<String> = e.plan.warnings.clone();
    if !foreign.is_empty() && !dry_run {
        degraded.push(format!(
            "{} set by another manager overrides the warm-pool settings; remove it from the \
             vpc-cni add-on configuration",
            foreign.join(", ")
        ));
    }
    // Told to write an EKS-managed aws-node directly (--cni-config-via daemonset), the env
    // entries the operator owns make add-on updates with resolveConflicts NONE fail.
    if let CniTarget::DaemonSet {
        addon_warning: true,
    } = input.cni_target
        && !dry_run
        && ready_and_conflict_free
        && matches!(e.outcome, Ok(Some(_)))
    {
        let names: Vec<&str> = e.plan.cni_env.keys().map(String::as_str).collect();
        degraded.push(format!(
            "{} is the EKS managed add-on vpc-cni (field manager eks) and this operator owns its \
             env entries {}: an add-on update with resolveConflicts NONE fails with a conflict \
             on them, and OVERWRITE resets them until the next reconcile. Run the operator with \
             --cni-config-via auto or eks-addon (chart value cniConfigVia) so it writes the \
             add-on's configurationValues instead, or update the add-on with \
             --resolve-conflicts PRESERVE",
            input.managed_daemonset,
            names.join(", ")
        ));
    }
    if degraded.is_empty() {
        cond(
            conditions::DEGRADED,
            false,
            Reason::AsExpected,
            "nothing to report".to_owned(),
        )
    } else {
        cond(
            conditions::DEGRADED,
            true,
            Reason::Warnings,
            degraded.join("; "),
        )
    }
}
