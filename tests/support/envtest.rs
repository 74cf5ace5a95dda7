//! A real Kubernetes API server for tests: `kube-apiserver` and `etcd` started on free 127.0.0.1
//! ports, in controller-runtime envtest's convention.
//!
//! The binaries come from `TEST_ASSET_KUBE_APISERVER` / `TEST_ASSET_ETCD`, else from the
//! directory in `KUBEBUILDER_ASSETS` (`scripts/test.sh` fills it from `../shared/k8s/assets`;
//! elsewhere `setup-envtest use -p path 1.36.x` prints one). Without them [`ApiServer::start`]
//! returns `None` after printing one line, and the test skips; with `CI=true` it panics instead,
//! so CI never passes by skipping.
//!
//! The API server runs with RBAC and token authentication: the token `admin` belongs to
//! `system:masters`. [`ApiServer::kubeconfig_as`] writes a kubeconfig that impersonates another
//! user (a ServiceAccount), which is how the operator runs under the chart's RBAC. Every process
//! is killed by the id it was started with when the guard drops, on every path out of a test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;

const ADMIN_TOKEN: &str = "admin";

/// Where the envtest binaries are.
struct Assets {
    apiserver: PathBuf,
    etcd: PathBuf,
}

fn assets() -> Option<Assets> {
    let from_dir = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    let pick = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| from_dir.as_ref().map(|d| d.join(name)))
            .filter(|p| p.is_file())
    };
    Some(Assets {
        apiserver: pick("TEST_ASSET_KUBE_APISERVER", "kube-apiserver")?,
        etcd: pick("TEST_ASSET_ETCD", "etcd")?,
    })
}

/// How the API server answers a list-then-watch. With etcd 3.6 it streams the initial list from
/// its watch cache (`sendInitialEvents`, the WatchList feature, as on EKS); with the feature gate
/// off it answers such a watch with 422 and clients list in pages, as Kubernetes 1.27-1.31 and
/// 1.33 do by default (../shared/k8s/README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMode {
    Streaming,
    Paged,
}

impl ListMode {
    /// The `mode` the operator logs and labels `node_initial_list` with.
    pub fn label(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Paged => "paged",
        }
    }
}

/// A running etcd and kube-apiserver. Dropping it kills both and removes their data.
pub struct ApiServer {
    dir: tempfile::TempDir,
    assets_apiserver: PathBuf,
    pub list_mode: ListMode,
    etcd: Child,
    apiserver: Option<Child>,
    pub port: u16,
    etcd_port: u16,
    admin_kubeconfig: PathBuf,
}

impl ApiServer {
    /// Starts etcd and the API server and waits until the API server is ready (`/readyz` and
    /// the OpenAPI documents kubectl validates with). `None`: no assets, the test skips.
    pub async fn start() -> Option<Self> {
        Self::start_with(ListMode::Streaming).await
    }

    /// As [`ApiServer::start`], serving initial lists as `list_mode` says.
    pub async fn start_with(list_mode: ListMode) -> Option<Self> {
        let Some(assets) = assets() else {
            let how = "no kube-apiserver/etcd: set KUBEBUILDER_ASSETS (scripts/test.sh does, from \
                       ../shared/k8s/assets; elsewhere: `setup-envtest use -p path 1.36.x`)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and {how}");
            }
            eprintln!("skipped: {how}");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let (etcd_port, peer_port, port) =
            (super::free_port(), super::free_port(), super::free_port());
        let etcd = Command::new(&assets.etcd)
            .args([
                "--data-dir",
                &dir.path().join("etcd").display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--name",
                "default",
                "--unsafe-no-fsync",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "etcd.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", assets.etcd.display()));

        // The service-account token signing key and its public half.
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("EC key");
        std::fs::write(
            dir.path().join("sa.key"),
            pem("PRIVATE KEY", pkcs8.as_ref()),
        )
        .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .expect("EC key");
        // SubjectPublicKeyInfo of a P-256 key: the fixed algorithm header, then the point.
        let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(key.public_key().as_ref());
        std::fs::write(dir.path().join("sa.pub"), pem("PUBLIC KEY", &spki)).unwrap();
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .unwrap();

