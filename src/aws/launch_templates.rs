//! Launch-template calls: read a version, create a new version that carries all of the source
//! version's data with only the user data changed, make it the default, and find the instances
//! launched from a template. Behind [`LaunchTemplateApi`] so reconcile logic is testable without
//! AWS.

use aws_sdk_ec2::types::{
    CapacityReservationTarget, CreditSpecificationRequest, Filter,
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateCapacityReservationSpecificationRequest,
    LaunchTemplateCpuOptionsRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateEnclaveOptionsRequest, LaunchTemplateHibernationOptionsRequest,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMaintenanceOptionsRequest, LaunchTemplateInstanceMarketOptionsRequest,
    LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateLicenseConfigurationRequest, LaunchTemplatePlacementRequest,
    LaunchTemplatePrivateDnsNameOptionsRequest, LaunchTemplateSpotMarketOptionsRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest,
    RequestLaunchTemplateData, ResponseLaunchTemplateData,
};

use super::Ec2Error;
use crate::instance::InstanceLimits;
use crate::rollout::{Launcher, UpdateProgress};
use crate::subnet::{InterfaceInfo, ReservationInfo, SubnetInfo};

pub use super::subnets::SubnetQuery;

pub use crate::crd::TemplateRef;

/// One launch-template version as read.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    pub template_id: String,
    pub template_name: Option<String>,
    pub version: i64,
    pub default_version: bool,
    /// Everything the version holds, carried whole into the version the operator creates.
    pub data: LaunchTemplateData,
}

/// A version's launch-template data. Opaque above this module: the controller reads only the
/// user data; the rest goes back to EC2 unchanged in [`request_data`].
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplateData(ResponseLaunchTemplateData);

impl LaunchTemplateData {
    pub fn from_sdk(data: ResponseLaunchTemplateData) -> Self {
        Self(data)
    }

    /// Data holding only `user_data` (base64), as test doubles need.
    pub fn with_user_data(user_data: impl Into<String>) -> Self {
        Self(
            ResponseLaunchTemplateData::builder()
                .user_data(user_data)
                .build(),
        )
    }

    /// The user data, base64 as EC2 keeps it.
    pub fn user_data(&self) -> Option<&str> {
        self.0.user_data()
    }
}

/// The EC2 calls launch-template reconciliation makes.
#[async_trait::async_trait]
pub trait LaunchTemplateApi: Send + Sync {
    /// Reads `version` (`$Default`, `$Latest` or a number) of a template.
    async fn read_version(
        &self,
        template: &TemplateRef,
        version: &str,
    ) -> Result<TemplateVersion, Ec2Error>;
    /// Creates a version from `source` with `user_data` (base64) and returns its number.
    async fn create_version(
        &self,
        source: &TemplateVersion,
        user_data: &str,
        description: &str,
    ) -> Result<i64, Ec2Error>;
    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), Ec2Error>;
    /// Running instances launched from the template (`aws:ec2launchtemplate:id` tag).
    async fn instances_of(&self, template_id: &str) -> Result<Vec<String>, Ec2Error>;
    /// Live instance-type facts, for types the embedded table lacks.
    async fn instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, InstanceLimits)>, Ec2Error>;
    /// The Auto Scaling groups that launch from the template (its launch template, or its
    /// mixed-instances policy's).
    async fn auto_scaling_groups_of(&self, template_id: &str) -> Result<Vec<Launcher>, Ec2Error>;
    /// The managed node groups of EKS cluster `cluster` that launch from the template.
    async fn node_groups_of(
        &self,
        template_id: &str,
        cluster: &str,
    ) -> Result<Vec<Launcher>, Ec2Error>;
    /// `UpdateNodegroupVersion` of node group `name` to `version` of template `template_id`;
    /// the update's id.
    async fn start_node_group_update(
        &self,
        cluster: &str,
        name: &str,
        template_id: &str,
        version: i64,
    ) -> Result<String, Ec2Error>;
    /// `DescribeUpdate` of node group `name`'s update `id`.
    async fn node_group_update(
        &self,
        cluster: &str,
        name: &str,
        id: &str,
    ) -> Result<UpdateProgress, Ec2Error>;
    /// `StartInstanceRefresh` of Auto Scaling group `group` (to `template`: id and version,
    /// when given); the refresh's id.
    async fn start_instance_refresh(
        &self,
        group: &str,
        template: Option<(&str, &str)>,
        min_healthy: u32,
    ) -> Result<String, Ec2Error>;
    /// `DescribeInstanceRefreshes` of `group`: refresh `id`, or the latest ones, newest first.
    async fn instance_refreshes(
        &self,
        group: &str,
        id: Option<&str>,
    ) -> Result<Vec<UpdateProgress>, Ec2Error>;
    /// `DescribeSubnets`.
    async fn subnets(&self, query: &SubnetQuery) -> Result<Vec<SubnetInfo>, Ec2Error>;
    /// `DescribeNetworkInterfaces`: every interface of `subnet`, or (none) of `instances`.
    async fn interfaces(
        &self,
        subnet: Option<&str>,
        instances: &[String],
    ) -> Result<Vec<InterfaceInfo>, Ec2Error>;
    /// `GetSubnetCidrReservations` (IPv4).
    async fn subnet_reservations(&self, subnet: &str) -> Result<Vec<ReservationInfo>, Ec2Error>;
    /// `CreateSubnetCidrReservation` of type `prefix`; the reservation's id.
    async fn create_prefix_reservation(
        &self,
        subnet: &str,
        cidr: &str,
        description: &str,
    ) -> Result<String, Ec2Error>;
}

