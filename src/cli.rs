//! The command line. Parsing and rendering only: every answer comes from [`crate::engine`]
//! (and [`crate::karpenter`] for NodePools).

mod node_pools;
pub mod subnets;

use std::io::Write;

use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table, presets};

use crate::engine::{
    self, CniVersion, EniOptions, InstanceFacts, IpFamily, MaxPodsPolicy, PrefixDelegationMode,
    Recommendation, TuningError, TuningRequest, WarmPoolProfile, WarmPoolSpec, WarmPoolTargets,
};
use crate::instance::{InstanceCatalog, UnknownInstanceType};

#[derive(Debug, Parser)]
#[command(
    name = "vpc-cni-tuner",
    version,
    about = "Right-size the Amazon VPC CNI and kubelet maxPods for your EKS fleet"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Recommend aws-node env and maxPods for instance types, offline from the embedded table.
    Recommend(RecommendArgs),
    /// Print the NodeNetworkPolicy CustomResourceDefinition (the YAML committed under crds/).
    Crd,
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the JSON Schema of `recommend -o json` (committed as schemas/recommend.v1.json).
    Schema,
    /// Per subnet: free addresses, free aligned /28 prefixes, fragmentation, and how many more
    /// nodes and pods fit; from the live account or offline from saved AWS CLI JSON.
    Subnets(subnets::SubnetsArgs),
    /// Print a shell completion script: `vpc-cni-tuner completions bash > /etc/bash_completion.d/vpc-cni-tuner`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The kubeconfig file to use instead of `KUBECONFIG` / `~/.kube/config` (in a pod: the
    /// in-cluster config when neither this nor `--context` is given).
    #[arg(long, env = "VPC_CNI_TUNER_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// The kubeconfig context to use instead of its current one; the file is left unchanged.
    #[arg(long, env = "VPC_CNI_TUNER_CONTEXT")]
    pub context: Option<String>,

    /// Address of the admin server (/livez, /readyz, /metrics); `[::]` serves IPv4 and IPv6.
    #[arg(long, env = "VPC_CNI_TUNER_ADMIN_ADDR", default_value = "[::]:8080")]
    pub admin_addr: std::net::SocketAddr,

    /// Elect a leader through a coordination.k8s.io Lease; only the leader writes.
    #[arg(long, env = "VPC_CNI_TUNER_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "vpc-cni-tuner")]
    pub lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "VPC_CNI_TUNER_LEASE_NAME",
        default_value = "vpc-cni-tuner"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The aws-node DaemonSet to manage, NAMESPACE/NAME.
    #[arg(long, env = "VPC_CNI_TUNER_DAEMONSET", default_value = "kube-system/aws-node", value_parser = parse_daemonset_ref)]
    pub daemonset: crate::crd::DaemonSetRef,

    /// Re-plan at least this often (seconds), even without events.
    #[arg(long, env = "VPC_CNI_TUNER_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,

    /// Wait this long (milliseconds) after an event for more before planning (not before the
    /// first plan, which runs once every watch has listed).
    #[arg(long, env = "VPC_CNI_TUNER_DEBOUNCE_MILLIS", default_value_t = 500)]
    pub debounce_millis: u64,

    /// Write a status change that is only node counts (matched nodes, nodes per type or
    /// template) at most once per this many seconds per policy; conditions, decisions and
    /// written values are written at once.
    #[arg(long, env = "VPC_CNI_TUNER_STATUS_COUNT_SECONDS", default_value_t = 60)]
    pub status_count_seconds: u64,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(
        long,
        env = "VPC_CNI_TUNER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// AWS region of EC2 calls (launch templates without their own `region`, live instance-type
    /// lookups). Unset: aws-config's chain (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile,
    /// then the instance metadata service).
    #[arg(long, env = "VPC_CNI_TUNER_AWS_REGION")]
    pub aws_region: Option<String>,

    /// EC2 endpoint URL (a VPC interface endpoint, a FIPS or test endpoint). Unset: aws-config's
    /// chain (`AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`), else the region's public endpoint.
    #[arg(long, env = "VPC_CNI_TUNER_EC2_ENDPOINT_URL")]
    pub ec2_endpoint_url: Option<String>,

    /// Manage Karpenter EC2NodeClasses that policies list (`spec.karpenter.ec2NodeClasses`):
    /// watch NodePools and EC2NodeClasses once a policy lists one, and write their kubelet
    /// maxPods. Needs the RBAC the chart grants with `karpenter.enabled=true`.
    #[arg(long, env = "VPC_CNI_TUNER_KARPENTER")]
    pub karpenter: bool,

    /// Let policies whose launch templates have `rollout.enabled` replace nodes: EKS
    /// `UpdateNodegroupVersion` and Auto Scaling `StartInstanceRefresh`, one group at a time
    /// per policy. Needs the rollout IAM actions (chart value `rollout.enabled`). Without it
    /// those groups wait, and the status says so.
    #[arg(long, env = "VPC_CNI_TUNER_ROLLOUTS")]
    pub rollouts: bool,

    /// Serve the aws-node pod webhook (`warmPool.perInstanceType`) over HTTPS on this address,
    /// e.g. `[::]:9443`. Unset: no webhook.
    #[arg(long, env = "VPC_CNI_TUNER_WEBHOOK_ADDR")]
    pub webhook_addr: Option<std::net::SocketAddr>,

    /// The Secret (in `--lease-namespace`, the pod's namespace) holding the webhook's
    /// certificate.
    #[arg(
        long,
        env = "VPC_CNI_TUNER_WEBHOOK_SECRET",
        default_value = "vpc-cni-tuner-webhook-tls"
    )]
    pub webhook_secret: String,

    /// The MutatingWebhookConfiguration whose `caBundle` the operator keeps (self-managed
    /// certificates).
    #[arg(long, env = "VPC_CNI_TUNER_WEBHOOK_CONFIGURATION")]
    pub webhook_configuration: Option<String>,

    /// The names the webhook's certificate is for (comma-separated): the Service's
    /// `NAME.NAMESPACE.svc`, or an address.
    #[arg(long, env = "VPC_CNI_TUNER_WEBHOOK_HOSTS", value_delimiter = ',')]
    pub webhook_hosts: Vec<String>,

    /// `self`: the operator makes and renews the certificate; `cert-manager`: cert-manager does.
    #[arg(
        long,
        env = "VPC_CNI_TUNER_WEBHOOK_CERT_SOURCE",
        value_enum,
        default_value = "self"
    )]
    pub webhook_cert_source: crate::webhook::server::CertSource,

    /// How long a restarted node's new aws-node pod may take to be Ready before the rolling
    /// restart (`warmPool.restartPods: Rolling`) stops (seconds).
    #[arg(
        long,
        env = "VPC_CNI_TUNER_RESTART_READY_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    pub restart_ready_timeout_seconds: u64,

    /// How often a rollout that runs or waits to start is looked at again (seconds).
    #[arg(
        long,
        env = "VPC_CNI_TUNER_ROLLOUT_FOLLOW_SECONDS",
        default_value_t = 30
    )]
    pub rollout_follow_seconds: u64,

    /// Where the aws-node env is written: `auto` writes the EKS managed add-on's
    /// configurationValues (eks:UpdateAddon) when EKS applies aws-node (nothing when EKS has no
    /// such add-on), and the DaemonSet otherwise; `daemonset` always writes the DaemonSet (add-on updates with
    /// resolveConflicts NONE then fail); `eks-addon` always writes the add-on.
    #[arg(
        long,
        env = "VPC_CNI_TUNER_CNI_CONFIG_VIA",
        value_enum,
        default_value = "auto"
    )]
    pub cni_config_via: crate::eks_addon::CniConfigVia,

    /// The EKS cluster's name, for the add-on calls. Unset: aws-node's `CLUSTER_NAME` env, which
    /// the EKS add-on sets.
    #[arg(long, env = "EKS_CLUSTER_NAME")]
    pub eks_cluster_name: Option<String>,

    /// EKS endpoint URL (a VPC interface endpoint, a FIPS or test endpoint). Unset: aws-config's
    /// chain (`AWS_ENDPOINT_URL_EKS`, `AWS_ENDPOINT_URL`), else the region's public endpoint.
    #[arg(long, env = "VPC_CNI_TUNER_EKS_ENDPOINT_URL")]
    pub eks_endpoint_url: Option<String>,
}

