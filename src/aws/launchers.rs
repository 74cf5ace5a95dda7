//! Who launches nodes from a launch template: Auto Scaling groups (`DescribeAutoScalingGroups`:
//! the group's launch template, or its mixed-instances policy's) and EKS managed node groups
//! (`ListNodegroups`, `DescribeNodegroup`: the node group's launch template and the version it
//! pins), and the updates that replace their nodes (`UpdateNodegroupVersion`, `DescribeUpdate`,
//! `StartInstanceRefresh`, `DescribeInstanceRefreshes`). Clients come from aws-config's chain for those services (`AWS_ENDPOINT_URL_AUTO_SCALING`
//! and `AWS_ENDPOINT_URL_EKS` set their endpoints), in the launch template's region.

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;

use super::Ec2Error;
use crate::rollout::{Launcher, LauncherKind, UpdateProgress, UpdateState};

/// The Auto Scaling and EKS clients of one region.
#[derive(Debug, Clone)]
pub struct LauncherClients {
    autoscaling: aws_sdk_autoscaling::Client,
    eks: aws_sdk_eks::Client,
}

impl LauncherClients {
    /// Clients from a loaded aws-config (its region, credentials and endpoints), their writes
    /// fenced by `endpoint`'s lease.
    pub fn from_config(config: &aws_config::SdkConfig, endpoint: &super::AwsEndpoint) -> Self {
        let autoscaling = aws_sdk_autoscaling::config::Builder::from(config)
            .interceptor(super::fence_interceptor(endpoint))
            .build();
        let eks = aws_sdk_eks::config::Builder::from(config)
            .interceptor(super::fence_interceptor(endpoint))
            .build();
        Self::from_clients(
            aws_sdk_autoscaling::Client::from_conf(autoscaling),
            aws_sdk_eks::Client::from_conf(eks),
        )
    }

    /// Given clients (tests: a local server).
    pub fn from_clients(
        autoscaling: aws_sdk_autoscaling::Client,
        eks: aws_sdk_eks::Client,
    ) -> Self {
        Self { autoscaling, eks }
    }

    pub(super) async fn auto_scaling_groups_of(
        &self,
        template_id: &str,
    ) -> Result<Vec<Launcher>, Ec2Error> {
        const OP: &str = "DescribeAutoScalingGroups";
        let mut found = Vec::new();
        let mut pages = self
            .autoscaling
            .describe_auto_scaling_groups()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Ec2Error::from_sdk(OP, e))?;
            for group in page.auto_scaling_groups() {
                let mixed = group
                    .mixed_instances_policy()
                    .and_then(|m| m.launch_template())
                    .and_then(|t| t.launch_template_specification());
                let spec = group.launch_template().or(mixed);
                if let Some(spec) = spec.filter(|s| launches(s, template_id)) {
                    found.push(Launcher {
                        kind: LauncherKind::AutoScalingGroup,
                        name: group
                            .auto_scaling_group_name()
                            .unwrap_or_default()
                            .to_owned(),
                        version: spec.version().map(str::to_owned),
                        busy: None,
                        instances: group
                            .instances()
                            .iter()
                            .filter_map(|i| i.instance_id().map(str::to_owned))
                            .collect(),
                        mixed_instances: group.launch_template().is_none(),
                    });
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn node_groups_of(
        &self,
        template_id: &str,
        cluster: &str,
    ) -> Result<Vec<Launcher>, Ec2Error> {
        let mut names = Vec::new();
        let mut pages = self
            .eks
            .list_nodegroups()
            .cluster_name(cluster)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Ec2Error::from_sdk("ListNodegroups", e))?;
            names.extend(page.nodegroups().iter().cloned());
        }
        let mut found = Vec::new();
        for name in names {
            let answer = self
                .eks
                .describe_nodegroup()
                .cluster_name(cluster)
                .nodegroup_name(&name)
                .send()
                .await
                .map_err(|e| Ec2Error::from_sdk("DescribeNodegroup", e))?;
            let Some(group) = answer.nodegroup() else {
                continue;
            };
            let template = group.launch_template();
            if let Some(template) = template.filter(|t| t.id() == Some(template_id)) {
                let status = group.status().map(|s| s.as_str().to_owned());
                found.push(Launcher {
                    kind: LauncherKind::NodeGroup,
                    name,
                    version: template.version().map(str::to_owned),
                    // ACTIVE and DEGRADED take updates; CREATING, UPDATING, DELETING do not.
                    busy: status.filter(|s| !matches!(s.as_str(), "ACTIVE" | "DEGRADED")),
                    instances: Vec::new(),
                    mixed_instances: false,
                });
            }
        }
        Ok(found)
    }