/// The AWS SDK implementation.
#[derive(Debug, Clone)]
pub struct SdkLaunchTemplates {
    pub client: aws_sdk_ec2::Client,
    /// Auto Scaling and EKS (node groups); `None`: who launches from a template is not asked.
    launchers: Option<super::launchers::LauncherClients>,
}

impl SdkLaunchTemplates {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        Self {
            client,
            launchers: None,
        }
    }

    /// Also reads which Auto Scaling groups and node groups launch from a template.
    pub fn with_launchers(mut self, launchers: super::launchers::LauncherClients) -> Self {
        self.launchers = Some(launchers);
        self
    }
}

#[async_trait::async_trait]
impl LaunchTemplateApi for SdkLaunchTemplates {
    async fn read_version(
        &self,
        template: &TemplateRef,
        version: &str,
    ) -> Result<TemplateVersion, Ec2Error> {
        const OP: &str = "DescribeLaunchTemplateVersions";
        let mut request = self
            .client
            .describe_launch_template_versions()
            .versions(version);
        request = match template {
            TemplateRef::Id(id) => request.launch_template_id(id),
            TemplateRef::Name(name) => request.launch_template_name(name),
        };
        let answer = request
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        let found = answer
            .launch_template_versions()
            .first()
            .ok_or_else(|| Ec2Error::Api {
                operation: OP,
                code: "InvalidLaunchTemplateVersion.NotFound".into(),
                message: format!("{template} has no version {version}"),
            })?;
        Ok(TemplateVersion {
            template_id: found.launch_template_id().unwrap_or_default().to_owned(),
            template_name: found.launch_template_name().map(str::to_owned),
            version: found.version_number().unwrap_or_default(),
            default_version: found.default_version().unwrap_or(false),
            data: LaunchTemplateData(
                found
                    .launch_template_data()
                    .cloned()
                    .unwrap_or_else(|| ResponseLaunchTemplateData::builder().build()),
            ),
        })
    }

