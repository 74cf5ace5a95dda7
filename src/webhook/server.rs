//! The webhook's HTTPS server: `POST /mutate` answers AdmissionReviews from this replica's node
//! cache and warm table. The certificate can be swapped while it serves (a renewed Secret is
//! picked up within a minute); until one is loaded, TLS handshakes fail and the API server
//! admits the pod unchanged (`failurePolicy: Ignore`).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use super::tls::Material;
use crate::controller::Context;

/// The certificate the server presents; replaced on renewal.
#[derive(Debug, Default)]
pub struct Certificate(RwLock<Option<Arc<CertifiedKey>>>);

impl Certificate {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key);
    }

    pub fn loaded(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A certificate chain and key from PEM.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the key is not PEM: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| e.to_string())
}

/// Verifies `cert_pem` for `host` against the one root `ca_pem` (tests).
#[cfg(test)]
pub(crate) fn verify_with(ca_pem: &str, cert_pem: &str, host: &str) -> Result<(), String> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Loads `material` into `certificate`; whether it changed.
pub fn install(
    certificate: &Certificate,
    material: &Material,
    last: &mut Option<Material>,
) -> bool {
    if last.as_ref() == Some(material) {
        return false;
    }
    match certified_key(&material.cert_pem, &material.key_pem) {
        Ok(key) => {
            certificate.set(Arc::new(key));
            *last = Some(material.clone());
            true
        }
        Err(err) => {
            warn!(%err, "the webhook certificate cannot be loaded");
            false
        }
    }
}

/// TLS handshakes in flight at once; connections beyond are closed at once (the API server
/// retries within its timeout, and `failurePolicy: Ignore` admits meanwhile).
const MAX_HANDSHAKES: usize = 256;
/// A handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener for axum. Each connection's handshake runs in its own task, so one slow or
/// idle client never holds up the next admission (the handshake used to run inside `accept`,
/// one at a time); handshakes that fail or take over 10 s are dropped.
struct TlsListener {
    handshaken: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (done, handshaken) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok((stream, addr)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    debug!(%addr, "too many webhook TLS handshakes in flight; connection closed");
                    continue;
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, addr)).await;
                        }
                        Ok(Err(err)) => debug!(%addr, %err, "webhook TLS handshake failed"),
                        Err(_) => debug!(%addr, "webhook TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            handshaken,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn mutate(State(ctx): State<Arc<Context>>, body: Bytes) -> axum::Json<serde_json::Value> {
    let table = ctx.observed().warm_table.get();
    let observed = ctx.observed();
    let (answer, result) = super::review(&body, &table, |name| observed.nodes.get(name));
    ctx.metrics()
        .webhook_requests
        .get_or_create(&crate::metrics::WebhookLabels { result })
        .inc();
    axum::Json(answer)
}

/// Serves the webhook on `addr` until `stopped`.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<Context>,
    certificate: Arc<Certificate>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_cert_resolver(certificate);
    let listener = TlsListener::new(
        TcpListener::bind(addr).await?,
        TlsAcceptor::from(Arc::new(config)),
    )?;
    info!(%addr, "webhook listening");
    let router = Router::new().route("/mutate", post(mutate)).with_state(ctx);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
}

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertSource {
    /// The operator makes and renews it, and keeps the configuration's `caBundle`.
    #[value(name = "self")]
    SelfManaged,
    /// cert-manager writes the Secret and injects `caBundle`; the operator only loads it.
    CertManager,
}

/// The webhook's settings (`run --webhook-*`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub namespace: String,
    pub secret: String,
    pub configuration: Option<String>,
    pub hosts: Vec<String>,
    pub source: CertSource,
}

/// Serves the webhook and keeps its certificate current until `stopped`: every replica loads
/// the Secret (every 5 s until it has a certificate, then every minute); with a self-managed
/// certificate the leader first makes sure the Secret and `caBundle` are right.
pub async fn run(
    config: WebhookConfig,
    client: kube::Client,
    ctx: Arc<Context>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let certificate = Arc::new(Certificate::default());
    let keeper = {
        let (config, certificate, ctx) = (config.clone(), certificate.clone(), ctx.clone());
        let mut stopped = stopped.clone();
        async move {
            let mut last = None;
            loop {
                if config.source == CertSource::SelfManaged && ctx.is_leader() {
                    let written = super::tls::ensure(
                        &client,
                        &config.namespace,
                        &config.secret,
                        &config.hosts,
                        config.configuration.as_deref(),
                    )
                    .await;
                    match written {
                        Ok(true) => info!(secret = %config.secret, "webhook certificate issued"),
                        Ok(false) => {}
                        Err(err) => warn!(%err, "cannot keep the webhook certificate"),
                    }
                }
                match super::tls::load(&client, &config.namespace, &config.secret).await {
                    Ok(material) => {
                        if install(&certificate, &material, &mut last) {
                            info!(secret = %config.secret, "webhook certificate loaded");
                        }
                    }
                    Err(err) => debug!(%err, "no webhook certificate yet"),
                }
                let every = if certificate.loaded() {
                    Duration::from_secs(60)
                } else {
                    Duration::from_secs(5)
                };
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        }
    };
    let keeper = tokio::spawn(keeper);
    let served = serve(config.addr, ctx, certificate, stopped).await;
    keeper.abort();
    served
}
