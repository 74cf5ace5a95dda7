//! Decorators that report every AWS request to an observer (the metrics' `aws_requests_total`)
//! without this layer knowing about metrics: [`counted_ec2`] and [`counted_eks`] wrap a provider
//! so every API it hands out reports each call's operation and whether it succeeded.

use std::sync::Arc;

use super::eks::{EksAddonApi, EksError, EksProvider};
use super::launch_templates::{LaunchTemplateApi, SubnetQuery, TemplateRef, TemplateVersion};
use super::{Ec2Error, Ec2Provider};
use crate::eks_addon::{AddonFacts, UpdateFacts};
use crate::instance::InstanceLimits;
use crate::rollout::{Launcher, UpdateProgress};
use crate::subnet::{InterfaceInfo, ReservationInfo, SubnetInfo};

/// Every (service, operation) the decorators report.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("ec2", "DescribeLaunchTemplateVersions"),
    ("ec2", "CreateLaunchTemplateVersion"),
    ("ec2", "ModifyLaunchTemplate"),
    ("ec2", "DescribeInstances"),
    ("ec2", "DescribeInstanceTypes"),
    ("ec2", "DescribeSubnets"),
    ("ec2", "DescribeNetworkInterfaces"),
    ("ec2", "GetSubnetCidrReservations"),
    ("ec2", "CreateSubnetCidrReservation"),
    ("autoscaling", "DescribeAutoScalingGroups"),
    ("autoscaling", "StartInstanceRefresh"),
    ("autoscaling", "DescribeInstanceRefreshes"),
    ("eks", "DescribeNodegroup"),
    ("eks", "UpdateNodegroupVersion"),
    ("eks", "DescribeAddon"),
    ("eks", "DescribeAddonConfiguration"),
    ("eks", "UpdateAddon"),
    ("eks", "DescribeUpdate"),
];

/// Told of each AWS request: the service (`ec2`, `eks`), the operation and whether it succeeded.
pub type CallObserver = Arc<dyn Fn(&'static str, &'static str, bool) + Send + Sync>;

/// `provider` with every request of its APIs reported to `observe`.
pub fn counted_ec2(provider: Arc<dyn Ec2Provider>, observe: CallObserver) -> Arc<dyn Ec2Provider> {
    Arc::new(Counted {
        inner: provider,
        observe,
    })
}

/// `provider` with every request of its APIs reported to `observe`.
pub fn counted_eks(provider: Arc<dyn EksProvider>, observe: CallObserver) -> Arc<dyn EksProvider> {
    Arc::new(Counted {
        inner: provider,
        observe,
    })
}

struct Counted<T: ?Sized> {
    inner: Arc<T>,
    observe: CallObserver,
}

impl<T: ?Sized> Counted<T> {
    fn report<R, E>(
        &self,
        service: &'static str,
        operation: &'static str,
        result: Result<R, E>,
    ) -> Result<R, E> {
        (self.observe)(service, operation, result.is_ok());
        result
    }
}

