//! What the operator remembers of a policy's rolling restart of aws-node pods.

use std::time::Instant;

/// A policy's rolling restart.
#[derive(Debug, Clone, Default)]
pub struct Restart {
    /// The node whose pod was deleted, that pod's uid and when.
    pub waiting_for: Option<(String, String, Instant)>,
    /// Pods restarted so far.
    pub restarted: u32,
    /// The policy generation it failed at, and why: no more restarts until the spec changes.
    pub failed: Option<(Option<i64>, String)>,
}
