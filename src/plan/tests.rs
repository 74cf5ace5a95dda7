use super::*;
use crate::crd::{MaxPods, MaxPodsPolicy, PrefixDelegation};
use crate::testing::{DEFAULT_ENV, PREFIX_ENV, aws_node_ds, node, policy_inputs};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn env(entries: &[(&str, &str)]) -> Vec<EnvEntry> {
    entries
        .iter()
        .map(|(name, value)| EnvEntry {
            name: (*name).to_owned(),
            value: Some((*value).to_owned()),
            from_source: false,
        })
        .collect()
}

/// The facts of the shared aws-node fixture with this literal env, `owned` by the operator.
fn aws_node(entries: &[(&str, &str)], owned: &[&str]) -> AwsNodeFacts {
    crate::observe::facts::aws_node_facts(&aws_node_ds(entries, owned))
}

struct Fixture {
    specs: Vec<(&'static str, &'static str, NodeNetworkPolicySpec)>,
    nodes: Vec<NodeFacts>,
    aws_node: Option<AwsNodeFacts>,
    target: CniTarget,
    ec2_access: bool,
}

impl Fixture {
    fn new(nodes: Vec<NodeFacts>, aws_node: Option<AwsNodeFacts>) -> Self {
        Self {
            specs: vec![(
                "default",
                "2026-01-01T00:00:00Z",
                NodeNetworkPolicySpec::default(),
            )],
            nodes,
            aws_node,
            target: CniTarget::default(),
            ec2_access: false,
        }
    }

    fn plan(&self) -> FleetPlan {
        self.plan_with(|_| {})
    }

    /// The EKS add-on's last update (add-on mode).
    fn last_update(&mut self, id: &str, status: &str, errors: Vec<String>) {
        if let CniTarget::EksAddon(facts) = &mut self.target {
            facts.last_update = Some(UpdateFacts {
                id: id.into(),
                status: status.into(),
                errors,
            });
        }
    }

    /// [`Fixture::plan`] with the policies' inputs edited (what their status says).
    fn plan_with<'a>(&'a self, edit: impl Fn(&mut Vec<PolicyInput<'a>>)) -> FleetPlan {
        let managed = DaemonSetRef::default();
        let catalog = InstanceCatalog::embedded();
        let extra = BTreeMap::new();
        let mut policies = policy_inputs(&self.specs);
        edit(&mut policies);
        let input = FleetInput {
            policies,
            nodes: self.nodes.iter().collect(),
            aws_node: self.aws_node.as_ref(),
            managed_daemonset: &managed,
            catalog: &catalog,
            extra_facts: &extra,
            cni_target: &self.target,
            now: jiff::Timestamp::UNIX_EPOCH,
            karpenter: None,
            ec2_access: self.ec2_access,
            template_syncs: &BTreeMap::new(),
        };
        plan_fleet(&input)
    }
}

fn condition<'a>(plan: &'a PolicyPlan, type_: &str) -> &'a ConditionPlan {
    plan.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

#[test]
fn first_apply_sets_prefix_delegation_for_t3_medium() {
    let fixture = Fixture::new(
        vec![
            node("t3.medium").with_capacity(17),
            node("t3.medium").with_capacity(110),
        ],
        Some(aws_node(DEFAULT_ENV, &[])),
    );
    let plan = fixture.plan();
    let write = plan.daemonset_write.expect("a write");
    assert_eq!(write.policy, "default");
    assert_eq!(
        write.env,
        BTreeMap::from([
            ("ENABLE_PREFIX_DELEGATION".to_owned(), "true".to_owned()),
            ("WARM_PREFIX_TARGET".to_owned(), "1".to_owned()),
        ])
    );
    assert_eq!(write.changes.len(), 2);
    assert!(write.changes.iter().all(|c| !c.drift));
    let policy = &plan.policies["default"];
    assert_eq!(policy.matched_nodes, 2);
    assert_eq!(policy.max_pods, Some(110));
    assert_eq!(policy.prefix_delegation, Some(true));
    assert_eq!(policy.cni_version.as_deref(), Some("1.19.2"));
    assert_eq!(
        policy.instance_types,
        vec![InstanceTypeStatus {
            instance_type: "t3.medium".into(),
            nodes: 2,
            prefix_delegation: true,
            max_pods_ip_limit: Some(242),
            max_pods: 110,
            nodes_at_target: 1,
            warm_env: Default::default(),
            nodes_with_other_warm_env: None,
        }]
    );
    assert!(condition(policy, "Ready").status);
    assert!(condition(policy, "CNIConfigured").status);
    assert!(!condition(policy, "Conflict").status);
    assert!(!condition(policy, "Degraded").status);
}

#[test]
fn steady_state_writes_nothing() {
    let fixture = Fixture::new(
        vec![node("t3.medium").with_capacity(110)],
        Some(aws_node(
            &[
                ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
                ("ENABLE_PREFIX_DELEGATION", "true"),
                ("WARM_ENI_TARGET", "1"),
                ("WARM_PREFIX_TARGET", "1"),
            ],
            &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"],
        )),
    );
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    assert!(condition(&plan.policies["default"], "CNIConfigured").status);
}

