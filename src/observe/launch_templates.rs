//! What the operator remembers of each launch template between reconciles: its last sync.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::plan::{LastSync, SyncResult};

/// The last sync of each launch template, so node churn does not turn into EC2 calls: the
/// plan reuses a result while it is fresh ([`TemplateSyncs::fresh`]) and for the same maxPods
/// and enforcement.
pub struct TemplateSyncs {
    entries: Mutex<HashMap<String, (u32, bool, Instant, SyncResult)>>,
    /// How long an unchanged template's result is reused (a fifth of it after a failure).
    ttl: Duration,
    /// How long while a rollout runs or waits to start (`--rollout-follow-seconds`).
    follow: Duration,
}

impl Default for TemplateSyncs {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            ttl: Duration::from_secs(300),
            follow: Duration::from_secs(30),
        }
    }
}

impl TemplateSyncs {
    /// The results younger than the TTL (a fifth of it for a failure, a tenth while a rollout
    /// runs or waits), by sync key; an Event is
    /// reported once, when it happened, so a reused result carries none.
    pub fn fresh(&self) -> BTreeMap<String, LastSync> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .filter(|(_, (_, _, at, result))| {
                let ttl = if result.rollout_active {
                    self.follow
                } else if result.problem.is_some() {
                    self.ttl / 5
                } else {
                    self.ttl
                };
                at.elapsed() < ttl
            })
            .map(|(key, (wanted, dry_run, _, result))| {
                let last = LastSync {
                    max_pods: *wanted,
                    dry_run: *dry_run,
                    result: SyncResult {
                        updated: None,
                        rollout_events: Vec::new(),
                        ..result.clone()
                    },
                };
                (key.clone(), last)
            })
            .collect()
    }

    /// How often templates with a rollout running or waiting are looked at again.
    pub fn follow_interval(&self) -> Duration {
        self.follow
    }

    /// Sets [`Self::follow_interval`].
    pub fn set_follow_interval(&mut self, every: Duration) {
        self.follow = every;
    }

    /// The last result of `key`, however old: where a rollout record survives between syncs.
    pub fn last(&self, key: &str) -> Option<SyncResult> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(key).map(|(.., result)| result.clone())
    }

    pub fn store(&self, key: String, wanted: u32, dry_run: bool, result: &SyncResult) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.insert(key, (wanted, dry_run, Instant::now(), result.clone()));
    }
}
