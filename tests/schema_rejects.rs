//! Policies the API server must reject, checked against the committed CRD: its structural
//! schema (types, enums, ranges, patterns; with the `jsonschema` crate) and its CEL rules
//! (`x-kubernetes-validations`, evaluated by kube-cel). Valid policies must pass both.
//! What the schema cannot express is caught by the controller (`Ready=False`, InvalidSpec).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::crd_schema::rejection;

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "tuner.vpccni.io/v1alpha1", "kind": "NodeNetworkPolicy",
           "metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn the_schema_rejects_bad_policies() {
    let bad = [
        ("wrong enforcement enum", json!({"enforcement": "Audit"})),
        (
            "wrong prefixDelegation enum",
            json!({"prefixDelegation": "Sometimes"}),
        ),
        (
            "wrong warm-pool profile",
            json!({"warmPool": {"profile": "Cheap"}}),
        ),
        (
            "wrong maxPods policy",
            json!({"maxPods": {"policy": "Max"}}),
        ),
        ("maxENI below 1", json!({"maxENI": 0})),
        (
            "negative warm IP target",
            json!({"warmPool": {"warmIPTarget": -1}}),
        ),
        (
            "negative minimum IP target",
            json!({"warmPool": {"minimumIPTarget": -3}}),
        ),
        (
            "negative maxPods value",
            json!({"maxPods": {"policy": "Fixed", "value": -5}}),
        ),
        ("maxPods ceiling 0", json!({"maxPods": {"ceiling": 0}})),
        (
            "Fixed without a value",
            json!({"maxPods": {"policy": "Fixed"}}),
        ),
        (
            "a value without Fixed",
            json!({"maxPods": {"policy": "Recommended", "value": 50}}),
        ),
        (
            "a value with the default policy",
            json!({"maxPods": {"value": 50}}),
        ),
        (
            "invalid selector operator",
            json!({"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Near", "values": ["a"]}]}}),
        ),
        (
            "In without values",
            json!({"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}}),
        ),
        (
            "Exists with values",
            json!({"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Exists", "values": ["a"]}]}}),
        ),
        (
            "selector expression without key",
            json!({"nodeSelector": {"matchExpressions": [{"operator": "Exists"}]}}),
        ),
        (
            "launch template with neither id nor name",
            json!({"launchTemplates": [{}]}),
        ),
        (
            "launch template with both id and name",
            json!({"launchTemplates": [{"id": "lt-0abc", "name": "web"}]}),
        ),
        (
            "launch template id that is not an id",
            json!({"launchTemplates": [{"id": "web"}]}),
        ),
        (
            "bad user-data format",
            json!({"launchTemplates": [{"id": "lt-0abc", "userDataFormat": "Ubuntu"}]}),
        ),
        (
            "bad source version",
            json!({"launchTemplates": [{"id": "lt-0abc", "sourceVersion": "latest"}]}),
        ),
        (
            "empty DaemonSet name",
            json!({"daemonSet": {"namespace": "kube-system", "name": ""}}),
        ),
        ("string where a number goes", json!({"maxENI": "two"})),
    ];
    for (what, spec) in bad {
        assert!(
            rejection(&policy(spec.clone())).is_some(),
            "{what}: {spec} was accepted"
        );
    }
}

/// Warm targets are bounded (a typo would drain subnets on every node): above the bound the API
/// server refuses, at it accepts.
#[test]
fn the_schema_bounds_warm_targets() {
    for (field, bound) in [
        ("warmIPTarget", 1024),
        ("minimumIPTarget", 1024),
        ("warmENITarget", 16),
        ("warmPrefixTarget", 64),
    ] {
        let above = policy(json!({"warmPool": {field: bound + 1}}));
        assert!(
            rejection(&above).is_some(),
            "{field}: {} accepted",
            bound + 1
        );
        let per_type =
            policy(json!({"warmPool": {"instanceTypes": {"m5.large": {field: bound + 1}}}}));
        assert!(rejection(&per_type).is_some(), "per-type {field} accepted");
        let at = policy(json!({"warmPool": {field: bound}}));
        assert_eq!(rejection(&at), None, "{field}: {bound} refused");
    }
}

#[test]
fn the_schema_accepts_good_policies() {
    let good = [
        json!({}),
        json!({"enforcement": "DryRun", "prefixDelegation": "Enabled", "customNetworking": true,
               "securityGroupsForPods": true, "maxENI": 4,
               "warmPool": {"profile": "ConserveIPs", "warmIPTarget": 5, "minimumIPTarget": 10},
               "maxPods": {"policy": "Fixed", "value": 58, "ceiling": 100},
               "nodeSelector": {"matchLabels": {"pool": "web"},
                                "matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]},
                                                     {"key": "spot", "operator": "DoesNotExist"}]},
               "launchTemplates": [{"id": "lt-0123456789abcdef0", "userDataFormat": "AL2023"},
                                   {"name": "web-nodes", "region": "eu-west-1", "setDefaultVersion": false,
                                    "sourceVersion": "$Latest"}],
               "daemonSet": {"namespace": "kube-system", "name": "aws-node"}}),
        json!({"maxPods": {"policy": "IPLimit", "ceiling": 200}, "maxENI": null}),
    ];
    for spec in good {
        assert_eq!(rejection(&policy(spec.clone())), None, "{spec}");
    }
}
