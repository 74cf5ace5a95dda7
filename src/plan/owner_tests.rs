use super::*;
use crate::observe::facts::aws_node_facts;
use crate::testing::{aws_node_ds, owned_env_fields};
use serde_json::{Value, json};

fn meta(labels: Value, annotations: Value, managers: &[(&str, bool)]) -> OwnerMetadata {
    OwnerMetadata {
        labels: serde_json::from_value(labels).expect("labels"),
        annotations: serde_json::from_value(annotations).expect("annotations"),
        managers: managers
            .iter()
            .map(|(name, server_side)| FieldManager {
                name: (*name).to_owned(),
                server_side: *server_side,
            })
            .collect(),
    }
}

fn kind(m: &OwnerMetadata) -> Option<(OwnerKind, Option<String>, Option<String>)> {
    detect(m).map(|o| (o.kind, o.name, o.namespace))
}

#[test]
#[allow(clippy::too_many_lines)] // a table of cases, one per owner
fn detects_each_owner_from_its_metadata() {
    let helm_labels = json!({"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "aws-vpc-cni-1.22.4",
        "app.kubernetes.io/instance": "aws-vpc-cni"});
    let cases = [
        // helm install: annotations name the release, the manager is the Helm client's.
        (
            meta(
                helm_labels.clone(),
                json!({"meta.helm.sh/release-name": "cni", "meta.helm.sh/release-namespace": "kube-system"}),
                &[("helm", true)],
            ),
            Some((
                OwnerKind::Helm,
                Some("cni".into()),
                Some("kube-system".into()),
            )),
        ),
        // Labels only (the Helm library under another process name).
        (
            meta(helm_labels.clone(), json!({}), &[("python", true)]),
            Some((OwnerKind::Helm, Some("aws-vpc-cni".into()), None)),
        ),
        // Argo CD renders the chart with helm template: its tracking annotation wins over the
        // chart's Helm labels; apps in other namespaces are NAMESPACE_APP.
        (
            meta(
                helm_labels.clone(),
                json!({"argocd.argoproj.io/tracking-id": "team_vpc-cni:apps/DaemonSet:kube-system/aws-node"}),
                &[("argocd-controller", false)],
            ),
            Some((
                OwnerKind::ArgoCd,
                Some("vpc-cni".into()),
                Some("team".into()),
            )),
        ),
        // Argo CD with label tracking.
        (
            meta(
                helm_labels.clone(),
                json!({}),
                &[("argocd-controller", true)],
            ),
            Some((OwnerKind::ArgoCd, Some("aws-vpc-cni".into()), None)),
        ),
        // Flux helm-controller: a real Helm release, labelled with the HelmRelease.
        (
            meta(
                json!({"helm.toolkit.fluxcd.io/name": "vpc-cni", "helm.toolkit.fluxcd.io/namespace": "flux-system",
                    "app.kubernetes.io/managed-by": "Helm"}),
                json!({"meta.helm.sh/release-name": "kube-system-vpc-cni"}),
                &[("helm-controller", false)],
            ),
            Some((
                OwnerKind::Flux,
                Some("vpc-cni".into()),
                Some("flux-system".into()),
            )),
        ),
        (
            meta(
                json!({"kustomize.toolkit.fluxcd.io/name": "infra", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}),
                json!({}),
                &[("kustomize-controller", true)],
            ),
            Some((
                OwnerKind::Flux,
                Some("infra".into()),
                Some("flux-system".into()),
            )),
        ),
        // kOps' channels labels every addon object.
        (
            meta(
                json!({"app.kubernetes.io/managed-by": "kops", "addon.kops.k8s.io/name": "networking.amazon-vpc-routed-eni"}),
                json!({}),
                &[("kops", true)],
            ),
            Some((
                OwnerKind::Kops,
                Some("networking.amazon-vpc-routed-eni".into()),
                None,
            )),
        ),
        (
            meta(json!({}), json!({}), &[("Terraform", true)]),
            Some((OwnerKind::Terraform, None, None)),
        ),
        (
            meta(
                json!({}),
                json!({}),
                &[("eks", true), ("kubectl-edit", false)],
            ),
            Some((OwnerKind::EksAddon, Some("vpc-cni".into()), None)),
        ),
        (
            meta(
                json!({}),
                json!({}),
                &[("kubectl-client-side-apply", false)],
            ),
            Some((OwnerKind::Other, None, None)),
        ),
        (meta(json!({}), json!({}), &[]), None),
    ];
    for (metadata, want) in cases {
        assert_eq!(kind(&metadata), want, "{metadata:?}");
    }
}

