//! The `recommend` command as users run it: the real binary, its exit codes and output formats.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn recommend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpc-cni-tuner"))
        .arg("recommend")
        .args(args)
        .output()
        .expect("run vpc-cni-tuner")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[test]
fn json_output_is_the_documented_contract() {
    let out = stdout(&recommend(&["t3.medium", "m5.large", "-o", "json"]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["prefixDelegation"], true);
    assert_eq!(json["maxPods"], 110);
    assert_eq!(json["env"]["ENABLE_PREFIX_DELEGATION"], "true");
    assert_eq!(json["env"]["WARM_PREFIX_TARGET"], "1");
    let types = json["instanceTypes"].as_array().expect("array");
    assert_eq!(types.len(), 2);
    let t3 = &types[0];
    assert_eq!(t3["instanceType"], "t3.medium");
    assert_eq!(t3["vcpus"], 2);
    assert_eq!(t3["enis"], 3);
    assert_eq!(t3["ipv4PerEni"], 6);
    assert_eq!(t3["prefixDelegationCapable"], true);
    assert_eq!(t3["prefixDelegation"], true);
    assert_eq!(t3["maxPodsIpLimit"], 242);
    assert_eq!(t3["maxPods"], 110);
    assert_eq!(t3["kubeReservedMemoryMiB"], 1465);
    assert_eq!(types[1]["maxPodsIpLimit"], 434);
}

#[test]
fn per_instance_type_gives_each_type_its_own_warm_env() {
    let args = [
        "t3.medium",
        "m5.24xlarge",
        "--warm-profile",
        "conserve-ips",
        "--prefix-delegation",
        "disabled",
        "--per-instance-type",
    ];
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&recommend(&[&args[..], &["-o", "json"]].concat())))
            .expect("json");
    // The group's env is bounded by the smallest type; each type's own is not.
    assert_eq!(json["env"]["MINIMUM_IP_TARGET"], "5");
    let warm = |i: usize| json["instanceTypes"][i]["warmEnv"].clone();
    assert_eq!(
        warm(0),
        serde_json::json!({"MINIMUM_IP_TARGET": "5", "WARM_IP_TARGET": "3"})
    );
    assert_eq!(
        warm(1),
        serde_json::json!({"MINIMUM_IP_TARGET": "49", "WARM_IP_TARGET": "8"})
    );
    let table = stdout(&recommend(&args));
    assert!(
        table.contains("  m5.24xlarge: MINIMUM_IP_TARGET=49 WARM_IP_TARGET=8"),
        "{table}"
    );
    // Without the flag the contract is unchanged.
    let plain: serde_json::Value =
        serde_json::from_str(&stdout(&recommend(&["t3.medium", "-o", "json"]))).expect("json");
    assert!(plain["instanceTypes"][0].get("warmEnv").is_none());
}

#[test]
fn yaml_output_parses_to_the_same_document() {
    let args = [
        "m5.large",
        "--custom-networking",
        "--prefix-delegation",
        "disabled",
    ];
    let yaml: serde_json::Value =
        serde_yaml_ng::from_str(&stdout(&recommend(&[&args[..], &["-o", "yaml"]].concat())))
            .expect("yaml");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&recommend(&[&args[..], &["-o", "json"]].concat())))
            .expect("json");
    assert_eq!(yaml, json);
    assert_eq!(json["maxPods"], 20);
    assert_eq!(json["env"]["WARM_ENI_TARGET"], "1");
}

