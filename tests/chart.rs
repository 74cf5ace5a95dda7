//! The Helm chart, rendered, linted and validated by the real Helm 4 library (helm-python-sdk)
//! and Kubernetes' OpenAPI schemas in strict mode (kubernetes-validate), through
//! `scripts/chart.py`; its RBAC compared with the controller's declared `API_CALLS`; its
//! Deployment's arguments parsed by the operator's own command line.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use support::chart::{chart_py, render, render_with, run_json};
use support::crd_schema::rejection;

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use serde_json::{Value, json};
use vpc_cni_tuner::cli::{Cli, Command as CliCommand};
use vpc_cni_tuner::controller::{API_CALLS, Scope};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

/// The admin Service reaches the admin port; the webhook's, when rendered, the webhook port,
/// which the NetworkPolicy lets in.
fn assert_services(objects: &[Value]) {
    let services = find(objects, "Service");
    let service = services
        .iter()
        .find(|s| s["metadata"]["name"] == "vpc-cni-tuner")
        .expect("the admin Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    if let Some(webhook) = services
        .iter()
        .find(|s| s["metadata"]["name"] == "vpc-cni-tuner-webhook")
    {
        assert_eq!(webhook["spec"]["ports"][0]["targetPort"], "webhook");
        assert_eq!(netpol_webhook_port(objects), Some("webhook"));
    }
}

/// The NetworkPolicy's ingress port for the webhook, if any.
fn netpol_webhook_port(objects: &[Value]) -> Option<&str> {
    one(objects, "NetworkPolicy")["spec"]["ingress"]
        .as_array()?
        .iter()
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["port"].as_str())
        .find(|p| *p == "webhook")
}

fn assert_valid(values: &Value) -> Value {
    let report = run_json("validate", values, &[]);
    assert_eq!(report["errors"], json!([]), "strict validation: {report:#}");
    assert!(
        !report["validated"].as_array().unwrap().is_empty(),
        "nothing validated"
    );
    report
}

/// Values that turn on everything the defaults leave off.
fn everything_on() -> Value {
    json!({
        "replicaCount": 3,
        "image": {"repository": "registry.example/ops/vpc-cni-tuner",
                  "digest": format!("sha256:{}", "a".repeat(64))},
        "imagePullSecrets": [{"name": "registry"}],
        "awsNode": {"namespace": "cni", "name": "aws-node-canary"},
        "leaderElection": {"leaseName": "tuner-leader"},
        "controller": {"logFormat": "text", "logLevel": "debug", "adminPort": 9090,
                       "resyncSeconds": 60, "debounceMillis": 200},
        "aws": {"region": "eu-west-1", "ec2EndpointUrl": "https://ec2.eu-west-1.amazonaws.com"},
        "admissionPolicies": {"enabled": true},
        "karpenter": {"enabled": true},
        "subnets": {"enabled": true},
        "rollout": {"enabled": true},
        "webhook": {"enabled": true},
        "cniConfigVia": "eks-addon",
        "eks": {"clusterName": "prod-1", "endpointUrl": "https://eks.eu-west-1.amazonaws.com"},
        "serviceAccount": {"name": "tuner",
                           "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/vpc-cni-tuner"}},
        "crds": {"install": true, "keep": false},
        "podAnnotations": {"example.com/team": "platform"},
        "priorityClassName": "system-cluster-critical",
        "hostNetwork": true,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "vpc-cni-tuner"}}}],
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
        "podDisruptionBudget": {"enabled": true, "maxUnavailable": "50%"},
        "networkPolicy": {"enabled": true, "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        "defaultPolicy": {"enabled": true, "name": "fleet",
            "spec": {"prefixDelegation": "Auto", "warmPool": {"profile": "ConserveIPs"},
                     "maxPods": {"policy": "Recommended"}, "enforcement": "DryRun"}}
    })
}

#[test]
fn default_values_lint_strictly_and_validate_strictly() {
    let lint = run_json("lint", &json!({}), &[]);
    assert_eq!(lint["errors"], json!([]), "{lint:#}");
    let warnings: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_u64() >= Some(2))
        .collect();
    assert!(warnings.is_empty(), "lint warnings: {warnings:#?}");
    let report = assert_valid(&json!({}));
    assert_eq!(
        report["skipped"],
        json!([]),
        "every default object has a schema"
    );

    let objects = render(&json!({}));
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    for kind in ["ServiceMonitor", "NetworkPolicy", "NodeNetworkPolicy"] {
        assert!(!kinds.contains(kind), "{kind} is off by default");
    }
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "one replica without leader election never overlaps with its successor"
    );
}

