#!/usr/bin/env python3
"""Renders, lints and validates the Helm chart offline, and generates the plain manifests.

Uses the real Helm 4 library (PyPI helm-python-sdk) and Kubernetes' OpenAPI schemas (PyPI
kubernetes-validate, strict mode); both come from tests/requirements.txt. tests/chart.rs drives
it; maintainers run `scripts/chart.py manifests` after changing the chart or the CRD.

  chart.py render   [--values JSON] [--name N] [--namespace NS] [--upgrade]   -> JSON list
  chart.py lint     [--values JSON]                                           -> JSON report
  chart.py validate [--values JSON] [--kube-version V ...]                    -> JSON report
  chart.py manifests [--check]   writes (or checks) deploy/vpc-cni-tuner.yaml and
                                 deploy/argocd/argocd-cm.yaml
  chart.py install|upgrade --kubeconfig F [--chart DIR] [--values JSON] [--name N] [--namespace NS]
  chart.py uninstall       --kubeconfig F [--name N] [--namespace NS]
                                 a release against the cluster in F (never the default
                                 kubeconfig): the end-to-end tests' Helm path -> JSON summary
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "vpc-cni-tuner"
CRDS = ROOT / "crds"
MANIFEST = ROOT / "deploy" / "vpc-cni-tuner.yaml"
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
# The Kubernetes versions the chart is validated against: the oldest the chart allows
# (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
# Helm's install order (pkg/release/util/kind_sorter.go), so `kubectl apply -f` of the plain
# manifest creates the namespace, CRD and RBAC before the Deployment.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


def render(values: dict, name: str, namespace: str, upgrade: bool = False) -> list[dict]:
    """The chart's objects, each as {"template", "object"}, in Helm's install order."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(
            values, name=name, namespace=namespace, is_install=not upgrade, is_upgrade=upgrade
        )
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append({"template": template, "object": document})

    def order(entry: dict) -> tuple:
        kind = entry["object"]["kind"]
        rank = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
        return (rank, kind, entry["object"]["metadata"].get("namespace", ""),
                entry["object"]["metadata"]["name"])

    return sorted(objects, key=order)


def own_kinds() -> set[tuple[str, str]]:
    """(apiVersion, kind) of every CRD in crds/."""
    kinds = set()
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            kinds.add((f'{crd["spec"]["group"]}/{version["name"]}', crd["spec"]["names"]["kind"]))
    return kinds


def validate(objects: list[dict], versions: list[str]) -> dict:
    """Strict validation against Kubernetes' schemas. The project's own kinds are left to
    tests/chart.rs, which checks them against crds/ with the CRD's structural schema and CEL rules
    (tests/support/crd_schema.rs); kinds neither knows (e.g. ServiceMonitor) are listed as
    skipped, not passed."""
    own = own_kinds()
    report: dict = {"validated": [], "skipped": [], "errors": []}
    for entry in objects:
        obj = entry["object"]
        label = f'{obj["kind"]}/{obj["metadata"]["name"]}'
        if (obj["apiVersion"], obj["kind"]) in own:
            report["skipped"].append(f"{label}: a kind of crds/, checked by tests/chart.rs")
            continue
        for version in versions:
            # The admission policies are rendered only for Kubernetes >= 1.30 (a Capabilities
            # guard in the template), where admissionregistration.k8s.io/v1 serves them.
            if obj["kind"].startswith("ValidatingAdmissionPolicy") and \
                    tuple(int(p) for p in version.split(".")[:2]) < (1, 30):
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                report["validated"].append(f"{label} ({version})")
            except kubernetes_validate.SchemaNotFoundError:
                report["skipped"].append(f"{label}: no schema for {obj['apiVersion']}")
                break
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.path)
                report["errors"].append(f"{label} ({version}): {error.message} at {path}")
    return report


