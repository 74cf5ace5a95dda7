//! Fenced writes: with leader election, every external write (Kubernetes or AWS) is checked
//! against the lease right before it is sent, not once per reconcile. A reconcile can spend
//! minutes in AWS calls; a replica that lost the lease in between (a renewal that failed, a
//! pause longer than the lease) must write nothing more, judged on its own clock: the lease
//! counts as held until the start of the last successful renewal plus the lease duration, less a
//! retry period of margin. Two doors share one [`Fence`]: a tower layer on the Kubernetes client
//! ([`FenceLayer`]; reads and the Lease itself pass) and an AWS SDK interceptor
//! ([`FenceInterceptor`]; `Describe*`, `Get*` and `List*` pass).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Method, Request};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A write was refused: this replica does not hold the lease (any more).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "not written: this replica does not hold the leader lease (lost or expired by its own clock)"
)]
pub struct FenceClosed;

#[derive(Debug, Default)]
struct State {
    /// Leader election is on: writes need the lease.
    elected: bool,
    /// The lease is held until then (by this replica's clock).
    held_until: Option<Instant>,
}

/// Whether this replica may write now. Without leader election it is always open.
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<Mutex<State>>);

impl Fence {
    /// Always open (no leader election: one replica writes).
    pub fn open() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Leader election is on: closed until the lease is held.
    pub fn elect(&self) {
        let mut state = self.state();
        state.elected = true;
        state.held_until = None;
    }

    /// The lease was acquired or renewed; it holds until `until` by this replica's clock.
    pub fn held_until(&self, until: Instant) {
        self.state().held_until = Some(until);
    }

    /// The lease is not held (lost, released, a renewal failed).
    pub fn lost(&self) {
        self.state().held_until = None;
    }

    /// Ok when a write may be sent now.
    pub fn check(&self) -> Result<(), FenceClosed> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), FenceClosed> {
        let state = self.state();
        match (state.elected, state.held_until) {
            (false, _) => Ok(()),
            (true, Some(until)) if now < until => Ok(()),
            _ => Err(FenceClosed),
        }
    }
}

/// Fences the Kubernetes client's writes: anything but GET and HEAD, except on Leases (the
/// election itself).
#[derive(Debug, Clone)]
pub struct FenceLayer(pub Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FenceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FenceService {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// See [`FenceLayer`].
#[derive(Debug, Clone)]
pub struct FenceService<S> {
    inner: S,
    fence: Fence,
}

/// Whether a Kubernetes request writes something the fence guards.
fn fenced(method: &Method, path: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let lease = path.starts_with("/apis/coordination.k8s.io/");
    !read && !lease
}

impl<S, B> tower::Service<Request<B>> for FenceService<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if fenced(request.method(), request.uri().path())
            && let Err(closed) = self.fence.check()
        {
            return Box::pin(async move { Err(closed.into()) });
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

/// Fences an AWS SDK client's writes: every operation but `Describe*`, `Get*` and `List*`.
#[derive(Debug, Clone)]
pub struct FenceInterceptor(pub Fence);

/// Whether an AWS operation only reads.
fn reads(operation: &str) -> bool {
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for FenceInterceptor {
    fn name(&self) -> &'static str {
        "vpc-cni-tuner fence"
    }

    // Not `read_before_execution`: a client's interceptors run that before the operation's
    // configuration (and so its name) is in the bag.
    fn read_before_serialization(
        &self,
        _context: &aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_default();
        if reads(&operation) {
            return Ok(());
        }
        self.0.check().map_err(|closed| {
            tracing::warn!(%operation, "AWS write not sent: the leader lease is not held");
            closed.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn open_without_election_and_held_only_until_the_local_deadline() {
        let fence = Fence::open();
        assert!(fence.check().is_ok());
        fence.elect();
        assert!(fence.check().is_err(), "closed until the lease is held");
        let now = Instant::now();
        fence.held_until(now + Duration::from_secs(11));
        assert!(fence.check_at(now + Duration::from_secs(10)).is_ok());
        assert!(
            fence.check_at(now + Duration::from_secs(11)).is_err(),
            "expired by this replica's clock, renewed or not"
        );
        fence.lost();
        assert!(fence.check_at(now).is_err());
    }

    #[test]
    fn reads_and_the_lease_pass_writes_are_fenced() {
        assert!(!fenced(
            &Method::GET,
            "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node"
        ));
        assert!(fenced(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node"
        ));
        assert!(fenced(
            &Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events"
        ));
        assert!(fenced(
            &Method::DELETE,
            "/api/v1/namespaces/kube-system/pods/aws-node-x"
        ));
        assert!(!fenced(
            &Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/vpc-cni-tuner/leases/vpc-cni-tuner"
        ));
        for read in [
            "DescribeLaunchTemplateVersions",
            "GetSubnetCidrReservations",
            "ListNodegroups",
        ] {
            assert!(reads(read), "{read}");
        }
        for write in [
            "CreateLaunchTemplateVersion",
            "ModifyLaunchTemplate",
            "StartInstanceRefresh",
            "UpdateNodegroupVersion",
            "UpdateAddon",
            "CreateSubnetCidrReservation",
        ] {
            assert!(!reads(write), "{write}");
        }
    }
}