#[test]
fn non_default_values_lint_and_validate() {
    let values = everything_on();
    let lint = run_json("lint", &values, &[]);
    assert_eq!(lint["errors"], json!([]), "{lint:#}");
    let report = assert_valid(&values);
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // The policy is checked against crds/ just below. The ServiceMonitor is not rendered: the
    // offline render serves no monitoring.coreos.com API (the end-to-end install renders it).
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|s| s.starts_with("NodeNetworkPolicy/fleet")),
        "{skipped:?}"
    );

    let objects = render(&values);
    let policy = one(&objects, "NodeNetworkPolicy");
    assert_eq!(
        rejection(policy),
        None,
        "the default policy passes the CRD's schema and CEL"
    );
    let deployment = one(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(deployment["spec"]["strategy"].is_null(), "rolling update");
    assert_eq!(
        pod["containers"][0]["image"],
        format!(
            "registry.example/ops/vpc-cni-tuner@sha256:{}",
            "a".repeat(64)
        )
    );
    assert_eq!(pod["serviceAccountName"], "tuner");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "registry"}]));
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["tolerations"][0]["key"], "CriticalAddonsOnly");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(
        pod["containers"][0]["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "AWS_REGION", "value": "eu-west-1"}))
    );
    // EKS add-on mode: the flag, the cluster name and the endpoint.
    let env = pod["containers"][0]["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "EKS_CLUSTER_NAME", "value": "prod-1"})));
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--cni-config-via=eks-addon",
        "--eks-endpoint-url=https://eks.eu-west-1.amazonaws.com",
    ] {
        assert!(args.contains(&want), "{want}: {args:?}");
    }
    // The binary takes every argument the chart renders.
    let parsed = Cli::try_parse_from(std::iter::once("vpc-cni-tuner").chain(args.iter().copied()));
    assert!(parsed.is_ok(), "{parsed:?}");
    let account = one(&objects, "ServiceAccount");
    assert_eq!(account["metadata"]["name"], "tuner");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/vpc-cni-tuner"
    );
    assert!(
        find(&objects, "ServiceMonitor").is_empty(),
        "no ServiceMonitor where the cluster does not serve the kind"
    );
    assert_services(&objects);
    let netpol = one(&objects, "NetworkPolicy");
    assert_eq!(netpol["spec"]["ingress"][0]["ports"][0]["port"], "admin");
    assert_eq!(
        netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        "50%"
    );
    let crd = one(&objects, "CustomResourceDefinition");
    assert!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null(),
        "crds.keep=false"
    );
}

/// The arguments the chart gives the container are flags the binary accepts, and they say
/// what the values say; the probes and Service reach the admin server's port.
#[test]
fn deployment_arguments_parse_with_the_operators_command_line() {
    for (values, leader, admin_port, daemonset, lease) in [
        (
            json!({}),
            false,
            8080,
            ("kube-system", "aws-node"),
            "vpc-cni-tuner",
        ),
        (
            json!({"leaderElection": {"enabled": true}}),
            true,
            8080,
            ("kube-system", "aws-node"),
            "vpc-cni-tuner",
        ),
        (
            everything_on(),
            true,
            9090,
            ("cni", "aws-node-canary"),
            "tuner-leader",
        ),
    ] {
        let objects = render(&values);
        let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let mut argv = vec!["vpc-cni-tuner".to_owned()];
        argv.extend(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned()),
        );
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let CliCommand::Run(args) = cli.command else {
            panic!("the container runs the operator: {argv:?}");
        };
        assert_eq!(args.leader_elect, leader, "{argv:?}");
        assert_eq!(args.admin_addr.port(), admin_port);
        assert_eq!(
            (
                args.daemonset.namespace.as_str(),
                args.daemonset.name.as_str()
            ),
            daemonset
        );
        assert_eq!(args.lease_name, lease);
        assert_eq!(container["ports"][0]["containerPort"], admin_port);
        assert_eq!(container["ports"][0]["name"], "admin");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
        // The lease namespace and identity come from the downward API.
        let env = container["env"].as_array().unwrap();
        for (name, path) in [
            ("POD_NAMESPACE", "metadata.namespace"),
            ("POD_NAME", "metadata.name"),
        ] {
            assert!(
                env.iter()
                    .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == path),
                "{name} from {path}"
            );
        }
    }
}

