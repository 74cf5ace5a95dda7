//! Leader election on a `coordination.k8s.io/v1` Lease: with `--leader-elect`, only the replica
//! holding the lease writes. The decision is a pure function of the lease, the identity and the
//! time; the loop around it does the IO and drops leadership on any failed renewal, well before
//! the lease can expire and another replica take it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Lease timings, as client-go's defaults scaled for a small controller.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and followers retry); must be well below `lease_duration`.
    pub retry_period: Duration,
}

/// What to do with the lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// Decides from the lease spec (`None`: no lease yet).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: jiff::Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    if holder == identity {
        return LeaseDecision::Renew;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if renewed + jiff::SignedDuration::from_secs(duration) > now => {
            LeaseDecision::Follow {
                holder: holder.to_owned(),
            }
        }
        _ => LeaseDecision::Acquire,
    }
}

fn lease_spec(config: &LeaseConfig, previous: Option<&LeaseSpec>, acquire: bool) -> LeaseSpec {
    let now = MicroTime(jiff::Timestamp::now());
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().try_into().unwrap_or(15)),
        acquire_time: if acquire {
            Some(now.clone())
        } else {
            previous.and_then(|s| s.acquire_time.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if acquire {
            transitions + 1
        } else {
            transitions
        }),
        ..Default::default()
    }
}

/// One election round: returns whether we hold the lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
) -> Result<bool, kube::Error> {
    let existing = api.get_opt(&config.name).await?;
    let decision = decide(
        existing.as_ref().and_then(|l| l.spec.as_ref()),
        &config.identity,
        jiff::Timestamp::now(),
    );
    match (decision, existing) {
        (LeaseDecision::Follow { .. }, _) => Ok(false),
        (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(lease_spec(config, None, true)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err),
            }
        }
        (decision, Some(mut lease)) => {
            let acquire = decision == LeaseDecision::Acquire;
            lease.spec = Some(lease_spec(config, lease.spec.as_ref(), acquire));
            // replace carries the resourceVersion we read: a concurrent writer makes it fail
            // with 409 instead of both believing they lead.
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err),
            }
        }
    }
}

/// Keeps `leader` true exactly while this replica holds the lease, until `shutdown`; then
/// releases the lease so a standby takes over without waiting for it to expire.
pub async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    leader: Arc<AtomicBool>,
    fence: crate::fence::Fence,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // The lease runs from about when the server stamped renewTime, which is after this
        // instant: counting from here is conservative. A retry period of margin on top, so the
        // fence closes before another replica could take the lease.
        let started = std::time::Instant::now();
        let round =
            tokio::time::timeout(config.retry_period, try_acquire_or_renew(&api, &config)).await;
        let holds = match round {
            Ok(Ok(holds)) => holds,
            Ok(Err(err)) => {
                warn!(%err, "lease renewal failed; not writing until the lease is held again");
                false
            }
            Err(_) => {
                warn!("lease renewal timed out; not writing until the lease is held again");
                false
            }
        };
        if holds {
            fence.held_until(started + config.lease_duration.saturating_sub(config.retry_period));
        } else {
            fence.lost();
        }
        let was = leader.swap(holds, Ordering::AcqRel);
        if holds != was {
            info!(leader = holds, identity = %config.identity, "leadership changed");
        }
        tokio::select! {
            _ = tokio::time::sleep(config.retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    fence.lost();
    if leader.swap(false, Ordering::AcqRel) {
        release(&api, &config).await;
    }
}

async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    if let Err(err) = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        warn!(%err, "could not release the lease; a standby takes over when it expires");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: &str, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(renewed.parse().expect("time"))),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn decision_table() {
        let now: jiff::Timestamp = "2026-01-01T00:00:20Z".parse().expect("time");
        let cases = [
            (None, LeaseDecision::Acquire),
            (
                Some(spec(None, "2026-01-01T00:00:19Z", 15)),
                LeaseDecision::Acquire,
            ),
            (
                Some(spec(Some("me"), "2026-01-01T00:00:00Z", 15)),
                LeaseDecision::Renew,
            ),
            (
                Some(spec(Some("other"), "2026-01-01T00:00:10Z", 15)),
                LeaseDecision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                Some(spec(Some("other"), "2026-01-01T00:00:04Z", 15)),
                LeaseDecision::Acquire,
            ),
            // Exactly at expiry it is expired.
            (
                Some(spec(Some("other"), "2026-01-01T00:00:05Z", 15)),
                LeaseDecision::Acquire,
            ),
        ];
        for (lease, want) in cases {
            assert_eq!(decide(lease.as_ref(), "me", now), want, "{lease:?}");
        }
    }
}
