//! Test fixtures, once for every test: the unit tests (`cfg(test)`), the integration tests and
//! the benches (the `test-util` feature, which the crate's dev-dependency on itself turns on).
//! Not part of the operator's API.
//!
//! - [`aws_node_ds`]: the aws-node DaemonSet as the EKS managed add-on ships it (VPC CNI
//!   v1.19.2), with the aws-node container's literal env given and, when `owned` is not empty,
//!   this operator's field manager owning those env entries.
//! - [`node`]: the plan's view of a Node of one instance type.
//! - [`policy`]: a `NodeNetworkPolicy` from a JSON spec; [`default_policy`] and
//!   [`pool_policies`] for the common fleets.
//! - [`eks_addon_ds`]: aws-node as the EKS add-on applies it.
//! - [`FakeEc2`] and [`FakeEks`]: the one in-process fake of each AWS service, behind the same
//!   traits as the SDK adapters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{Value, json};

use crate::aws::eks::{EksAddonApi, EksError, EksProvider};
use crate::aws::launch_templates::{
    LaunchTemplateApi, LaunchTemplateData, SubnetQuery, TemplateRef, TemplateVersion,
};
use crate::aws::{Ec2Error, Ec2Provider};
use crate::crd::{FIELD_MANAGER, NodeNetworkPolicy};
use crate::eks_addon::{AddonFacts, UpdateFacts};
use crate::instance::InstanceLimits;
use crate::plan::{NodeFacts, labels};
use crate::rollout::{Launcher, LauncherKind, UpdateProgress, UpdateState};
use crate::subnet::{InterfaceInfo, ReservationInfo, SubnetInfo};

/// The VPC CNI image of the fixtures' aws-node (the EKS add-on's build of v1.19.2).
pub const CNI_IMAGE: &str =
    "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2-eksbuild.1";

/// A small aws-node env before the operator: prefix delegation off, one warm ENI.
pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
    ("ENABLE_PREFIX_DELEGATION", "false"),
    ("WARM_ENI_TARGET", "1"),
];

/// The literal env of the EKS add-on's aws-node container (v1.19.2, default configuration).
pub const EKS_ADDON_ENV: &[(&str, &str)] = &[
    ("ADDITIONAL_ENI_TAGS", "{}"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "true"),
    ("AWS_VPC_ENI_MTU", "9001"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false"),
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG"),
    ("ENABLE_POD_ENI", "false"),
    ("ENABLE_PREFIX_DELEGATION", "false"),
    ("WARM_ENI_TARGET", "1"),
];

/// The env the operator applies for a prefix-delegation fleet with the balanced profile.
pub const PREFIX_ENV: &[(&str, &str)] = &[
    ("ENABLE_PREFIX_DELEGATION", "true"),
    ("WARM_PREFIX_TARGET", "1"),
];

/// The env names the operator owns after applying [`PREFIX_ENV`].
pub const PREFIX_OWNED: &[&str] = &["ENABLE_PREFIX_DELEGATION", "WARM_PREFIX_TARGET"];

/// `[{"name": .., "value": ..}]` for literal env entries.
pub fn env_json(entries: &[(&str, &str)]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The `managedFields` entry of this operator's field manager owning the env entries `owned`
/// of the aws-node container.
pub fn owned_env_fields(manager: &str, owned: &[&str]) -> Value {
    let env: serde_json::Map<String, Value> = owned
        .iter()
        .map(|name| {
            (
                format!("k:{{\"name\":\"{name}\"}}"),
                json!({".": {}, "f:name": {}, "f:value": {}}),
            )
        })
        .collect();
    json!({"manager": manager, "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"aws-node\"}": {"f:env": env}}}}}}})
}

