//! What the operator remembers of each policy's subnets between reconciles: the last read (for
//! 5 minutes; a failed read for 1), the last `SubnetCapacity` (for the Events on crossing) and
//! the subnets it created a prefix reservation in (never twice).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::crd::conditions::Reason;
use crate::plan::ConditionPlan;
use crate::plan::subnets::SubnetFacts;

/// A policy's last subnet read.
#[derive(Debug, Clone)]
pub struct CachedSubnets {
    /// The subnets, or the condition that says why they could not be read.
    pub facts: Result<Vec<SubnetFacts>, ConditionPlan>,
}

#[derive(Default)]
struct Inner {
    reads: HashMap<String, (Instant, CachedSubnets)>,
    conditions: HashMap<String, (bool, Reason)>,
    reserved: BTreeSet<String>,
}

/// See the module.
pub struct SubnetCache {
    inner: Mutex<Inner>,
    ttl: Duration,
}

impl Default for SubnetCache {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            ttl: Duration::from_secs(300),
        }
    }
}

impl SubnetCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Policy `name`'s last read while it is fresh.
    pub fn fresh(&self, name: &str) -> Option<CachedSubnets> {
        let inner = self.lock();
        let (at, cached) = inner.reads.get(name)?;
        let ttl = if cached.facts.is_ok() {
            self.ttl
        } else {
            self.ttl / 5
        };
        (at.elapsed() < ttl).then(|| cached.clone())
    }

    pub fn store(&self, name: &str, facts: Result<Vec<SubnetFacts>, ConditionPlan>) {
        self.lock()
            .reads
            .insert(name.to_owned(), (Instant::now(), CachedSubnets { facts }));
    }

    /// Read policy `name`'s subnets again on the next pass.
    pub fn expire(&self, name: &str) {
        self.lock().reads.remove(name);
    }

    /// Whether no prefix reservation was created in `subnet` yet (and from now on one was).
    pub fn first_reservation(&self, subnet: &str) -> bool {
        self.lock().reserved.insert(subnet.to_owned())
    }

    /// Records policy `name`'s `SubnetCapacity` (status, reason); the one before.
    pub fn swap_condition(&self, name: &str, now: (bool, Reason)) -> Option<(bool, Reason)> {
        self.lock().conditions.insert(name.to_owned(), now)
    }
}