#[test]
fn pod_security_is_restricted() {
    let objects = render(&json!({}));
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(security["capabilities"]["add"].is_null());
    assert!(security["privileged"].is_null() || security["privileged"] == false);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    // The restricted Pod Security Standard: no host namespaces, no host paths.
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[field].is_null() || pod[field] == false, "{field}");
    }
    assert!(pod["volumes"].is_null(), "the operator needs no volume");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
    // The image's user (Dockerfile) is the one the chart runs as.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert_eq!(user.split(':').next().unwrap(), uid.to_string());
    assert_ne!(uid, 0);
}

/// One RBAC grant: (api group, resource, verb, where). Where is "cluster", "ns NAMESPACE" or
/// "ns NAMESPACE name NAME".
type Grant = (String, String, String, String);

/// The grants of the rendered RBAC, following each binding to its role and checking that it
/// binds the Deployment's ServiceAccount.
fn grants(objects: &[Value]) -> BTreeSet<Grant> {
    let deployment = one(objects, "Deployment");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let mut out = BTreeSet::new();
    for binding in find(objects, "ClusterRoleBinding")
        .into_iter()
        .chain(find(objects, "RoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]),
            "{} binds only the operator's ServiceAccount",
            binding["metadata"]["name"]
        );
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = &binding["roleRef"]["name"];
        let binding_ns = binding["metadata"]["namespace"].as_str();
        assert!(
            binding["kind"] == "RoleBinding" || role_kind == "ClusterRole",
            "a ClusterRoleBinding refers to a ClusterRole"
        );
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == role_kind
                    && &o["metadata"]["name"] == role_name
                    && o["metadata"]["namespace"].as_str() == binding_ns
            })
            .unwrap_or_else(|| panic!("{role_kind} {role_name} of the binding is rendered"));
        for rule in role["rules"].as_array().unwrap() {
            assert!(rule["nonResourceURLs"].is_null());
            let names: Vec<&str> = rule["resourceNames"]
                .as_array()
                .map(|n| n.iter().map(|v| v.as_str().unwrap()).collect())
                .unwrap_or_default();
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        for text in [group, resource, verb] {
                            assert_ne!(text, "*", "no wildcards: {rule}");
                        }
                        let wheres: Vec<String> = match (binding_ns, names.is_empty()) {
                            (None, true) => vec!["cluster".into()],
                            (None, false) => {
                                names.iter().map(|n| format!("cluster name {n}")).collect()
                            }
                            (Some(ns), true) => vec![format!("ns {ns}")],
                            (Some(ns), false) => {
                                names.iter().map(|n| format!("ns {ns} name {n}")).collect()
                            }
                        };
                        for place in wheres {
                            out.insert((
                                group.as_str().unwrap().to_owned(),
                                resource.as_str().unwrap().to_owned(),
                                verb.as_str().unwrap().to_owned(),
                                place,
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The grants `API_CALLS` needs for these names.
fn needed(
    leader: bool,
    karpenter: bool,
    daemonset: (&str, &str),
    lease: (&str, &str),
) -> BTreeSet<Grant> {
    API_CALLS
        .iter()
        .filter(|call| leader || !call.leader_election_only)
        .filter(|call| karpenter || !call.karpenter_only)
        // `everything_on` turns subnets on with Karpenter.
        .filter(|call| karpenter || !call.subnets_only)
        .filter(|call| karpenter || !call.webhook_only)
        .map(|call| {
            let place = match call.scope {
                Scope::Cluster => "cluster".to_owned(),
                Scope::ManagedDaemonSet => format!("ns {} name {}", daemonset.0, daemonset.1),
                Scope::Lease => format!("ns {} name {}", lease.0, lease.1),
                Scope::LeaseNamespace => format!("ns {}", lease.0),
                Scope::DefaultNamespace => "ns default".to_owned(),
                // `everything_on` (release vpc-cni-tuner) serves the webhook.
                Scope::WebhookSecret => format!("ns {} name vpc-cni-tuner-webhook-tls", lease.0),
                Scope::WebhookConfiguration => "cluster name vpc-cni-tuner-aws-node".to_owned(),
                Scope::AwsNodeNamespace => format!("ns {}", daemonset.0),
            };
            (
                call.group.to_owned(),
                call.resource.to_owned(),
                call.verb.to_owned(),
                place,
            )
        })
        .collect()
}

/// The chart grants exactly what the controller declares it calls (`API_CALLS`, which every
/// mocked-API test checks the controller's requests against): not less, not more.
#[test]
fn rbac_grants_exactly_the_declared_api_calls() {
    let cases = [
        (
            json!({}),
            false,
            ("kube-system", "aws-node"),
            ("vpc-cni-tuner", "vpc-cni-tuner"),
        ),
        (
            json!({"replicaCount": 2}),
            true,
            ("kube-system", "aws-node"),
            ("vpc-cni-tuner", "vpc-cni-tuner"),
        ),
        (
            everything_on(),
            true,
            ("cni", "aws-node-canary"),
            ("vpc-cni-tuner", "tuner-leader"),
        ),
    ];
    for (values, leader, daemonset, lease) in cases {
        let objects = render(&values);
        let granted = grants(&objects);
        let karpenter = values["karpenter"]["enabled"] == true;
        let wanted = needed(leader, karpenter, daemonset, lease);
        let missing: Vec<_> = wanted.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&wanted).collect();
        assert!(missing.is_empty(), "{values}: RBAC lacks {missing:?}");
        assert!(
            extra.is_empty(),
            "{values}: RBAC grants more than used: {extra:?}"
        );
    }
    // rbac.create=false renders no RBAC at all.
    let objects = render(&json!({"rbac": {"create": false}}));
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(
            find(&objects, kind).is_empty(),
            "{kind} with rbac.create=false"
        );
    }
}

/// The CRD in the chart is the one in crds/ (the generated single source), with only the
/// keep and sync-wave annotations and labels added; crds.install=false leaves it out.
#[test]
fn crd_comes_from_the_crds_folder() {
    let source: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("crds/nodenetworkpolicies.tuner.vpccni.io.yaml"))
            .unwrap(),
    )
    .unwrap();
    let objects = render(&json!({}));
    let mut rendered = one(&objects, "CustomResourceDefinition").clone();
    let annotations = rendered["metadata"]["annotations"].clone();
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    assert_eq!(annotations["argocd.argoproj.io/sync-wave"], "-1");
    let metadata = rendered["metadata"].as_object_mut().unwrap();
    metadata.remove("annotations");
    metadata.remove("labels");
    // Helm's YAML round trip writes `minimum: 1.0` as `1`: compare numbers as numbers.
    assert!(
        numbers_as_f64(rendered) == numbers_as_f64(source),
        "the chart's CRD differs from crds/"
    );

    let without = render(&json!({"crds": {"install": false}}));
    assert!(find(&without, "CustomResourceDefinition").is_empty());
}

