//! Where the controller gets its EC2 APIs: one client per region, built on first use.

use std::collections::HashMap;
use std::sync::Arc;

use super::launch_templates::{LaunchTemplateApi, SdkLaunchTemplates};
use super::launchers::LauncherClients;
use super::{AwsEndpoint, Ec2Error, sdk_config};

/// Hands out an EC2 API per region (`None`: the operator's default region).
#[async_trait::async_trait]
pub trait Ec2Provider: Send + Sync {
    /// Fails with [`Ec2Error::NoRegion`] when `region` is `None` and no default region is known.
    async fn api(&self, region: Option<&str>) -> Result<Arc<dyn LaunchTemplateApi>, Ec2Error>;
}

/// Clients from aws-config's standard chain (IRSA / Pod Identity, `AWS_REGION`, the instance
/// metadata service, `AWS_ENDPOINT_URL`), created on first use, so a cluster that needs no AWS
/// never loads configuration or credentials and makes no AWS call.
#[derive(Default)]
pub struct SdkProvider {
    /// `--aws-region` / `--ec2-endpoint-url`; unset parts come from the chain.
    defaults: AwsEndpoint,
    clients: tokio::sync::Mutex<HashMap<Option<String>, Arc<SdkLaunchTemplates>>>,
}

impl SdkProvider {
    pub fn new(defaults: AwsEndpoint) -> Self {
        Self {
            defaults,
            clients: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl Ec2Provider for SdkProvider {
    async fn api(&self, region: Option<&str>) -> Result<Arc<dyn LaunchTemplateApi>, Ec2Error> {
        let mut clients = self.clients.lock().await;
        let key = region.map(str::to_owned);
        if let Some(api) = clients.get(&key) {
            return Ok(api.clone());
        }
        // Only a client that found its region is kept: a region the metadata service could not
        // give now is asked for again on the next pass.
        // One load of aws-config's chain (credentials, region) for the region's clients; only
        // EC2 takes `--ec2-endpoint-url`, Auto Scaling and EKS keep the chain's endpoints.
        let config = sdk_config(&AwsEndpoint {
            region: key.clone().or_else(|| self.defaults.region.clone()),
            endpoint_url: None,
            fence: self.defaults.fence.clone(),
        })
        .await;
        if config.region().is_none() {
            return Err(Ec2Error::NoRegion);
        }
        let mut ec2 = aws_sdk_ec2::config::Builder::from(&config)
            .interceptor(super::fence_interceptor(&self.defaults));
        if let Some(url) = &self.defaults.endpoint_url {
            ec2 = ec2.endpoint_url(url);
        }
        let client = aws_sdk_ec2::Client::from_conf(ec2.build());
        let launchers = LauncherClients::from_config(&config, &self.defaults);
        let api = Arc::new(SdkLaunchTemplates::new(client).with_launchers(launchers));
        clients.insert(key, api.clone());
        Ok(api)
    }
}
