//! A real upstream for the gateway tests (an axum echo server and a WebSocket echo
//! server on free ports), and a gateway node started on a test server's store.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::{SinkExt, StreamExt};
use keyward_server::RunningServer;
use keyward_server::gateway::GatewayConfig;
use serde_json::{Value, json};

use crate::common::TestServer;

/// The byte at offset `i` of every generated body, so either side can check a body
/// as it streams past without keeping it.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

pub fn pattern_bytes(from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(from + i)).collect()
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that reached it.
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// `/download?n=N`: N pattern bytes, streamed in 64 KiB chunks. `/duplex`: the
/// request body streamed back as it arrives. `/slow`: answers after 10 s. Anything
/// else: JSON describing the request (method, path, query, headers, body length and
/// whether it was the pattern).
pub async fn start_upstream() -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/download", get(download))
        .route("/duplex", any(duplex))
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .fallback(inspect)
        .layer(axum::middleware::from_fn_with_state(hits.clone(), count))
        .with_state(());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { addr, hits }
}

async fn count(
    State(hits): State<Arc<AtomicUsize>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

async fn inspect(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let all: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        headers.insert(name.as_str().to_owned(), json!(all.join(", ")));
    }
    let mut len = 0u64;
    let mut is_pattern = true;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        is_pattern &= chunk
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(len + i as u64));
        len += chunk.len() as u64;
    }
    let status = parts
        .headers
        .get("x-want-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .unwrap_or(200);
    let body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": len,
        "body_is_pattern": is_pattern,
    });
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [
            ("x-upstream", "echo"),
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "1"),
        ],
        axum::Json(body),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Download {
    n: u64,
}

async fn download(Query(Download { n }): Query<Download>) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::iter((0..n.div_ceil(CHUNK)).map(move |c| {
        let from = c * CHUNK;
        let len = CHUNK.min(n - from) as usize;
        Ok::<_, std::io::Error>(pattern_bytes(from, len))
    }));
    Body::from_stream(chunks).into_response()
}

async fn duplex(req: Request) -> Response {
    Body::new(req.into_body()).into_response()
}

/// A WebSocket server that first sends `identity=<Keyward-Identity it was given>`,
/// then echoes every message.
// The handshake callback's error type is tungstenite's whole HTTP response.
#[allow(clippy::result_large_err)]
pub async fn start_ws_upstream() -> SocketAddr {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut identity = String::new();
                let seen = |req: &Request, resp: Response| {
                    identity = req
                        .headers()
                        .get("keyward-identity")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, seen).await else {
                    return;
                };
                let hello = format!("identity={identity}");
                let _ = ws.send(hello.into()).await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() || ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A gateway node on `s`'s store.
pub struct Gateway {
    pub base: String,
    pub addr: SocketAddr,
    pub api: Option<String>,
    server: RunningServer,
}

impl Gateway {
    pub async fn start(s: &TestServer, cfg: GatewayConfig) -> Gateway {
        let parts = keyward_server::Parts {
            gateway: Some(cfg),
            ..Default::default()
        };
        let server = keyward_server::start_with_parts(
            s.store.clone(),
            parts,
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        Gateway {
            base: format!("http://{}", server.addr),
            addr: server.addr,
            api: server.api_addr.map(|a| format!("http://{a}")),
            server,
        }
    }

    pub async fn stop(self) {
        self.server.stop().await.unwrap();
    }
}

/// A gateway config in front of `upstream` with `edit` applied.
pub fn config(upstream: &Upstream, edit: impl FnOnce(&mut GatewayConfig)) -> GatewayConfig {
    let mut cfg = GatewayConfig::new(&upstream.url()).unwrap();
    edit(&mut cfg);
    cfg
}

/// What the upstream said it received.
pub async fn seen(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200, "upstream answer");
    resp.json().await.unwrap()
}