fn parse_daemonset_ref(value: &str) -> Result<crate::crd::DaemonSetRef, String> {
    match value.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(crate::crd::DaemonSetRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!(
            "{value:?} is not NAMESPACE/NAME (e.g. kube-system/aws-node)"
        )),
    }
}

/// The CRD as committed under `crds/`: YAML generated from the Rust types.
pub fn crd_yaml() -> Result<String, CliError> {
    crate::crd::manifest::yaml().map_err(CliError::Render)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaxPodsPolicyArg {
    /// EKS recommended: the IP limit capped at 110 (<= 30 vCPUs) or 250.
    Recommended,
    /// The IP limit, uncapped.
    IpLimit,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Instance types of one node group (space or comma separated), e.g. t3.medium m5.large.
    #[arg(
        required_unless_present = "karpenter_nodepool",
        value_name = "INSTANCE_TYPE",
        value_delimiter = ','
    )]
    pub instance_types: Vec<String>,

    /// A Karpenter NodePool YAML file (`-`: stdin): the maxPods its EC2NodeClass should carry
    /// for every instance type its requirements allow, and the type that bounds it.
    #[arg(long, value_name = "FILE", conflicts_with = "instance_types")]
    pub karpenter_nodepool: Option<String>,

    /// ENABLE_PREFIX_DELEGATION: auto turns it on when it raises maxPods for a Nitro type.
    #[arg(long, value_enum, default_value = "auto")]
    pub prefix_delegation: PrefixDelegationMode,

    /// Pods use ENIConfig subnets (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true): one ENI fewer.
    #[arg(long)]
    pub custom_networking: bool,

    /// Security groups for pods (ENABLE_POD_ENI=true): the trunk ENI takes one ENI.
    #[arg(long)]
    pub security_groups_for_pods: bool,

    /// MAX_ENI: use at most N ENIs per node.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_eni: Option<u32>,

    /// VPC CNI version the cluster runs (X.Y.Z).
    #[arg(long, value_name = "X.Y.Z", default_value_t = CniVersion::NEWEST_KNOWN)]
    pub cni_version: CniVersion,

    /// The cluster's IP family.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub ip_family: IpFamily,

    /// Warm-pool profile: balanced, conserve-ips or fast-scaling.
    #[arg(long, value_enum, default_value = "balanced")]
    pub warm_profile: WarmPoolProfile,

    /// WARM_ENI_TARGET, overriding the profile.
    #[arg(long, value_name = "N")]
    pub warm_eni_target: Option<u32>,

    /// WARM_IP_TARGET, overriding the profile.
    #[arg(long, value_name = "N")]
    pub warm_ip_target: Option<u32>,

    /// MINIMUM_IP_TARGET, overriding the profile.
    #[arg(long, value_name = "N")]
    pub minimum_ip_target: Option<u32>,

    /// WARM_PREFIX_TARGET, overriding the profile.
    #[arg(long, value_name = "N")]
    pub warm_prefix_target: Option<u32>,

    /// How maxPods is chosen (ignored when --max-pods fixes it).
    #[arg(long, value_enum, default_value = "recommended")]
    pub max_pods_policy: MaxPodsPolicyArg,

    /// Also the warm env of each instance type on its own, as `warmPool.perInstanceType` gives
    /// each node's aws-node pod (prefix delegation stays the group's).
    #[arg(long)]
    pub per_instance_type: bool,

    /// A fixed maxPods for every type; rejected where the IPs cannot carry it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods: Option<u32>,

    /// An upper bound on maxPods, applied after the policy.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods_ceiling: Option<u32>,

    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

