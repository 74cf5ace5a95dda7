//! A wire-level HTTP/1.1 proxy in front of moto_server for EC2's query protocol, on 127.0.0.1.
//! It forwards every request to moto, logs each one's `Action` with the time it arrived, and
//! holds the requests of one chosen action for a while before forwarding them: a slow EC2
//! call, during which a test can take the operator's lease away.
//!
//! Simulates: the request and response bytes as they are (one upstream connection per request,
//! `Connection: close`), bodies sized by `Content-Length` (the SDK sends query-protocol bodies
//! so). Does not simulate: chunked request bodies, TLS, pipelining.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Shared {
    /// (arrival, action) of every request.
    log: Vec<(Instant, String)>,
    /// Requests of this action wait this long.
    hold: Option<(String, Duration)>,
}

pub struct HoldingProxy {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldingProxy {
    /// A proxy to moto on 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, state.clone()));
            }
        });
        Self { port, shared, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests of `action` wait `delay` before they are forwarded.
    pub fn hold(&self, action: &str, delay: Duration) {
        self.shared.lock().unwrap().hold = Some((action.to_owned(), delay));
    }

    /// (arrival, action) of every request so far.
    pub fn log(&self) -> Vec<(Instant, String)> {
        self.shared.lock().unwrap().log.clone()
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request off `client`: the head (through the blank line) and the body.
async fn read_request(client: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buffer[..end + 4].to_vec();
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buffer.len() < head.len() + length {
                let mut chunk = [0u8; 8192];
                let n = client.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = buffer[head.len()..head.len() + length].to_vec();
            buffer.drain(..head.len() + length);
            return Some((head, body));
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// `Action=...` of a query-protocol body.
fn action(body: &[u8]) -> String {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let mut buffer = Vec::new();
    while let Some((head, body)) = read_request(&mut client, &mut buffer).await {
        let action = action(&body);
        let delay = {
            let mut shared = shared.lock().unwrap();
            shared.log.push((Instant::now(), action.clone()));
            shared
                .hold
                .as_ref()
                .filter(|(held, _)| *held == action)
                .map(|(_, d)| *d)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        // The head without its Connection header, then `Connection: close`.
        let text = String::from_utf8_lossy(&head);
        let mut forwarded: String = text
            .trim_end_matches("\r\n")
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        forwarded.push_str("Connection: close\r\n\r\n");
        let Ok(mut moto) = TcpStream::connect(upstream).await else {
            return;
        };
        if moto.write_all(forwarded.as_bytes()).await.is_err()
            || moto.write_all(&body).await.is_err()
        {
            return;
        }
        let mut response = Vec::new();
        if moto.read_to_end(&mut response).await.is_err() {
            return;
        }
        if client.write_all(&response).await.is_err() {
            return;
        }
    }
}
