//! EC2 launch-template fixtures for the moto tests: templates as node groups have them (user
//! data of each AMI family, block devices, metadata options, tags), and readers of what EC2 holds.

use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

pub const AL2023: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type: application/node.eks.aws\n\n---\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: prod\n\n--BOUNDARY--\n";
pub const AL2: &str =
    "#!/bin/bash\nset -ex\n/etc/eks/bootstrap.sh prod --kubelet-extra-args '--node-labels=a=b'\n";
/// AL2023 MIME user data with folded headers (RFC 5322 continuation lines), as cloud-init reads
/// them.
pub const AL2023_FOLDED: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed;\n boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type:\n\tapplication/node.eks.aws\n\n---\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: prod\n\n--BOUNDARY--\n";
/// kOps' nodeup bootstrap (kops: pkg/model/resources/nodeup.go), as a kOps instance group's
/// launch template carries it.
pub const KOPS_NODEUP: &str = "#!/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\nNODEUP_URL_AMD64=https://artifacts.k8s.io/binaries/kops/1.34.0/linux/amd64/nodeup\nNODEUP_HASH_AMD64=0123\nNODEUP_URL_ARM64=\nNODEUP_HASH_ARM64=\n\nexport AWS_REGION=us-east-1\n";
pub const BOTTLEROCKET: &str = "[settings.kubernetes]\ncluster-name = \"prod\" # keep\n";

pub async fn create_template(client: &aws_sdk_ec2::Client, name: &str, user_data: &[u8]) -> String {
    let group = client
        .create_security_group()
        .group_name(format!("{name}-nodes"))
        .description("nodes")
        .send()
        .await
        .expect("security group")
        .group_id()
        .expect("group id")
        .to_owned();
    let data = RequestLaunchTemplateData::builder()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .key_name("ops")
        .security_group_ids(group)
        .user_data(BASE64.encode(user_data))
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::Required)
                .http_put_response_hop_limit(2)
                .build(),
        )
        .block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name("/dev/xvda")
                .ebs(
                    LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(80)
                        .encrypted(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("team").value("web").build())
                .build(),
        )
        .build();
    client
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(data)
        .send()
        .await
        .expect("create template")
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .expect("id")
        .to_owned()
}

pub async fn versions(
    client: &aws_sdk_ec2::Client,
    id: &str,
) -> Vec<aws_sdk_ec2::types::LaunchTemplateVersion> {
    client
        .describe_launch_template_versions()
        .launch_template_id(id)
        .send()
        .await
        .expect("versions")
        .launch_template_versions()
        .to_vec()
}

pub async fn default_version(client: &aws_sdk_ec2::Client, id: &str) -> i64 {
    client
        .describe_launch_templates()
        .launch_template_ids(id)
        .send()
        .await
        .expect("templates")
        .launch_templates()[0]
        .default_version_number()
        .expect("default")
}

/// Runs one instance from `template` (moto tags it `aws:ec2launchtemplate:id`); its id.
pub async fn run_instance(client: &aws_sdk_ec2::Client, template: &str) -> String {
    client
        .run_instances()
        .launch_template(
            aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                .launch_template_id(template)
                .build(),
        )
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("run an instance from the template")
        .instances()[0]
        .instance_id()
        .expect("an instance id")
        .to_owned()
}