// clap value enums for the engine's types, so the CLI spells them the way the engine does.
impl ValueEnum for PrefixDelegationMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Auto, Self::Enabled, Self::Disabled]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Self::Auto => "auto",
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }))
    }
}

impl ValueEnum for IpFamily {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Ipv4, Self::Ipv6]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }))
    }
}

impl ValueEnum for WarmPoolProfile {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Balanced, Self::ConserveIps, Self::FastScaling]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Self::Balanced => "balanced",
            Self::ConserveIps => "conserve-ips",
            Self::FastScaling => "fast-scaling",
        }))
    }
}

/// Why `recommend` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{}", unknown_list(.0))]
    UnknownInstanceTypes(Vec<UnknownInstanceType>),
    #[error(transparent)]
    Tuning(#[from] TuningError),
    #[error("cannot render output: {0}")]
    Render(String),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Input(String),
}

fn unknown_list(unknown: &[UnknownInstanceType]) -> String {
    unknown
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl RecommendArgs {
    /// The engine request these flags describe.
    pub(crate) fn tuning_request(&self) -> TuningRequest {
        TuningRequest {
            prefix_delegation: self.prefix_delegation,
            ip_family: self.ip_family,
            cni_version: self.cni_version,
            eni: EniOptions {
                max_eni: self.max_eni,
                custom_networking: self.custom_networking,
                security_groups_for_pods: self.security_groups_for_pods,
            },
            warm_pool: WarmPoolSpec {
                profile: self.warm_profile,
                explicit: WarmPoolTargets {
                    warm_eni_target: self.warm_eni_target,
                    warm_ip_target: self.warm_ip_target,
                    minimum_ip_target: self.minimum_ip_target,
                    warm_prefix_target: self.warm_prefix_target,
                },
            },
            max_pods: match (self.max_pods, self.max_pods_policy) {
                (Some(value), _) => MaxPodsPolicy::Fixed(value),
                (None, MaxPodsPolicyArg::Recommended) => MaxPodsPolicy::Recommended,
                (None, MaxPodsPolicyArg::IpLimit) => MaxPodsPolicy::IpLimit,
            },
            max_pods_ceiling: self.max_pods_ceiling,
        }
    }
}

/// The version of `recommend -o json`'s shape: a field is only added within a version; a field
/// removed or changed in meaning makes the next.
pub const RECOMMEND_SCHEMA_VERSION: &str = "vpc-cni-tuner.recommend/v1";

/// `recommend -o json`: the recommendation with the version of its shape.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendOutput {
    /// `vpc-cni-tuner.recommend/v1`.
    pub schema_version: String,
    #[serde(flatten)]
    pub recommendation: Recommendation,
}