        let admin_kubeconfig = dir.path().join("admin.kubeconfig");
        let mut server = Self {
            assets_apiserver: assets.apiserver,
            list_mode,
            etcd,
            apiserver: None,
            port,
            etcd_port,
            admin_kubeconfig,
            dir,
        };
        server.wait_for_port(etcd_port, "etcd");
        server.start_apiserver().await;
        std::fs::write(&server.admin_kubeconfig, server.kubeconfig_yaml(None)).unwrap();
        Some(server)
    }

    /// Starts (or restarts, on the same port and etcd) the API server and waits until ready.
    pub async fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "the API server runs already");
        let dir = self.dir.path();
        let arg = |name: &str, value: String| format!("--{name}={value}");
        let feature_gates = match self.list_mode {
            ListMode::Streaming => None,
            ListMode::Paged => Some(arg("feature-gates", "WatchList=false".into())),
        };
        let child = Command::new(&self.assets_apiserver)
            .args([
                arg(
                    "etcd-servers",
                    format!("http://127.0.0.1:{}", self.etcd_port),
                ),
                arg("bind-address", "127.0.0.1".into()),
                arg("advertise-address", "127.0.0.1".into()),
                arg("secure-port", self.port.to_string()),
                arg("cert-dir", dir.join("certs").display().to_string()),
                arg("authorization-mode", "RBAC".into()),
                arg(
                    "token-auth-file",
                    dir.join("tokens.csv").display().to_string(),
                ),
                arg(
                    "service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local".into(),
                ),
                arg(
                    "service-account-key-file",
                    dir.join("sa.pub").display().to_string(),
                ),
                arg(
                    "service-account-signing-key-file",
                    dir.join("sa.key").display().to_string(),
                ),
                arg("service-cluster-ip-range", "10.0.0.0/24".into()),
                arg("endpoint-reconciler-type", "none".into()),
                arg("disable-admission-plugins", "ServiceAccount".into()),
                arg("allow-privileged", "true".into()),
            ])
            .args(feature_gates)
            .stdout(Stdio::null())
            .stderr(log_file(dir, "kube-apiserver.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.assets_apiserver.display()));
        self.apiserver = Some(child);
        self.wait_for_port(self.port, "kube-apiserver");
        // The serving certificate is written before the port listens; wait for it all the same,
        // so a port some other process listens on fails here with this server's log.
        let certificate = self.dir.path().join("certs/apiserver.crt");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !certificate.exists() {
            self.assert_running("kube-apiserver");
            assert!(
                Instant::now() < deadline,
                "kube-apiserver wrote no serving certificate within 60 s; log:\n{}",
                self.log_tail("kube-apiserver.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(&self.admin_kubeconfig, self.kubeconfig_yaml(None)).unwrap();
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(90);
        for path in ["/readyz", "/openapi/v2"] {
            loop {
                let request = http::Request::get(path).body(Vec::new()).unwrap();
                match client.request_text(request).await {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => {
                        self.assert_running("kube-apiserver");
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(err) => panic!(
                        "kube-apiserver not ready within 90 s ({path}: {err}); log:\n{}",
                        self.log_tail("kube-apiserver.log")
                    ),
                }
            }
        }
    }

    /// Kills the API server (etcd keeps the data), as a crash or a control-plane restart.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process ids of etcd and (when running) kube-apiserver, for benchmarks that read
    /// their CPU time.
    pub fn pids(&self) -> (u32, Option<u32>) {
        (self.etcd.id(), self.apiserver.as_ref().map(Child::id))
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin (system:masters) kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig that impersonates `user` (`system:serviceaccount:NS:NAME` gets the
    /// ServiceAccount's groups): requests are authorized as `user` alone.
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        std::fs::write(&path, self.kubeconfig_yaml(Some(user))).unwrap();
        path
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.admin_kubeconfig).await
    }

    /// `kubectl --kubeconfig ADMIN ARGS` (kubectl from KUBEBUILDER_ASSETS or PATH).
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let kubectl = std::env::var_os("KUBEBUILDER_ASSETS")
            .map(|d| PathBuf::from(d).join("kubectl"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()))
    }

    fn kubeconfig_yaml(&self, impersonate: Option<&str>) -> String {
        let impersonate = impersonate
            .map(|user| format!("\n    as: \"{user}\""))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: envtest\n  user:\n    token: {ADMIN_TOKEN}{impersonate}\n\
             contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: envtest\n\
             current-context: envtest\n",
            self.url(),
            // The API server's self-signed serving certificate followed by its CA.
            self.dir.path().join("certs/apiserver.crt").display(),
        )
    }

    fn wait_for_port(&mut self, port: u16, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.assert_running(what);
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on 127.0.0.1:{port} within 60 s; log:\n{}",
                self.log_tail(&format!("{what}.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails the test at once, with the log, when etcd or the API server has exited.
    fn assert_running(&mut self, what: &str) {
        let etcd_exited = matches!(self.etcd.try_wait(), Ok(Some(_)));
        let apiserver_exited = self
            .apiserver
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if etcd_exited || apiserver_exited {
            let log = if etcd_exited {
                "etcd.log"
            } else {
                "kube-apiserver.log"
            };
            panic!("{what}: {log} process exited; log:\n{}", self.log_tail(log));
        }
    }

    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The API server first: one whose etcd is gone can hang on exit.
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// A client from a kubeconfig file, never from the user's default context.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}
