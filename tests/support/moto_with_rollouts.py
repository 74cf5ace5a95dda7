"""moto_server, taught the four rollout calls it lacks, at the wire level.

Test double note. moto 5 implements EKS node groups (CreateNodegroup, DescribeNodegroup,
ListNodegroups) and Auto Scaling groups, but not the calls that replace their nodes. This wrapper
adds them to moto's own EKS and Auto Scaling backends (same server, same state, the real
REST-JSON and Query wire protocols as botocore's service models define them), then runs
moto_server unchanged:

- EKS UpdateNodegroupVersion (POST /clusters/{name}/node-groups/{ng}/update-version): takes
  `launchTemplate` {id|name, version}; answers an update (uuid id, type VersionUpdate, status
  InProgress, params LaunchTemplateVersion) and puts the node group in UPDATING. While an update
  of the node group runs, another is refused with ResourceInUseException (409), as EKS does.
- EKS DescribeUpdate (GET /clusters/{name}/updates/{id}?nodegroupName=): the update's status.
- Auto Scaling StartInstanceRefresh: takes Strategy, Preferences (MinHealthyPercentage,
  SkipMatching) and DesiredConfiguration.LaunchTemplate; answers an InstanceRefreshId. While a
  refresh of the group runs (Pending, InProgress), another is refused with
  InstanceRefreshInProgress.
- Auto Scaling DescribeInstanceRefreshes: the group's refreshes, newest first (or the ids asked
  for), with Status, StatusReason, PercentageComplete and the preferences sent.

Time: an update or refresh runs for CONFIG["seconds"] (default 2) and then ends Successful, or
Failed when its group is in CONFIG["fail"] (group name -> reason; EKS reports it as the error
PodEvictionFailure, Auto Scaling as StatusReason). A group in CONFIG["hold"] stays in progress.
On success a node group launches the version asked for, and an Auto Scaling group given a
DesiredConfiguration launches that version. CONFIG is the JSON file given as the first argument,
read again on every call, so a test can change it while the server runs.

What it does not simulate: replacing instances (the test registers its new Nodes itself), EKS
update parameters other than the launch template (releaseVersion, Kubernetes version, force),
PodDisruptionBudgets, instance warm-up, checkpoints, rollback, cancellation calls, SigV4, IAM.

  moto_with_rollouts.py CONFIG_JSON [moto_server args...]
"""

import datetime
import json
import sys
import threading
import time
import uuid

from moto.autoscaling import urls as autoscaling_urls  # noqa: F401 (loads the backend)
from moto.autoscaling.exceptions import AutoscalingClientError
from moto.autoscaling.models import autoscaling_backends
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult
from moto.eks import urls as eks_urls
from moto.eks.exceptions import ResourceInUseException, ResourceNotFoundException
from moto.eks.models import eks_backends
from moto.eks.responses import EKSResponse
from moto.server import main

CONFIG_PATH = sys.argv[1]
LOCK = threading.Lock()
# id -> {"kind", "group", "cluster", "version", "started", "status", "reason", ...}
UPDATES = {}