/// The JSON Schema of `recommend -o json`, as committed in `schemas/recommend.v1.json`.
pub fn recommend_schema() -> String {
    let mut schema = schemars::schema_for!(RecommendOutput);
    schema.insert(
        "$id".to_owned(),
        serde_json::json!("https://vpc-cni-tuner.io/schemas/recommend.v1.json"),
    );
    if let Some(props) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("schemaVersion"))
        .and_then(|v| v.as_object_mut())
    {
        props.insert(
            "const".to_owned(),
            serde_json::json!(RECOMMEND_SCHEMA_VERSION),
        );
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Runs `recommend` against `catalog`, writing to `out`.
pub fn recommend(
    args: &RecommendArgs,
    catalog: &InstanceCatalog,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if let Some(path) = &args.karpenter_nodepool {
        return node_pools::recommend_node_pools(args, path, catalog, out);
    }
    let mut names: Vec<String> = Vec::with_capacity(args.instance_types.len());
    for name in &args.instance_types {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut facts = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in &names {
        match catalog.lookup(name) {
            Ok(limits) => facts.push(InstanceFacts {
                instance_type: name,
                limits,
            }),
            Err(err) => unknown.push(err),
        }
    }
    if !unknown.is_empty() {
        return Err(CliError::UnknownInstanceTypes(unknown));
    }
    let request = args.tuning_request();
    let mut recommendation = engine::recommend(&request, &facts)?;
    if args.per_instance_type {
        for (t, facts) in recommendation.instance_types.iter_mut().zip(&facts) {
            let pd = recommendation.prefix_delegation;
            t.warm_env = Some(engine::warm_env_for_type(&request, facts, pd, None)?);
        }
    }
    let versioned = RecommendOutput {
        schema_version: RECOMMEND_SCHEMA_VERSION.to_owned(),
        recommendation,
    };
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &versioned)
                .map_err(|e| CliError::Render(e.to_string()))?;
            writeln!(out)?;
        }
        OutputFormat::Yaml => {
            let text = serde_yaml_ng::to_string(&versioned)
                .map_err(|e| CliError::Render(e.to_string()))?;
            out.write_all(text.as_bytes())?;
        }
        OutputFormat::Table => out.write_all(render_table(&versioned.recommendation).as_bytes())?,
    }
    Ok(())
}

