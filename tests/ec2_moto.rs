//! The EC2 adapter and the table generator against a real `moto_server` on 127.0.0.1.
//! moto's instance-type data comes from real AWS `DescribeInstanceTypes` answers.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::MotoServer;
use vpc_cni_tuner::aws::instance_types;
use vpc_cni_tuner::codegen::table_body;
use vpc_cni_tuner::instance::InstanceCatalog;

#[test]
fn generator_reproduces_the_committed_table() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("table.rs");
    let status = Command::new(env!("CARGO_BIN_EXE_gen-instance-table"))
        .args(["--region", "us-east-1", "--endpoint-url", &moto.endpoint()])
        .arg("--output")
        .arg(&out)
        .args(["--date", "2000-01-01"])
        .envs(moto.aws_env())
        .status()
        .expect("run gen-instance-table");
    assert!(status.success(), "gen-instance-table failed: {status}");
    let fresh = std::fs::read_to_string(&out).expect("generated table");
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/instance/table.rs"),
    )
    .expect("committed table");
    assert!(fresh.contains(&format!("DescribeInstanceTypes at {}", moto.endpoint())));
    assert!(fresh.contains("Generated: 2000-01-01."));
    assert!(
        table_body(&fresh) == table_body(&committed),
        "src/instance/table.rs is stale: regenerate it with gen-instance-table (see README)"
    );
}

#[tokio::test]
async fn describe_all_pages_through_every_type() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let all = instance_types::describe_all(&client)
        .await
        .expect("describe");
    let catalog = InstanceCatalog::embedded();
    assert_eq!(all.len(), catalog.generated_entries().len());
    // Against the generated table: the reviewed overrides differ from the API on purpose.
    for (name, limits) in &all {
        let known = catalog
            .generated_entries()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l)
            .unwrap_or_else(|| panic!("{name} missing from the table"));
        assert_eq!(known, limits, "{name}");
    }
}

#[tokio::test]
async fn describe_named_types_in_batches_of_100() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let catalog = InstanceCatalog::embedded();
    let names: Vec<String> = catalog
        .generated_entries()
        .iter()
        .take(250)
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let mut got = instance_types::describe(&client, &names)
        .await
        .expect("describe");
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 250);
    for ((name, limits), (want_name, want)) in got.iter().zip(catalog.generated_entries()) {
        assert_eq!((name.as_str(), limits), (*want_name, want));
    }
}

#[tokio::test]
async fn unknown_names_fail_with_the_aws_error_code() {
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let err = instance_types::describe(&client, &["m5.large".into(), "zz9.huge".into()])
        .await
        .expect_err("unknown type");
    assert_eq!(err.code(), Some("InvalidInstanceType"), "{err}");
    assert!(err.to_string().contains("DescribeInstanceTypes"), "{err}");
}

/// Karpenter's `kubernetes.io/arch` of each type comes from its name (Graviton families carry a
/// `g` after the generation); `DescribeInstanceTypes`' `SupportedArchitectures` agrees for every
/// type in the table (Mac types, which EKS does not run, have none).
#[tokio::test]
async fn arch_from_the_name_matches_describe_instance_types() {
    use vpc_cni_tuner::instance::attributes::{Arch, arch_of};
    let moto = MotoServer::start();
    let client = moto.ec2_client();
    let mut pages = client
        .describe_instance_types()
        .max_results(100)
        .into_paginator()
        .send();
    let mut checked = 0;
    while let Some(page) = pages.next().await {
        for info in page.expect("page").instance_types() {
            let name = info.instance_type().expect("name").as_str().to_owned();
            let archs: Vec<&str> = info
                .processor_info()
                .map(|p| {
                    p.supported_architectures()
                        .iter()
                        .map(|a| a.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let expected = if archs.contains(&"arm64") {
                Some(Arch::Arm64)
            } else if archs.contains(&"x86_64") {
                Some(Arch::Amd64)
            } else {
                None
            };
            assert_eq!(arch_of(&name), expected, "{name}: {archs:?}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        InstanceCatalog::embedded().generated_entries().len()
    );
}
