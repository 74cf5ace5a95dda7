use super::*;
use crate::crd::{KarpenterSpec, NodeNetworkPolicySpec};
use crate::testing::{DEFAULT_ENV, PREFIX_ENV, aws_node_ds, node, policy_inputs};

fn req(key: &str, operator: &str, values: &[&str]) -> Requirement {
    Requirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn spec(classes: &[&str], enforcement: Enforcement) -> NodeNetworkPolicySpec {
    NodeNetworkPolicySpec {
        enforcement,
        karpenter: Some(KarpenterSpec {
            ec2_node_classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        }),
        ..Default::default()
    }
}

fn pool(name: &str, class: &str, requirements: Vec<Requirement>) -> NodePoolFacts {
    NodePoolFacts {
        name: name.to_owned(),
        node_class: Some(class.to_owned()),
        requirements,
    }
}

/// Plans `policies` (name, created, spec) against these pools and classes; aws-node has `env`.
fn plan(
    policies: &[(&str, &str, NodeNetworkPolicySpec)],
    pools: &[NodePoolFacts],
    classes: &[(&str, Option<i64>)],
    availability: KarpenterAvailability,
    env: &[(&str, &str)],
) -> BTreeMap<String, PolicyPlan> {
    let ds = crate::observe::facts::aws_node_facts(&aws_node_ds(env, &[]));
    let classes: Vec<(&str, NodeClassFacts)> = classes
        .iter()
        .map(|(n, max_pods)| {
            (
                *n,
                NodeClassFacts {
                    max_pods: *max_pods,
                },
            )
        })
        .collect();
    let karpenter_nodes = [
        node("c6g.large").with_label(karpenter_labels::NODE_CLASS, "default"),
        node("c6g.large")
            .with_label(karpenter_labels::NODE_CLASS, "default")
            .with_capacity(8),
    ];
    let nodes: Vec<&NodeFacts> = karpenter_nodes.iter().collect();
    let inputs = policy_inputs(policies);
    let mut plans: BTreeMap<String, PolicyPlan> = policies
        .iter()
        .map(|(name, _, _)| {
            let degraded = ConditionPlan {
                type_: conditions::DEGRADED,
                status: false,
                reason: Reason::AsExpected,
                message: "nothing to report".to_owned(),
            };
            (
                (*name).to_owned(),
                PolicyPlan {
                    conditions: vec![degraded],
                    ..Default::default()
                },
            )
        })
        .collect();
    let input = KarpenterInput {
        availability,
        node_pools: pools.iter().collect(),
        node_classes: classes.iter().map(|(n, c)| (*n, c)).collect(),
        nodes: &nodes,
        aws_node: Some(&ds),
        catalog: &InstanceCatalog::embedded(),
    };
    plan_node_classes_of(&inputs, &mut plans, &input);
    plans
}

fn small_pool() -> NodePoolFacts {
    pool(
        "general",
        "default",
        vec![req(
            karpenter::labels::INSTANCE_TYPE,
            "In",
            &["c6g.medium", "c6g.large"],
        )],
    )
}

use crate::karpenter;

/// The policy `p` listing `default` (sized by [`small_pool`]), which carries `found`.
fn one_policy(
    enforcement: Enforcement,
    found: Option<i64>,
    availability: KarpenterAvailability,
    env: &[(&str, &str)],
) -> BTreeMap<String, PolicyPlan> {
    plan(
        &[("p", "2026-01-01T00:00:00Z", spec(&["default"], enforcement))],
        &[small_pool()],
        &[("default", found)],
        availability,
        env,
    )
}

#[test]
fn enforce_writes_the_smallest_types_value_with_the_prefix_delegation_aws_node_has() {
    for (env, wanted) in [(DEFAULT_ENV, 8), (PREFIX_ENV, 98)] {
        let plans = one_policy(
            Enforcement::Enforce,
            Some(110),
            KarpenterAvailability::Ready,
            env,
        );
        let report = plans["p"].karpenter.clone().expect("report");
        assert_eq!(
            report.writes,
            [NodeClassWrite {
                policy: "p".into(),
                node_class: "default".into(),
                max_pods: wanted,
                from: Some(110),
                bounding_type: "c6g.medium".into(),
                from_above_ip_limit: Some(("c6g.medium".to_owned(), wanted)),
            }]
        );
        let status = &report.statuses[0];
        assert_eq!(status.max_pods_wanted, Some(wanted));
        assert_eq!(
            status.max_pods_found,
            Some(i64::from(wanted)),
            "the status says what the class carries after the write"
        );
        assert!(status.in_sync);
        // One of the two nodes reports 8 pods.
        let behind = if wanted == 8 { 1 } else { 2 };
        assert_eq!((status.nodes, status.nodes_behind), (2, behind));
        assert!(report.condition.status);
    }
}

#[test]
fn steady_state_writes_nothing() {
    let plans = one_policy(
        Enforcement::Enforce,
        Some(8),
        KarpenterAvailability::Ready,
        DEFAULT_ENV,
    );
    let report = plans["p"].karpenter.clone().expect("report");
    assert!(report.writes.is_empty());
    assert_eq!(
        report.statuses[0].nodes_behind, 1,
        "one node reports 8 pods"
    );
}

#[test]
fn dry_run_reports_a_user_value_the_ips_cannot_carry() {
    let plans = one_policy(
        Enforcement::DryRun,
        Some(110),
        KarpenterAvailability::Ready,
        DEFAULT_ENV,
    );
    let p = &plans["p"];
    let report = p.karpenter.clone().expect("report");
    assert!(report.writes.is_empty());
    assert!(!report.condition.status);
    assert_eq!(report.condition.reason, Reason::DryRun);
    let degraded = p
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::DEGRADED)
        .unwrap();
    assert!(degraded.status);
    assert!(
        degraded
            .message
            .contains("sets maxPods 110, more than the 8 pods the IPs of c6g.medium carry"),
        "{}",
        degraded.message
    );
}