fn numbers_as_f64(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| (k, numbers_as_f64(v)))
            .collect(),
        other => other,
    }
}

/// Bad values fail at install with the value's path and what it expects.
#[test]
fn bad_values_fail_naming_the_value() {
    for (values, expect) in [
        (json!({"replicas": 2}), "replicas"),
        (json!({"replicaCount": "two"}), "replicaCount"),
        (json!({"replicaCount": 0}), "replicaCount"),
        (
            json!({"awsNode": {"namespace": "Kube System"}}),
            "awsNode/namespace",
        ),
        (json!({"controller": {"logFormat": "xml"}}), "logFormat"),
        (json!({"controller": {"adminPort": 80}}), "adminPort"),
        (json!({"image": {"digest": "latest"}}), "digest"),
        (json!({"crds": {"instal": false}}), "instal"),
        (json!({"cniConfigVia": "addon"}), "cniConfigVia"),
        (
            json!({"eks": {"clusterName": "prod cluster"}}),
            "clusterName",
        ),
        (
            json!({"resources": {"limits": {"memory": "lots"}}}),
            "memory",
        ),
        (
            json!({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": 5}}}),
            "role-arn",
        ),
        (
            json!({"extraEnv": [{"value": "http://proxy:3128"}]}),
            "name",
        ),
        (json!({"extraEnv": {"HTTPS_PROXY": "x"}}), "extraEnv"),
        (json!({"extraVolumeMounts": [{"name": "ca"}]}), "mountPath"),
        (json!({"commonLabels": {"team": 7}}), "team"),
        (json!({"prometheusRule": {"enable": true}}), "enable"),
        (json!({"dashboard": {"label": {}}}), "label"),
        (json!({"service": {"annotation": {}}}), "annotation"),
        (
            json!({"rbac": {"aggregateToView": "yes"}}),
            "aggregateToView",
        ),
        // Every aws-node pod waits for the webhook at most this long.
        (
            json!({"webhook": {"enabled": true, "timeoutSeconds": 11}}),
            "timeoutSeconds",
        ),
        (
            json!({"controller": {"statusCountSeconds": -1}}),
            "statusCountSeconds",
        ),
    ] {
        let (code, _, stderr) = chart_py(&["render", "--values", &values.to_string()]);
        assert_eq!(code, 3, "{values} is accepted");
        assert!(stderr.contains("HelmValuesError"), "{values}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{values}: the error names {expect}: {stderr}"
        );
    }
    // A template-level check: a ServiceMonitor needs the Service.
    let values = json!({"serviceMonitor": {"enabled": true}, "service": {"enabled": false}});
    let (code, _, stderr) = chart_py(&["render", "--values", &values.to_string()]);
    assert_eq!(code, 3);
    assert!(
        stderr.contains("serviceMonitor.enabled needs service.enabled"),
        "{stderr}"
    );
}

/// Strict validation is real: an unknown field in a free-form value is caught.
#[test]
fn strict_validation_rejects_an_unknown_field() {
    let values = json!({"podSecurityContext": {"runAsNonRoot": true, "runAsUsr": 1000}});
    let report = run_json("validate", &values, &[]);
    let errors = report["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "runAsUsr passed strict validation");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("runAsUsr")),
        "{errors:?}"
    );
    // A default policy the API server would reject: the CRD's schema, then its CEL rules.
    for (spec, expect) in [
        (json!({"prefixDelegation": "Sometimes"}), "prefixDelegation"),
        (json!({"maxPods": {"policy": "Fixed"}}), "CEL"),
    ] {
        let values = json!({"defaultPolicy": {"enabled": true, "spec": spec}});
        let objects = render_with(&values, &["--upgrade"]);
        let why = rejection(one(&objects, "NodeNetworkPolicy")).expect("rejected");
        assert!(why.contains(expect), "{spec}: {why}");
    }
}

/// A policy cannot be created in the step that creates its CRD: on a first install with the CRD
/// it is a post-install hook carrying the release's ownership metadata; on upgrade it is an
/// ordinary release resource, which adopts the hook-made object.
#[test]
fn default_policy_is_a_hook_on_first_install_and_a_release_resource_after() {
    let values = json!({"defaultPolicy": {"enabled": true, "spec": {"enforcement": "DryRun"}}});
    let install = render(&values);
    let policy = one(&install, "NodeNetworkPolicy");
    let annotations = &policy["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "post-install");
    assert_eq!(annotations["meta.helm.sh/release-name"], "vpc-cni-tuner");
    assert_eq!(
        annotations["meta.helm.sh/release-namespace"],
        "vpc-cni-tuner"
    );
    assert_eq!(
        policy["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(policy["spec"], json!({"enforcement": "DryRun"}));
    assert_eq!(annotations["argocd.argoproj.io/sync-wave"], "1");
    assert_eq!(
        annotations["argocd.argoproj.io/sync-options"],
        "SkipDryRunOnMissingResource=true"
    );

    let upgrade = render_with(&values, &["--upgrade"]);
    let policy = one(&upgrade, "NodeNetworkPolicy");
    assert!(policy["metadata"]["annotations"]["helm.sh/hook"].is_null());

    // CRDs managed elsewhere: always an ordinary resource.
    let values = json!({"crds": {"install": false}, "defaultPolicy": {"enabled": true}});
    let policy = render(&values);
    assert!(one(&policy, "NodeNetworkPolicy")["metadata"]["annotations"]["helm.sh/hook"].is_null());
}

/// deploy/vpc-cni-tuner.yaml is the chart with default values (checked in sync), applies in a
/// working order, and validates strictly.
#[test]
fn plain_manifests_are_generated_from_the_chart() {
    let (code, _, stderr) = chart_py(&["manifests", "--check"]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(root().join("deploy/vpc-cni-tuner.yaml")).unwrap();
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect();
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    assert_eq!(kinds[0], "Namespace");
    assert!(position("CustomResourceDefinition") < position("Deployment"));
    assert!(position("ServiceAccount") < position("Deployment"));
    assert!(position("ClusterRoleBinding") < position("Deployment"));
    assert!(!text.contains("managed-by: Helm"), "no Helm bookkeeping");
    // The same objects as the chart renders (less Helm's labels), so the chart's tests cover it.
    let rendered = render(&json!({}));
    assert_eq!(documents.len(), rendered.len() + 1);
}

#[test]
fn chart_version_follows_the_crate() {
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("charts/vpc-cni-tuner/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["name"], "vpc-cni-tuner");
}

/// Every option the schema allows has a default in values.yaml (where it is documented), and
/// every default is allowed by the schema (`additionalProperties: false`, checked on render).
#[test]
fn every_schema_option_is_in_values_yaml() {
    let chart = root().join("charts/vpc-cni-tuner");
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    fn walk(schema: &Value, values: &Value, path: &str, missing: &mut Vec<String>) {
        let Some(properties) = schema["properties"].as_object() else {
            return;
        };
        for (key, sub) in properties {
            if key == "global" {
                continue;
            }
            let here = format!("{path}{key}");
            match values.get(key) {
                None => missing.push(here),
                Some(value) => walk(sub, value, &format!("{here}."), missing),
            }
        }
    }
    let mut missing = Vec::new();
    walk(&schema, &values, "", &mut missing);
    assert!(
        missing.is_empty(),
        "in the schema, not in values.yaml: {missing:?}"
    );
    let text = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    // Each top-level value is introduced by a comment.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let top_level = line.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if top_level {
            let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            let documented = before.is_some_and(|l| l.trim_start().starts_with('#'))
                || lines[i + 1..]
                    .iter()
                    .take_while(|l| l.starts_with(' '))
                    .any(|l| l.trim_start().starts_with('#'));
            assert!(documented, "values.yaml: {line} has no comment");
        }
    }
}

/// The admission policies name the operator's ServiceAccount and DaemonSet, and list exactly
/// the env names the engine writes; off, none is rendered.
#[test]
fn admission_policies_follow_the_engines_env_names_and_the_release() {
    let objects = render_with(
        &json!({"awsNode": {"namespace": "cni", "name": "aws-node-custom"},
                "serviceAccount": {"name": "tuner-sa"}}),
        &["--name", "tuner", "--namespace", "ops"],
    );
    let policies = find(&objects, "ValidatingAdmissionPolicy");
    // aws-node, NodeNetworkPolicies, and the operator's own Secret and Lease.
    assert_eq!(policies.len(), 3);
    let bindings = find(&objects, "ValidatingAdmissionPolicyBinding");
    let bound: BTreeSet<&str> = bindings
        .iter()
        .map(|b| {
            assert_eq!(b["spec"]["validationActions"], json!(["Deny"]));
            b["spec"]["policyName"].as_str().unwrap()
        })
        .collect();
    let names: BTreeSet<&str> = policies
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(bound, names, "every policy is bound");
    for policy in &policies {
        let user = &policy["spec"]["matchConditions"][0]["expression"];
        assert_eq!(
            user,
            "request.userInfo.username == 'system:serviceaccount:ops:tuner-sa'"
        );
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    }
    let daemonset = policies
        .iter()
        .find(|p| {
            p["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == json!(["daemonsets"])
        })
        .expect("the aws-node policy");
    assert_eq!(
        daemonset["spec"]["matchConstraints"]["resourceRules"][0]["resourceNames"],
        json!(["aws-node-custom"])
    );
    assert_eq!(
        daemonset["spec"]["matchConditions"][1]["expression"],
        "request.namespace == 'cni'"
    );
    let owned = daemonset["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "owned")
        .unwrap()["expression"]
        .as_str()
        .unwrap();
    let listed: Vec<&str> = owned
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|n| n.trim_matches('\''))
        .collect();
    assert_eq!(
        listed,
        vpc_cni_tuner::engine::warm_pool::MANAGED_ENV_VARS.to_vec(),
        "the chart's admission policy and the engine must agree on the env names"
    );

    // Secrets and Leases: the release's names.
    let own = policies
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("own-secret-and-lease-only")
        })
        .expect("the Secret and Lease policy");
    let rules = own["spec"]["validations"].to_string();
    assert!(
        rules.contains("-webhook-tls' && object.?type.orValue('') == 'kubernetes.io/tls'"),
        "{rules}"
    );
    assert!(
        rules.contains("object.metadata.name == 'vpc-cni-tuner'"),
        "the Lease: {rules}"
    );
    assert!(rules.contains("request.operation != 'DELETE'"), "{rules}");

    let off = render(&json!({"admissionPolicies": {"enabled": false}}));
    assert!(find(&off, "ValidatingAdmissionPolicy").is_empty());
    assert!(find(&off, "ValidatingAdmissionPolicyBinding").is_empty());
}

/// The escape hatches and the cluster add-on defaults: scheduling like Karpenter's chart, extra
/// env, envFrom, volumes and mounts in the container, common labels on every object, Service
/// annotations, the dashboard ConfigMap and the aggregated read-only ClusterRole.
#[test]
fn escape_hatches_and_add_on_defaults_render() {
    let defaults = render(&json!({}));
    let pod = &one(&defaults, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}])
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        one(&defaults, "Deployment")["spec"]["selector"]["matchLabels"],
        "the spread counts this release's pods"
    );
    let view = find(&defaults, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "vpc-cni-tuner-view")
        .expect("the aggregated ClusterRole");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(view["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    assert!(
        find(&defaults, "ConfigMap").is_empty(),
        "no dashboard by default"
    );

    let values = json!({
        "commonLabels": {"team": "network"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}],
        "extraEnvFrom": [{"configMapRef": {"name": "proxy-env"}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/custom", "readOnly": true}],
        "service": {"annotations": {"prometheus.io/scrape": "true"}},
        "dashboard": {"enabled": true, "annotations": {"grafana_folder": "Networking"}},
        "prometheusRule": {"enabled": true},
        "rbac": {"aggregateToView": false},
        "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a": "b"}}}],
    });
    assert_valid(&values);
    let objects = render(&values);
    for object in &objects {
        assert_eq!(
            object["metadata"]["labels"]["team"], "network",
            "{} {} has the common labels",
            object["kind"], object["metadata"]["name"]
        );
    }
    let deployment = one(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["team"],
        "network"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}))
    );
    assert_eq!(container["envFrom"][0]["configMapRef"]["name"], "proxy-env");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/ssl/custom");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corp-ca");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["labelSelector"],
        json!({"matchLabels": {"a": "b"}}),
        "a given selector is kept"
    );
    assert_eq!(
        one(&objects, "Service")["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    let dashboard = one(&objects, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Networking"
    );
    let json: Value =
        serde_json::from_str(dashboard["data"]["vpc-cni-tuner.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "vpc-cni-tuner");
    assert!(json["panels"].as_array().unwrap().len() >= 10);
    assert!(
        find(&objects, "ClusterRole")
            .iter()
            .all(|r| r["metadata"]["name"] != "vpc-cni-tuner-view"),
        "rbac.aggregateToView: false"
    );
    assert!(
        find(&objects, "PrometheusRule").is_empty(),
        "no PrometheusRule where the cluster does not serve the kind"
    );
}

/// The chart's metadata, as Artifact Hub and `helm show chart` present it.
#[test]
fn chart_metadata_names_home_sources_and_the_app() {
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("charts/vpc-cni-tuner/Chart.yaml")).unwrap(),
    )
    .unwrap();
    for key in ["home", "sources", "icon", "maintainers", "annotations"] {
        assert!(!chart[key].is_null(), "Chart.yaml has no {key}");
    }
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(
        chart["appVersion"], version,
        "appVersion is the crate's version"
    );
    assert!(
        chart["annotations"]["artifacthub.io/license"] == "Apache-2.0",
        "{chart:?}"
    );
}
