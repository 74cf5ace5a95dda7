//! Test harness: a real `moto_server` on 127.0.0.1, started per test and killed on drop.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod argocd;
pub mod chart;
pub mod crd_schema;
pub mod eks_double;
pub mod envtest;
pub mod fake_api;
pub mod fleet;
pub mod holding_proxy;
pub mod launch_templates;
pub mod operator;
pub mod rbac;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server` on a free loopback port.
pub struct MotoServer {
    child: Child,
    pub port: u16,
    /// The rollout double's configuration file (`moto_with_rollouts.py`).
    rollouts: Option<PathBuf>,
}

impl MotoServer {
    /// Starts `moto_server` from `$MOTO_SERVER`, the project's venv, or `PATH`. Fails the test
    /// with the fix when it is missing: these tests never pass without the real server.
    pub fn start() -> Self {
        Self::spawn(Command::new(moto_binary()))
    }

    /// `moto_server` taught the instance types in `types` (DescribeInstanceTypes records keyed
    /// by name), which its static catalog lacks: see `moto_with_instance_types.py`.
    pub fn start_with_instance_types(types: &serde_json::Value, dir: &std::path::Path) -> Self {
        let file = dir.join("instance-types.json");
        std::fs::write(&file, types.to_string()).expect("write instance types");
        let mut command = Command::new(python());
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/moto_with_instance_types.py"
            ))
            .arg(file);
        Self::spawn(command)
    }

    /// `moto_server` with the calls that replace nodes (UpdateNodegroupVersion, DescribeUpdate,
    /// StartInstanceRefresh, DescribeInstanceRefreshes): see `moto_with_rollouts.py`. Updates
    /// run for `config["seconds"]`; [`MotoServer::rollout_config`] changes it while it runs.
    pub fn start_with_rollouts(config: &serde_json::Value, dir: &std::path::Path) -> Self {
        let file = dir.join("rollouts.json");
        std::fs::write(&file, config.to_string()).expect("write the rollout config");
        let mut command = Command::new(python());
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/moto_with_rollouts.py"
            ))
            .arg(&file);
        let mut server = Self::spawn(command);
        server.rollouts = Some(file);
        server
    }

    /// `moto_server` with delegated IPv4 prefixes on network interfaces (`Ipv4Prefixes` in
    /// AssignPrivateIpAddresses and DescribeNetworkInterfaces): see `moto_with_prefixes.py`.
    pub fn start_with_prefixes() -> Self {
        let mut command = Command::new(python());
        command.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/moto_with_prefixes.py"
        ));
        Self::spawn(command)
    }

    /// Replaces the rollout double's configuration (`seconds`, `fail`, `hold`).
    pub fn rollout_config(&self, config: &serde_json::Value) {
        let file = self.rollouts.as_ref().expect("started with rollouts");
        let next = file.with_extension("next");
        std::fs::write(&next, config.to_string()).expect("write the rollout config");
        std::fs::rename(&next, file).expect("replace the rollout config");
    }

    fn spawn(mut command: Command) -> Self {
        let binary = command.get_program().to_owned();
        let binary = std::path::Path::new(&binary);
        let port = free_port();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; run scripts/test.sh, which installs moto[server] in a venv",
                    binary.display()
                )
            });
        let server = Self {
            child,
            port,
            rollouts: None,
        };
        server.wait_until_listening();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "moto_server did not listen on 127.0.0.1:{} within 60s",
            self.port
        );
    }

    /// An EC2 client for this server with static test credentials.
    pub fn ec2_client(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// Auto Scaling and EKS clients for this server (node-group fixtures).
    pub fn launcher_clients(&self) -> (aws_sdk_autoscaling::Client, aws_sdk_eks::Client) {
        let credentials =
            aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "moto");
        let autoscaling = aws_sdk_autoscaling::Config::builder()
            .behavior_version(aws_sdk_autoscaling::config::BehaviorVersion::latest())
            .region(aws_sdk_autoscaling::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(credentials.clone())
            .build();
        let eks = aws_sdk_eks::Config::builder()
            .behavior_version(aws_sdk_eks::config::BehaviorVersion::latest())
            .region(aws_sdk_eks::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(credentials)
            .build();
        (
            aws_sdk_autoscaling::Client::from_conf(autoscaling),
            aws_sdk_eks::Client::from_conf(eks),
        )
    }

    /// An Auto Scaling group `name` (0 to 2 instances in us-east-1a) that `launches` from a
    /// template (its launch template or mixed-instances policy).
    pub async fn auto_scaling_group(
        &self,
        name: &str,
        launches: impl FnOnce(
            aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder,
        ) -> aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder,
    ) {
        let (autoscaling, _) = self.launcher_clients();
        let group = autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(0)
            .max_size(2)
            .availability_zones("us-east-1a");
        launches(group).send().await.expect("an Auto Scaling group");
    }

    /// An Auto Scaling group `name` launching `version` of template `id`, and an EKS cluster
    /// `prod` with a managed node group `name`-ng launching version 1 of template `ng_template`.
    pub async fn launchers(&self, name: &str, id: &str, version: &str, ng_template: &str) {
        use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
        let template = LaunchTemplateSpecification::builder()
            .launch_template_id(id)
            .version(version)
            .build();
        self.auto_scaling_group(name, |group| group.launch_template(template))
            .await;
        self.node_group(&format!("{name}-ng"), ng_template, "1")
            .await;
    }

    /// A managed node group `name` of EKS cluster `prod` (created when missing) launching
    /// `version` of template `template`.
    pub async fn node_group(&self, name: &str, template: &str, version: &str) {
        let (_, eks) = self.launcher_clients();
        if eks.describe_cluster().name("prod").send().await.is_err() {
            eks.create_cluster()
                .name("prod")
                .role_arn("arn:aws:iam::123456789012:role/eks")
                .resources_vpc_config(
                    aws_sdk_eks::types::VpcConfigRequest::builder()
                        .subnet_ids("subnet-1")
                        .build(),
                )
                .send()
                .await
                .expect("an EKS cluster");
        }
        eks.create_nodegroup()
            .cluster_name("prod")
            .nodegroup_name(name)
            .node_role("arn:aws:iam::123456789012:role/nodes")
            .subnets("subnet-1")
            .launch_template(
                aws_sdk_eks::types::LaunchTemplateSpecification::builder()
                    .id(template)
                    .version(version)
                    .build(),
            )
            .send()
            .await
            .expect("a managed node group");
    }

    /// The launch-template version node group `name` of cluster `prod` launches, and its
    /// status.
    pub async fn node_group_state(&self, name: &str) -> (String, String) {
        let (_, eks) = self.launcher_clients();
        let group = eks
            .describe_nodegroup()
            .cluster_name("prod")
            .nodegroup_name(name)
            .send()
            .await
            .expect("the node group")
            .nodegroup
            .expect("a node group");
        (
            group
                .launch_template()
                .and_then(|t| t.version())
                .unwrap_or_default()
                .to_owned(),
            group
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
        )
    }

    /// Environment for a child process that talks to this server and nothing else.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            // Auto Scaling and EKS (who launches from a template) at this server too.
            ("AWS_ENDPOINT_URL_AUTO_SCALING", self.endpoint()),
            ("AWS_ENDPOINT_URL_EKS", self.endpoint()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> PathBuf {
    venv_tool("moto_server", "MOTO_SERVER", "moto_server")
}

/// The Python of the test venv (helm-python-sdk, kubernetes-validate): `$VPC_CNI_TUNER_PYTHON`,
/// scripts/test.sh's venv, a project-local `.venv`, or `python3` on `PATH`.
pub fn python() -> PathBuf {
    venv_tool("python", "VPC_CNI_TUNER_PYTHON", "python3")
}

/// A program of the test venv: from `env_var`, scripts/test.sh's venv, a project-local `.venv`,
/// or `fallback` on `PATH`.
fn venv_tool(program: &str, env_var: &str, fallback: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for venv in [
        home.join(".cache/vpc-cni-tuner/venv/bin").join(program),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".venv/bin")
            .join(program),
    ] {
        if venv.exists() {
            return venv;
        }
    }
    PathBuf::from(fallback)
}

/// A free port on 127.0.0.1, below the kernel's ephemeral range (32768-60999 on Linux), and
/// never the same one twice in a test process. A port from `bind(0)` is an ephemeral one: the
/// outgoing connection of another test's process (an API server dialling its etcd) could take
/// it between the pick and the server's own bind, and that server then never started (seen
/// once in CI: a kubeconfig pointing at a certificate no API server had written).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Test binaries run one after the other; the process id spreads them over the range.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % SPAN,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::AcqRel) % SPAN;
        let port = u16::try_from(FIRST + offset).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (the admin server): (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Some((code, body))
}
