//! The container image, as far as it can be checked without a Docker engine: the Dockerfile's
//! shape, and the operator binary run the way the chart runs the image (a non-root uid, every
//! filesystem read-only, no HOME, no shell), serving its admin endpoints and stopping on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use support::http_get;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The arguments of the Dockerfile's `FROM`s, in order.
fn froms(steps: &[(String, String)]) -> Vec<&str> {
    steps
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, arg)| arg.as_str())
        .collect()
}

/// The Dockerfile's instructions, one per logical line (continuations joined).
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .into_iter()
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((&l, ""));
            (op.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn dockerfile_is_multi_stage_minimal_and_non_root() {
    let steps = instructions();
    let froms = froms(&steps);
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    // The build stage uses the project's pinned toolchain.
    let toolchain = std::fs::read_to_string(root().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        froms[0].contains(&format!("rust:{channel}")),
        "builder {} is not Rust {channel}",
        froms[0]
    );
    // The binary links glibc dynamically: build on the runtime's Debian release.
    let debian = [("bookworm", "debian12"), ("trixie", "debian13")];
    let builder_release = debian
        .iter()
        .find(|(codename, _)| froms[0].contains(codename))
        .expect("builder on a named Debian release");
    assert!(
        froms.last().unwrap().contains(builder_release.1),
        "built on {} but run on {}",
        builder_release.0,
        froms.last().unwrap()
    );
    assert!(
        steps
            .iter()
            .any(|(op, arg)| op == "RUN" && arg.contains("cargo build --release --locked")),
        "a locked release build"
    );
    // The runtime stage: distroless (no shell), a numeric non-root user, exec-form entrypoint.
    let last_from = steps.iter().rposition(|(op, _)| op == "FROM").unwrap();
    let runtime = &steps[last_from..];
    assert!(
        runtime[0].1.starts_with("gcr.io/distroless/"),
        "runtime {} has a shell",
        runtime[0].1
    );
    assert!(
        !runtime.iter().any(|(op, _)| op == "RUN"),
        "nothing runs in the runtime stage"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, arg)| arg.clone())
        .expect("USER in the runtime stage");
    for id in user.split(':') {
        let id: u32 = id
            .parse()
            .expect("a numeric uid:gid, so runAsNonRoot can check it");
        assert_ne!(id, 0);
    }
    let entrypoint = runtime
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, arg)| arg.clone())
        .expect("ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(&entrypoint).expect("exec form, no shell");
    assert_eq!(argv, ["/usr/local/bin/vpc-cni-tuner"]);
    let copied = runtime
        .iter()
        .find(|(op, _)| op == "COPY")
        .map(|(_, arg)| arg.clone())
        .unwrap();
    assert!(
        copied.ends_with(" /usr/local/bin/vpc-cni-tuner"),
        "{copied}"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves out target/"
    );
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `argv` as uid/gid 65532 (the image's user) in a private mount namespace where every
/// mount is read-only, with an empty environment but for `env`. `None` when this machine cannot
/// (not root, or util-linux's unshare/setpriv missing).
fn sandboxed(dir: &Path, argv: &[&str], env: &[(&str, &str)]) -> Option<std::process::Child> {
    // The effective uid, from /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .to_owned();
    if euid != "0" || !have("unshare") || !have("setpriv") {
        eprintln!("skipped: needs root and util-linux (unshare, setpriv) to drop to uid 65532");
        return None;
    }
    // A container runtime may forbid new mount namespaces even to root.
    let can_unshare = Command::new("unshare")
        .args(["--mount", "--", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_unshare {
        eprintln!("skipped: this machine does not allow a private mount namespace");
        return None;
    }
    let envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let script = r#"
set -e
mount --make-rprivate /
for mp in $(awk '{print $2}' /proc/self/mounts); do
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
if touch "$1/probe" 2>/dev/null || touch /probe 2>/dev/null || touch /tmp/probe 2>/dev/null; then
  echo "the sandbox is not read-only" >&2
  exit 90
fi
shift
exec setpriv --reuid=65532 --regid=65532 --clear-groups --no-new-privs -- "$@"
"#;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--", "sh", "-c", script, "sandbox"])
        .arg(dir)
        .arg("env")
        .arg("-i")
        .args(&envs)
        .args(argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(command.spawn().expect("unshare"))
}

/// A copy of the binary (and a kubeconfig) in a directory uid 65532 can read.
fn staging() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("vpc-cni-tuner");
    std::fs::copy(env!("CARGO_BIN_EXE_vpc-cni-tuner"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The sandbox itself: the process really is uid/gid 65532 with no supplementary groups, and
/// cannot write anywhere.
#[test]
fn the_sandbox_is_non_root_and_read_only() {
    let dir = staging();
    let Some(child) = sandboxed(dir.path(), &["/usr/bin/id", "-u"], &[]) else {
        return;
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "65532");
    // /tmp is world-writable: only a read-only mount stops the write.
    let probe = std::env::temp_dir().join(format!("vpc-cni-tuner-probe-{}", std::process::id()));
    let Some(child) = sandboxed(
        dir.path(),
        &["/usr/bin/touch", probe.to_str().unwrap()],
        &[],
    ) else {
        return;
    };
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "a write succeeded");
    assert!(!probe.exists());
}

#[test]
fn the_offline_cli_runs_as_non_root_on_a_read_only_filesystem() {
    let dir = staging();
    let binary = dir.path().join("vpc-cni-tuner");
    let Some(child) = sandboxed(
        dir.path(),
        &[
            binary.to_str().unwrap(),
            "recommend",
            "t3.medium",
            "--output",
            "json",
        ],
        &[("HOME", "/nonexistent")],
    ) else {
        return;
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        answer["instanceTypes"][0]["instanceType"], "t3.medium",
        "{answer}"
    );
    assert_eq!(answer["maxPods"], 110, "{answer}");
}

/// The operator as the Deployment runs it: uid 65532, read-only filesystems, no HOME. With an
/// unreachable API server it stays up, answers /livez, reports not ready on /readyz, and exits
/// cleanly on SIGTERM.
#[test]
fn the_operator_runs_as_non_root_on_a_read_only_filesystem() {
    let dir = staging();
    let kubeconfig = dir.path().join("kubeconfig");
    // A closed loopback port: the watches fail and retry; nothing else is contacted.
    let api_port = support::free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{api_port}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
    let admin_port = support::free_port();
    // As the chart runs it: `[::]`, reached here over IPv4.
    let admin = format!("--admin-addr=[::]:{admin_port}");
    let binary = dir.path().join("vpc-cni-tuner");
    let Some(mut child) = sandboxed(
        dir.path(),
        &[binary.to_str().unwrap(), "run", &admin, "--log-format=json"],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("HOME", "/nonexistent"),
            ("RUST_LOG", "info"),
            ("POD_NAMESPACE", "vpc-cni-tuner"),
        ],
    ) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        if let Some(answer) = http_get(admin_port, "/livez") {
            break answer;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "the operator exited ({status}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(Instant::now() < deadline, "/livez never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live.0, 200, "{live:?}");
    let ready = http_get(admin_port, "/readyz").expect("/readyz answers");
    assert_eq!(ready.0, 503, "not ready without an API server: {ready:?}");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(status.success(), "{status}: {stderr}{stdout}");
    assert!(
        !format!("{stderr}{stdout}").contains("Read-only file system"),
        "the operator tried to write: {stderr}{stdout}"
    );
}

/// Multi-architecture: the builder runs on the build platform and cross-compiles for the
/// image's TARGETARCH, amd64 and arm64 (Graviton), each with its C cross compiler and linker.
#[test]
fn dockerfile_cross_compiles_for_amd64_and_arm64() {
    let steps = instructions();
    let froms = froms(&steps);
    assert!(
        froms[0].starts_with("--platform=$BUILDPLATFORM "),
        "the builder runs natively: {}",
        froms[0]
    );
    assert!(
        steps
            .iter()
            .any(|(op, arg)| op == "ARG" && arg == "TARGETARCH")
    );
    let setup = steps
        .iter()
        .find(|(op, arg)| op == "RUN" && arg.contains("rustup target add"))
        .map(|(_, arg)| arg.as_str())
        .expect("a step that adds the Rust target");
    for (arch, target, gcc) in [
        ("amd64", "x86_64-unknown-linux-gnu", "gcc-x86-64-linux-gnu"),
        (
            "arm64",
            "aarch64-unknown-linux-gnu",
            "gcc-aarch64-linux-gnu",
        ),
    ] {
        assert!(
            setup.contains(&format!("{arch}) target={target}; gcc={gcc}")),
            "{arch}: {setup}"
        );
        let linker = format!(
            "CARGO_TARGET_{}_LINKER=",
            target.to_uppercase().replace('-', "_")
        );
        assert!(
            steps
                .iter()
                .any(|(op, arg)| op == "ENV" && arg.contains(&linker)),
            "{linker}"
        );
    }
}