def config():
    try:
        with open(CONFIG_PATH, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def settle():
    """Ends the updates whose time has come, and applies what they did."""
    cfg = config()
    seconds = float(cfg.get("seconds", 2))
    for update in UPDATES.values():
        if update["status"] not in ("InProgress", "Pending"):
            continue
        if update["group"] in cfg.get("hold", []):
            continue
        if time.time() - update["started"] < seconds:
            continue
        reason = cfg.get("fail", {}).get(update["group"])
        if reason is not None:
            update["status"] = "Failed"
            update["reason"] = reason
        else:
            update["status"] = "Successful"
        update["finish"](update)


def created(update):
    return datetime.datetime.fromtimestamp(update["started"], tz=datetime.timezone.utc)


def backend_of(response, backends):
    return backends[response.current_account][response.region]


# --- EKS ---------------------------------------------------------------------------------------


def eks_update_view(update):
    view = {
        "id": update["id"],
        "status": update["status"],
        "type": "VersionUpdate",
        "params": [{"type": "LaunchTemplateVersion", "value": update["version"]}],
        "createdAt": created(update),
        "errors": [],
    }
    if update["status"] == "Failed":
        view["errors"] = [
            {
                "errorCode": "PodEvictionFailure",
                "errorMessage": update["reason"],
                "resourceIds": [update["group"]],
            }
        ]
    return view


def update_nodegroup_version(self):
    cluster = self._get_param("name")
    name = self._get_param("nodegroupName")
    template = self._get_param("launchTemplate") or {}
    with LOCK:
        settle()
        nodegroup = backend_of(self, eks_backends).describe_nodegroup(cluster, name)
        if nodegroup.status != "ACTIVE":
            raise ResourceInUseException(
                clusterName=cluster,
                nodegroupName=name,
                fargateProfileName=None,
                addonName=None,
                message=f"Nodegroup {name} is currently {nodegroup.status}",
            )
        update_id = str(uuid.uuid4())

        def finish(update, nodegroup=nodegroup):
            nodegroup.status = "ACTIVE"
            if update["status"] == "Successful":
                current = dict(nodegroup.launch_template or {})
                current["version"] = update["version"]
                nodegroup.launch_template = current

        update = {
            "id": update_id,
            "kind": "nodegroup",
            "group": name,
            "cluster": cluster,
            "version": str(template.get("version", "$Default")),
            "started": time.time(),
            "status": "InProgress",
            "reason": None,
            "finish": finish,
        }
        UPDATES[update_id] = update
        nodegroup.status = "UPDATING"
        return ActionResult({"update": eks_update_view(update)})


def describe_update(self):
    cluster = self._get_param("name")
    update_id = self._get_param("updateId")
    with LOCK:
        settle()
        update = UPDATES.get(update_id)
        if update is None or update["cluster"] != cluster:
            raise ResourceNotFoundException(
                clusterName=cluster,
                nodegroupName=self._get_param("nodegroupName"),
                fargateProfileName=None,
                addonName=None,
                message=f"No update found for ID: {update_id}",
            )
        return ActionResult({"update": eks_update_view(update)})


def settled(method):
    def wrapper(self):
        with LOCK:
            settle()
        return method(self)

    return wrapper


EKSResponse.update_nodegroup_version = update_nodegroup_version
EKSResponse.describe_update = describe_update
EKSResponse.describe_nodegroup = settled(EKSResponse.describe_nodegroup)
eks_urls.url_paths[
    "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$"
] = eks_urls.response.dispatch
eks_urls.url_paths["{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$"] = (
    eks_urls.response.dispatch
)


# --- Auto Scaling --------------------------------------------------------------------------------


class InstanceRefreshInProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"


class ResourceNotFound(AutoscalingClientError):
    code = "ValidationError"


def refresh_view(update):
    percent = {"Successful": 100, "Failed": 0}.get(update["status"], 50)
    view = {
        "InstanceRefreshId": update["id"],
        "AutoScalingGroupName": update["group"],
        "Status": update["status"],
        "PercentageComplete": percent,
        "StartTime": created(update),
        "Preferences": update["preferences"],
    }
    if update["reason"]:
        view["StatusReason"] = update["reason"]
    if update["desired"]:
        view["DesiredConfiguration"] = update["desired"]
    return view


def start_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    preferences = self._get_param("Preferences") or {}
    desired = self._get_param("DesiredConfiguration") or {}
    with LOCK:
        settle()
        groups = backend_of(self, autoscaling_backends).autoscaling_groups
        group = groups.get(name)
        if group is None:
            raise ResourceNotFound(f"AutoScalingGroup name not found - {name}")
        if any(
            u["kind"] == "refresh" and u["group"] == name and u["status"] in ("Pending", "InProgress")
            for u in UPDATES.values()
        ):
            raise InstanceRefreshInProgress(
                f"An Instance Refresh is already in progress and blocks the execution of this "
                f"Instance Refresh. ({name})"
            )
        version = (desired.get("LaunchTemplate") or {}).get("Version")

        def finish(update, group=group, version=version):
            if update["status"] == "Successful" and version and group.launch_template:
                group.launch_template_version = version
                group.provided_launch_template_version = version

        refresh_id = str(uuid.uuid4())
        UPDATES[refresh_id] = {
            "id": refresh_id,
            "kind": "refresh",
            "group": name,
            "cluster": None,
            "version": version,
            "started": time.time(),
            "status": "InProgress",
            "reason": None,
            "preferences": preferences,
            "desired": desired,
            "finish": finish,
        }
        return ActionResult({"InstanceRefreshId": refresh_id})


def describe_instance_refreshes(self):
    name = self._get_param("AutoScalingGroupName")
    ids = self._get_param("InstanceRefreshIds") or []
    with LOCK:
        settle()
        found = [
            refresh_view(u)
            for u in sorted(UPDATES.values(), key=lambda u: u["started"], reverse=True)
            if u["kind"] == "refresh" and u["group"] == name and (not ids or u["id"] in ids)
        ]
        return ActionResult({"InstanceRefreshes": found})


AutoScalingResponse.start_instance_refresh = start_instance_refresh
AutoScalingResponse.describe_instance_refreshes = describe_instance_refreshes
AutoScalingResponse.describe_auto_scaling_groups = settled(
    AutoScalingResponse.describe_auto_scaling_groups
)

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
