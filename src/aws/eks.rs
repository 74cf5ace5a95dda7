//! The EKS add-on calls: DescribeAddon, DescribeAddonConfiguration, UpdateAddon and
//! DescribeUpdate on the add-on `vpc-cni`, behind [`EksAddonApi`] (one cluster's add-on) and
//! [`EksProvider`] (an API per cluster). [`SdkEksProvider`] builds one SDK client per cluster on
//! first use (aws-config's chain, with `--aws-region` and `--eks-endpoint-url`); tests use the
//! in-process fake in `crate::testing`. Above this layer only plain values ([`AddonFacts`],
//! [`UpdateFacts`]) are seen.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_eks::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eks::types::ResolveConflicts;

use super::AwsEndpoint;
use crate::eks_addon::ADDON_NAME;
use crate::eks_addon::{AddonFacts, UpdateFacts};

/// An EKS call that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EksError {
    #[error("eks:{action} failed: {code}: {message}")]
    Api {
        /// The IAM action (`UpdateAddon`), which is also the API operation.
        action: &'static str,
        code: String,
        message: String,
        status: Option<u16>,
    },
    #[error(
        "no AWS region is configured for EKS: set AWS_REGION (Helm value aws.region, flag \
         --aws-region), or run where the EC2 instance metadata service answers"
    )]
    NoRegion,
}

impl EksError {
    fn from_sdk<E>(action: &'static str, error: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, message, status) = super::sdk_error_parts(&error);
        Self::Api {
            action,
            code,
            message,
            status,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::NoRegion => None,
        }
    }

    /// The IAM policy does not allow the action.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Self::Api { code, status, .. }
            if code.contains("AccessDenied") || code == "UnauthorizedOperation" || *status == Some(403))
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.code() == Some("ResourceNotFoundException")
    }

    /// The IAM action that failed (`eks:UpdateAddon`).
    pub fn action(&self) -> Option<String> {
        match self {
            Self::Api { action, .. } => Some(format!("eks:{action}")),
            Self::NoRegion => None,
        }
    }

    /// The error and, for access denied, the IAM fix (the action on the add-on's ARN).
    pub fn with_fix(&self, cluster: &str) -> String {
        if self.is_access_denied() {
            format!(
                "{self}: allow {} on the add-on \
                 arn:aws:eks:REGION:ACCOUNT:addon/{cluster}/{ADDON_NAME}/* in the operator's IAM \
                 role (README, EKS add-on mode)",
                self.action().unwrap_or_default()
            )
        } else {
            self.to_string()
        }
    }

    /// Throttling or a server fault: worth a retry after a backoff, not a condition.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, status, .. } => {
                code.contains("Throttl")
                    || code == "TooManyRequestsException"
                    || code == "ServerException"
                    || code == "ServiceUnavailableException"
                    || status.is_some_and(|s| s == 429 || s >= 500)
            }
            Self::NoRegion => false,
        }
    }
}

/// The EKS API of one cluster's `vpc-cni` add-on.
#[async_trait::async_trait]
pub trait EksAddonApi: Send + Sync {
    /// The add-on (`None`: the cluster has no `vpc-cni` add-on).
    async fn describe_addon(&self) -> Result<Option<AddonFacts>, EksError>;
    /// The add-on version's configuration JSON schema.
    async fn configuration_schema(&self, version: &str) -> Result<Option<String>, EksError>;
    /// Sends `configuration_values` with `resolveConflicts: PRESERVE` (fields other managers own
    /// on the DaemonSet keep their values), leaving the add-on version and role as they are.
    async fn update_addon(
        &self,
        configuration_values: &str,
        client_request_token: &str,
    ) -> Result<UpdateFacts, EksError>;
    async fn describe_update(&self, id: &str) -> Result<UpdateFacts, EksError>;
}

/// Hands out the add-on API of a cluster.
#[async_trait::async_trait]
pub trait EksProvider: Send + Sync {
    /// Fails with [`EksError::NoRegion`] when no region is known.
    async fn api(&self, cluster: &str) -> Result<Arc<dyn EksAddonApi>, EksError>;
}

/// SDK clients from aws-config's chain with `--aws-region` / `--eks-endpoint-url`, one per
/// cluster, built on first use: a cluster that is not in add-on mode never loads AWS
/// configuration for EKS.
#[derive(Default)]
pub struct SdkEksProvider {
    endpoint: AwsEndpoint,
    clients: tokio::sync::Mutex<HashMap<String, Arc<SdkEks>>>,
}