#[test]
fn drift_on_an_owned_var_is_repaired_and_marked() {
    let fixture = Fixture::new(
        vec![node("t3.medium")],
        Some(aws_node(
            &[
                ("ENABLE_PREFIX_DELEGATION", "false"),
                ("WARM_PREFIX_TARGET", "1"),
            ],
            &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"],
        )),
    );
    let write = fixture.plan().daemonset_write.expect("repair");
    assert_eq!(
        write.changes,
        vec![EnvChange {
            name: "ENABLE_PREFIX_DELEGATION".into(),
            from: Some("false".into()),
            to: Some("true".into()),
            drift: true,
        }]
    );
}

#[test]
fn vars_the_operator_no_longer_wants_are_dropped_from_its_apply() {
    let fixture = Fixture::new(
        vec![node("t3.medium")],
        Some(aws_node(
            &[
                ("ENABLE_PREFIX_DELEGATION", "true"),
                ("WARM_PREFIX_TARGET", "1"),
                ("WARM_IP_TARGET", "3"),
            ],
            &[
                "ENABLE_PREFIX_DELEGATION",
                "WARM_PREFIX_TARGET",
                "WARM_IP_TARGET",
            ],
        )),
    );
    let write = fixture.plan().daemonset_write.expect("cleanup");
    assert!(!write.env.contains_key("WARM_IP_TARGET"));
    assert_eq!(write.changes.len(), 1);
    assert_eq!(write.changes[0].to, None);
}

#[test]
fn foreign_warm_ip_target_is_reported_not_touched() {
    let fixture = Fixture::new(
        vec![node("t3.medium")],
        Some(aws_node(
            &[
                ("ENABLE_PREFIX_DELEGATION", "true"),
                ("WARM_PREFIX_TARGET", "1"),
                ("WARM_IP_TARGET", "5"),
            ],
            &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"],
        )),
    );
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    let degraded = condition(&plan.policies["default"], "Degraded");
    assert!(degraded.status);
    assert!(
        degraded.message.contains("WARM_IP_TARGET=5"),
        "{}",
        degraded.message
    );
}

#[test]
fn older_policy_wins_and_the_loser_gets_conflict_naming_it() {
    let mut fixture = Fixture::new(
        vec![
            node("t3.medium").with_label("pool", "a"),
            node("m5.large").with_label("pool", "b"),
        ],
        Some(aws_node(DEFAULT_ENV, &[])),
    );
    let select = |pool: &str| {
        Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("pool".to_owned(), pool.to_owned())])),
            ..Default::default()
        })
    };
    fixture.specs = vec![
        (
            "young",
            "2026-03-01T00:00:00Z",
            NodeNetworkPolicySpec {
                node_selector: select("b"),
                prefix_delegation: PrefixDelegation::Disabled,
                ..Default::default()
            },
        ),
        (
            "old",
            "2026-01-01T00:00:00Z",
            NodeNetworkPolicySpec {
                node_selector: select("a"),
                ..Default::default()
            },
        ),
    ];
    let plan = fixture.plan();
    let write = plan.daemonset_write.clone().expect("write");
    assert_eq!(write.policy, "old");
    assert_eq!(write.env["ENABLE_PREFIX_DELEGATION"], "true");
    let young = &plan.policies["young"];
    let conflict = condition(young, "Conflict");
    assert!(conflict.status);
    assert!(
        conflict.message.contains("policy old"),
        "{}",
        conflict.message
    );
    assert!(
        conflict.message.contains("ENABLE_PREFIX_DELEGATION=true"),
        "{}",
        conflict.message
    );
    assert!(!condition(young, "CNIConfigured").status);
    // The loser's nodes run with the winner's prefix delegation: m5.large gets 110, not 29.
    assert_eq!(young.max_pods, Some(110));
    assert_eq!(young.cni_env["ENABLE_PREFIX_DELEGATION"], "false");
    assert!(!condition(&plan.policies["old"], "Conflict").status);

    // Same inputs, other order: same plan.
    fixture.specs.reverse();
    fixture.nodes.reverse();
    assert_eq!(fixture.plan(), plan);
}

#[test]
fn same_created_time_breaks_ties_by_name() {
    let mut fixture = Fixture::new(vec![node("m5.large")], Some(aws_node(DEFAULT_ENV, &[])));
    fixture.specs = vec![
        (
            "b",
            "2026-01-01T00:00:00Z",
            NodeNetworkPolicySpec {
                prefix_delegation: PrefixDelegation::Disabled,
                ..Default::default()
            },
        ),
        (
            "a",
            "2026-01-01T00:00:00Z",
            NodeNetworkPolicySpec::default(),
        ),
    ];
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write.expect("write").policy, "a");
    assert!(condition(&plan.policies["b"], "Conflict").status);
}