/// A readable, aligned table, then the group's maxPods, the env and any warnings.
pub fn render_table(rec: &Recommendation) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(vec![
        "INSTANCE TYPE",
        "VCPUS",
        "ENIS",
        "IPV4/ENI",
        "HYPERVISOR",
        "PREFIX DELEGATION",
        "IP LIMIT",
        "MAX PODS",
        "KUBE-RESERVED MIB",
    ]);
    for t in &rec.instance_types {
        let prefix = match (t.prefix_delegation, t.prefix_delegation_capable) {
            (true, _) => "yes",
            (false, true) => "no",
            (false, false) => "no (not nitro)",
        };
        let enis = if t.pod_enis == t.enis {
            t.enis.to_string()
        } else {
            format!("{} ({} for pods)", t.enis, t.pod_enis)
        };
        let hypervisor = if t.bare_metal {
            "metal".to_owned()
        } else {
            t.hypervisor.to_string()
        };
        let ip_limit = t
            .max_pods_ip_limit
            .map_or_else(|| "none (ipv6)".to_owned(), |l| l.to_string());
        table.add_row(vec![
            Cell::new(&t.instance_type),
            Cell::new(t.vcpus).set_alignment(CellAlignment::Right),
            Cell::new(enis).set_alignment(CellAlignment::Right),
            Cell::new(t.ipv4_per_eni).set_alignment(CellAlignment::Right),
            Cell::new(hypervisor),
            Cell::new(prefix),
            Cell::new(ip_limit).set_alignment(CellAlignment::Right),
            Cell::new(t.max_pods).set_alignment(CellAlignment::Right),
            Cell::new(t.kube_reserved_memory_mib).set_alignment(CellAlignment::Right),
        ]);
    }
    let mut out = String::new();
    for line in table.to_string().lines() {
        // The NOTHING preset pads the first column with a leading space; keep the table flush.
        out.push_str(line.strip_prefix(' ').unwrap_or(line).trim_end());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&format!(
        "maxPods for this group: {} (kube-reserved memory {} MiB), VPC CNI {}, {}\n",
        rec.max_pods,
        rec.kube_reserved_memory_mib,
        rec.cni_version,
        match rec.ip_family {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        }
    ));
    out.push_str("aws-node env:\n");
    for (name, value) in &rec.env {
        out.push_str(&format!("  {name}={value}\n"));
    }
    if rec.instance_types.iter().any(|t| t.warm_env.is_some()) {
        out.push_str("warm env per instance type (warmPool.perInstanceType):\n");
        for t in &rec.instance_types {
            let env: Vec<String> = t
                .warm_env
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!("  {}: {}\n", t.instance_type, env.join(" ")));
        }
    }
    // The same env as the EKS managed add-on takes it. An update replaces the whole document,
    // so it is to be merged into the add-on's own (the operator does that in add-on mode).
    let document = crate::eks_addon::ConfigurationValues::default()
        .with_env(&rec.env, &Default::default())
        .render();
    out.push_str(&format!(
        "EKS add-on {} configurationValues (merge into the add-on's own):\n  {document}\n",
        crate::eks_addon::ADDON_NAME
    ));
    if !rec.warnings.is_empty() {
        out.push_str("warnings:\n");
        for warning in &rec.warnings {
            out.push_str(&format!("  - {warning}\n"));
        }
    }
    out
}

/// The Kubernetes configuration of `run`: `--kubeconfig` and `--context` when given (never
/// changing the file), else kube's default (`KUBECONFIG`, `~/.kube/config`, the in-cluster
/// config).
#[cfg(feature = "operator")]
pub async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Config> {
    use anyhow::Context as _;
    use kube::config::{KubeConfigOptions, Kubeconfig};
    if kubeconfig.is_none() && context.is_none() {
        return Ok(kube::Config::infer().await?);
    }
    let file = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?,
        None => Kubeconfig::read().context("no kubeconfig to take --context from")?,
    };
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .with_context(|| match context {
            Some(name) => format!("--context {name}: not usable from the kubeconfig"),
            None => "the kubeconfig is not usable".to_owned(),
        })
}