#[test]
fn each_owner_gets_its_own_fix() {
    let env: BTreeMap<String, String> = [
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("WARM_PREFIX_TARGET", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let owner = |kind, name: &str, object: Option<&str>| AwsNodeOwner {
        kind,
        name: Some(name.to_owned()),
        namespace: Some("kube-system".into()),
        object: object.map(str::to_owned),
        managers: vec![FieldManager {
            name: "mgr".into(),
            server_side: false,
        }],
    };
    let helm = owner(OwnerKind::Helm, "cni", None).fix(&env);
    assert!(
        helm.contains("helm upgrade cni eks/aws-vpc-cni -n kube-system --reuse-values")
            && helm.contains("--set-string env.ENABLE_PREFIX_DELEGATION=true")
            && helm.contains("--set-string env.WARM_PREFIX_TARGET=1"),
        "{helm}"
    );
    let argo = owner(OwnerKind::ArgoCd, "vpc-cni", Some("Application")).fix(&env);
    assert!(
        argo.contains("managedFieldsManagers: [vpc-cni-tuner]")
            && argo.contains("RespectIgnoreDifferences=true")
            && argo.contains("ENABLE_PREFIX_DELEGATION: \"true\""),
        "{argo}"
    );
    let flux = owner(OwnerKind::Flux, "vpc-cni", Some("HelmRelease")).fix(&env);
    assert!(
        flux.contains("HelmRelease kube-system/vpc-cni") && flux.contains("driftDetection.ignore"),
        "{flux}"
    );
    let kops = owner(OwnerKind::Kops, "networking", None).fix(&env);
    assert!(
        kops.contains("kops edit cluster")
            && kops.contains("{name: ENABLE_PREFIX_DELEGATION, value: \"true\"}")
            && kops.contains("kops update cluster --yes")
            && kops.contains("kops rolling-update cluster --yes"),
        "{kops}"
    );
    let other = owner(OwnerKind::Other, "x", None).fix(&env);
    assert!(other.contains("field manager mgr"), "{other}");
}

/// aws-node applied by `manager` (server-side or not) with ENABLE_PREFIX_DELEGATION=`value`,
/// after this operator applied `true` (so the operator still owns the entry's key).
pub(in crate::plan) fn fought(
    manager: &str,
    server_side: bool,
    value: &str,
    operator_applied: bool,
) -> AwsNodeFacts {
    let mut ds = serde_json::to_value(aws_node_ds(
        &[
            ("ENABLE_PREFIX_DELEGATION", value),
            ("WARM_PREFIX_TARGET", "1"),
        ],
        &[],
    ))
    .expect("json");
    let mut theirs = owned_env_fields(manager, &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"]);
    theirs["operation"] = json!(if server_side { "Apply" } else { "Update" });
    let mut fields = vec![theirs];
    if operator_applied {
        // The key stays the operator's; the value went to the other manager.
        let mut ours = owned_env_fields(
            crate::crd::FIELD_MANAGER,
            &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"],
        );
        ours["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"aws-node\"}"]
            ["f:env"]["k:{\"name\":\"ENABLE_PREFIX_DELEGATION\"}"] = json!({".": {}, "f:name": {}});
        fields.push(ours);
    }
    ds["metadata"]["managedFields"] = Value::Array(fields);
    ds["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "aws-vpc-cni",
        "meta.helm.sh/release-namespace": "kube-system"});
    aws_node_facts(&serde_json::from_value(ds).expect("daemonset"))
}

fn wanted() -> BTreeMap<String, String> {
    [
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("WARM_PREFIX_TARGET", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + seconds).expect("time")
}

fn decide(ds: &AwsNodeFacts, previous: Option<&HandoverStatus>, now: i64) -> OwnerDecision {
    let changes = super::super::env::env_changes(ds, &wanted()).expect("changes");
    check_write(ds, &wanted(), &changes, previous, at(now))
}

#[test]
fn client_side_owner_first_revert_is_put_back_the_second_hands_over() {
    // First apply over Helm 3's values: no revert yet, written.
    let first = decide(&fought("helm", false, "false", false), None, 0);
    assert_eq!(first.write, Ok(()));
    assert_eq!(first.handover, None);
    // Helm puts false back: one revert, put back and recorded.
    let reverted = fought("helm", false, "false", true);
    let one = decide(&reverted, None, 10);
    assert_eq!(one.write, Ok(()));
    assert_eq!(one.reverted_by.as_deref(), Some("helm"));
    let record = one.handover.expect("recorded");
    assert_eq!((record.reverts, record.handed_over), (1, false));
    // Again within the window: handed over, with Helm's fix.
    let two = decide(&reverted, Some(&record), 70);
    let blocked = two.write.expect_err("handed over");
    assert_eq!(blocked.reason, Reason::HelmOwnsAwsNode);
    assert!(
        blocked
            .message
            .contains("--set-string env.ENABLE_PREFIX_DELEGATION=true")
    );
    assert!(
        blocked
            .message
            .contains("Helm release kube-system/aws-vpc-cni")
    );
    let handed = two.handover.expect("handover");
    assert!(handed.handed_over);
    assert_eq!(handed.reverts, 2);
    assert_eq!(handed.owner_env["ENABLE_PREFIX_DELEGATION"], "false");
    // The owner keeps its values: nothing is written, however often it is asked, and the
    // handover time stays.
    for later in [100, 10_000, 1_000_000] {
        let again = decide(&reverted, Some(&handed), later);
        assert!(again.write.is_err());
        assert_eq!(
            again.handover.as_ref().and_then(|h| h.since.clone()),
            handed.since
        );
    }
    // The owner adopts the operator's values: in sync, the handover ends.
    let agreed = fought("helm", false, "true", true);
    let done = decide(&agreed, Some(&handed), 2_000_000);
    assert_eq!(done.write, Ok(()));
    assert_eq!(done.handover, None);
}

#[test]
fn reverts_further_apart_than_the_window_are_each_put_back() {
    let reverted = fought("kubectl-edit", false, "false", true);
    let one = decide(&reverted, None, 0).handover.expect("recorded");
    let window = REVERT_WINDOW.as_secs();
    let later = decide(&reverted, Some(&one), window + 1);
    assert_eq!(later.write, Ok(()));
    assert_eq!(later.handover.map(|h| h.reverts), Some(1));
}

#[test]
fn a_value_held_by_server_side_apply_is_never_taken() {
    // Helm 4 (server-side apply, no force): taking the value would fail its next upgrade.
    let ds = fought("helm", true, "false", false);
    let decision = decide(&ds, None, 0);
    let blocked = decision.write.expect_err("not taken");
    assert_eq!(blocked.reason, Reason::HelmOwnsAwsNode);
    assert!(
        blocked.message.contains("server-side apply"),
        "{}",
        blocked.message
    );
    assert!(decision.handover.is_some_and(|h| h.handed_over));
}

#[test]
fn a_changed_owner_value_is_looked_at_again() {
    let reverted = fought("argocd-controller", false, "false", true);
    let handed = HandoverStatus {
        handed_over: true,
        reverts: 2,
        owner_env: [
            ("ENABLE_PREFIX_DELEGATION", "false"),
            ("WARM_PREFIX_TARGET", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    };
    assert!(decide(&reverted, Some(&handed), 0).write.is_err());
    // The owner now sets another value (not the operator's): one more attempt.
    let changed = fought("argocd-controller", false, "FALSE", true);
    let decision = decide(&changed, Some(&handed), 10);
    assert_eq!(decision.write, Ok(()));
    assert_eq!(
        decision.handover.map(|h| (h.reverts, h.handed_over)),
        Some((1, false))
    );
}

#[test]
fn values_taken_from_a_server_side_owner_are_warned_about() {
    // An earlier version forced ENABLE_PREFIX_DELEGATION from Helm 4's server-side apply: Helm
    // keeps the entry, the operator holds the value.
    let mut ds = serde_json::to_value(aws_node_ds(
        &[
            ("ENABLE_PREFIX_DELEGATION", "true"),
            ("WARM_PREFIX_TARGET", "1"),
        ],
        &[],
    ))
    .expect("json");
    let mut helm = owned_env_fields("helm", &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"]);
    helm["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"aws-node\"}"]
        ["f:env"]["k:{\"name\":\"ENABLE_PREFIX_DELEGATION\"}"] = json!({".": {}, "f:name": {}});
    let ours = owned_env_fields(crate::crd::FIELD_MANAGER, &["ENABLE_PREFIX_DELEGATION"]);
    ds["metadata"]["managedFields"] = json!([helm, ours]);
    ds["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "cni"});
    let facts = aws_node_facts(&serde_json::from_value(ds).expect("daemonset"));
    let warning = held_from_server_side_owner(&facts, &wanted()).expect("a warning");
    assert!(
        warning.contains("ENABLE_PREFIX_DELEGATION=true (helm)")
            && warning.contains("--set-string env.ENABLE_PREFIX_DELEGATION=true"),
        "{warning}"
    );
    // WARM_PREFIX_TARGET's value is Helm's own (and the operator's is the same): no warning
    // about it; and none at all where the operator holds nothing of a server-side owner.
    assert!(!warning.contains("WARM_PREFIX_TARGET=1 ("), "{warning}");
    assert_eq!(
        held_from_server_side_owner(&fought("helm", true, "false", false), &wanted()),
        None
    );
}