#[async_trait::async_trait]
impl Ec2Provider for Counted<dyn Ec2Provider> {
    async fn api(&self, region: Option<&str>) -> Result<Arc<dyn LaunchTemplateApi>, Ec2Error> {
        let inner = self.inner.api(region).await?;
        Ok(Arc::new(Counted {
            inner,
            observe: self.observe.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl LaunchTemplateApi for Counted<dyn LaunchTemplateApi> {
    async fn read_version(
        &self,
        template: &TemplateRef,
        version: &str,
    ) -> Result<TemplateVersion, Ec2Error> {
        let result = self.inner.read_version(template, version).await;
        self.report("ec2", "DescribeLaunchTemplateVersions", result)
    }

    async fn create_version(
        &self,
        source: &TemplateVersion,
        user_data: &str,
        description: &str,
    ) -> Result<i64, Ec2Error> {
        let result = self
            .inner
            .create_version(source, user_data, description)
            .await;
        self.report("ec2", "CreateLaunchTemplateVersion", result)
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), Ec2Error> {
        let result = self.inner.set_default_version(template_id, version).await;
        self.report("ec2", "ModifyLaunchTemplate", result)
    }

    async fn instances_of(&self, template_id: &str) -> Result<Vec<String>, Ec2Error> {
        let result = self.inner.instances_of(template_id).await;
        self.report("ec2", "DescribeInstances", result)
    }

    async fn instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, InstanceLimits)>, Ec2Error> {
        let result = self.inner.instance_types(names).await;
        self.report("ec2", "DescribeInstanceTypes", result)
    }

    async fn auto_scaling_groups_of(&self, template_id: &str) -> Result<Vec<Launcher>, Ec2Error> {
        let result = self.inner.auto_scaling_groups_of(template_id).await;
        self.report("autoscaling", "DescribeAutoScalingGroups", result)
    }

    async fn node_groups_of(
        &self,
        template_id: &str,
        cluster: &str,
    ) -> Result<Vec<Launcher>, Ec2Error> {
        let result = self.inner.node_groups_of(template_id, cluster).await;
        self.report("eks", "DescribeNodegroup", result)
    }

    async fn start_node_group_update(
        &self,
        cluster: &str,
        name: &str,
        template_id: &str,
        version: i64,
    ) -> Result<String, Ec2Error> {
        let result = self
            .inner
            .start_node_group_update(cluster, name, template_id, version)
            .await;
        self.report("eks", "UpdateNodegroupVersion", result)
    }

    async fn node_group_update(
        &self,
        cluster: &str,
        name: &str,
        id: &str,
    ) -> Result<UpdateProgress, Ec2Error> {
        let result = self.inner.node_group_update(cluster, name, id).await;
        self.report("eks", "DescribeUpdate", result)
    }

    async fn start_instance_refresh(
        &self,
        group: &str,
        template: Option<(&str, &str)>,
        min_healthy: u32,
    ) -> Result<String, Ec2Error> {
        let result = self
            .inner
            .start_instance_refresh(group, template, min_healthy)
            .await;
        self.report("autoscaling", "StartInstanceRefresh", result)
    }

    async fn instance_refreshes(
        &self,
        group: &str,
        id: Option<&str>,
    ) -> Result<Vec<UpdateProgress>, Ec2Error> {
        let result = self.inner.instance_refreshes(group, id).await;
        self.report("autoscaling", "DescribeInstanceRefreshes", result)
    }

    async fn subnets(&self, query: &SubnetQuery) -> Result<Vec<SubnetInfo>, Ec2Error> {
        let result = self.inner.subnets(query).await;
        self.report("ec2", "DescribeSubnets", result)
    }

    async fn interfaces(
        &self,
        subnet: Option<&str>,
        instances: &[String],
    ) -> Result<Vec<InterfaceInfo>, Ec2Error> {
        let result = self.inner.interfaces(subnet, instances).await;
        self.report("ec2", "DescribeNetworkInterfaces", result)
    }

    async fn subnet_reservations(&self, subnet: &str) -> Result<Vec<ReservationInfo>, Ec2Error> {
        let result = self.inner.subnet_reservations(subnet).await;
        self.report("ec2", "GetSubnetCidrReservations", result)
    }

    async fn create_prefix_reservation(
        &self,
        subnet: &str,
        cidr: &str,
        description: &str,
    ) -> Result<String, Ec2Error> {
        let result = self
            .inner
            .create_prefix_reservation(subnet, cidr, description)
            .await;
        self.report("ec2", "CreateSubnetCidrReservation", result)
    }
}

#[async_trait::async_trait]
impl EksProvider for Counted<dyn EksProvider> {
    async fn api(&self, cluster: &str) -> Result<Arc<dyn EksAddonApi>, EksError> {
        let inner = self.inner.api(cluster).await?;
        Ok(Arc::new(Counted {
            inner,
            observe: self.observe.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl EksAddonApi for Counted<dyn EksAddonApi> {
    async fn describe_addon(&self) -> Result<Option<AddonFacts>, EksError> {
        let result = self.inner.describe_addon().await;
        self.report("eks", "DescribeAddon", result)
    }

    async fn configuration_schema(&self, version: &str) -> Result<Option<String>, EksError> {
        let result = self.inner.configuration_schema(version).await;
        self.report("eks", "DescribeAddonConfiguration", result)
    }

    async fn update_addon(
        &self,
        configuration_values: &str,
        client_request_token: &str,
    ) -> Result<UpdateFacts, EksError> {
        let result = self
            .inner
            .update_addon(configuration_values, client_request_token)
            .await;
        self.report("eks", "UpdateAddon", result)
    }

    async fn describe_update(&self, id: &str) -> Result<UpdateFacts, EksError> {
        let result = self.inner.describe_update(id).await;
        self.report("eks", "DescribeUpdate", result)
    }
}