def manifest_text() -> str:
    """deploy/vpc-cni-tuner.yaml: the chart with default values, release and namespace
    vpc-cni-tuner, plus the namespace itself."""
    namespace = "vpc-cni-tuner"
    objects = render({}, name=namespace, namespace=namespace)
    # The pod meets the restricted Pod Security Standard; the namespace enforces it.
    documents = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}]
    for entry in objects:
        # Helm's bookkeeping means nothing to kubectl: no managed-by Helm label, no Helm
        # annotations.
        metadata = entry["object"]["metadata"]
        labels = metadata.get("labels", {})
        labels.pop("helm.sh/chart", None)
        labels.pop("app.kubernetes.io/managed-by", None)
        for key in [k for k in metadata.get("annotations", {}) if k.startswith("helm.sh/")]:
            del metadata["annotations"][key]
        documents.append(entry["object"])
    header = (
        "# GENERATED by `scripts/chart.py manifests` from charts/vpc-cni-tuner with default values\n"
        "# (release and namespace vpc-cni-tuner). DO NOT EDIT: change the chart, then regenerate.\n"
        "# Install: kubectl apply --server-side -f deploy/vpc-cni-tuner.yaml\n"
    )
    body = "".join(
        "---\n" + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, width=100)
        for doc in documents
    )
    return header + body


class _Literal(str):
    """A string PyYAML writes as a literal block (|)."""


yaml.SafeDumper.add_representer(
    _Literal, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
)


def argocd_cm_text() -> str:
    """deploy/argocd/argocd-cm.yaml: the health check (deploy/argocd/health.lua) as the argocd-cm
    entry Argo CD reads."""
    header = (
        "# GENERATED by `scripts/chart.py manifests` from deploy/argocd/health.lua. DO NOT EDIT.\n"
        "# Merge into Argo CD's argocd-cm ConfigMap, e.g.\n"
        "#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm.yaml\n"
    )
    patch = {"data": {
        "resource.customizations.health.tuner.vpccni.io_NodeNetworkPolicy":
            _Literal(HEALTH_LUA.read_text())}}
    return header + yaml.safe_dump(patch, sort_keys=True, width=100)


def release(args: argparse.Namespace) -> int:
    """Installs, upgrades or uninstalls a release with the Helm library, as `helm` would."""
    values = json.loads(getattr(args, "values", "{}") or "{}")
    try:
        with helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace) as config:
            if args.command == "install":
                result = config.install(args.chart, args.name, values, namespace=args.namespace,
                                        create_namespace=True, timeout=120)
            elif args.command == "upgrade":
                result = config.upgrade(args.chart, args.name, values, namespace=args.namespace,
                                        timeout=120)
            else:
                result = config.uninstall(args.name, timeout=120)
    except helm.HelmError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 3
    result = result if isinstance(result, dict) else {}
    summary = {key: result.get(key) for key in
               ("name", "namespace", "revision", "status", "chart_version")}
    json.dump(summary, sys.stdout, indent=1, sort_keys=True, default=str)
    print()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("render", "lint", "validate"):
        p = sub.add_parser(command)
        p.add_argument("--values", default="{}", help="values as a JSON object")
        p.add_argument("--name", default="vpc-cni-tuner")
        p.add_argument("--namespace", default="vpc-cni-tuner")
        p.add_argument("--upgrade", action="store_true", help="render as an upgrade")
        p.add_argument("--kube-version", action="append", dest="versions")
    p = sub.add_parser("manifests")
    p.add_argument("--check", action="store_true", help="fail when the file is stale")
    for command in ("install", "upgrade", "uninstall"):
        p = sub.add_parser(command)
        p.add_argument("--kubeconfig", required=True)
        p.add_argument("--chart", default=str(CHART))
        p.add_argument("--values", default="{}", help="values as a JSON object")
        p.add_argument("--name", default="vpc-cni-tuner")
        p.add_argument("--namespace", default="vpc-cni-tuner")
    args = parser.parse_args()

    if args.command in ("install", "upgrade", "uninstall"):
        return release(args)

    if args.command == "manifests":
        stale = 0
        for path, text in ((MANIFEST, manifest_text()), (ARGOCD_CM, argocd_cm_text())):
            if args.check:
                if not path.exists() or path.read_text() != text:
                    print(f"{path.relative_to(ROOT)} is stale: run scripts/chart.py manifests",
                          file=sys.stderr)
                    stale = 1
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        return stale

    values = json.loads(args.values)
    try:
        if args.command == "render":
            result = render(values, args.name, args.namespace, args.upgrade)
        elif args.command == "lint":
            result = helm.lint(CHART, values, strict=True, namespace=args.namespace,
                               kube_version="v1.29.0")
        else:
            objects = render(values, args.name, args.namespace, args.upgrade)
            result = validate(objects, args.versions or KUBE_VERSIONS)
    except helm.HelmError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 3
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