    async fn create_version(
        &self,
        source: &TemplateVersion,
        user_data: &str,
        description: &str,
    ) -> Result<i64, Ec2Error> {
        const OP: &str = "CreateLaunchTemplateVersion";
        let data = request_data(&source.data.0, user_data);
        let answer = self
            .client
            .create_launch_template_version()
            .launch_template_id(&source.template_id)
            // Fields this build does not copy are still inherited on EC2.
            .source_version(source.version.to_string())
            .version_description(description)
            .launch_template_data(data)
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        answer
            .launch_template_version()
            .and_then(|v| v.version_number())
            .ok_or_else(|| Ec2Error::BadResponse {
                operation: OP,
                reason: "no version number in the answer".into(),
            })
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), Ec2Error> {
        self.client
            .modify_launch_template()
            .launch_template_id(template_id)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk("ModifyLaunchTemplate", e))?;
        Ok(())
    }

    async fn instances_of(&self, template_id: &str) -> Result<Vec<String>, Ec2Error> {
        let mut ids = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:aws:ec2launchtemplate:id")
                    .values(template_id)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Ec2Error::from_sdk("DescribeInstances", e))?;
            for reservation in page.reservations() {
                ids.extend(
                    reservation
                        .instances()
                        .iter()
                        .filter_map(|i| i.instance_id().map(str::to_owned)),
                );
            }
        }
        Ok(ids)
    }

    async fn instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, InstanceLimits)>, Ec2Error> {
        super::instance_types::describe(&self.client, names).await
    }

    async fn auto_scaling_groups_of(&self, template_id: &str) -> Result<Vec<Launcher>, Ec2Error> {
        match &self.launchers {
            Some(launchers) => launchers.auto_scaling_groups_of(template_id).await,
            None => Ok(Vec::new()),
        }
    }

    async fn node_groups_of(
        &self,
        template_id: &str,
        cluster: &str,
    ) -> Result<Vec<Launcher>, Ec2Error> {
        match &self.launchers {
            Some(launchers) => launchers.node_groups_of(template_id, cluster).await,
            None => Ok(Vec::new()),
        }
    }

    async fn start_node_group_update(
        &self,
        cluster: &str,
        name: &str,
        template_id: &str,
        version: i64,
    ) -> Result<String, Ec2Error> {
        self.launchers("UpdateNodegroupVersion")?
            .update_node_group(cluster, name, template_id, version)
            .await
    }

    async fn node_group_update(
        &self,
        cluster: &str,
        name: &str,
        id: &str,
    ) -> Result<UpdateProgress, Ec2Error> {
        self.launchers("DescribeUpdate")?
            .node_group_update(cluster, name, id)
            .await
    }

    async fn start_instance_refresh(
        &self,
        group: &str,
        template: Option<(&str, &str)>,
        min_healthy: u32,
    ) -> Result<String, Ec2Error> {
        self.launchers("StartInstanceRefresh")?
            .start_instance_refresh(group, template, min_healthy)
            .await
    }

    async fn instance_refreshes(
        &self,
        group: &str,
        id: Option<&str>,
    ) -> Result<Vec<UpdateProgress>, Ec2Error> {
        self.launchers("DescribeInstanceRefreshes")?
            .instance_refreshes(group, id)
            .await
    }

    async fn subnets(&self, query: &SubnetQuery) -> Result<Vec<SubnetInfo>, Ec2Error> {
        super::subnets::subnets(&self.client, query).await
    }

    async fn interfaces(
        &self,
        subnet: Option<&str>,
        instances: &[String],
    ) -> Result<Vec<InterfaceInfo>, Ec2Error> {
        super::subnets::interfaces(&self.client, subnet, instances).await
    }

    async fn subnet_reservations(&self, subnet: &str) -> Result<Vec<ReservationInfo>, Ec2Error> {
        super::subnets::reservations(&self.client, subnet).await
    }

    async fn create_prefix_reservation(
        &self,
        subnet: &str,
        cidr: &str,
        description: &str,
    ) -> Result<String, Ec2Error> {
        super::subnets::create_prefix_reservation(&self.client, subnet, cidr, description).await
    }
}

impl SdkLaunchTemplates {
    fn launchers(
        &self,
        operation: &'static str,
    ) -> Result<&super::launchers::LauncherClients, Ec2Error> {
        self.launchers.as_ref().ok_or(Ec2Error::Api {
            operation,
            code: "NotConfigured".into(),
            message: "the operator has no Auto Scaling and EKS clients".into(),
        })
    }
}