#[test]
fn table_output_is_aligned() {
    let out = stdout(&recommend(&["t3.medium", "m5.24xlarge", "m4.large"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("INSTANCE TYPE"), "{out}");
    // Every header column starts where the values of that column start (right-aligned numbers
    // end where their header ends).
    let header = lines[0];
    let max_pods_end = header.find("MAX PODS").expect("column") + "MAX PODS".len();
    for row in &lines[1..4] {
        let value = row[..max_pods_end].rsplit(' ').next().expect("value");
        assert!(
            value.parse::<u32>().is_ok(),
            "misaligned row {row:?} in\n{out}"
        );
    }
    assert!(out.contains("maxPods for this group: 20"), "{out}");
    assert!(out.contains("ENABLE_PREFIX_DELEGATION=true"), "{out}");
    assert!(
        out.contains(
            "EKS add-on vpc-cni configurationValues (merge into the add-on's own):\n  \
             {\"env\":{\"ENABLE_PREFIX_DELEGATION\":\"true\",\"WARM_PREFIX_TARGET\":\"1\"}}"
        ),
        "{out}"
    );
    assert!(
        out.contains("m4.large (xen) cannot use prefix delegation"),
        "{out}"
    );
}

#[test]
fn unknown_type_exits_non_zero_naming_it_and_close_names() {
    let output = recommend(&["t3.medium", "m5.larg", "-o", "json"]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown instance type \"m5.larg\""),
        "{stderr}"
    );
    assert!(stderr.contains("m5.large"), "{stderr}");
}

#[test]
fn invalid_combinations_exit_non_zero_with_the_fix() {
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "t3.medium",
                "--prefix-delegation",
                "enabled",
                "--cni-version",
                "1.8.0",
            ],
            "prefix delegation needs VPC CNI 1.9.0 or later",
        ),
        (
            &[
                "m5.large",
                "--prefix-delegation",
                "enabled",
                "--warm-eni-target",
                "1",
            ],
            "WARM_ENI_TARGET=1 has no effect with prefix delegation",
        ),
        (
            &["m4.large", "--ip-family", "ipv6"],
            "m4.large (xen) cannot run in an IPv6 cluster",
        ),
        (
            &[
                "t3.medium",
                "--prefix-delegation",
                "disabled",
                "--max-pods",
                "110",
            ],
            "maxPods 110 is more than the 17 pods",
        ),
        // A typo in a warm target would keep that many IPs idle on every node.
        (
            &["t3.medium", "m5.large", "--warm-ip-target", "500"],
            "WARM_IP_TARGET=500 is more than t3.medium can hold (240 pod IPs)",
        ),
    ];
    for (args, want) in cases {
        let output = recommend(args);
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_flag_values_are_rejected_by_the_parser() {
    for args in [
        &["t3.medium", "--cni-version", "latest"][..],
        &["t3.medium", "--max-eni", "0"],
        &["t3.medium", "--warm-profile", "cheap"],
    ] {
        let output = recommend(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn comma_separated_and_duplicate_types_are_one_group() {
    let out = stdout(&recommend(&[
        "t3.medium,m5.large",
        "T3.MEDIUM",
        "-o",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["instanceTypes"].as_array().map(Vec::len), Some(2));
}

/// `recommend --karpenter-nodepool`: every NodePool in the file, from its requirements.
#[test]
fn karpenter_nodepool_file() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/karpenter/nodepool.yaml"
    );
    let out = stdout(&recommend(&[
        "--karpenter-nodepool",
        file,
        "--prefix-delegation",
        "enabled",
        "-o",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let general = &json[0];
    assert_eq!(general["nodePool"], "general");
    assert_eq!(general["ec2NodeClass"], "default");
    assert_eq!(general["maxPods"], 98, "a 1-vCPU Graviton with prefixes");
    assert_eq!(general["boundingInstanceType"], "c6g.medium");
    assert_eq!(general["prefixDelegation"], true);
    let graviton = &json[1];
    assert_eq!(graviton["ec2NodeClass"], "graviton");
    assert_eq!(graviton["maxPods"], 110, "xlarge and up: the 110 cap");
    // Without prefixes, Karpenter's own number for the smallest type.
    let out = stdout(&recommend(&[
        "--karpenter-nodepool",
        file,
        "--prefix-delegation",
        "disabled",
    ]));
    assert!(
        out.contains("NodePool general: set spec.kubelet.maxPods: 8 on EC2NodeClass default"),
        "{out}"
    );
    // A bad requirement names the NodePool and the fix.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: odd}\nspec:\n  template:\n    spec:\n      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}\n      requirements:\n        - {key: karpenter.k8s.aws/instance-cpu, operator: Gt, values: [four]}\n",
    )
    .unwrap();
    let output = recommend(&["--karpenter-nodepool", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NodePool odd") && stderr.contains("one integer value"),
        "{stderr}"
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpc-cni-tuner"))
        .args(args)
        .output()
        .expect("run vpc-cni-tuner")
}

/// `schemas/recommend.v1.json` is what `vpc-cni-tuner schema` prints, and outputs of
/// `recommend -o json` (IPv4, IPv6, with warnings) validate against it.
#[test]
fn json_output_has_a_versioned_schema_that_it_follows() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/recommend.v1.json"
    ))
    .expect("committed schema");
    let schema: serde_json::Value = serde_json::from_str(&committed).expect("schema JSON");
    let printed: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["schema"]))).expect("printed schema");
    assert_eq!(
        printed, schema,
        "regenerate: vpc-cni-tuner schema > schemas/recommend.v1.json"
    );
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    for args in [
        &["t3.medium", "m5.large"][..],
        &["m5.large", "--ip-family", "ipv6"],
        &["t2.medium", "m5.large", "--prefix-delegation", "enabled"],
    ] {
        let out = stdout(&recommend(&[args, &["-o", "json"]].concat()));
        let json: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(json["schemaVersion"], "vpc-cni-tuner.recommend/v1");
        let problems: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{args:?}: {problems:?}");
    }
    // The schema can fail: a document without the version or with a wrong type is refused.
    let mut bad: serde_json::Value =
        serde_json::from_str(&stdout(&recommend(&["m5.large", "-o", "json"]))).unwrap();
    bad["maxPods"] = serde_json::json!("many");
    assert!(!validator.is_valid(&bad));
    bad.as_object_mut().unwrap().remove("schemaVersion");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&run(&["completions", shell]));
        for word in ["recommend", "run", "kubeconfig", "context", "warm-profile"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell is refused");
}

/// Every flag of `run` can come from the environment: read from the command definition itself,
/// and shown by `run --help`.
#[test]
fn every_run_flag_has_an_environment_variable() {
    use clap::CommandFactory;
    let command = vpc_cni_tuner::cli::Cli::command();
    let run_command = command
        .get_subcommands()
        .find(|c| c.get_name() == "run")
        .expect("the run subcommand");
    let flags: Vec<&clap::Arg> = run_command
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "help"))
        .collect();
    assert!(flags.len() >= 17, "{} flags", flags.len());
    let help = stdout(&run(&["run", "--help"]));
    for flag in flags {
        let long = flag.get_long().unwrap_or_default();
        let env = flag
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no environment variable"));
        let env = env.to_string_lossy();
        assert!(
            help.contains(&format!("[env: {env}=")),
            "--{long}: {env} not in the help"
        );
    }
}