    /// `UpdateNodegroupVersion` to `version` of the node group's template (EKS's rolling
    /// update, which respects PodDisruptionBudgets); the update's id.
    pub(super) async fn update_node_group(
        &self,
        cluster: &str,
        name: &str,
        template_id: &str,
        version: i64,
    ) -> Result<String, Ec2Error> {
        const OP: &str = "UpdateNodegroupVersion";
        let answer = self
            .eks
            .update_nodegroup_version()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .launch_template(
                aws_sdk_eks::types::LaunchTemplateSpecification::builder()
                    .id(template_id)
                    .version(version.to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        answer
            .update()
            .and_then(|u| u.id())
            .map(str::to_owned)
            .ok_or_else(|| no_id(OP))
    }

    /// `DescribeUpdate` of a node group's update.
    pub(super) async fn node_group_update(
        &self,
        cluster: &str,
        name: &str,
        id: &str,
    ) -> Result<UpdateProgress, Ec2Error> {
        const OP: &str = "DescribeUpdate";
        let answer = self
            .eks
            .describe_update()
            .name(cluster)
            .nodegroup_name(name)
            .update_id(id)
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        let update = answer.update().ok_or_else(|| no_id(OP))?;
        let status = update
            .status()
            .map_or("InProgress", |s| s.as_str())
            .to_owned();
        let errors: Vec<String> = update
            .errors()
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.error_code().map_or("Unknown", |c| c.as_str()),
                    e.error_message().unwrap_or_default()
                )
            })
            .collect();
        Ok(UpdateProgress {
            id: id.to_owned(),
            state: UpdateState::parse(&status),
            status,
            percent_complete: None,
            reason: (!errors.is_empty()).then(|| errors.join("; ")),
        })
    }

    /// `StartInstanceRefresh` of an Auto Scaling group (rolling, skipping instances that already
    /// match, keeping `min_healthy` percent in service), to `template` (id, version) when given;
    /// the refresh's id.
    pub(super) async fn start_instance_refresh(
        &self,
        group: &str,
        template: Option<(&str, &str)>,
        min_healthy: u32,
    ) -> Result<String, Ec2Error> {
        use aws_sdk_autoscaling::types::{
            DesiredConfiguration, RefreshPreferences, RefreshStrategy,
        };
        const OP: &str = "StartInstanceRefresh";
        let desired = template.map(|(id, version)| {
            DesiredConfiguration::builder()
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(id)
                        .version(version)
                        .build(),
                )
                .build()
        });
        let answer = self
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .strategy(RefreshStrategy::Rolling)
            .set_desired_configuration(desired)
            .preferences(
                RefreshPreferences::builder()
                    .min_healthy_percentage(i32::try_from(min_healthy.min(100)).unwrap_or(90))
                    .skip_matching(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        answer
            .instance_refresh_id()
            .map(str::to_owned)
            .ok_or_else(|| no_id(OP))
    }

    /// `DescribeInstanceRefreshes` of a group: refresh `id`, or (none) the latest ones, newest
    /// first.
    pub(super) async fn instance_refreshes(
        &self,
        group: &str,
        id: Option<&str>,
    ) -> Result<Vec<UpdateProgress>, Ec2Error> {
        const OP: &str = "DescribeInstanceRefreshes";
        let answer = self
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .set_instance_refresh_ids(id.map(|id| vec![id.to_owned()]))
            .max_records(10)
            .send()
            .await
            .map_err(|e| Ec2Error::from_sdk(OP, e))?;
        Ok(answer
            .instance_refreshes()
            .iter()
            .map(|r| {
                let status = r.status().map_or("Pending", |s| s.as_str()).to_owned();
                UpdateProgress {
                    id: r.instance_refresh_id().unwrap_or_default().to_owned(),
                    state: UpdateState::parse(&status),
                    status,
                    percent_complete: r.percentage_complete().and_then(|p| u32::try_from(p).ok()),
                    reason: r.status_reason().map(str::to_owned),
                }
            })
            .collect())
    }
}

fn launches(spec: &LaunchTemplateSpecification, template_id: &str) -> bool {
    spec.launch_template_id() == Some(template_id)
}

fn no_id(operation: &'static str) -> Ec2Error {
    Ec2Error::BadResponse {
        operation,
        reason: "no update in the answer".into(),
    }
}