#[test]
fn dry_run_computes_and_writes_nothing() {
    let mut fixture = Fixture::new(vec![node("m5.large")], Some(aws_node(DEFAULT_ENV, &[])));
    fixture.specs[0].2.enforcement = Enforcement::DryRun;
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    let policy = &plan.policies["default"];
    assert_eq!(condition(policy, "Ready").reason, "DryRun");
    let configured = condition(policy, "CNIConfigured");
    assert!(!configured.status);
    assert!(
        configured.message.contains("would change 2"),
        "{}",
        configured.message
    );
    // DryRun changes nothing: aws-node runs secondary IPs, and maxPods is sized for that.
    assert!(
        configured
            .message
            .contains("runs ENABLE_PREFIX_DELEGATION=false, not the true this policy wants"),
        "{}",
        configured.message
    );
    assert_eq!(policy.prefix_delegation, Some(false));
    assert_eq!(policy.max_pods, Some(29));
    assert_eq!(policy.cni_env["ENABLE_PREFIX_DELEGATION"], "true");
}

#[test]
fn max_pods_follows_the_mode_aws_node_runs_after_a_handover() {
    // Helm 4 holds ENABLE_PREFIX_DELEGATION=false by server-side apply: aws-node is handed
    // over, and runs secondary IPs. maxPods 110 there would strand pods on every m5.large.
    let ds = super::owner::tests::fought("helm", true, "false", false);
    let fixture = Fixture::new(vec![node("m5.large").with_capacity(29)], Some(ds));
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    let policy = &plan.policies["default"];
    assert_eq!(policy.prefix_delegation, Some(false));
    assert_eq!(policy.max_pods, Some(29));
    assert_eq!(policy.instance_types[0].max_pods, 29);
    assert_eq!(policy.instance_types[0].nodes_at_target, 1);
    // The status still says what the policy would set, and why it is not what runs.
    assert_eq!(policy.cni_env["ENABLE_PREFIX_DELEGATION"], "true");
    let configured = condition(policy, "CNIConfigured");
    assert!(!configured.status);
    assert_eq!(configured.reason, Reason::HelmOwnsAwsNode);
    assert!(
        configured
            .message
            .contains("runs ENABLE_PREFIX_DELEGATION=false, not the true this policy wants"),
        "{}",
        configured.message
    );
    assert!(condition(policy, "Ready").status);

    // The owner turns prefix delegation on: the policy follows it.
    let ds = super::owner::tests::fought("helm", true, "true", false);
    let plan = Fixture::new(vec![node("m5.large").with_capacity(29)], Some(ds)).plan();
    let policy = &plan.policies["default"];
    assert_eq!(policy.prefix_delegation, Some(true));
    assert_eq!(policy.max_pods, Some(110));
    assert!(
        !condition(policy, "CNIConfigured")
            .message
            .contains("runs ENABLE_PREFIX_DELEGATION"),
    );
}

#[test]
fn a_fixed_max_pods_the_running_mode_cannot_carry_blocks_the_policy() {
    let ds = super::owner::tests::fought("helm", true, "false", false);
    let mut fixture = Fixture::new(vec![node("m5.large")], Some(ds));
    fixture.specs[0].2.max_pods = MaxPods {
        policy: MaxPodsPolicy::Fixed,
        value: Some(110),
        ..Default::default()
    };
    let plan = fixture.plan();
    let policy = &plan.policies["default"];
    assert_eq!(
        policy.max_pods, None,
        "nothing above the IP limit is planned"
    );
    let ready = condition(policy, "Ready");
    assert!(!ready.status);
    assert!(
        ready.message.contains("ENABLE_PREFIX_DELEGATION=false"),
        "{}",
        ready.message
    );
}

#[test]
fn unknown_instance_type_blocks_with_a_reason() {
    let fixture = Fixture::new(
        vec![node("m5.large"), node("zz9.mega")],
        Some(aws_node(DEFAULT_ENV, &[])),
    );
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    let ready = condition(&plan.policies["default"], "Ready");
    assert!(!ready.status);
    assert_eq!(ready.reason, "UnknownInstanceType");
    assert!(ready.message.contains("zz9.mega"));
}

#[test]
fn live_facts_fill_in_unknown_types() {
    let fixture = Fixture::new(vec![node("zz9.mega")], Some(aws_node(DEFAULT_ENV, &[])));
    let managed = DaemonSetRef::default();
    let catalog = InstanceCatalog::embedded();
    let mut extra = BTreeMap::new();
    extra.insert(
        "zz9.mega".to_owned(),
        catalog.lookup("m5.large").expect("m5.large"),
    );
    let spec = NodeNetworkPolicySpec::default();
    let input = FleetInput {
        policies: vec![PolicyInput {
            name: "default",
            created: None,
            generation: Some(1),
            spec: &spec,
            addon_env: None,
            handover: None,
            aws_node_rollouts: 0,
        }],
        nodes: fixture.nodes.iter().collect(),
        aws_node: fixture.aws_node.as_ref(),
        managed_daemonset: &managed,
        catalog: &catalog,
        extra_facts: &extra,
        cni_target: &fixture.target,
        now: jiff::Timestamp::UNIX_EPOCH,
        karpenter: None,
        ec2_access: false,
        template_syncs: &BTreeMap::new(),
    };
    let plan = plan_fleet(&input);
    assert_eq!(plan.policies["default"].max_pods, Some(110));
}

#[test]
fn missing_daemonset_is_not_ready_and_writes_nothing() {
    let fixture = Fixture::new(vec![node("m5.large")], None);
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    let ready = condition(&plan.policies["default"], "Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (false, "DaemonSetNotFound")
    );
    assert!(ready.message.contains("kube-system/aws-node"));
}

