//! Errors of one fleet reconcile, with bounded labels for metrics and the retry delay.

use std::time::Duration;

/// Errors of one fleet reconcile. Invalid input never gets here: it becomes a condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Throttling or a server fault of EKS, after the SDK's own retries.
    #[error("EKS: {0}")]
    Eks(#[from] crate::aws::eks::EksError),
}

impl Error {
    /// Every value [`Error::kind`] gives.
    pub const KINDS: &[&str] = &[
        "throttled",
        "conflict",
        "not_found",
        "forbidden",
        "server",
        "client",
        "transport",
        "aws",
    ];

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) => match status.code {
                429 => "throttled",
                409 => "conflict",
                404 => "not_found",
                401 | 403 => "forbidden",
                500..=599 => "server",
                _ => "client",
            },
            Self::Kube(_) => "transport",
            Self::Eks(_) => "aws",
        }
    }

    /// The wait the API server asked for (`Retry-After`, carried in a 429 or 503 Status as
    /// `details.retryAfterSeconds`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Kube(kube::Error::Api(status)) => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            Self::Kube(_) | Self::Eks(_) => None,
        }
    }
}

/// How long to wait before retrying after `err`: the exponential backoff, but never less than the
/// API server's `Retry-After`.
pub fn retry_delay(err: &Error, backoff: Duration) -> Duration {
    backoff.max(err.retry_after().unwrap_or_default())
}