/// The request form of everything `source` holds, with `user_data` replaced. Covers every
/// field a node group's template normally uses; the rest (instance requirements, elastic GPU and
/// inference accelerators, network-interface prefix lists) is inherited through `SourceVersion`.
pub fn request_data(
    source: &ResponseLaunchTemplateData,
    user_data: &str,
) -> RequestLaunchTemplateData {
    let s = source;
    RequestLaunchTemplateData::builder()
        .set_kernel_id(s.kernel_id().map(str::to_owned))
        .set_ebs_optimized(s.ebs_optimized())
        .set_iam_instance_profile(s.iam_instance_profile().map(|p| {
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .set_arn(p.arn().map(str::to_owned))
                .set_name(p.name().map(str::to_owned))
                .build()
        }))
        .set_block_device_mappings(non_empty(
            s.block_device_mappings().iter().map(block_device),
        ))
        .set_network_interfaces(non_empty(
            s.network_interfaces().iter().map(network_interface),
        ))
        .set_image_id(s.image_id().map(str::to_owned))
        .set_instance_type(s.instance_type().cloned())
        .set_key_name(s.key_name().map(str::to_owned))
        .set_monitoring(s.monitoring().map(|m| {
            LaunchTemplatesMonitoringRequest::builder()
                .set_enabled(m.enabled())
                .build()
        }))
        .set_placement(s.placement().map(placement))
        .set_ram_disk_id(s.ram_disk_id().map(str::to_owned))
        .set_disable_api_termination(s.disable_api_termination())
        .set_instance_initiated_shutdown_behavior(s.instance_initiated_shutdown_behavior().cloned())
        .user_data(user_data)
        .set_tag_specifications(non_empty(s.tag_specifications().iter().map(|t| {
            LaunchTemplateTagSpecificationRequest::builder()
                .set_resource_type(t.resource_type().cloned())
                .set_tags(non_empty(t.tags().iter().cloned()))
                .build()
        })))
        .set_security_group_ids(non_empty(s.security_group_ids().iter().cloned()))
        .set_security_groups(non_empty(s.security_groups().iter().cloned()))
        .set_instance_market_options(s.instance_market_options().map(market_options))
        .set_credit_specification(s.credit_specification().map(|c| {
            CreditSpecificationRequest::builder()
                .set_cpu_credits(c.cpu_credits().map(str::to_owned))
                .build()
        }))
        .set_cpu_options(s.cpu_options().map(|c| {
            LaunchTemplateCpuOptionsRequest::builder()
                .set_core_count(c.core_count())
                .set_threads_per_core(c.threads_per_core())
                .set_amd_sev_snp(c.amd_sev_snp().cloned())
                .build()
        }))
        .set_capacity_reservation_specification(
            s.capacity_reservation_specification()
                .map(capacity_reservation),
        )
        .set_license_specifications(non_empty(s.license_specifications().iter().map(|l| {
            LaunchTemplateLicenseConfigurationRequest::builder()
                .set_license_configuration_arn(l.license_configuration_arn().map(str::to_owned))
                .build()
        })))
        .set_hibernation_options(s.hibernation_options().map(|h| {
            LaunchTemplateHibernationOptionsRequest::builder()
                .set_configured(h.configured())
                .build()
        }))
        .set_metadata_options(s.metadata_options().map(metadata_options))
        .set_enclave_options(s.enclave_options().map(|e| {
            LaunchTemplateEnclaveOptionsRequest::builder()
                .set_enabled(e.enabled())
                .build()
        }))
        .set_private_dns_name_options(s.private_dns_name_options().map(private_dns_name))
        .set_maintenance_options(s.maintenance_options().map(|m| {
            LaunchTemplateInstanceMaintenanceOptionsRequest::builder()
                .set_auto_recovery(m.auto_recovery().cloned())
                .build()
        }))
        .set_disable_api_stop(s.disable_api_stop())
        .build()
}

fn block_device(
    m: &aws_sdk_ec2::types::LaunchTemplateBlockDeviceMapping,
) -> LaunchTemplateBlockDeviceMappingRequest {
    LaunchTemplateBlockDeviceMappingRequest::builder()
        .set_device_name(m.device_name().map(str::to_owned))
        .set_virtual_name(m.virtual_name().map(str::to_owned))
        .set_no_device(m.no_device().map(str::to_owned))
        .set_ebs(m.ebs().map(|e| {
            LaunchTemplateEbsBlockDeviceRequest::builder()
                .set_encrypted(e.encrypted())
                .set_delete_on_termination(e.delete_on_termination())
                .set_iops(e.iops())
                .set_kms_key_id(e.kms_key_id().map(str::to_owned))
                .set_snapshot_id(e.snapshot_id().map(str::to_owned))
                .set_volume_size(e.volume_size())
                .set_volume_type(e.volume_type().cloned())
                .set_throughput(e.throughput())
                .set_volume_initialization_rate(e.volume_initialization_rate())
                .build()
        }))
        .build()
}