#[test]
fn nodes_the_vpc_cni_does_not_serve_are_counted_by_reason() {
    let fixture = Fixture::new(
        vec![
            node("m5.large"),
            node("m5.large").with_label(labels::COMPUTE_TYPE, "fargate"),
            node("m5.large").with_label(labels::COMPUTE_TYPE, "hybrid"),
            node("m5.large").with_label(labels::OS, "windows"),
            NodeFacts::default(),
            NodeFacts::default().with_label(labels::INSTANCE_TYPE, " "),
        ],
        Some(aws_node(DEFAULT_ENV, &[])),
    );
    let policy = &fixture.plan().policies["default"];
    assert_eq!(policy.matched_nodes, 1);
    assert_eq!(
        policy.excluded_nodes,
        BTreeMap::from([
            ("Fargate".to_owned(), 1),
            ("HybridNode".to_owned(), 1),
            ("NoInstanceType".to_owned(), 2),
            ("Windows".to_owned(), 1),
        ])
    );
}

#[test]
fn env_from_configmap_or_duplicates_block_the_write() {
    let mut from_source = aws_node(DEFAULT_ENV, &[]);
    from_source.env.push(EnvEntry {
        name: "WARM_PREFIX_TARGET".into(),
        value: None,
        from_source: true,
    });
    let mut duplicate = aws_node(DEFAULT_ENV, &[]);
    duplicate
        .env
        .extend(env(&[("ENABLE_PREFIX_DELEGATION", "true")]));
    let mut no_container = aws_node(DEFAULT_ENV, &[]);
    no_container.container_found = false;
    no_container.image = None;
    for (ds, reason) in [
        (from_source, "EnvFromSource"),
        (duplicate, "DuplicateEnv"),
        (no_container, "AwsNodeContainerMissing"),
    ] {
        let mut fixture = Fixture::new(vec![node("t3.medium")], Some(ds));
        let plan = fixture.plan();
        assert_eq!(plan.daemonset_write, None, "{reason}");
        let ready = condition(&plan.policies["default"], "Ready");
        assert_eq!((ready.status, ready.reason.as_str()), (false, reason));
        // DryRun stays Ready; CNIConfigured names what the write would run into.
        fixture.specs[0].2.enforcement = crate::crd::Enforcement::DryRun;
        let plan = fixture.plan();
        let policy = &plan.policies["default"];
        assert_eq!(condition(policy, "Ready").reason, Reason::DryRun);
        let cni = condition(policy, "CNIConfigured");
        assert_eq!((cni.status, cni.reason.as_str()), (false, reason));
    }
}

#[test]
fn mixed_fleets() {
    // (types, ENABLE_IPv6, group maxPods, prefix delegation)
    let cases: [(&[&str], bool, u32, bool); 5] = [
        (&["m5.large", "m4.large"], false, 20, true),
        (&["c5.metal", "m5.24xlarge"], false, 250, false),
        (&["m4.large", "t2.medium"], false, 17, false),
        (&["t3.medium", "m5.24xlarge"], true, 110, true),
        (&["c5.metal", "t3.small"], false, 110, true),
    ];
    for (types, ipv6, max_pods, prefix) in cases {
        let mut ds = aws_node(DEFAULT_ENV, &[]);
        if ipv6 {
            ds.env.extend(env(&[("ENABLE_IPv6", "true")]));
        }
        let nodes = types.iter().map(|t| node(t)).collect();
        let plan = Fixture::new(nodes, Some(ds)).plan();
        let policy = &plan.policies["default"];
        assert_eq!(policy.max_pods, Some(max_pods), "{types:?}");
        assert_eq!(policy.prefix_delegation, Some(prefix), "{types:?}");
        assert!(condition(policy, "Ready").status, "{types:?}");
    }
}

#[test]
fn ipv6_with_a_xen_node_is_not_ready() {
    let mut ds = aws_node(DEFAULT_ENV, &[]);
    ds.env.extend(env(&[("ENABLE_IPv6", "true")]));
    let plan = Fixture::new(vec![node("m4.large")], Some(ds)).plan();
    let ready = condition(&plan.policies["default"], "Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (false, "InvalidSpec")
    );
    assert!(ready.message.contains("IPv6"), "{}", ready.message);
}

#[test]
fn unparsable_image_tag_is_reported_not_fatal() {
    let mut ds = aws_node(DEFAULT_ENV, &[]);
    ds.image = Some("mirror.local/amazon-k8s-cni:latest".into());
    let plan = Fixture::new(vec![node("t3.medium")], Some(ds)).plan();
    let policy = &plan.policies["default"];
    assert_eq!(policy.cni_version, None);
    assert!(condition(policy, "Ready").status);
    let degraded = condition(policy, "Degraded");
    assert!(degraded.status);
    assert!(degraded.message.contains("cannot read the VPC CNI version"));
}

