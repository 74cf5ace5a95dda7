//! The EC2 adapter: AWS SDK clients ([`provider`], one per region, built on first use) and the
//! calls the project makes ([`launch_templates`], [`instance_types`]). Everything above this
//! layer sees plain values ([`crate::instance::InstanceLimits`], an opaque
//! [`launch_templates::LaunchTemplateData`]), never SDK types.

pub mod counted;
pub mod eks;
pub mod instance_types;
pub mod launch_templates;
pub mod launchers;
pub mod provider;
pub mod subnets;

pub use provider::{Ec2Provider, SdkProvider};

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

/// Where to reach an AWS service (EC2; EKS in add-on mode). Unset fields fall back to
/// aws-config's standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, IRSA / Pod Identity).
#[derive(Debug, Clone, Default)]
pub struct AwsEndpoint {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// Writes (anything but `Describe*`, `Get*`, `List*`) only while the lease is held; open
    /// by default.
    pub fence: crate::fence::Fence,
}

/// The SDK interceptor every client gets: its writes are fenced by `endpoint`'s lease.
pub(crate) fn fence_interceptor(endpoint: &AwsEndpoint) -> crate::fence::FenceInterceptor {
    crate::fence::FenceInterceptor(endpoint.fence.clone())
}

/// Retries (the SDK's standard mode: exponential backoff with jitter, throttling-aware) and
/// timeouts so a slow or throttling EC2 never hangs a reconcile.
const MAX_ATTEMPTS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);

/// The retry policy of every EC2 client: the SDK's standard mode, which backs off exponentially
/// with jitter on throttling (`RequestLimitExceeded`) and 5xx, and does not retry client errors
/// such as `UnauthorizedOperation`.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// An EC2 client from aws-config's standard chain, with `endpoint`'s overrides.
pub async fn ec2_client(endpoint: &AwsEndpoint) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::config::Builder::from(&sdk_config(endpoint).await)
        .interceptor(fence_interceptor(endpoint))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// aws-config's chain with the project's retries and timeouts and `endpoint`'s overrides.
pub(crate) async fn sdk_config(endpoint: &AwsEndpoint) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config());
    if let Some(region) = &endpoint.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

/// An EC2 call that failed, with the AWS error code when there is one.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("EC2 {operation} failed: {code}: {message}")]
    Api {
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("EC2 {operation} answered with data the operator cannot use: {reason}")]
    BadResponse {
        operation: &'static str,
        reason: String,
    },
    #[error(
        "no AWS region is configured for EC2: set AWS_REGION (Helm value aws.region, flag \
         --aws-region) or the launch template's region, or run where the EC2 instance metadata \
         service answers"
    )]
    NoRegion,
}

impl Ec2Error {
    /// The AWS error code (`RequestLimitExceeded`, `UnauthorizedOperation`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::BadResponse { .. } | Self::NoRegion => None,
        }
    }

    pub(crate) fn from_sdk<E>(
        operation: &'static str,
        error: aws_sdk_ec2::error::SdkError<E>,
    ) -> Self
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, message, _) = sdk_error_parts(&error);
        Self::Api {
            operation,
            code,
            message,
        }
    }
}

/// An SDK error's AWS code (`Unknown` when there is none), message and HTTP status; every
/// service client shares these smithy types.
pub(crate) fn sdk_error_parts<E>(
    error: &aws_sdk_ec2::error::SdkError<E>,
) -> (String, String, Option<u16>)
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    let code = error.code().unwrap_or("Unknown").to_owned();
    let message = error
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| aws_sdk_ec2::error::DisplayErrorContext(error).to_string());
    let status = error.raw_response().map(|r| r.status().as_u16());
    (code, message, status)
}
