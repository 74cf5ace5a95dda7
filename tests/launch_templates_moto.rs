//! Launch-template reconciliation against a real `moto_server` on 127.0.0.1: templates with
//! AL2023 MIME, AL2 and Bottlerocket user data get maxPods in a new version that carries the rest
//! of the template unchanged; a second pass creates nothing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::MotoServer;
use support::launch_templates::{
    AL2, AL2023, BOTTLEROCKET, create_template, default_version, versions,
};
use vpc_cni_tuner::apply::launch_templates::{sync_template, sync_template_in};
use vpc_cni_tuner::aws::launch_templates::SdkLaunchTemplates;
use vpc_cni_tuner::crd::{LaunchTemplateSpec, UserDataFormatSpec};
use vpc_cni_tuner::userdata::{UserDataFormat, read_max_pods};

fn spec_for(id: &str, format: UserDataFormatSpec, set_default: bool) -> LaunchTemplateSpec {
    LaunchTemplateSpec {
        id: Some(id.to_owned()),
        name: None,
        region: None,
        user_data_format: format,
        set_default_version: set_default,
        source_version: "$Default".into(),
        rollout: None,
    }
}

#[tokio::test]
async fn all_three_formats_get_max_pods_and_keep_the_rest() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let api = SdkLaunchTemplates::new(client.clone());
    let nodes = BTreeMap::new();
    for (name, user_data, format) in [
        ("al2023", AL2023, UserDataFormat::Al2023),
        ("al2", AL2, UserDataFormat::Al2),
        ("bottlerocket", BOTTLEROCKET, UserDataFormat::Bottlerocket),
    ] {
        let id = create_template(&client, name, user_data.as_bytes()).await;
        let spec = spec_for(&id, UserDataFormatSpec::Auto, true);
        let first = sync_template(&api, &spec, 110, false, &nodes).await;
        assert_eq!(first.problem, None, "{name}");
        assert!(first.status.in_sync, "{name}");
        assert_eq!(first.status.version_read, Some(1));
        assert_eq!(first.status.version_written, Some(2), "{name}");
        assert_eq!(
            first.status.format.as_deref(),
            Some(format.to_string().as_str())
        );
        let note = first.updated.expect("event note");
        assert!(note.contains("version 1 -> 2"), "{note}");

        let all = versions(&client, &id).await;
        assert_eq!(all.len(), 2, "{name}");
        let (v1, v2) = (
            all.iter()
                .find(|v| v.version_number() == Some(1))
                .unwrap()
                .launch_template_data()
                .unwrap(),
            all.iter()
                .find(|v| v.version_number() == Some(2))
                .unwrap()
                .launch_template_data()
                .unwrap(),
        );
        let user_data_v2 = BASE64.decode(v2.user_data().unwrap()).unwrap();
        assert_eq!(
            read_max_pods(&user_data_v2, format),
            Ok(Some(110)),
            "{name}"
        );
        // Everything but the user data is carried over.
        assert_eq!(v2.image_id(), v1.image_id());
        assert_eq!(v2.instance_type(), v1.instance_type());
        assert_eq!(v2.key_name(), v1.key_name());
        assert_eq!(v2.security_group_ids(), v1.security_group_ids());
        assert_eq!(v2.tag_specifications(), v1.tag_specifications());
        assert_eq!(v2.metadata_options(), v1.metadata_options());
        assert_eq!(v2.block_device_mappings(), v1.block_device_mappings());
        assert!(v2.image_id().is_some() && !v2.security_group_ids().is_empty());
        assert_eq!(default_version(&client, &id).await, 2, "{name}");

        let second = sync_template(&api, &spec, 110, false, &nodes).await;
        assert!(second.status.in_sync);
        assert_eq!(second.status.version_read, Some(2));
        assert_eq!(second.status.version_written, None);
        assert_eq!(second.updated, None);
        assert_eq!(
            versions(&client, &id).await.len(),
            2,
            "a second pass creates no version"
        );
    }
}

#[tokio::test]
async fn without_set_default_the_operators_latest_version_counts_as_written() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let api = SdkLaunchTemplates::new(client.clone());
    let id = create_template(&client, "no-default", AL2.as_bytes()).await;
    let spec = spec_for(&id, UserDataFormatSpec::Al2, false);
    let first = sync_template(&api, &spec, 58, false, &BTreeMap::new()).await;
    assert_eq!(first.status.version_written, Some(2));
    assert_eq!(default_version(&client, &id).await, 1);
    let second = sync_template(&api, &spec, 58, false, &BTreeMap::new()).await;
    assert!(second.status.in_sync);
    assert_eq!(second.status.version_written, Some(2));
    assert_eq!(versions(&client, &id).await.len(), 2);
}