#[test]
fn invalid_spec_names_the_field() {
    let mut fixture = Fixture::new(vec![node("t3.medium")], Some(aws_node(DEFAULT_ENV, &[])));
    fixture.specs[0].2.max_pods = MaxPods {
        policy: MaxPodsPolicy::Fixed,
        value: Some(500),
        ceiling: None,
    };
    fixture.specs[0].2.prefix_delegation = PrefixDelegation::Disabled;
    let plan = fixture.plan();
    let ready = condition(&plan.policies["default"], "Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (false, "InvalidSpec")
    );
    assert!(ready.message.contains("maxPods 500"), "{}", ready.message);
    assert_eq!(plan.daemonset_write, None);

    fixture.specs[0].2 = NodeNetworkPolicySpec {
        node_selector: Some(LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "pool".into(),
                    operator: "Near".into(),
                    values: None,
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ready = condition(&fixture.plan().policies["default"], "Ready").clone();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.nodeSelector"),
        "{}",
        ready.message
    );
}

#[test]
fn selector_picks_its_nodes_only() {
    let mut fixture = Fixture::new(
        vec![
            node("t3.medium").with_label("team", "a"),
            node("m5.large").with_label("team", "b"),
            node("c5.large"),
        ],
        Some(aws_node(DEFAULT_ENV, &[])),
    );
    fixture.specs[0].2.node_selector = Some(LabelSelector {
        match_expressions: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "team".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            },
        ]),
        ..Default::default()
    });
    let policy = &fixture.plan().policies["default"];
    assert_eq!(policy.matched_nodes, 2);
    let types: Vec<_> = policy
        .instance_types
        .iter()
        .map(|t| t.instance_type.as_str())
        .collect();
    assert_eq!(types, ["m5.large", "t3.medium"]);
}

#[test]
fn owning_env_on_an_eks_managed_aws_node_is_degraded_with_the_fix() {
    let env = &[
        ("ENABLE_PREFIX_DELEGATION", "false"),
        ("WARM_ENI_TARGET", "1"),
    ];
    for (addon_warning, want_warning) in [(true, true), (false, false)] {
        let mut fixture = Fixture::new(vec![node("m5.large")], Some(aws_node(env, &[])));
        fixture.target = CniTarget::DaemonSet { addon_warning };
        let plan = fixture.plan();
        assert!(plan.daemonset_write.is_some(), "the env is still written");
        let degraded = condition(&plan.policies["default"], "Degraded");
        assert_eq!(degraded.status, want_warning, "{}", degraded.message);
        if want_warning {
            for needle in [
                "EKS managed add-on",
                "resolveConflicts NONE",
                "--cni-config-via",
                "PRESERVE",
                "ENABLE_PREFIX_DELEGATION",
            ] {
                assert!(
                    degraded.message.contains(needle),
                    "{needle}: {}",
                    degraded.message
                );
            }
        }
    }
}

/// The add-on as DescribeAddon gives it, with `configuration_values`.
fn addon(configuration_values: Option<&str>) -> CniTarget {
    CniTarget::EksAddon(AddonFacts {
        cluster: "prod".into(),
        version: Some("v1.19.2-eksbuild.1".into()),
        status: Some("ACTIVE".into()),
        configuration_values: configuration_values.map(str::to_owned),
        last_update: None,
    })
}

#[test]
fn add_on_mode_writes_configuration_values_not_the_daemonset() {
    let mut fixture = Fixture::new(
        vec![node("t3.medium")],
        Some(aws_node(DEFAULT_ENV, &["ENABLE_PREFIX_DELEGATION"])),
    );
    fixture.target = addon(Some(
        r#"{"env":{"AWS_VPC_K8S_CNI_LOGLEVEL":"INFO"},"resources":{}}"#,
    ));
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None, "aws-node is not written");
    let write = plan.addon.write.as_ref().expect("an add-on update");
    assert_eq!(
        write.configuration_values,
        r#"{"env":{"AWS_VPC_K8S_CNI_LOGLEVEL":"INFO","ENABLE_PREFIX_DELEGATION":"true","WARM_PREFIX_TARGET":"1"},"resources":{}}"#
    );
    assert_eq!(
        plan.addon.release.iter().collect::<Vec<_>>(),
        ["ENABLE_PREFIX_DELEGATION"]
    );
    assert!(plan.addon.pending);
    let policy = &plan.policies["default"];
    let cni = condition(policy, "CNIConfigured");
    assert!(!cni.status);
    assert_eq!(cni.reason, Reason::AddonUpdating);
    assert!(
        cni.message.contains("WARM_PREFIX_TARGET: (unset) -> 1"),
        "{}",
        cni.message
    );
    assert!(
        !condition(policy, "Degraded").status,
        "no add-on warning in add-on mode"
    );
    let status = policy.cni_config.as_ref().expect("cniConfig");
    assert_eq!(status.via, "EksAddon");
    let a = status.eks_addon.as_ref().expect("eksAddon");
    assert_eq!(a.cluster_name, "prod");
    assert!(
        a.env.is_empty(),
        "nothing is recorded as written before the update is sent"
    );
    assert_eq!(write.env.len(), 2);
}