fn network_interface(
    n: &aws_sdk_ec2::types::LaunchTemplateInstanceNetworkInterfaceSpecification,
) -> LaunchTemplateInstanceNetworkInterfaceSpecificationRequest {
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
        .set_associate_carrier_ip_address(n.associate_carrier_ip_address())
        .set_associate_public_ip_address(n.associate_public_ip_address())
        .set_delete_on_termination(n.delete_on_termination())
        .set_description(n.description().map(str::to_owned))
        .set_device_index(n.device_index())
        .set_groups(non_empty(n.groups().iter().cloned()))
        .set_interface_type(n.interface_type().map(str::to_owned))
        .set_ipv6_address_count(n.ipv6_address_count())
        .set_network_interface_id(n.network_interface_id().map(str::to_owned))
        .set_private_ip_address(n.private_ip_address().map(str::to_owned))
        .set_private_ip_addresses(non_empty(n.private_ip_addresses().iter().cloned()))
        .set_secondary_private_ip_address_count(n.secondary_private_ip_address_count())
        .set_subnet_id(n.subnet_id().map(str::to_owned))
        .set_network_card_index(n.network_card_index())
        .set_ipv4_prefix_count(n.ipv4_prefix_count())
        .set_ipv6_prefix_count(n.ipv6_prefix_count())
        .set_primary_ipv6(n.primary_ipv6())
        .build()
}

fn placement(p: &aws_sdk_ec2::types::LaunchTemplatePlacement) -> LaunchTemplatePlacementRequest {
    LaunchTemplatePlacementRequest::builder()
        .set_availability_zone(p.availability_zone().map(str::to_owned))
        .set_affinity(p.affinity().map(str::to_owned))
        .set_group_name(p.group_name().map(str::to_owned))
        .set_host_id(p.host_id().map(str::to_owned))
        .set_tenancy(p.tenancy().cloned())
        .set_spread_domain(p.spread_domain().map(str::to_owned))
        .set_host_resource_group_arn(p.host_resource_group_arn().map(str::to_owned))
        .set_partition_number(p.partition_number())
        .set_group_id(p.group_id().map(str::to_owned))
        .build()
}

fn market_options(
    m: &aws_sdk_ec2::types::LaunchTemplateInstanceMarketOptions,
) -> LaunchTemplateInstanceMarketOptionsRequest {
    LaunchTemplateInstanceMarketOptionsRequest::builder()
        .set_market_type(m.market_type().cloned())
        .set_spot_options(m.spot_options().map(|o| {
            LaunchTemplateSpotMarketOptionsRequest::builder()
                .set_max_price(o.max_price().map(str::to_owned))
                .set_spot_instance_type(o.spot_instance_type().cloned())
                .set_block_duration_minutes(o.block_duration_minutes())
                .set_valid_until(o.valid_until().cloned())
                .set_instance_interruption_behavior(o.instance_interruption_behavior().cloned())
                .build()
        }))
        .build()
}

fn capacity_reservation(
    c: &aws_sdk_ec2::types::LaunchTemplateCapacityReservationSpecificationResponse,
) -> LaunchTemplateCapacityReservationSpecificationRequest {
    LaunchTemplateCapacityReservationSpecificationRequest::builder()
        .set_capacity_reservation_preference(c.capacity_reservation_preference().cloned())
        .set_capacity_reservation_target(c.capacity_reservation_target().map(|t| {
            CapacityReservationTarget::builder()
                .set_capacity_reservation_id(t.capacity_reservation_id().map(str::to_owned))
                .set_capacity_reservation_resource_group_arn(
                    t.capacity_reservation_resource_group_arn()
                        .map(str::to_owned),
                )
                .build()
        }))
        .build()
}

fn metadata_options(
    m: &aws_sdk_ec2::types::LaunchTemplateInstanceMetadataOptions,
) -> LaunchTemplateInstanceMetadataOptionsRequest {
    LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .set_http_tokens(m.http_tokens().cloned())
        .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
        .set_http_endpoint(m.http_endpoint().cloned())
        .set_http_protocol_ipv6(m.http_protocol_ipv6().cloned())
        .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
        .build()
}

fn private_dns_name(
    p: &aws_sdk_ec2::types::LaunchTemplatePrivateDnsNameOptions,
) -> LaunchTemplatePrivateDnsNameOptionsRequest {
    LaunchTemplatePrivateDnsNameOptionsRequest::builder()
        .set_hostname_type(p.hostname_type().cloned())
        .set_enable_resource_name_dns_a_record(p.enable_resource_name_dns_a_record())
        .set_enable_resource_name_dns_aaaa_record(p.enable_resource_name_dns_aaaa_record())
        .build()
}

fn non_empty<T>(items: impl Iterator<Item = T>) -> Option<Vec<T>> {
    let items: Vec<T> = items.collect();
    (!items.is_empty()).then_some(items)
}
