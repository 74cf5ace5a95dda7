//! Reconcile scenarios against the fake API server (`support::fake_api`): every request the
//! fleet reconcile makes is checked by named step (method, path, body), in order, against the
//! chart's RBAC and for a forced server-side apply by this operator's field manager; a request
//! nobody expected fails the scenario.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::fake_api::*;
use vpc_cni_tuner::controller::ReconcileReport;
use vpc_cni_tuner::testing::{
    DEFAULT_ENV, PREFIX_ENV, PREFIX_OWNED, aws_node_ds, default_policy, node, policy,
};

#[tokio::test]
async fn first_apply_patches_only_owned_env_then_status() {
    let (ctx, api) = MockApi::cluster(
        vec![node("t3.medium"), node("t3.medium")],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    let report = api
        .reconcile(
            &ctx,
            vec![
                apply_env(|body| {
                    assert_eq!(body["apiVersion"], "apps/v1");
                    assert_eq!(body["kind"], "DaemonSet");
                    assert_eq!(env_of(body), pairs(PREFIX_ENV));
                    let containers = body["spec"]["template"]["spec"]["containers"]
                        .as_array()
                        .unwrap();
                    assert_eq!(containers.len(), 1);
                    let mut keys: Vec<_> = containers[0].as_object().unwrap().keys().collect();
                    keys.sort();
                    assert_eq!(
                        keys,
                        ["env", "name"],
                        "only the env of the aws-node container is applied"
                    );
                    assert!(body["metadata"].get("labels").is_none());
                    assert!(body["spec"].get("selector").is_none());
                }),
                event(|body| {
                    assert_eq!(body["reason"], "AwsNodeEnvUpdated");
                    let note = body["note"].as_str().unwrap();
                    assert!(
                        note.contains("ENABLE_PREFIX_DELEGATION: false -> true"),
                        "{note}"
                    );
                    assert_eq!(body["regarding"]["kind"], "NodeNetworkPolicy");
                }),
                status("default", |body| {
                    let status = &body["status"];
                    assert_eq!(status["matchedNodes"], 2);
                    assert_eq!(status["maxPods"], 110);
                    assert_eq!(status["prefixDelegation"], true);
                    assert_eq!(status["cniVersion"], "1.19.2");
                    assert_eq!(status["observedGeneration"], 1);
                    assert_eq!(status["cniEnv"]["WARM_PREFIX_TARGET"], "1");
                    assert_eq!(status["instanceTypes"][0]["maxPodsIpLimit"], 242);
                    assert_eq!(condition(body, "Ready")["status"], "True");
                    assert_eq!(condition(body, "CNIConfigured")["status"], "True");
                    assert_eq!(condition(body, "Conflict")["status"], "False");
                }),
            ],
        )
        .await;
    assert_eq!(
        report,
        ReconcileReport {
            daemonset_written: true,
            node_classes_written: 0,
            statuses_written: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        env_of(&api.daemonset()),
        pairs(&[
            ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
            ("ENABLE_PREFIX_DELEGATION", "true"),
            ("WARM_ENI_TARGET", "1"),
            ("WARM_PREFIX_TARGET", "1"),
        ]),
        "the other entries are kept"
    );
    // The apply's answer updated the cache: the next pass needs no DaemonSet write.
    let (_, plan) = vpc_cni_tuner::controller::plan_now(&ctx);
    assert_eq!(plan.daemonset_write, None);
}

/// A policy whose status already says what the plan says, and a DaemonSet that already carries
/// the env: a resync makes no request at all.
#[tokio::test]
async fn steady_state_resync_makes_no_request() {
    let in_sync = [
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("WARM_ENI_TARGET", "1"),
        ("WARM_PREFIX_TARGET", "1"),
    ];
    let (ctx, api) = MockApi::cluster(
        vec![node("t3.medium")],
        Some(&aws_node_ds(&in_sync, PREFIX_OWNED)),
    );
    // Compute the status the operator would write, and store it as the current one.
    let (policies, plan) = vpc_cni_tuner::controller::plan_now(&ctx);
    let status = vpc_cni_tuner::report::desired::desired_status(
        &plan.policies["default"],
        None,
        None,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ),
    );
    let mut current = (*policies[0]).clone();
    current.status = Some(status);
    ctx.observed()
        .policies
        .replace_all([("default".to_owned(), current)]);
    let report = api.reconcile(&ctx, vec![]).await;
    assert_eq!(report, ReconcileReport::default());
}

#[tokio::test]
async fn drift_on_an_owned_var_is_put_back_with_an_event() {
    let drifted = [
        ("ENABLE_PREFIX_DELEGATION", "false"),
        ("WARM_PREFIX_TARGET", "1"),
    ];
    let (ctx, api) = MockApi::cluster(
        vec![node("t3.medium")],
        Some(&aws_node_ds(&drifted, PREFIX_OWNED)),
    );
    let report = api
        .reconcile(
            &ctx,
            vec![
                apply_env(|body| {
                    assert!(
                        env_of(body).contains(&("ENABLE_PREFIX_DELEGATION".into(), "true".into()))
                    );
                }),
                event(|body| assert_eq!(body["reason"], "AwsNodeEnvRestored")),
                status("default", |_| {}),
            ],
        )
        .await;
    assert!(report.daemonset_written);
}

#[tokio::test]
async fn dry_run_writes_status_only() {
    let (ctx, api) = MockApi::new();
    api.fill(
        &ctx,
        vec![policy(
            "preview",
            "2026-01-01T00:00:00Z",
            json!({"enforcement": "DryRun"}),
            None,
        )],
        vec![node("m5.large")],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    let report = api
        .reconcile(
            &ctx,
            vec![status("preview", |body| {
                assert_eq!(condition(body, "Ready")["reason"], "DryRun");
                assert_eq!(condition(body, "CNIConfigured")["status"], "False");
                assert_eq!(body["status"]["cniEnv"]["ENABLE_PREFIX_DELEGATION"], "true");
            })],
        )
        .await;
    assert!(!report.daemonset_written);
}

#[tokio::test]
async fn conflicting_policies_oldest_wins_loser_reports_conflict() {
    let (ctx, api) = MockApi::new();
    api.fill(
        &ctx,
        vec![
            policy(
                "batch",
                "2026-05-01T00:00:00Z",
                json!({"nodeSelector": {"matchLabels": {"pool": "batch"}}, "prefixDelegation": "Disabled"}),
                None,
            ),
            policy(
                "web",
                "2026-01-01T00:00:00Z",
                json!({"nodeSelector": {"matchLabels": {"pool": "web"}}}),
                None,
            ),
        ],
        vec![
            node("m5.large").with_label("pool", "batch"),
            node("t3.medium").with_label("pool", "web"),
        ],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    let report = api
        .reconcile(
            &ctx,
            vec![
                apply_env(|body| {
                    assert!(
                        env_of(body).contains(&("ENABLE_PREFIX_DELEGATION".into(), "true".into()))
                    )
                }),
                event(|body| assert_eq!(body["regarding"]["name"], "web")),
                status("batch", |body| {
                    let conflict = condition(body, "Conflict");
                    assert_eq!(conflict["status"], "True");
                    assert!(conflict["message"].as_str().unwrap().contains("policy web"));
                    assert_eq!(
                        body["status"]["maxPods"], 110,
                        "m5.large runs with the winner's prefixes"
                    );
                }),
                status("web", |body| {
                    assert_eq!(condition(body, "Conflict")["status"], "False")
                }),
            ],
        )
        .await;
    assert_eq!(report.statuses_written, 2);
}

#[tokio::test]
async fn unknown_instance_type_sets_ready_false_and_leaves_aws_node_alone() {
    let (ctx, api) = MockApi::cluster(
        vec![node("m5.large"), node("q9.enormous")],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    api.reconcile(
        &ctx,
        vec![
            status("default", |body| {
                let ready = condition(body, "Ready");
                assert_eq!(ready["status"], "False");
                assert_eq!(ready["reason"], "UnknownInstanceType");
                assert!(ready["message"].as_str().unwrap().contains("q9.enormous"));
            }),
            event(|body| {
                assert_eq!(body["type"], "Warning");
                assert_eq!(body["reason"], "UnknownInstanceType");
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn missing_daemonset_sets_ready_false() {
    let (ctx, api) = MockApi::cluster(vec![node("m5.large")], None);
    api.reconcile(
        &ctx,
        vec![
            status("default", |body| {
                assert_eq!(condition(body, "Ready")["reason"], "DaemonSetNotFound")
            }),
            event(|body| assert_eq!(body["reason"], "DaemonSetNotFound")),
        ],
    )
    .await;
}

#[tokio::test]
async fn status_apply_sends_only_owned_conditions() {
    let (ctx, api) = MockApi::new();
    let foreign = json!({"conditions": [{"type": "example.com/Audited", "status": "True", "reason": "Manual",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    api.fill(
        &ctx,
        vec![policy(
            "default",
            "2026-01-01T00:00:00Z",
            json!({}),
            Some(foreign),
        )],
        vec![node("t3.medium")],
        Some(&aws_node_ds(PREFIX_ENV, PREFIX_OWNED)),
    );
    api.reconcile(
        &ctx,
        vec![status("default", |body| {
            let types: Vec<_> = body["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["type"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(types, ["CNIConfigured", "Conflict", "Degraded", "Ready"]);
        })],
    )
    .await;
}

#[tokio::test]
async fn a_follower_plans_but_writes_nothing() {
    let (ctx, api) = MockApi::follower();
    api.fill(
        &ctx,
        vec![default_policy()],
        vec![node("t3.medium")],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    let report = api.reconcile(&ctx, vec![]).await;
    assert_eq!(report, ReconcileReport::default());
}

/// A policy listing a Karpenter EC2NodeClass: one apply of `spec.kubelet.maxPods` with an Event
/// and the status; then nothing; a class the API says is gone is reported, not retried.
mod karpenter {
    use super::*;
    use http::Method;
    use vpc_cni_tuner::controller::Context;
    use vpc_cni_tuner::karpenter::Requirement;
    use vpc_cni_tuner::karpenter::resources::{NodeClassFacts, NodePoolFacts};

    const CLASS_PATH: &str = "/apis/karpenter.k8s.aws/v1/ec2nodeclasses/default";

    fn cluster() -> (Context, Verifier) {
        let (ctx, api) = MockApi::new();
        let ctx = ctx.with_karpenter(true);
        api.fill(
            &ctx,
            vec![policy(
                "default",
                "2026-01-01T00:00:00Z",
                json!({"karpenter": {"ec2NodeClasses": ["default"]}}),
                None,
            )],
            vec![node("m5.large")],
            Some(&aws_node_ds(PREFIX_ENV, PREFIX_OWNED)),
        );
        api.insert(
            &json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {"role": "KarpenterNodeRole", "kubelet": {"maxPods": 110}}}),
        );
        ctx.observed().karpenter.node_classes.replace_all([(
            "default".to_owned(),
            NodeClassFacts {
                max_pods: Some(110),
            },
        )]);
        ctx.observed().karpenter.node_pools.replace_all([(
            "general".to_owned(),
            NodePoolFacts {
                name: "general".into(),
                node_class: Some("default".into()),
                requirements: vec![Requirement {
                    key: "karpenter.k8s.aws/instance-family".into(),
                    operator: "In".into(),
                    values: vec!["c7g".into()],
                }],
            },
        )]);
        (ctx, api)
    }

    #[tokio::test]
    async fn node_class_written_once_then_left_alone() {
        let (ctx, api) = cluster();
        let report = api
            .reconcile(
                &ctx,
                vec![
                    Step::new(Method::PATCH, CLASS_PATH, |body| {
                        assert_eq!(
                            body,
                            &json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                                "metadata": {"name": "default"},
                                "spec": {"kubelet": {"maxPods": 98}}}),
                            "the one field, nothing else"
                        );
                    }),
                    event(|body| {
                        assert_eq!(body["reason"], "EC2NodeClassUpdated");
                        assert!(
                            body["note"]
                                .as_str()
                                .unwrap()
                                .contains("maxPods 110 -> 98 (bounded by c7g.medium)"),
                            "{body}"
                        );
                    }),
                    status("default", |body| {
                        let class = &body["status"]["ec2NodeClasses"][0];
                        assert_eq!(class["maxPodsWanted"], 98);
                        assert_eq!(class["inSync"], true);
                        assert_eq!(condition(body, "KarpenterSynced")["status"], "True");
                    }),
                ],
            )
            .await;
        assert_eq!(report.node_classes_written, 1);
        let stored = api.get(CLASS_PATH).unwrap();
        assert_eq!(stored["spec"]["kubelet"]["maxPods"], 98);
        assert_eq!(stored["spec"]["role"], "KarpenterNodeRole");
        api.sync_policies(&ctx);
        assert_eq!(
            api.reconcile(&ctx, vec![]).await,
            ReconcileReport::default(),
            "steady state"
        );
    }

    #[tokio::test]
    async fn a_refused_write_is_reported_in_the_status() {
        let (ctx, api) = cluster();
        api.fail(Method::PATCH, CLASS_PATH, 404, "NotFound");
        let report = api
            .reconcile(
                &ctx,
                vec![
                    Step::new(Method::PATCH, CLASS_PATH, |_| {}),
                    status("default", |body| {
                        let synced = condition(body, "KarpenterSynced");
                        assert_eq!(synced["status"], "False");
                        assert_eq!(synced["reason"], "NodeClassWriteFailed");
                        let class = &body["status"]["ec2NodeClasses"][0];
                        assert_eq!(class["inSync"], false);
                        assert_eq!(class["maxPodsFound"], 110, "the value it still carries");
                    }),
                ],
            )
            .await;
        assert_eq!(report.node_classes_written, 0);
    }
}

mod with_ec2 {
    use super::*;
    use std::sync::Arc;

    use base64::Engine as _;
    use vpc_cni_tuner::instance::InstanceCatalog;
    use vpc_cni_tuner::testing::FakeEc2;

    #[tokio::test]
    async fn launch_template_gets_max_pods_and_the_status_reports_it() {
        let (ctx, api) = MockApi::new();
        let fake = FakeEc2::default();
        fake.state()
            .auto_scaling_groups
            .push(vpc_cni_tuner::testing::launcher(
                vpc_cni_tuner::rollout::LauncherKind::AutoScalingGroup,
                "web",
                "$Default",
            ));
        let ctx = ctx.with_ec2(Arc::new(fake.clone()));
        api.fill(
            &ctx,
            vec![policy(
                "default",
                "2026-01-01T00:00:00Z",
                json!({"launchTemplates": [{"id": "lt-0abc"}]}),
                None,
            )],
            vec![node("t3.medium")],
            Some(&aws_node_ds(PREFIX_ENV, PREFIX_OWNED)),
        );
        api.reconcile(
            &ctx,
            vec![
                event(|body| {
                    assert_eq!(body["reason"], "LaunchTemplateUpdated");
                    let note = body["note"].as_str().unwrap();
                    assert!(
                        note.contains("version 1 -> 2 (now default), maxPods unset -> 110"),
                        "{note}"
                    );
                }),
                status("default", |body| {
                    let lt = &body["status"]["launchTemplates"][0];
                    assert_eq!(lt["id"], "lt-0abc");
                    assert_eq!(lt["versionRead"], 1);
                    assert_eq!(lt["versionWritten"], 2);
                    assert_eq!(lt["maxPodsWanted"], 110);
                    assert_eq!(lt["format"], "AL2");
                    assert_eq!(lt["inSync"], true);
                    assert_eq!(
                        lt["launchedBy"],
                        json!([{"kind": "AutoScalingGroup", "name": "web", "version": "$Default",
                                "versionWanted": 2, "nodes": 0, "nodesBehind": 0}])
                    );
                    assert_eq!(condition(body, "LaunchTemplatesSynced")["status"], "True");
                }),
            ],
        )
        .await;
        let created = fake.state().created.clone();
        assert_eq!(created.len(), 1);
        let script = base64::engine::general_purpose::STANDARD
            .decode(&created[0])
            .unwrap();
        assert!(
            String::from_utf8(script)
                .unwrap()
                .contains("--max-pods=110")
        );
        assert_eq!(fake.state().defaults, vec![2]);

        // The next passes plan from the template's last sync: no EC2 call, no write, until
        // the result is five minutes old or the policy's maxPods changes.
        let reads = fake.state().reads;
        api.sync_policies(&ctx);
        assert_eq!(
            api.reconcile(&ctx, vec![]).await,
            ReconcileReport::default()
        );
        assert_eq!(fake.state().reads, reads, "the last sync is reused");
        ctx.observed()
            .nodes
            .replace_all([("node-0".to_owned(), node("t2.medium"))]);
        // A Xen type replaces the Nitro one: prefix delegation stays on (Auto never turns it
        // off by itself), the Xen type falls back to secondary IPs, and the template follows.
        api.reconcile(
            &ctx,
            vec![
                event(|body| {
                    let note = body["note"].as_str().unwrap();
                    assert!(note.contains("maxPods 110 -> 17"), "{note}");
                }),
                status("default", |body| {
                    assert_eq!(body["status"]["launchTemplates"][0]["maxPodsWanted"], 17);
                }),
            ],
        )
        .await;
        assert!(
            fake.state().reads > reads,
            "a new maxPods is synced at once"
        );
    }

    #[tokio::test]
    async fn unknown_instance_types_are_looked_up_live() {
        let (ctx, api) = MockApi::cluster(
            vec![node("zz9.huge"), node("zz9.huge")],
            Some(&aws_node_ds(DEFAULT_ENV, &[])),
        );
        let fake = FakeEc2::default();
        let m5 = InstanceCatalog::embedded().lookup("m5.large").unwrap();
        fake.state().live_types.insert("zz9.huge".into(), m5);
        let ctx = ctx.with_ec2(Arc::new(fake.clone()));
        let report = api
            .reconcile(
                &ctx,
                vec![
                    apply_env(|_| {}),
                    event(|_| {}),
                    status("default", |body| {
                        assert_eq!(condition(body, "Ready")["status"], "True");
                        assert_eq!(
                            body["status"]["instanceTypes"][0]["instanceType"],
                            "zz9.huge"
                        );
                        assert_eq!(body["status"]["maxPods"], 110);
                    }),
                ],
            )
            .await;
        assert!(report.daemonset_written);
        assert_eq!(
            fake.state().type_lookups,
            vec![vec!["zz9.huge".to_owned()]],
            "one batched call"
        );
        // Cached: planning again asks EC2 nothing.
        let _ = vpc_cni_tuner::controller::plan_now(&ctx);
        assert_eq!(fake.state().type_lookups.len(), 1);
    }

    /// The subnet step's metadata-only list of the sampled nodes' pods (the idle estimate).
    fn pods_list() -> Step {
        Step::new(http::Method::GET, "/api/v1/pods", |_| {})
    }

    /// The pass that creates the prefix reservation asks to be run again in two seconds; that
    /// pass reads the subnet again and the status shows the reservation, as the operator's.
    #[tokio::test]
    async fn a_new_subnet_reservation_is_read_back_at_once_not_at_the_refresh() {
        use std::time::Duration;
        use vpc_cni_tuner::subnet::{InterfaceInfo, SubnetInfo};

        let (ctx, api) = MockApi::new();
        let fake = FakeEc2::default();
        fake.state().subnets.push(SubnetInfo {
            id: "subnet-a".into(),
            cidr: Some("10.0.1.0/24".into()),
            vpc_id: Some("vpc-1".into()),
            ..Default::default()
        });
        // An address in every /28 but .160/28: fragmented, one block to keep for prefixes.
        fake.state().interfaces.push(InterfaceInfo {
            id: "eni-1".into(),
            subnet_id: "subnet-a".into(),
            instance_id: Some("i-1".into()),
            addresses: (1..16)
                .filter(|b| *b != 10)
                .map(|b| format!("10.0.1.{}", b * 16 + 7))
                .collect(),
            prefixes: Vec::new(),
        });
        let ctx = ctx.with_ec2(Arc::new(fake.clone()));
        let mut n = node("m5.large");
        n.instance_id = Some("i-1".into());
        api.fill(
            &ctx,
            vec![policy(
                "default",
                "2026-01-01T00:00:00Z",
                json!({"prefixDelegation": "Enabled", "subnets": {"reservePrefixes": true}}),
                None,
            )],
            vec![n],
            Some(&aws_node_ds(PREFIX_ENV, PREFIX_OWNED)),
        );
        let report = api
            .reconcile(
                &ctx,
                vec![
                    pods_list(),
                    event(|body| assert_eq!(body["reason"], "SubnetPrefixesReserved")),
                    event(|body| assert_eq!(body["reason"], "SubnetCapacityLow")),
                    status("default", |body| {
                        let row = &body["status"]["subnets"][0];
                        assert_eq!(row["reservationCreated"], "scr-1");
                    }),
                ],
            )
            .await;
        assert_eq!(report.requeue_after, Some(Duration::from_secs(2)));
        assert_eq!(fake.state().reservations.len(), 1);

        api.sync_policies(&ctx);
        let report = api
            .reconcile(
                &ctx,
                vec![
                    pods_list(),
                    status("default", |body| {
                        let row = &body["status"]["subnets"][0];
                        assert_eq!(row["prefixReservations"], json!(["10.0.1.160/28"]));
                        assert_eq!(row["reservationCreated"], "scr-1");
                        assert_eq!(row["freeAlignedPrefixes"], 1);
                    }),
                ],
            )
            .await;
        assert_eq!(report.requeue_after, None, "read once, then the refresh");
        assert_eq!(fake.state().reservations.len(), 1, "created once");
    }
}

/// The EKS managed add-on owns aws-node: the env goes into its configurationValues through the
/// in-process EKS, never into the DaemonSet.
mod eks_addon {
    use super::*;
    use std::time::Duration;

    use http::Method;
    use serde_json::Value;
    use vpc_cni_tuner::controller::Context;
    use vpc_cni_tuner::testing::{EKS_ADDON_ENV, FakeEks, eks_addon_ds};

    fn cluster(spec: Value, owned: &[&str]) -> (Context, Verifier, FakeEks) {
        let policy = policy("default", "2026-01-01T00:00:00Z", spec, None);
        MockApi::addon_cluster(policy, vec![node("t3.medium")], owned)
    }

    fn sent_env(eks: &FakeEks) -> Value {
        let values = eks.state().configuration_values.clone().expect("sent");
        serde_json::from_str::<Value>(&values).expect("JSON")["env"].clone()
    }

    #[tokio::test]
    async fn the_env_goes_into_configuration_values_then_nothing_more() {
        let (ctx, api, eks) = cluster(json!({}), &[]);
        let report = api
            .reconcile(
                &ctx,
                vec![
                    event(|body| {
                        assert_eq!(body["reason"], "EksAddonUpdated");
                        let note = body["note"].as_str().unwrap();
                        assert!(note.contains("cluster prod"), "{note}");
                        assert!(note.contains("update update-1"), "{note}");
                    }),
                    status("default", |body| {
                        let config = &body["status"]["cniConfig"];
                        assert_eq!(config["via"], "EksAddon");
                        assert_eq!(config["eksAddon"]["clusterName"], "prod");
                        assert_eq!(config["eksAddon"]["lastUpdateId"], "update-1");
                        assert_eq!(
                            config["eksAddon"]["env"]["ENABLE_PREFIX_DELEGATION"],
                            "true"
                        );
                        let cni = condition(body, "CNIConfigured");
                        assert_eq!(cni["status"], "False");
                        assert_eq!(cni["reason"], "AddonUpdating");
                    }),
                ],
            )
            .await;
        assert!(report.addon_updated);
        assert!(!report.daemonset_written);
        assert_eq!(report.requeue_after, Some(Duration::from_secs(3)));
        assert_eq!(
            eks.take_calls(),
            ["DescribeAddon", "DescribeAddonConfiguration", "UpdateAddon"]
        );
        assert_eq!(
            sent_env(&eks),
            json!({"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"})
        );

        // EKS applies it; the next pass follows the update and reports InSync.
        api.eks_applies(&ctx, &eks);
        api.sync_policies(&ctx);
        let report = api
            .reconcile(
                &ctx,
                vec![status("default", |body| {
                    let cni = condition(body, "CNIConfigured");
                    assert_eq!(cni["status"], "True", "{cni}");
                    assert_eq!(cni["reason"], "InSync");
                    let addon = &body["status"]["cniConfig"]["eksAddon"];
                    assert_eq!(addon["lastUpdateStatus"], "Successful");
                })],
            )
            .await;
        assert!(!report.addon_updated);
        assert_eq!(eks.take_calls(), ["DescribeAddon", "DescribeUpdate"]);

        // Steady state: not a request to either API.
        api.sync_policies(&ctx);
        for _ in 0..3 {
            assert_eq!(
                api.reconcile(&ctx, vec![]).await,
                ReconcileReport::default()
            );
        }
        assert_eq!(eks.take_calls(), Vec::<&str>::new());
    }

    #[tokio::test]
    async fn fields_a_daemonset_mode_run_owned_are_released_first() {
        let (ctx, api, eks) = cluster(json!({}), PREFIX_OWNED);
        api.reconcile(
            &ctx,
            vec![
                Step::new(Method::PATCH, DS_PATH, |body| {
                    let ops = body.as_array().expect("a JSON patch");
                    assert_eq!(ops[0]["op"], "test");
                    assert_eq!(ops[0]["value"], "vpc-cni-tuner");
                    assert_eq!(ops[1]["op"], "remove");
                }),
                event(|body| assert_eq!(body["reason"], "EksAddonUpdated")),
                status("default", |_| {}),
            ],
        )
        .await;
        let managers: Vec<Value> = api.daemonset()["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["manager"].clone())
            .collect();
        assert_eq!(managers, [json!("eks")], "the values stay, EKS's alone");
        assert!(eks.take_calls().contains(&"UpdateAddon"));
    }

    #[tokio::test]
    async fn dry_run_shows_the_document_and_sends_nothing() {
        let (ctx, api, eks) = cluster(json!({"enforcement": "DryRun"}), &[]);
        api.reconcile(
            &ctx,
            vec![status("default", |body| {
                let cni = condition(body, "CNIConfigured");
                assert_eq!(cni["reason"], "DryRun");
                let message = cni["message"].as_str().unwrap();
                assert!(
                    message.contains(r#"would send configurationValues {"env":{"ENABLE_PREFIX_DELEGATION":"true""#),
                    "{message}"
                );
            })],
        )
        .await;
        assert_eq!(eks.take_calls(), ["DescribeAddon"]);
    }

    #[tokio::test]
    async fn a_follower_calls_no_eks_api() {
        let (ctx, api, eks) = MockApi::addon(false);
        api.fill(
            &ctx,
            vec![default_policy()],
            vec![node("t3.medium")],
            Some(&eks_addon_ds(EKS_ADDON_ENV, &[])),
        );
        assert_eq!(
            api.reconcile(&ctx, vec![]).await,
            ReconcileReport::default()
        );
        assert_eq!(eks.take_calls(), Vec::<&str>::new());
    }

    #[tokio::test]
    async fn an_update_someone_else_started_is_waited_for() {
        let (ctx, api, eks) = cluster(json!({}), &[]);
        eks.state().status = "UPDATING".into();
        let report = api
            .reconcile(
                &ctx,
                vec![status("default", |body| {
                    let cni = condition(body, "CNIConfigured");
                    assert_eq!(cni["reason"], "AddonUpdating");
                    let message = cni["message"].as_str().unwrap();
                    assert!(message.contains("in progress"), "{message}");
                })],
            )
            .await;
        assert!(!report.addon_updated);
        assert_eq!(report.requeue_after, Some(Duration::from_secs(3)));
        assert_eq!(eks.take_calls(), ["DescribeAddon"]);
    }
}

/// A write is planned only from a read of the add-on at most 5 s old: after a quiet spell, a
/// change first reads the add-on again (one pass that writes nothing), then sends.
#[tokio::test]
async fn an_old_read_of_the_add_on_is_renewed_before_a_write() {
    use std::time::Duration;
    use vpc_cni_tuner::testing::{EKS_ADDON_ENV, eks_addon_ds};

    let (ctx, api, eks) = MockApi::addon(true);
    api.fill(
        &ctx,
        vec![default_policy()],
        vec![node("m5.large")],
        Some(&eks_addon_ds(EKS_ADDON_ENV, &[])),
    );
    api.reconcile(&ctx, vec![event(|_| {}), status("default", |_| {})])
        .await;
    api.eks_applies(&ctx, &eks);
    api.sync_policies(&ctx);
    api.reconcile(&ctx, vec![status("default", |_| {})]).await;
    api.sync_policies(&ctx);
    assert_eq!(
        api.reconcile(&ctx, vec![]).await,
        ReconcileReport::default()
    );
    eks.take_calls();

    // Quiet for longer than the add-on read is trusted for a write; then the policy changes
    // (a profile with two spare prefixes).
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let mut changed = (*ctx.observed().policies.values()[0]).clone();
    changed.spec.warm_pool.profile = vpc_cni_tuner::crd::WarmPoolProfile::FastScaling;
    ctx.observed()
        .policies
        .apply(kube::runtime::watcher::Event::Apply(changed), Clone::clone);
    let report = api.reconcile(&ctx, vec![]).await;
    assert_eq!(
        report.requeue_after,
        Some(Duration::ZERO),
        "read again at once"
    );
    assert!(!report.addon_updated);
    assert_eq!(
        eks.take_calls(),
        Vec::<&str>::new(),
        "nothing sent from the old read"
    );
    let report = api
        .reconcile(&ctx, vec![event(|_| {}), status("default", |_| {})])
        .await;
    assert!(report.addon_updated);
    assert_eq!(eks.take_calls(), ["DescribeAddon", "UpdateAddon"]);
}

/// The metrics of a reconcile: AWS requests by operation and result, each policy condition with
/// its status, the leader flag and the build; a follower exports none of the fleet's gauges.
#[tokio::test]
async fn metrics_say_what_the_leader_did_and_a_follower_exports_no_fleet_gauges() {
    use vpc_cni_tuner::testing::{EKS_ADDON_ENV, eks_addon_ds};

    let (ctx, api, eks) = MockApi::addon(true);
    api.fill(
        &ctx,
        vec![default_policy()],
        vec![node("t3.medium")],
        Some(&eks_addon_ds(EKS_ADDON_ENV, &[])),
    );
    eks.fail_next("DescribeAddonConfiguration", "AccessDeniedException", 403);
    api.reconcile(&ctx, vec![status("default", |_| {})]).await;
    let text = ctx.metrics().encode();
    for line in [
        r#"vpc_cni_tuner_aws_requests_total{service="eks",operation="DescribeAddon",result="ok"} 1"#,
        r#"vpc_cni_tuner_aws_requests_total{service="eks",operation="DescribeAddonConfiguration",result="error"} 1"#,
        r#"vpc_cni_tuner_policy_condition{policy="default",type="Ready",status="True"} 1"#,
        r#"vpc_cni_tuner_policy_condition{policy="default",type="CNIConfigured",status="False"} 1"#,
        "vpc_cni_tuner_leader 1",
        r#"vpc_cni_tuner_recommended_max_pods{policy="default",instance_type="t3.medium"} 110"#,
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    assert!(text.contains("vpc_cni_tuner_build_info{version="));
    assert!(text.contains("process_cpu_seconds_total "));
    assert!(text.contains("vpc_cni_tuner_reconcile_duration_seconds_bucket{le=\"131.072\"}"));

    let (follower, api) = MockApi::follower();
    api.fill(
        &follower,
        vec![default_policy()],
        vec![node("t3.medium")],
        Some(&aws_node_ds(DEFAULT_ENV, &[])),
    );
    api.reconcile(&follower, vec![]).await;
    let text = follower.metrics().encode();
    assert!(text.contains("vpc_cni_tuner_leader 0"), "{text}");
    for name in [
        "vpc_cni_tuner_policy_condition{",
        "vpc_cni_tuner_recommended_max_pods{",
        "vpc_cni_tuner_nodes_not_at_target{",
    ] {
        assert!(!text.contains(name), "a follower exports no {name}");
    }
}