#[test]
fn add_on_mode_in_sync_waiting_failed_and_unavailable() {
    let prefix = r#"{"env":{"ENABLE_PREFIX_DELEGATION":"true","WARM_PREFIX_TARGET":"1"}}"#;
    // aws-node carries what configurationValues has: in sync, nothing to do.
    let mut fixture = Fixture::new(vec![node("t3.medium")], Some(aws_node(PREFIX_ENV, &[])));
    fixture.target = addon(Some(prefix));
    let plan = fixture.plan();
    assert_eq!(plan.addon, AddonPlan::default());
    let cni = condition(&plan.policies["default"], "CNIConfigured");
    assert!(
        cni.status && cni.message.contains("configurationValues"),
        "{}",
        cni.message
    );

    // configurationValues has it, aws-node not yet: waiting, or the update's errors.
    fixture.aws_node = Some(aws_node(DEFAULT_ENV, &[]));
    let plan = fixture.plan();
    assert_eq!(plan.addon.write, None);
    assert!(plan.addon.pending);
    assert_eq!(
        condition(&plan.policies["default"], "CNIConfigured").reason,
        Reason::AddonUpdating
    );
    fixture.last_update(
        "u-1",
        "Failed",
        vec!["ConfigurationConflict: conflict with \"helm\"".into()],
    );
    let plan = fixture.plan();
    let cni = condition(&plan.policies["default"], "CNIConfigured");
    assert_eq!(cni.reason, Reason::AddonUpdateFailed);
    assert!(
        cni.message.contains("conflict with \"helm\""),
        "{}",
        cni.message
    );

    // A document that is not an object blocks, naming it.
    fixture.target = addon(Some("[1]"));
    let plan = fixture.plan();
    let ready = condition(&plan.policies["default"], "Ready");
    assert_eq!(ready.reason, Reason::AddonConfigurationInvalid);
    assert_eq!(plan.addon, AddonPlan::default());

    // The add-on cannot be read: nothing is written anywhere.
    fixture.target = CniTarget::Unavailable {
        reason: Reason::EksClusterUnknown,
        message: "set --eks-cluster-name".into(),
    };
    let plan = fixture.plan();
    assert_eq!(plan.daemonset_write, None);
    assert_eq!(plan.addon, AddonPlan::default());
    let ready = condition(&plan.policies["default"], "Ready");
    assert!(!ready.status);
    assert_eq!(ready.reason, Reason::EksClusterUnknown);
}

#[test]
fn add_on_mode_dry_run_shows_the_document_and_drift_is_flagged() {
    // aws-node still has fields this operator owned in DaemonSet mode.
    let mut fixture = Fixture::new(
        vec![node("t3.medium")],
        Some(aws_node(DEFAULT_ENV, &["ENABLE_PREFIX_DELEGATION"])),
    );
    fixture.specs[0].2.enforcement = crate::crd::Enforcement::DryRun;
    fixture.target = addon(Some("env:\n  AWS_VPC_K8S_CNI_LOGLEVEL: INFO\n"));
    let plan = fixture.plan();
    assert_eq!(plan.addon.write, None, "DryRun sends nothing");
    assert!(plan.addon.release.is_empty(), "and releases nothing");
    let policy = &plan.policies["default"];
    let shown = policy
        .cni_config
        .as_ref()
        .and_then(|c| c.eks_addon.as_ref())
        .and_then(|a| a.configuration_values.clone())
        .expect("the document DryRun would send");
    assert_eq!(
        shown,
        "env:\n  AWS_VPC_K8S_CNI_LOGLEVEL: INFO\n  ENABLE_PREFIX_DELEGATION: 'true'\n  WARM_PREFIX_TARGET: '1'\n"
    );
    let cni = condition(policy, "CNIConfigured");
    assert_eq!(cni.reason, Reason::DryRun);
    assert!(cni.message.contains(&shown), "{}", cni.message);
}

#[test]
fn a_node_record_stays_small() {
    // What the node cache holds per node (README, "Scale"): 72 bytes, 88 with the Arc's
    // counts, one 96-byte heap chunk. A field that grows it costs 1.6 MB at 100,000 nodes.
    assert!(
        std::mem::size_of::<NodeFacts>() <= 72,
        "NodeFacts is {} bytes",
        std::mem::size_of::<NodeFacts>()
    );
}

#[test]
fn auto_never_turns_prefix_delegation_off_when_a_nitro_node_leaves() {
    // A Nitro node joined a Xen fleet: Auto turned prefix delegation on (the operator's write).
    let ds = aws_node(PREFIX_ENV, crate::testing::PREFIX_OWNED);
    let joined = Fixture::new(vec![node("m4.large"), node("m5.large")], Some(ds.clone())).plan();
    assert_eq!(joined.daemonset_write, None, "already on");
    // It leaves: Auto keeps what runs, so nothing is written, and the Xen types are sized for
    // the secondary IPs they fall back to.
    let left = Fixture::new(vec![node("m4.large"), node("m4.large")], Some(ds)).plan();
    assert_eq!(left.daemonset_write, None, "never turned off by itself");
    let policy = &left.policies["default"];
    assert_eq!(policy.prefix_delegation, Some(true));
    assert_eq!(policy.max_pods, Some(20));
    assert_eq!(policy.instance_types[0].max_pods, 20);
    // Off before, and no Nitro type: Auto stays off.
    let xen = Fixture::new(vec![node("m4.large")], Some(aws_node(DEFAULT_ENV, &[]))).plan();
    assert_eq!(xen.policies["default"].prefix_delegation, Some(false));
}

