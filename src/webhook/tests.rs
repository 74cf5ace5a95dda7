//! The webhook's decisions, and the bound on what its patch can touch.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::crd::DaemonSetRef;
use crate::testing::node;

fn table(pd: bool) -> WarmTable {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    WarmTable {
        daemonset: DaemonSetRef::default(),
        entries: vec![WarmEntry {
            policy: "fleet".into(),
            selector: Vec::new(),
            prefix_delegation: pd,
            env_by_type: [
                (
                    "t3.medium".to_owned(),
                    env(&[("WARM_IP_TARGET", "3"), ("MINIMUM_IP_TARGET", "5")]),
                ),
                (
                    "m5.24xlarge".to_owned(),
                    env(&[("WARM_IP_TARGET", "8"), ("MINIMUM_IP_TARGET", "49")]),
                ),
            ]
            .into_iter()
            .collect(),
        }],
    }
}

/// An aws-node pod as the DaemonSet controller creates it for `node_name`.
fn pod(node_name: &str, env: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "aws-node-", "namespace": "kube-system",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                          "name": "aws-node", "uid": "u", "controller": true}]},
        "spec": {
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}}},
            "initContainers": [{"name": "aws-vpc-cni-init", "image": "init",
                                "env": [{"name": "WARM_IP_TARGET", "value": "1"}]}],
            "containers": [
                {"name": "aws-eks-nodeagent", "image": "agent"},
                {"name": "aws-node", "image": "cni", "env": env}
            ]
        }
    })
}

fn review_of(object: &Value, namespace: &str, operation: &str) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b9d0a0c-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:daemon-set-controller"},
            "object": object, "dryRun": false
        }
    })
    .to_string()
    .into_bytes()
}

fn nodes(name: &str) -> Option<Arc<NodeFacts>> {
    match name {
        "small" => Some(Arc::new(node("t3.medium"))),
        "big" => Some(Arc::new(node("m5.24xlarge"))),
        "other" => Some(Arc::new(node("c7g.large"))),
        _ => None,
    }
}

/// The pod after the answer's patch.
fn patched(pod: &Value, answer: &Value) -> Value {
    let mut pod = pod.clone();
    // kube writes the patch's bytes as a JSON array, which the API server reads as []byte.
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let bytes: Vec<u8> = serde_json::from_value(answer["response"]["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

fn env_of(pod: &Value) -> Vec<(String, Value)> {
    pod["spec"]["containers"][1]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].clone()))
        .collect()
}

#[test]
fn each_node_gets_the_values_of_its_own_type() {
    let env = json!([{"name": "ENABLE_PREFIX_DELEGATION", "value": "false"},
                     {"name": "WARM_ENI_TARGET", "value": "1"},
                     {"name": "AWS_VPC_K8S_CNI_LOGLEVEL", "value": "DEBUG"}]);
    for (node_name, warm, minimum) in [("small", "3", "5"), ("big", "8", "49")] {
        let pod = pod(node_name, env.clone());
        let (answer, result) = review(
            &review_of(&pod, "kube-system", "CREATE"),
            &table(false),
            nodes,
        );
        assert_eq!(result, "patched");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["uid"], "0b9d0a0c-1");
        let after = patched(&pod, &answer);
        assert_eq!(
            env_of(&after),
            vec![
                ("ENABLE_PREFIX_DELEGATION".to_owned(), json!("false")),
                // Set by the DaemonSet, not for this type: unset in place.
                ("WARM_ENI_TARGET".to_owned(), json!("")),
                ("AWS_VPC_K8S_CNI_LOGLEVEL".to_owned(), json!("DEBUG")),
                ("WARM_IP_TARGET".to_owned(), json!(warm)),
                ("MINIMUM_IP_TARGET".to_owned(), json!(minimum)),
            ],
            "{node_name}"
        );
        // The init container's same-named entry is not touched.
        assert_eq!(
            after["spec"]["initContainers"],
            pod["spec"]["initContainers"]
        );
    }
}

#[test]
fn what_it_cannot_decide_is_let_through_unchanged() {
    let env = json!([{"name": "ENABLE_PREFIX_DELEGATION", "value": "false"}]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (review_of(&pod("nowhere", env.clone()), "kube-system", "CREATE"), "unknown_node"),
        (review_of(&pod("other", env.clone()), "kube-system", "CREATE"), "unknown_type"),
        (review_of(&pod("small", env.clone()), "default", "CREATE"), "not_aws_node"),
        (review_of(&pod("small", env.clone()), "kube-system", "UPDATE"), "not_aws_node"),
        (
            review_of(
                &pod("small", json!([{"name": "ENABLE_PREFIX_DELEGATION", "value": "true"}])),
                "kube-system",
                "CREATE",
            ),
            "mode_mismatch",
        ),
        (b"not json".to_vec(), "bad_request"),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}}"#.to_vec(), "bad_request"),
    ];
    for (body, expected) in cases {
        let (answer, result) = review(&body, &table(false), nodes);
        assert_eq!(result, expected, "{answer}");
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"]["patch"].is_null(), "{answer}");
    }
    // Not a DaemonSet's pod.
    let mut lone = pod("small", env.clone());
    lone["metadata"]["ownerReferences"] = json!([]);
    assert_eq!(
        review(
            &review_of(&lone, "kube-system", "CREATE"),
            &table(false),
            nodes
        )
        .1,
        "not_aws_node"
    );
    // No policy at all.
    let empty = WarmTable::default();
    assert_eq!(
        review(
            &review_of(&pod("small", env.clone()), "kube-system", "CREATE"),
            &empty,
            nodes
        )
        .1,
        "no_policy"
    );
    // Already right: no patch.
    let right = json!([{"name": "ENABLE_PREFIX_DELEGATION", "value": "false"},
                       {"name": "WARM_IP_TARGET", "value": "3"}, {"name": "MINIMUM_IP_TARGET", "value": "5"}]);
    assert_eq!(
        review(
            &review_of(&pod("small", right), "kube-system", "CREATE"),
            &table(false),
            nodes
        )
        .1,
        "in_sync"
    );
}