#[tokio::test]
async fn unsupported_user_data_is_reported_and_nothing_is_written() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let api = SdkLaunchTemplates::new(client.clone());
    let gzip = [0x1f_u8, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    for (name, data) in [("gzip", &gzip[..]), ("unknown", b"echo hello\n".as_slice())] {
        let id = create_template(&client, name, data).await;
        let result = sync_template(
            &api,
            &spec_for(&id, UserDataFormatSpec::Auto, true),
            110,
            false,
            &BTreeMap::new(),
        )
        .await;
        let (reason, message) = result.problem.expect("problem");
        assert_eq!(reason, "UserDataUnsupported");
        assert!(message.contains(&id), "{message}");
        assert!(!result.status.in_sync);
        assert_eq!(
            versions(&client, &id).await.len(),
            1,
            "{name}: no version written"
        );
    }
}

#[tokio::test]
async fn dry_run_reads_and_writes_nothing() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let api = SdkLaunchTemplates::new(client.clone());
    let id = create_template(&client, "dry", BOTTLEROCKET.as_bytes()).await;
    let result = sync_template(
        &api,
        &spec_for(&id, UserDataFormatSpec::Auto, true),
        110,
        true,
        &BTreeMap::new(),
    )
    .await;
    assert!(!result.status.in_sync);
    assert!(result.status.message.unwrap().contains("would create"));
    assert_eq!(versions(&client, &id).await.len(), 1);
}

#[tokio::test]
async fn missing_template_names_the_aws_error_code() {
    let moto = MotoServer::start();
    let api = SdkLaunchTemplates::new(moto.ec2_client());
    let result = sync_template(
        &api,
        &spec_for("lt-0000000000000000", UserDataFormatSpec::Auto, true),
        110,
        false,
        &BTreeMap::new(),
    )
    .await;
    let (reason, message) = result.problem.expect("problem");
    assert_eq!(reason, "LaunchTemplateNotFound", "{message}");
    assert!(message.contains("lt-0000000000000000"), "{message}");
}

#[tokio::test]
async fn rollout_counts_nodes_launched_from_the_template() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let api = SdkLaunchTemplates::new(client.clone());
    let id = create_template(&client, "rollout", AL2023.as_bytes()).await;
    let run = client
        .run_instances()
        .launch_template(
            aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                .launch_template_id(&id)
                .build(),
        )
        .min_count(2)
        .max_count(2)
        .send()
        .await
        .expect("run instances");
    let ids: Vec<String> = run
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_owned())
        .collect();
    let nodes: BTreeMap<String, Option<u32>> =
        [(ids[0].clone(), Some(110)), (ids[1].clone(), Some(17))].into();
    let result = sync_template(
        &api,
        &spec_for(&id, UserDataFormatSpec::Auto, true),
        110,
        false,
        &nodes,
    )
    .await;
    assert_eq!(result.status.nodes, Some(2));
    assert_eq!(result.status.nodes_behind, Some(1));
}

/// Who launches from a template, read from moto: Auto Scaling groups by their launch template
/// or mixed-instances policy, managed node groups of the cluster by theirs.
#[tokio::test]
async fn groups_that_launch_from_the_template_are_reported() {
    use aws_sdk_autoscaling::types::{
        LaunchTemplate, LaunchTemplateSpecification, MixedInstancesPolicy,
    };
    use vpc_cni_tuner::aws::launchers::LauncherClients;
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let id = create_template(&client, "fleet", AL2.as_bytes()).await;
    let other = create_template(&client, "other", AL2.as_bytes()).await;
    moto.launchers("web", &id, "$Latest", &id).await;
    moto.launchers("batch", &other, "$Default", &other).await;
    let spot = MixedInstancesPolicy::builder()
        .launch_template(
            LaunchTemplate::builder()
                .launch_template_specification(
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(&id)
                        .version("2")
                        .build(),
                )
                .build(),
        )
        .build();
    moto.auto_scaling_group("spot", |group| group.mixed_instances_policy(spot))
        .await;
    let (autoscaling, eks) = moto.launcher_clients();
    let launchers = LauncherClients::from_clients(autoscaling, eks);
    let api = SdkLaunchTemplates::new(client).with_launchers(launchers);
    let spec = spec_for(&id, UserDataFormatSpec::Auto, true);
    let result = sync_template_in(&api, &spec, 58, false, &BTreeMap::new(), Some("prod")).await;
    let found: Vec<(String, String, Option<String>)> = result
        .status
        .launched_by
        .unwrap_or_else(|| panic!("{:?}", result.status.message))
        .into_iter()
        .map(|l| (l.kind, l.name, l.version))
        .collect();
    assert_eq!(
        found,
        [
            ("AutoScalingGroup".into(), "spot".into(), Some("2".into())),
            (
                "AutoScalingGroup".into(),
                "web".into(),
                Some("$Latest".into())
            ),
            ("NodeGroup".into(), "web-ng".into(), Some("1".into())),
        ]
    );
    // Without a cluster name, node groups are not asked for.
    let result = sync_template_in(&api, &spec, 58, false, &BTreeMap::new(), None).await;
    assert!(
        result
            .status
            .launched_by
            .unwrap()
            .iter()
            .all(|l| l.kind == "AutoScalingGroup")
    );
}