#[test]
fn an_explicit_disabled_turns_it_off_and_names_the_nodes_that_need_replacing() {
    let ds = aws_node(PREFIX_ENV, crate::testing::PREFIX_OWNED);
    let mut fixture = Fixture::new(
        vec![
            node("m5.large").with_capacity(110),
            node("m5.large").with_capacity(110),
            node("m5.large").with_capacity(29),
        ],
        Some(ds),
    );
    fixture.specs[0].2.prefix_delegation = PrefixDelegation::Disabled;
    let plan = fixture.plan();
    let write = plan.daemonset_write.expect("turned off");
    assert_eq!(write.env["ENABLE_PREFIX_DELEGATION"], "false");
    let policy = &plan.policies["default"];
    assert_eq!(policy.max_pods, Some(29));
    let degraded = condition(policy, "Degraded");
    assert!(degraded.status);
    assert!(
        degraded
            .message
            .contains("2 m5.large node(s) run maxPods up to 110, above the 29 pods"),
        "{}",
        degraded.message
    );
    assert!(
        degraded.message.contains("replace them"),
        "{}",
        degraded.message
    );
}

#[test]
fn a_template_two_enforce_policies_list_belongs_to_the_older() {
    let template: crate::crd::LaunchTemplateSpec =
        serde_json::from_value(serde_json::json!({"id": "lt-0abc"})).expect("template");
    let mut fixture = Fixture::new(
        vec![node("m5.large")],
        Some(aws_node(PREFIX_ENV, crate::testing::PREFIX_OWNED)),
    );
    fixture.ec2_access = true;
    fixture.specs[0].2.launch_templates = vec![template.clone()];
    let mut younger = fixture.specs[0].2.clone();
    younger
        .launch_templates
        .push(serde_json::from_value(serde_json::json!({"id": "lt-0def"})).expect("template"));
    fixture
        .specs
        .push(("younger", "2026-02-01T00:00:00Z", younger));
    let plan = fixture.plan();
    // The older writes it.
    let TemplateStep::Sync { reuse, .. } = &plan.templates["default"] else {
        panic!("the older syncs");
    };
    assert!(reuse.iter().all(Option::is_none));
    assert!(!condition(&plan.policies["default"], "Conflict").status);
    // The younger writes only its own template, and says whose the shared one is.
    let TemplateStep::Sync { reuse, .. } = &plan.templates["younger"] else {
        panic!("the younger syncs its own");
    };
    let placeholder = reuse[0].as_ref().expect("not written by the younger");
    assert_eq!(
        placeholder.problem.as_ref().map(|(r, _)| *r),
        Some(Reason::LostToOlderPolicy)
    );
    assert!(reuse[1].is_none(), "its own template is synced");
    let conflict = condition(&plan.policies["younger"], "Conflict");
    assert!(conflict.status);
    assert!(
        conflict
            .message
            .contains("launch template lt-0abc is also listed by policy default, which is older"),
        "{}",
        conflict.message
    );
    // DryRun policies write nothing: no owner to fight.
    fixture.specs[1].2.enforcement = Enforcement::DryRun;
    let plan = fixture.plan();
    assert!(!condition(&plan.policies["younger"], "Conflict").status);
}

#[test]
fn an_env_change_waits_for_aws_node_to_settle() {
    let mut ds = aws_node(DEFAULT_ENV, &[]);
    ds.rollout = Some(DaemonSetRollout {
        generation: 4,
        observed_generation: 4,
        desired: 10,
        updated: 10,
        unavailable: 2,
    });
    let fixture = Fixture::new(vec![node("m5.large")], Some(ds.clone()));
    let plan = fixture.plan();
    assert_eq!(
        plan.daemonset_write, None,
        "no write onto a rollout in progress"
    );
    let policy = &plan.policies["default"];
    let configured = condition(policy, "CNIConfigured");
    assert!(!configured.status);
    assert_eq!(configured.reason, Reason::AwsNodeRollingOut);
    assert!(
        configured
            .message
            .contains("10 of 10 pods run the current template and 2 are unavailable"),
        "{}",
        configured.message
    );
    assert!(condition(policy, "Ready").status);
    // Sized for what runs meanwhile (secondary IPs), not for the change that waits.
    assert_eq!(policy.max_pods, Some(29));
    // The controller has not seen the last change yet: the same.
    ds.rollout = Some(DaemonSetRollout {
        generation: 5,
        observed_generation: 4,
        desired: 10,
        updated: 10,
        unavailable: 0,
    });
    let plan = Fixture::new(vec![node("m5.large")], Some(ds.clone())).plan();
    assert_eq!(plan.daemonset_write, None);
    // Settled: written.
    ds.rollout = Some(DaemonSetRollout {
        generation: 5,
        observed_generation: 5,
        desired: 10,
        updated: 10,
        unavailable: 0,
    });
    let plan = Fixture::new(vec![node("m5.large")], Some(ds)).plan();
    assert!(plan.daemonset_write.is_some());
}

