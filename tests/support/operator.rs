//! The shipped binary as a process: `vpc-cni-tuner run` with the Helm chart's arguments and
//! environment, as the chart's ServiceAccount (an impersonating kubeconfig), logging to a file.
//! Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The chart's Deployment container: its `args` and its literal `env` values, with the
/// downward-API ones (`POD_NAMESPACE`, `POD_NAME`) filled in as the kubelet would.
pub struct ChartContainer {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl ChartContainer {
    /// From the rendered chart's Deployment (release namespace `namespace`).
    pub fn from_rendered(rendered: &[Value], namespace: &str, pod: &str) -> Self {
        let deployment = rendered
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("the chart renders a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .collect();
        let env = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                let name = e["name"].as_str().expect("name").to_owned();
                let value = match (
                    e["value"].as_str(),
                    e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
                ) {
                    (Some(value), _) => value.to_owned(),
                    (None, Some("metadata.namespace")) => namespace.to_owned(),
                    (None, Some("metadata.name")) => pod.to_owned(),
                    other => panic!("env {name}: unexpected source {other:?}"),
                };
                (name, value)
            })
            .collect();
        Self { args, env }
    }
}

/// A running `vpc-cni-tuner run`.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    pub name: String,
    pub admin_port: u16,
}

impl Operator {
    /// Starts the binary with the chart's container `args` and `env`, the admin server moved to
    /// a free loopback port, `extra_env` (AWS settings for moto) and `kubeconfig`.
    pub fn start(
        container: &ChartContainer,
        kubeconfig: &Path,
        extra_env: &[(&str, String)],
        log_dir: &Path,
        name: &str,
    ) -> Self {
        let admin_port = super::free_port();
        let args: Vec<String> = container
            .args
            .iter()
            .map(|a| {
                if a.starts_with("--admin-addr=") {
                    format!("--admin-addr=127.0.0.1:{admin_port}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_vpc-cni-tuner"));
        command
            .args(&args)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .envs(container.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            // Logs go to stdout, as in a container; errors to stderr.
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        // The pod's name, as the chart's downward API gives it.
        command.env("POD_NAME", name);
        let child = command.spawn().expect("start vpc-cni-tuner run");
        Self {
            child: Some(child),
            log,
            name: name.to_owned(),
            admin_port,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// For a failed wait: the log, whether the process still runs, and its reconcile and AWS
    /// request counters that are not 0 (or that its admin server does not answer: a stuck
    /// runtime).
    pub fn diagnostics(&self) -> String {
        // A process that exited and was not reaped yet is a zombie ("Z").
        let state = match &self.child {
            None => "stopped by the test".to_owned(),
            Some(child) => std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .ok()
                .and_then(|stat| {
                    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
                    Some(if state == "Z" { "exited" } else { "running" })
                })
                .unwrap_or("gone")
                .to_owned(),
        };
        let counters = match super::http_get(self.admin_port, "/metrics") {
            None => "the admin server does not answer /metrics".to_owned(),
            Some((_, body)) => body
                .lines()
                .filter(|l| {
                    l.starts_with("vpc_cni_tuner_reconcile")
                        && !l.starts_with("vpc_cni_tuner_reconcile_duration_seconds_bucket")
                        || l.starts_with("vpc_cni_tuner_aws_requests_total")
                })
                .filter(|l| !l.ends_with(" 0"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        format!(
            "--- {} ({state}) ---\n{}--- {} metrics ---\n{counters}",
            self.name,
            self.log(),
            self.name
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then the exit status (SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash, or a node lost with the pod.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