/// The aws-node DaemonSet as the EKS add-on ships it: an init container, the aws-node container
/// (the literal `env` given, then the downward-API `MY_NODE_NAME` and `MY_POD_NAME`) and the
/// network-policy agent. With `owned` not empty, `managedFields` says this operator owns those
/// env entries.
pub fn aws_node_ds(env: &[(&str, &str)], owned: &[&str]) -> DaemonSet {
    let image = |repo: &str, tag: &str| {
        format!("602401143452.dkr.ecr.us-west-2.amazonaws.com/{repo}:{tag}")
    };
    let mut container_env = env_json(env);
    if let Value::Array(entries) = &mut container_env {
        for (name, path) in [
            ("MY_NODE_NAME", "spec.nodeName"),
            ("MY_POD_NAME", "metadata.name"),
        ] {
            entries.push(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}));
        }
    }
    let mut ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "aws-node", "namespace": "kube-system", "labels": {
            "app.kubernetes.io/name": "aws-node", "app.kubernetes.io/instance": "aws-vpc-cni",
            "k8s-app": "aws-node", "app.kubernetes.io/version": "v1.19.2"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "aws-node"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "aws-node", "k8s-app": "aws-node"}},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "aws-node",
                    "hostNetwork": true,
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [{
                        "name": "aws-vpc-cni-init",
                        "image": image("amazon-k8s-cni-init", "v1.19.2-eksbuild.1"),
                        "env": [{"name": "DISABLE_TCP_EARLY_DEMUX", "value": "false"},
                                {"name": "ENABLE_IPv6", "value": "false"}],
                        "securityContext": {"privileged": true},
                        "volumeMounts": [{"mountPath": "/host/opt/cni/bin", "name": "cni-bin-dir"}]
                    }],
                    "containers": [{
                        "name": "aws-node",
                        "image": CNI_IMAGE,
                        "ports": [{"containerPort": 61678, "name": "metrics"}],
                        "env": container_env,
                        "resources": {"requests": {"cpu": "25m"}},
                        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                        "volumeMounts": [{"mountPath": "/host/opt/cni/bin", "name": "cni-bin-dir"}]
                    }, {
                        "name": "aws-eks-nodeagent",
                        "image": image("amazon/aws-network-policy-agent", "v1.1.6-eksbuild.1"),
                        "args": ["--enable-ipv6=false", "--enable-network-policy=false"],
                        "env": [{"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": true}
                    }],
                    "volumes": [{"name": "cni-bin-dir", "hostPath": {"path": "/opt/cni/bin"}}]
                }
            }
        }
    });
    if !owned.is_empty() {
        ds["metadata"]["managedFields"] = json!([owned_env_fields(FIELD_MANAGER, owned)]);
    }
    #[allow(clippy::expect_used)]
    serde_json::from_value(ds).expect("the fixture is a DaemonSet")
}

/// A Linux node of `instance_type`, as the plan sees it; no pods capacity reported.
pub fn node(instance_type: &str) -> NodeFacts {
    NodeFacts {
        labels: [
            (labels::INSTANCE_TYPE, instance_type),
            (labels::OS, "linux"),
        ]
        .into_iter()
        .collect(),
        capacity_pods: None,
        instance_id: None,
        not_ready: false,
    }
}

impl NodeFacts {
    /// The node with one more label.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels = self.labels.with(key, value);
        self
    }

    /// The node reporting `status.capacity.pods`.
    pub fn with_capacity(mut self, pods: u32) -> Self {
        self.capacity_pods = u16::try_from(pods).ok();
        self
    }
}

/// The policy `name`, created at `created` (RFC 3339), with a JSON `spec` and, optionally, a
/// current `status`.
pub fn policy(name: &str, created: &str, spec: Value, status: Option<Value>) -> NodeNetworkPolicy {
    let mut object = json!({
        "apiVersion": "tuner.vpccni.io/v1alpha1",
        "kind": "NodeNetworkPolicy",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1, "creationTimestamp": created},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    #[allow(clippy::expect_used)]
    serde_json::from_value(object).expect("the fixture is a NodeNetworkPolicy")
}

/// The policy `default`: every node, the defaults.
pub fn default_policy() -> NodeNetworkPolicy {
    policy("default", "2026-01-01T00:00:00Z", json!({}), None)
}

/// `count` policies `pool-0`, `pool-1`, ... selecting the nodes labelled `pool=<name>`,
/// `pool-0` the oldest.
pub fn pool_policies(count: usize) -> Vec<NodeNetworkPolicy> {
    (0..count)
        .map(|i| {
            policy(
                &format!("pool-{i}"),
                &format!("2026-01-{:02}T00:00:00Z", i % 28 + 1),
                json!({"nodeSelector": {"matchLabels": {"pool": format!("pool-{i}")}}}),
                None,
            )
        })
        .collect()
}

/// The plan's view of policies given as (name, RFC 3339 creation time, spec), generation 1.
pub fn policy_inputs<'a>(
    specs: &'a [(&'a str, &'a str, crate::crd::NodeNetworkPolicySpec)],
) -> Vec<crate::plan::PolicyInput<'a>> {
    specs
        .iter()
        .map(|(name, created, spec)| crate::plan::PolicyInput {
            name,
            created: Some((*created).to_owned()),
            generation: Some(1),
            spec,
            addon_env: None,
            handover: None,
            aws_node_rollouts: 0,
        })
        .collect()
}

