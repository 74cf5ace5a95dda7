//! The README's claims that code can check.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

const README: &str = include_str!("../README.md");

#[test]
fn readme_iam_policy_grants_exactly_the_ec2_actions_the_operator_calls() {
    assert_eq!(
        granted_in("### IAM policy"),
        actions(vpc_cni_tuner::controller::EC2_ACTIONS)
    );
}

#[test]
fn readme_add_on_iam_policy_grants_exactly_the_eks_actions_the_operator_calls() {
    assert_eq!(
        granted_in("### EKS add-on mode"),
        actions(vpc_cni_tuner::controller::EKS_ACTIONS)
    );
}

#[test]
fn readme_rollout_iam_policy_grants_exactly_the_rollout_actions() {
    assert_eq!(
        granted_in("#### Rollout IAM actions"),
        actions(vpc_cni_tuner::controller::ROLLOUT_ACTIONS)
    );
}

fn actions(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// The actions the first JSON policy after `heading` grants.
fn granted_in(heading: &str) -> BTreeSet<String> {
    let section = README.split(heading).nth(1).expect("the section");
    let json = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a json block");
    let policy: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Every condition reason the operator writes is explained in the README's troubleshooting table.
#[test]
fn readme_troubleshooting_names_every_condition_reason() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("### Troubleshooting")
        .expect("a Troubleshooting section");
    let table: &str = &readme[start..];
    let table = &table[..table[4..].find("\n#").map_or(table.len(), |i| i + 4)];
    let missing: Vec<&str> = vpc_cni_tuner::crd::conditions::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|reason| {
            !table.contains(&format!("`{reason}`")) && !table.contains(&format!(" {reason}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README troubleshooting lacks: {missing:?}"
    );
}
