//! The committed CRD is what the Rust types generate, and its schema carries the invariants.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use kube::CustomResourceExt;
use vpc_cni_tuner::crd::NodeNetworkPolicy;

const COMMITTED: &str = include_str!("../crds/nodenetworkpolicies.tuner.vpccni.io.yaml");

#[test]
fn committed_crd_is_current() {
    let generated = vpc_cni_tuner::cli::crd_yaml().expect("yaml");
    assert!(
        generated == COMMITTED,
        "crds/nodenetworkpolicies.tuner.vpccni.io.yaml is stale: run \
         `cargo run -- crd > crds/nodenetworkpolicies.tuner.vpccni.io.yaml`"
    );
}

#[test]
fn names_scope_and_printer_columns() {
    let crd = NodeNetworkPolicy::crd();
    assert_eq!(crd.spec.group, "tuner.vpccni.io");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.kind, "NodeNetworkPolicy");
    assert_eq!(crd.spec.names.short_names, Some(vec!["nnp".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for want in ["Ready", "Nodes", "Prefix-Delegation", "Max-Pods"] {
        assert!(columns.contains(&want), "{columns:?}");
    }
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
}

#[test]
fn empty_spec_is_a_valid_policy_with_defaults() {
    let policy: NodeNetworkPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "tuner.vpccni.io/v1alpha1",
        "kind": "NodeNetworkPolicy",
        "metadata": {"name": "default"},
        "spec": {}
    }))
    .expect("spec: {} parses");
    assert_eq!(policy.spec.daemon_set.to_string(), "kube-system/aws-node");
    let json = serde_json::to_value(&policy.spec).expect("json");
    assert_eq!(json["enforcement"], "Enforce");
    assert_eq!(json["prefixDelegation"], "Auto");
    assert_eq!(json["warmPool"]["profile"], "Balanced");
    assert_eq!(json["maxPods"]["policy"], "Recommended");
}

#[test]
fn schema_rules() {
    let yaml: serde_json::Value = serde_yaml_ng::from_str(COMMITTED).expect("yaml");
    let spec = &yaml["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(
        spec["enforcement"]["enum"],
        serde_json::json!(["Enforce", "DryRun"])
    );
    assert_eq!(
        spec["warmPool"]["properties"]["profile"]["enum"],
        serde_json::json!(["Balanced", "ConserveIPs", "FastScaling"])
    );
    assert_eq!(spec["maxENI"]["minimum"], 1.0);
    let rule = spec["maxPods"]["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .expect("CEL rule");
    assert!(rule.contains("Fixed"), "{rule}");
    let conditions = &yaml["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
}