/// The EKS add-on's aws-node: [`aws_node_ds`] with `CLUSTER_NAME` [`FAKE_CLUSTER`], every env
/// entry applied by EKS's field manager `eks`, and (with `owned` not empty) this operator's
/// field manager owning those entries as a DaemonSet-mode run leaves them.
pub fn eks_addon_ds(env: &[(&str, &str)], owned: &[&str]) -> DaemonSet {
    let mut entries: Vec<(&str, &str)> = env.to_vec();
    entries.push((crate::eks_addon::CLUSTER_NAME_ENV, FAKE_CLUSTER));
    let mut ds = aws_node_ds(&entries, owned);
    let names: Vec<&str> = entries.iter().map(|(name, _)| *name).collect();
    let mut fields = vec![owned_env_fields("eks", &names)];
    if !owned.is_empty() {
        fields.push(owned_env_fields(FIELD_MANAGER, owned));
    }
    #[allow(clippy::expect_used)]
    {
        ds.metadata.managed_fields =
            Some(serde_json::from_value(Value::Array(fields)).expect("managedFields"));
    }
    ds
}

/// The cluster of [`FakeEks`] and [`eks_addon_ds`].
pub const FAKE_CLUSTER: &str = "prod";

/// An AWS error code and message, as the SDK reports them.
pub type FakeFailure = (&'static str, &'static str);

/// One in-process EC2 for every test: a launch template (AL2 user data, version 1, the
/// default), the instances launched from it, and instance types EC2 knows beyond the embedded
/// table. Records every write and lookup; a call can be made to fail with an AWS error code.
/// Simulates the answers the operator reads, not EC2's validation of requests.
#[derive(Clone, Default)]
pub struct FakeEc2(Arc<Mutex<Ec2State>>);

/// What [`FakeEc2`] holds and saw.
pub struct Ec2State {
    pub template_id: String,
    pub template_name: Option<String>,
    /// The user data of the newest version, not base64-encoded.
    pub user_data: String,
    pub version: i64,
    pub default_version: i64,
    pub instances: Vec<String>,
    /// Types `DescribeInstanceTypes` knows (besides none of the embedded ones).
    pub live_types: BTreeMap<String, InstanceLimits>,
    /// By operation (`DescribeLaunchTemplateVersions`, `CreateLaunchTemplateVersion`, ...).
    pub failures: BTreeMap<&'static str, FakeFailure>,
    /// The groups that launch from the template: Auto Scaling groups, and node groups by
    /// cluster.
    pub auto_scaling_groups: Vec<Launcher>,
    pub node_groups: BTreeMap<String, Vec<Launcher>>,
    /// Node-group updates and instance refreshes started, in order: (group, version), and the
    /// state of each by id. An update makes its group busy until [`FakeEc2::finish`].
    pub rollouts_started: Vec<(String, String)>,
    /// Subnets, their interfaces and reservations; prefix reservations created.
    pub subnets: Vec<SubnetInfo>,
    pub interfaces: Vec<InterfaceInfo>,
    pub reservations: Vec<(String, ReservationInfo)>,
    pub updates: BTreeMap<String, (String, UpdateProgress)>,
    /// DescribeLaunchTemplateVersions calls.
    pub reads: usize,
    /// Created versions' user data, base64 as sent.
    pub created: Vec<String>,
    pub defaults: Vec<i64>,
    pub type_lookups: Vec<Vec<String>>,
}