#[test]
fn a_wide_spread_is_degraded_with_the_fix() {
    let wide = pool(
        "wide",
        "default",
        vec![req(karpenter::labels::INSTANCE_FAMILY, "In", &["c6g"])],
    );
    let plans = plan(
        &[(
            "p",
            "2026-01-01T00:00:00Z",
            spec(&["default"], Enforcement::Enforce),
        )],
        &[wide],
        &[("default", None)],
        KarpenterAvailability::Ready,
        PREFIX_ENV,
    );
    let p = &plans["p"];
    let status = &p.karpenter.as_ref().unwrap().statuses[0];
    assert_eq!(status.max_pods_wanted, Some(98));
    assert_eq!(
        status.largest_instance_type.as_deref(),
        Some("c6g.16xlarge")
    );
    assert_eq!(status.pods_lost_on_largest, 250 - 98);
    let degraded = p
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::DEGRADED)
        .unwrap();
    assert!(
        degraded.status && degraded.message.contains("split"),
        "{}",
        degraded.message
    );
}

#[test]
fn problems_are_named_per_node_class() {
    let policies = [
        (
            "old",
            "2026-01-01T00:00:00Z",
            spec(&["default"], Enforcement::Enforce),
        ),
        (
            "new",
            "2026-02-01T00:00:00Z",
            spec(
                &["default", "missing", "lonely", "bad"],
                Enforcement::Enforce,
            ),
        ),
    ];
    let bad = pool(
        "bad",
        "bad",
        vec![req(karpenter::labels::INSTANCE_CPU, "Gt", &["many"])],
    );
    let plans = plan(
        &policies,
        &[small_pool(), bad],
        &[("default", Some(8)), ("lonely", None), ("bad", None)],
        KarpenterAvailability::Ready,
        DEFAULT_ENV,
    );
    let report = plans["new"].karpenter.clone().unwrap();
    let messages: Vec<&str> = report
        .statuses
        .iter()
        .map(|s| s.message.as_deref().unwrap_or_default())
        .collect();
    assert!(
        messages[0].contains("managed by policy old"),
        "{messages:?}"
    );
    assert!(messages[1].contains("does not exist"));
    assert!(messages[2].contains("no NodePool launches from EC2NodeClass lonely"));
    assert!(messages[3].contains("NodePool(s) bad") && messages[3].contains("one integer value"));
    assert!(!report.condition.status);
    assert_eq!(
        report.condition.reason,
        Reason::Conflict,
        "the first problem"
    );
    assert!(report.writes.is_empty());
    assert!(plans["old"].karpenter.as_ref().unwrap().condition.status);
}

#[test]
fn without_karpenter_the_condition_says_why() {
    for (availability, reason) in [
        (KarpenterAvailability::Disabled, Reason::KarpenterDisabled),
        (KarpenterAvailability::Pending, Reason::KarpenterPending),
        (
            KarpenterAvailability::Unavailable {
                reason: Reason::KarpenterNotInstalled,
                message: "the NodePool CRD is not installed".into(),
            },
            Reason::KarpenterNotInstalled,
        ),
    ] {
        let plans = one_policy(Enforcement::Enforce, Some(110), availability, DEFAULT_ENV);
        let report = plans["p"].karpenter.clone().unwrap();
        assert_eq!(report.condition.reason, reason);
        assert!(!report.condition.status);
        assert!(report.writes.is_empty());
    }
}
