//! Who launches nodes from a launch template: Auto Scaling groups (`DescribeAutoScalingGroups`:
//! the group's launch template, or its mixed-instances policy's) and EKS managed node groups
//! (`ListNodegroups`, `DescribeNodegroup`: the node group's launch template and the version it
//! pins). Clients come from aws-config's chain for those services (`AWS_ENDPOINT_URL_AUTO_SCALING`
//! and `AWS_ENDPOINT_URL_EKS` set their endpoints), in the launch template's region.

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;

use super::{Ec2Error, sdk_error_parts};
use crate::crd::TemplateLauncherStatus;

/// The Auto Scaling and EKS clients of one region.
#[derive(Debug, Clone)]
pub struct LauncherClients {
    autoscaling: aws_sdk_autoscaling::Client,
    eks: aws_sdk_eks::Client,
}

impl LauncherClients {
    /// Clients from a loaded aws-config (its region, credentials and endpoints).
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        Self::from_clients(
            aws_sdk_autoscaling::Client::new(config),
            aws_sdk_eks::Client::new(config),
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
    ) -> Result<Vec<TemplateLauncherStatus>, Ec2Error> {
        const OP: &str = "DescribeAutoScalingGroups";
        let mut found = Vec::new();
        let mut pages = self
            .autoscaling
            .describe_auto_scaling_groups()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error(OP, sdk_error_parts(&e)))?;
            for group in page.auto_scaling_groups() {
                let spec = group.launch_template().or_else(|| {
                    group
                        .mixed_instances_policy()
                        .and_then(|m| m.launch_template())
                        .and_then(|t| t.launch_template_specification())
                });
                if let Some(spec) = spec.filter(|s| launches(s, template_id)) {
                    found.push(TemplateLauncherStatus {
                        kind: "AutoScalingGroup".to_owned(),
                        name: group
                            .auto_scaling_group_name()
                            .unwrap_or_default()
                            .to_owned(),
                        version: spec.version().map(str::to_owned),
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
    ) -> Result<Vec<TemplateLauncherStatus>, Ec2Error> {
        let mut names = Vec::new();
        let mut pages = self
            .eks
            .list_nodegroups()
            .cluster_name(cluster)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error("ListNodegroups", sdk_error_parts(&e)))?;
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
                .map_err(|e| api_error("DescribeNodegroup", sdk_error_parts(&e)))?;
            let template = answer.nodegroup().and_then(|n| n.launch_template());
            if let Some(template) = template.filter(|t| t.id() == Some(template_id)) {
                found.push(TemplateLauncherStatus {
                    kind: "NodeGroup".to_owned(),
                    name,
                    version: template.version().map(str::to_owned),
                });
            }
        }
        Ok(found)
    }
}

fn launches(spec: &LaunchTemplateSpecification, template_id: &str) -> bool {
    spec.launch_template_id() == Some(template_id)
}

fn api_error(
    operation: &'static str,
    (code, message, _): (String, String, Option<u16>),
) -> Ec2Error {
    Ec2Error::Api {
        operation,
        code,
        message,
    }
}