#[test]
fn cni_configured_is_true_only_once_the_pods_run_the_env() {
    let mut ds = aws_node(PREFIX_ENV, crate::testing::PREFIX_OWNED);
    ds.rollout = Some(DaemonSetRollout {
        generation: 6,
        observed_generation: 6,
        desired: 10,
        updated: 4,
        unavailable: 1,
    });
    let plan = Fixture::new(vec![node("m5.large")], Some(ds.clone())).plan();
    assert_eq!(plan.daemonset_write, None);
    let configured = condition(&plan.policies["default"], "CNIConfigured");
    assert!(!configured.status);
    assert_eq!(configured.reason, Reason::AwsNodeRollingOut);
    assert!(
        configured
            .message
            .contains("4 of 10 pods run the current template"),
        "{}",
        configured.message
    );
    assert_eq!(plan.policies["default"].max_pods, Some(110));
    ds.rollout = Some(DaemonSetRollout {
        generation: 6,
        observed_generation: 6,
        desired: 10,
        updated: 10,
        unavailable: 0,
    });
    let plan = Fixture::new(vec![node("m5.large")], Some(ds)).plan();
    assert!(condition(&plan.policies["default"], "CNIConfigured").status);
}

#[test]
fn auto_with_secondary_ip_only_settings_is_not_forced_on() {
    // An explicit warmENITarget fits secondary IPs only: on a Xen fleet whose aws-node runs
    // prefix delegation, Auto decides as before instead of failing the spec.
    let ds = aws_node(PREFIX_ENV, crate::testing::PREFIX_OWNED);
    let mut fixture = Fixture::new(vec![node("m4.large")], Some(ds));
    fixture.specs[0].2.warm_pool.warm_eni_target = Some(2);
    let plan = fixture.plan();
    let policy = &plan.policies["default"];
    assert!(condition(policy, "Ready").status, "{:?}", policy.conditions);
    assert_eq!(policy.cni_env["WARM_ENI_TARGET"], "2");
    assert_eq!(policy.max_pods, Some(20));
}

#[test]
fn add_on_keys_put_back_twice_in_a_day_are_handed_over() {
    // The operator wrote its keys into configurationValues; infrastructure as code put its own
    // document back (the keys gone).
    let mut fixture = Fixture::new(vec![node("t3.medium")], Some(aws_node(PREFIX_ENV, &[])));
    fixture.target = addon(Some(r#"{"env":{"AWS_VPC_K8S_CNI_LOGLEVEL":"INFO"}}"#));
    // The operator's last update (its first write of the keys).
    fixture.last_update("u-1", "Successful", Vec::new());
    let written: BTreeMap<String, String> = [
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("WARM_PREFIX_TARGET", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // First revert: restored, and recorded.
    let plan = fixture.plan_with(|p| p[0].addon_env = Some(&written));
    assert!(plan.addon.write.is_some(), "restored once");
    let record = plan.policies["default"]
        .cni_config
        .as_ref()
        .and_then(|c| c.handover.clone())
        .expect("the revert is recorded");
    assert_eq!((record.reverts, record.handed_over), (1, false));
    assert_eq!(record.revert_after_update.as_deref(), Some("u-1"));
    // The same revert on the next pass, its restore not sent yet (a backoff): not counted
    // again; the restore is still planned.
    let plan = fixture.plan_with(|p| {
        p[0].addon_env = Some(&written);
        p[0].handover = Some(&record);
    });
    assert!(plan.addon.write.is_some(), "the same revert, restored");
    assert_eq!(
        condition(&plan.policies["default"], "CNIConfigured").reason,
        Reason::AddonDrift
    );
    // Restored (update u-2), then put back again within the day: handed over, nothing sent,
    // the fix named.
    fixture.last_update("u-2", "Successful", Vec::new());
    let plan = fixture.plan_with(|p| {
        p[0].addon_env = Some(&written);
        p[0].handover = Some(&record);
    });
    assert_eq!(plan.addon.write, None, "not restored again");
    let policy = &plan.policies["default"];
    let cni = condition(policy, "CNIConfigured");
    assert_eq!(cni.reason, Reason::AddonHandedOver);
    assert!(
        cni.message.contains("ENABLE_PREFIX_DELEGATION=true")
            && cni
                .message
                .contains("Terraform aws_eks_addon configuration_values"),
        "{}",
        cni.message
    );
    assert!(plan.handover.is_some(), "an Event");
    let handed = policy
        .cni_config
        .as_ref()
        .and_then(|c| c.handover.clone())
        .expect("kept in the status");
    assert!(handed.handed_over);
    // The next pass (read back from the status): still handed over, no Event, nothing sent;
    // and maxPods follows what aws-node runs.
    let plan = fixture.plan_with(|p| {
        p[0].addon_env = Some(&written);
        p[0].handover = Some(&handed);
    });
    assert_eq!(plan.addon.write, None);
    assert!(plan.handover.is_none());
    assert_eq!(
        condition(&plan.policies["default"], "CNIConfigured").reason,
        Reason::AddonHandedOver
    );
    // A revert a day later is restored again.
    let old = crate::crd::HandoverStatus {
        last_revert_time: Some("1969-12-30T00:00:00Z".into()),
        ..record.clone()
    };
    let plan = fixture.plan_with(|p| {
        p[0].addon_env = Some(&written);
        p[0].handover = Some(&old);
    });
    assert!(plan.addon.write.is_some());
}
