//! Karpenter as observed: the NodePool and EC2NodeClass caches (watched only once a policy lists
//! a node class, and only with `--karpenter`), and whether Karpenter is there at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use kube::runtime::watcher;

use super::Observed;
use super::cache::ProjectedCache;
use crate::crd::conditions::Reason;
use crate::karpenter::resources::{NodeClassFacts, NodePoolFacts};
use crate::plan::KarpenterAvailability;

/// The controller's view of Karpenter.
#[derive(Default)]
pub struct KarpenterState {
    /// `--karpenter`: the operator may watch NodePools and EC2NodeClasses and patch the latter.
    pub enabled: bool,
    pub node_pools: ProjectedCache<NodePoolFacts>,
    pub node_classes: ProjectedCache<NodeClassFacts>,
    /// The watches run (started once a policy lists a node class).
    pub started: AtomicBool,
    /// Why each watch (NodePools, EC2NodeClasses) cannot list (a CRD missing, RBAC), until it
    /// can.
    unavailable: Mutex<[Option<(Reason, String)>; 2]>,
}

/// Which Karpenter watch a list result is about.
#[derive(Debug, Clone, Copy)]
pub enum Watched {
    NodePools = 0,
    NodeClasses = 1,
}

impl KarpenterState {
    pub(crate) fn availability(&self) -> KarpenterAvailability {
        if !self.enabled {
            return KarpenterAvailability::Disabled;
        }
        let problem = self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .next()
            .cloned();
        if let Some((reason, message)) = problem {
            return KarpenterAvailability::Unavailable { reason, message };
        }
        if self.node_pools.is_ready() && self.node_classes.is_ready() {
            KarpenterAvailability::Ready
        } else {
            KarpenterAvailability::Pending
        }
    }

    /// Whether the plan can be made: the watches are not needed, or listed, or known to fail.
    pub fn settled(&self) -> bool {
        !self.started.load(Ordering::Acquire)
            || self.availability() != KarpenterAvailability::Pending
    }

    /// Records a watch's list result; returns whether it changed.
    pub(crate) fn set_unavailable(
        &self,
        watch: Watched,
        problem: Option<(Reason, String)>,
    ) -> bool {
        let mut all = self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = &mut all[watch as usize];
        let changed = *current != problem;
        *current = problem;
        changed
    }
}

/// Whether a policy lists an EC2NodeClass, so the watches are wanted.
pub fn wanted(observed: &Observed) -> bool {
    observed.karpenter.enabled
        && observed
            .policies
            .snapshot()
            .iter()
            .any(|(_, p)| !p.spec.ec2_node_classes().is_empty())
}

/// What a failed list of `what` means for the status, if it is a lasting problem.
pub(crate) fn list_problem(what: &str, err: &watcher::Error) -> Option<(Reason, String)> {
    let watcher::Error::InitialListFailed(kube::Error::Api(status)) = err else {
        return None;
    };
    match status.code {
        404 => Some((
            Reason::KarpenterNotInstalled,
            format!(
                "the {what} CRD (Karpenter v1) is not installed: install Karpenter, or remove \
                 spec.karpenter from the policy"
            ),
        )),
        403 => Some((
            Reason::AccessDenied,
            format!(
                "the operator may not list {what}: {}; set the chart value \
                 karpenter.enabled=true, which grants it",
                status.message
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One watch listing fine does not clear the other's problem.
    #[test]
    fn each_watch_keeps_its_own_problem() {
        let state = KarpenterState {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(state.availability(), KarpenterAvailability::Pending);
        let missing = (
            Reason::KarpenterNotInstalled,
            "no EC2NodeClass CRD".to_owned(),
        );
        assert!(state.set_unavailable(Watched::NodeClasses, Some(missing.clone())));
        assert!(!state.set_unavailable(Watched::NodePools, None));
        assert_eq!(
            state.availability(),
            KarpenterAvailability::Unavailable {
                reason: missing.0,
                message: missing.1
            }
        );
        assert!(state.set_unavailable(Watched::NodeClasses, None));
        state.node_pools.replace_all([]);
        state.node_classes.replace_all([]);
        assert_eq!(state.availability(), KarpenterAvailability::Ready);
        let disabled = KarpenterState::default();
        assert_eq!(disabled.availability(), KarpenterAvailability::Disabled);
    }
}