impl SdkEksProvider {
    pub fn new(endpoint: AwsEndpoint) -> Self {
        Self {
            endpoint,
            clients: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl EksProvider for SdkEksProvider {
    async fn api(&self, cluster: &str) -> Result<Arc<dyn EksAddonApi>, EksError> {
        let mut clients = self.clients.lock().await;
        if let Some(api) = clients.get(cluster) {
            return Ok(api.clone());
        }
        // Only a client that found its region is kept.
        let api = Arc::new(SdkEks::new(cluster, &self.endpoint).await?);
        clients.insert(cluster.to_owned(), api.clone());
        Ok(api)
    }
}

/// [`EksAddonApi`] through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SdkEks {
    client: aws_sdk_eks::Client,
    cluster: String,
}

impl SdkEks {
    /// A client from aws-config's chain with `endpoint`'s overrides (the EKS endpoint URL in
    /// `endpoint.endpoint_url`), or [`EksError::NoRegion`].
    pub async fn new(cluster: &str, endpoint: &AwsEndpoint) -> Result<Self, EksError> {
        let config = super::sdk_config(endpoint).await;
        if config.region().is_none() {
            return Err(EksError::NoRegion);
        }
        let config = aws_sdk_eks::config::Builder::from(&config)
            .interceptor(super::fence_interceptor(endpoint))
            .build();
        Ok(Self::from_client(
            aws_sdk_eks::Client::from_conf(config),
            cluster,
        ))
    }

    /// The API through a given client (tests: a mocked HTTP layer).
    pub fn from_client(client: aws_sdk_eks::Client, cluster: &str) -> Self {
        Self {
            client,
            cluster: cluster.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl EksAddonApi for SdkEks {
    async fn describe_addon(&self) -> Result<Option<AddonFacts>, EksError> {
        let out = match self
            .client
            .describe_addon()
            .cluster_name(&self.cluster)
            .addon_name(ADDON_NAME)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) => {
                let err = EksError::from_sdk("DescribeAddon", err);
                return if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let addon = out.addon();
        Ok(Some(AddonFacts {
            cluster: self.cluster.clone(),
            version: addon.and_then(|a| a.addon_version()).map(str::to_owned),
            status: addon
                .and_then(|a| a.status())
                .map(|s| s.as_str().to_owned()),
            configuration_values: addon
                .and_then(|a| a.configuration_values())
                .map(str::to_owned),
            last_update: None,
        }))
    }

    async fn configuration_schema(&self, version: &str) -> Result<Option<String>, EksError> {
        let out = self
            .client
            .describe_addon_configuration()
            .addon_name(ADDON_NAME)
            .addon_version(version)
            .send()
            .await
            .map_err(|e| EksError::from_sdk("DescribeAddonConfiguration", e))?;
        Ok(out.configuration_schema().map(str::to_owned))
    }

    async fn update_addon(
        &self,
        configuration_values: &str,
        client_request_token: &str,
    ) -> Result<UpdateFacts, EksError> {
        let out = self
            .client
            .update_addon()
            .cluster_name(&self.cluster)
            .addon_name(ADDON_NAME)
            .configuration_values(configuration_values)
            .resolve_conflicts(ResolveConflicts::Preserve)
            .client_request_token(client_request_token)
            .send()
            .await
            .map_err(|e| EksError::from_sdk("UpdateAddon", e))?;
        Ok(update_facts(out.update()))
    }

    async fn describe_update(&self, id: &str) -> Result<UpdateFacts, EksError> {
        let out = self
            .client
            .describe_update()
            .name(&self.cluster)
            .update_id(id)
            .addon_name(ADDON_NAME)
            .send()
            .await
            .map_err(|e| EksError::from_sdk("DescribeUpdate", e))?;
        let mut facts = update_facts(out.update());
        if facts.id.is_empty() {
            facts.id = id.to_owned();
        }
        Ok(facts)
    }
}

fn update_facts(update: Option<&aws_sdk_eks::types::Update>) -> UpdateFacts {
    UpdateFacts {
        id: update.and_then(|u| u.id()).unwrap_or_default().to_owned(),
        status: update
            .and_then(|u| u.status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "InProgress".to_owned()),
        errors: update
            .map(|u| u.errors())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.error_code().map(|c| c.as_str()).unwrap_or("Error"),
                    e.error_message().unwrap_or_default()
                )
            })
            .collect(),
    }
}