#[test]
fn the_node_comes_from_node_name_or_the_daemonset_affinity() {
    let mut p: Pod = serde_json::from_value(pod("big", json!([]))).unwrap();
    assert_eq!(node_of(&p).as_deref(), Some("big"));
    p.spec.as_mut().unwrap().node_name = Some("bound".into());
    assert_eq!(node_of(&p).as_deref(), Some("bound"));
    p.spec.as_mut().unwrap().node_name = None;
    p.spec.as_mut().unwrap().affinity = None;
    assert_eq!(node_of(&p), None);
}

fn env_entry() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "WARM_ENI_TARGET",
        "WARM_IP_TARGET",
        "MINIMUM_IP_TARGET",
        "WARM_PREFIX_TARGET",
        "ENABLE_PREFIX_DELEGATION",
        "AWS_VPC_K8S_CNI_LOGLEVEL",
        "CLUSTER_NAME",
        "X",
    ]);
    (names, "[0-9a-z]{0,3}", any::<bool>()).prop_map(|(name, value, from)| {
        if from {
            json!({"name": name, "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": name}}})
        } else {
            json!({"name": name, "value": value})
        }
    })
}

fn wanted() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(WEBHOOK_ENV_VARS.to_vec()).prop_map(str::to_owned),
        "[0-9]{1,2}",
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the pod, the patch changes only the webhook's entries of the aws-node container,
    /// and those only to what is wanted ("" where not wanted), never one from valueFrom.
    #[test]
    fn the_patch_touches_only_the_warm_entries_of_aws_node(
        env in prop::option::of(prop::collection::vec(env_entry(), 0..8)),
        other in prop::collection::vec(env_entry(), 0..4),
        aws_node_first in any::<bool>(),
        wanted in wanted(),
    ) {
        let mut aws_node = json!({"name": "aws-node", "image": "cni"});
        if let Some(env) = &env {
            aws_node["env"] = json!(env);
        }
        let sidecar = json!({"name": "aws-eks-nodeagent", "image": "agent", "env": other});
        let containers = if aws_node_first { json!([aws_node, sidecar]) } else { json!([sidecar, aws_node]) };
        let before = json!({"metadata": {"name": "p"}, "spec": {"containers": containers}});
        let pod: Pod = serde_json::from_value(before.clone()).unwrap();
        let index = usize::from(!aws_node_first);
        let ops = env_patch(&pod.spec.as_ref().unwrap().containers[index], index, &wanted);
        let mut after = before.clone();
        json_patch::patch(&mut after, &json_patch::Patch(ops)).unwrap();

        // Everything but that container's env is as it was.
        let mut a = after.clone();
        let mut b = before.clone();
        a["spec"]["containers"][index].as_object_mut().unwrap().remove("env");
        b["spec"]["containers"][index].as_object_mut().unwrap().remove("env");
        prop_assert_eq!(a, b);

        let old = before["spec"]["containers"][index]["env"].as_array().cloned().unwrap_or_default();
        let new = after["spec"]["containers"][index]["env"].as_array().cloned().unwrap_or_default();
        // Entries keep their places; only the webhook's literal entries change, and new ones go
        // at the end.
        prop_assert!(new.len() >= old.len());
        for (i, entry) in old.iter().enumerate() {
            let name = entry["name"].as_str().unwrap();
            let ours = WEBHOOK_ENV_VARS.contains(&name) && entry.get("valueFrom").is_none()
                && old.iter().position(|e| e["name"] == name) == Some(i);
            if ours {
                let want = wanted.get(name).map_or("", String::as_str);
                prop_assert_eq!(&new[i], &json!({"name": name, "value": want}));
            } else {
                prop_assert_eq!(&new[i], entry);
            }
        }
        for entry in &new[old.len()..] {
            let name = entry["name"].as_str().unwrap();
            prop_assert!(WEBHOOK_ENV_VARS.contains(&name));
            prop_assert!(!old.iter().any(|e| e["name"] == name));
            prop_assert_eq!(entry["value"].as_str(), wanted.get(name).map(String::as_str));
        }
    }
}