impl Default for Ec2State {
    fn default() -> Self {
        Self {
            template_id: "lt-0abc".into(),
            template_name: Some("web".into()),
            user_data: "#!/bin/bash\n/etc/eks/bootstrap.sh prod\n".into(),
            version: 1,
            default_version: 1,
            instances: Vec::new(),
            live_types: BTreeMap::new(),
            failures: BTreeMap::new(),
            auto_scaling_groups: Vec::new(),
            node_groups: BTreeMap::new(),
            rollouts_started: Vec::new(),
            subnets: Vec::new(),
            interfaces: Vec::new(),
            reservations: Vec::new(),
            updates: BTreeMap::new(),
            reads: 0,
            created: Vec::new(),
            defaults: Vec::new(),
            type_lookups: Vec::new(),
        }
    }
}

impl FakeEc2 {
    pub fn state(&self) -> MutexGuard<'_, Ec2State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `operation` fails with `code` from now on.
    pub fn fail(&self, operation: &'static str, failure: FakeFailure) {
        self.state().failures.insert(operation, failure);
    }

    fn check(&self, operation: &'static str) -> Result<(), Ec2Error> {
        match self.state().failures.get(operation) {
            Some((code, message)) => Err(Ec2Error::Api {
                operation,
                code: (*code).to_owned(),
                message: (*message).to_owned(),
            }),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl LaunchTemplateApi for FakeEc2 {
    async fn read_version(
        &self,
        _: &TemplateRef,
        version: &str,
    ) -> Result<TemplateVersion, Ec2Error> {
        use base64::Engine as _;
        self.check("DescribeLaunchTemplateVersions")?;
        let mut state = self.state();
        state.reads += 1;
        let number = match version {
            "$Latest" => state.version,
            "$Default" => state.default_version,
            n => n.parse().unwrap_or(state.version),
        };
        Ok(TemplateVersion {
            template_id: state.template_id.clone(),
            template_name: state.template_name.clone(),
            version: number,
            default_version: number == state.default_version,
            data: LaunchTemplateData::with_user_data(
                base64::engine::general_purpose::STANDARD.encode(&state.user_data),
            ),
        })
    }

    async fn create_version(
        &self,
        _: &TemplateVersion,
        user_data: &str,
        _: &str,
    ) -> Result<i64, Ec2Error> {
        use base64::Engine as _;
        self.check("CreateLaunchTemplateVersion")?;
        let mut state = self.state();
        state.created.push(user_data.to_owned());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(user_data)
            .unwrap_or_default();
        state.user_data = String::from_utf8_lossy(&decoded).into_owned();
        state.version += 1;
        Ok(state.version)
    }

    async fn set_default_version(&self, _: &str, version: i64) -> Result<(), Ec2Error> {
        self.check("ModifyLaunchTemplate")?;
        let mut state = self.state();
        state.defaults.push(version);
        state.default_version = version;
        Ok(())
    }

    async fn instances_of(&self, _: &str) -> Result<Vec<String>, Ec2Error> {
        self.check("DescribeInstances")?;
        Ok(self.state().instances.clone())
    }

    async fn instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, InstanceLimits)>, Ec2Error> {
        self.check("DescribeInstanceTypes")?;
        let mut state = self.state();
        state.type_lookups.push(names.to_vec());
        Ok(names
            .iter()
            .filter_map(|n| state.live_types.get(n).map(|l| (n.clone(), *l)))
            .collect())
    }

    async fn auto_scaling_groups_of(&self, template_id: &str) -> Result<Vec<Launcher>, Ec2Error> {
        self.check("DescribeAutoScalingGroups")?;
        let all = self.state().auto_scaling_groups.clone();
        Ok(self.launchers_of(template_id, &all))
    }

    async fn node_groups_of(
        &self,
        template_id: &str,
        cluster: &str,
    ) -> Result<Vec<Launcher>, Ec2Error> {
        self.check("DescribeNodegroup")?;
        let all = self
            .state()
            .node_groups
            .get(cluster)
            .cloned()
            .unwrap_or_default();
        Ok(self.launchers_of(template_id, &all))
    }

    async fn start_node_group_update(
        &self,
        _: &str,
        name: &str,
        _: &str,
        version: i64,
    ) -> Result<String, Ec2Error> {
        self.check("UpdateNodegroupVersion")?;
        self.start(LauncherKind::NodeGroup, name, version.to_string())
    }

    async fn node_group_update(
        &self,
        _: &str,
        _: &str,
        id: &str,
    ) -> Result<UpdateProgress, Ec2Error> {
        self.check("DescribeUpdate")?;
        self.progress(id)
    }

    async fn start_instance_refresh(
        &self,
        group: &str,
        template: Option<(&str, &str)>,
        _: u32,
    ) -> Result<String, Ec2Error> {
        self.check("StartInstanceRefresh")?;
        let version = template.map_or("-", |(_, v)| v).to_owned();
        self.start(LauncherKind::AutoScalingGroup, group, version)
    }

    async fn instance_refreshes(
        &self,
        group: &str,
        id: Option<&str>,
    ) -> Result<Vec<UpdateProgress>, Ec2Error> {
        self.check("DescribeInstanceRefreshes")?;
        let state = self.state();
        Ok(state
            .updates
            .iter()
            .rev()
            .filter(|(key, (g, _))| g == group && id.is_none_or(|id| id == key.as_str()))
            .map(|(_, (_, p))| p.clone())
            .collect())
    }

    async fn subnets(&self, query: &SubnetQuery) -> Result<Vec<SubnetInfo>, Ec2Error> {
        self.subnets_answer(query).await
    }

    async fn interfaces(
        &self,
        subnet: Option<&str>,
        instances: &[String],
    ) -> Result<Vec<InterfaceInfo>, Ec2Error> {
        self.check("DescribeNetworkInterfaces")?;
        Ok(self
            .state()
            .interfaces
            .iter()
            .filter(|i| match subnet {
                Some(subnet) => i.subnet_id == subnet,
                None => i
                    .instance_id
                    .as_ref()
                    .is_some_and(|id| instances.contains(id)),
            })
            .cloned()
            .collect())
    }

    async fn subnet_reservations(&self, subnet: &str) -> Result<Vec<ReservationInfo>, Ec2Error> {
        self.check("GetSubnetCidrReservations")?;
        Ok(self
            .state()
            .reservations
            .iter()
            .filter(|(s, _)| s == subnet)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn create_prefix_reservation(
        &self,
        subnet: &str,
        cidr: &str,
        description: &str,
    ) -> Result<String, Ec2Error> {
        self.check("CreateSubnetCidrReservation")?;
        let mut state = self.state();
        let id = format!("scr-{}", state.reservations.len() + 1);
        state.reservations.push((
            subnet.to_owned(),
            ReservationInfo {
                id: id.clone(),
                cidr: cidr.to_owned(),
                prefix: true,
                description: description.to_owned(),
            },
        ));
        Ok(id)
    }
}

impl FakeEc2 {
    async fn subnets_answer(&self, query: &SubnetQuery) -> Result<Vec<SubnetInfo>, Ec2Error> {
        self.check("DescribeSubnets")?;
        Ok(self
            .state()
            .subnets
            .iter()
            .filter(|s| query.ids.is_empty() || query.ids.contains(&s.id))
            .filter(|s| {
                query
                    .vpc
                    .as_ref()
                    .or(query.discovery_vpc.as_ref())
                    .is_none_or(|v| s.vpc_id.as_ref() == Some(v))
            })
            .cloned()
            .collect())
    }

    fn launchers_of(&self, template_id: &str, all: &[Launcher]) -> Vec<Launcher> {
        if template_id == self.state().template_id {
            all.to_vec()
        } else {
            Vec::new()
        }
    }

    /// A group named `name` of the cluster's node groups or the Auto Scaling groups.
    fn group(state: &mut Ec2State, kind: LauncherKind, name: &str) -> Option<usize> {
        let groups = match kind {
            LauncherKind::NodeGroup => state.node_groups.values().flatten().collect::<Vec<_>>(),
            LauncherKind::AutoScalingGroup => state.auto_scaling_groups.iter().collect(),
        };
        groups.iter().position(|g| g.name == name)
    }

    fn groups_mut(state: &mut Ec2State, kind: LauncherKind) -> Vec<&mut Launcher> {
        match kind {
            LauncherKind::NodeGroup => state.node_groups.values_mut().flatten().collect(),
            LauncherKind::AutoScalingGroup => state.auto_scaling_groups.iter_mut().collect(),
        }
    }

    fn start(&self, kind: LauncherKind, name: &str, version: String) -> Result<String, Ec2Error> {
        let mut state = self.state();
        let index = Self::group(&mut state, kind, name).ok_or_else(|| Ec2Error::Api {
            operation: "StartRollout",
            code: "ResourceNotFoundException".into(),
            message: format!("no group {name}"),
        })?;
        if Self::groups_mut(&mut state, kind)[index].busy.is_some() {
            return Err(Ec2Error::Api {
                operation: "StartRollout",
                code: "ResourceInUseException".into(),
                message: format!("{name} is being updated"),
            });
        }
        let id = format!("update-{}", state.updates.len() + 1);
        Self::groups_mut(&mut state, kind)[index].busy = Some("UPDATING".into());
        state.rollouts_started.push((name.to_owned(), version));
        state.updates.insert(
            id.clone(),
            (
                name.to_owned(),
                UpdateProgress {
                    id: id.clone(),
                    state: UpdateState::InProgress,
                    status: "InProgress".into(),
                    percent_complete: Some(0),
                    reason: None,
                },
            ),
        );
        Ok(id)
    }

    fn progress(&self, id: &str) -> Result<UpdateProgress, Ec2Error> {
        self.state()
            .updates
            .get(id)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| Ec2Error::Api {
                operation: "DescribeUpdate",
                code: "ResourceNotFoundException".into(),
                message: format!("no update {id}"),
            })
    }

    /// Ends update `id` as `status` (with `reason`): the group is no longer busy, and on
    /// success launches the version the update asked for.
    pub fn finish(&self, id: &str, status: &str, reason: Option<&str>) {
        let mut state = self.state();
        let Some((group, _)) = state.updates.get(id).cloned() else {
            return;
        };
        let version = state
            .rollouts_started
            .iter()
            .rev()
            .find(|(g, _)| *g == group)
            .map(|(_, v)| v.clone());
        let state = &mut *state;
        let groups = state
            .node_groups
            .values_mut()
            .flatten()
            .chain(state.auto_scaling_groups.iter_mut());
        for launcher in groups.filter(|l| l.name == group) {
            launcher.busy = None;
            if status == "Successful"
                && let Some(v) = version.clone().filter(|v| v.parse::<i64>().is_ok())
            {
                launcher.version = Some(v);
            }
        }
        if let Some((_, progress)) = state.updates.get_mut(id) {
            progress.state = UpdateState::parse(status);
            progress.status = status.to_owned();
            progress.percent_complete = Some(100);
            progress.reason = reason.map(str::to_owned);
        }
    }
}

/// A group that launches from the fake's template.
pub fn launcher(kind: LauncherKind, name: &str, version: &str) -> Launcher {
    Launcher {
        kind,
        name: name.to_owned(),
        version: Some(version.to_owned()),
        busy: None,
        instances: Vec::new(),
        mixed_instances: false,
    }
}

#[async_trait::async_trait]
impl Ec2Provider for FakeEc2 {
    async fn api(&self, _: Option<&str>) -> Result<Arc<dyn LaunchTemplateApi>, Ec2Error> {
        Ok(Arc::new(self.clone()))
    }
}

/// One in-process EKS for every test: cluster [`FAKE_CLUSTER`] with the add-on `vpc-cni`.
/// Behaves like the service where the operator depends on it: UpdateAddon stores the new
/// configurationValues, puts the add-on in UPDATING and answers an InProgress update; a second
/// UpdateAddon while one runs fails with `ResourceInUseException`; the update finishes
/// (Successful, add-on ACTIVE) when it is next followed with DescribeUpdate or
/// [`FakeEks::finish_updates`]. Another cluster has no add-on (`ResourceNotFoundException`).
/// A call can be made to fail once with any error. It does not apply the configuration to
/// aws-node (the test does, as EKS would), and checks no IAM.
#[derive(Clone, Default)]
pub struct FakeEks(Arc<Mutex<EksState>>);

/// What [`FakeEks`] holds and saw.
pub struct EksState {
    pub version: String,
    pub status: String,
    pub configuration_values: Option<String>,
    /// The add-on version's configuration schema.
    pub schema: Option<String>,
    pub updates: Vec<UpdateFacts>,
    /// Every call, by action (`DescribeAddon`, `UpdateAddon`, ...).
    pub calls: Vec<&'static str>,
    /// The next call of an action fails with this.
    pub failures: BTreeMap<&'static str, EksError>,
}

impl Default for EksState {
    fn default() -> Self {
        Self {
            version: "v1.19.2-eksbuild.1".into(),
            status: "ACTIVE".into(),
            configuration_values: None,
            schema: None,
            updates: Vec::new(),
            calls: Vec::new(),
            failures: BTreeMap::new(),
        }
    }
}

impl FakeEks {
    pub fn state(&self) -> MutexGuard<'_, EksState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The calls since the last take.
    pub fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.state().calls)
    }

    /// The next `action` fails with an AWS error `code` and HTTP `status`.
    pub fn fail_next(&self, action: &'static str, code: &str, status: u16) {
        self.state().failures.insert(
            action,
            EksError::Api {
                action,
                code: code.to_owned(),
                message: format!("{code} (fake)"),
                status: Some(status),
            },
        );
    }

    /// Every update in progress succeeds; the add-on is ACTIVE.
    pub fn finish_updates(&self) {
        let mut state = self.state();
        for update in state.updates.iter_mut().filter(|u| u.in_progress()) {
            update.status = "Successful".into();
        }
        state.status = "ACTIVE".into();
    }

    fn call(&self, action: &'static str) -> Result<MutexGuard<'_, EksState>, EksError> {
        let mut state = self.state();
        state.calls.push(action);
        match state.failures.remove(action) {
            Some(err) => Err(err),
            None => Ok(state),
        }
    }
}

#[async_trait::async_trait]
impl EksProvider for FakeEks {
    async fn api(&self, cluster: &str) -> Result<Arc<dyn EksAddonApi>, EksError> {
        Ok(Arc::new(FakeEksCluster {
            eks: self.clone(),
            cluster: cluster.to_owned(),
        }))
    }
}

/// [`FakeEks`] as one cluster's add-on API.
struct FakeEksCluster {
    eks: FakeEks,
    cluster: String,
}

impl FakeEksCluster {
    fn not_found(&self, action: &'static str) -> EksError {
        EksError::Api {
            action,
            code: "ResourceNotFoundException".into(),
            message: format!("No addon: vpc-cni found in cluster: {}", self.cluster),
            status: Some(404),
        }
    }
}

#[async_trait::async_trait]
impl EksAddonApi for FakeEksCluster {
    async fn describe_addon(&self) -> Result<Option<AddonFacts>, EksError> {
        let state = self.eks.call("DescribeAddon")?;
        if self.cluster != FAKE_CLUSTER {
            return Ok(None);
        }
        Ok(Some(AddonFacts {
            cluster: self.cluster.clone(),
            version: Some(state.version.clone()),
            status: Some(state.status.clone()),
            configuration_values: state.configuration_values.clone(),
            last_update: None,
        }))
    }

    async fn configuration_schema(&self, _: &str) -> Result<Option<String>, EksError> {
        let state = self.eks.call("DescribeAddonConfiguration")?;
        Ok(state.schema.clone())
    }

    async fn update_addon(&self, values: &str, _: &str) -> Result<UpdateFacts, EksError> {
        let mut state = self.eks.call("UpdateAddon")?;
        if self.cluster != FAKE_CLUSTER {
            return Err(self.not_found("UpdateAddon"));
        }
        if state.status == "UPDATING" {
            return Err(EksError::Api {
                action: "UpdateAddon",
                code: "ResourceInUseException".into(),
                message: "Addon vpc-cni is in UPDATING state".into(),
                status: Some(409),
            });
        }
        state.configuration_values = Some(values.to_owned());
        state.status = "UPDATING".into();
        let update = UpdateFacts {
            id: format!("update-{}", state.updates.len() + 1),
            status: "InProgress".into(),
            errors: Vec::new(),
        };
        state.updates.push(update.clone());
        Ok(update)
    }

    async fn describe_update(&self, id: &str) -> Result<UpdateFacts, EksError> {
        drop(self.eks.call("DescribeUpdate")?);
        self.eks.finish_updates();
        let state = self.eks.state();
        state
            .updates
            .iter()
            .find(|u| u.id == id)
            .cloned()
            .ok_or_else(|| self.not_found("DescribeUpdate"))
    }
}
