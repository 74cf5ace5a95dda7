//! The admin server: `/livez` (the process runs), `/readyz` (watch caches synced), `/metrics`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::controller::Context;

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

async fn readyz(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    if ctx.caches_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    ctx.metrics().leader.set(i64::from(ctx.is_leader()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics().encode(),
    )
}

/// Binds `addr`. `[::]` is dual-stack (IPv4 and IPv6 clients, so the probes work in IPv4 and
/// IPv6 clusters alike); where the pod has no IPv6 it falls back to `0.0.0.0`, as Go's `:8080`
/// does.
async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(err) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            warn!(%err, %v4, "no IPv6: the admin server listens on IPv4 only");
            TcpListener::bind(v4).await
        }
        other => other,
    }
}

/// Serves until `shutdown` flips.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = bind(addr).await?;
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}
