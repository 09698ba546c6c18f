//! `keyward gateway`: a reverse proxy that enforces Keyward keys in front of an
//! upstream that knows nothing of them (issue 10).
//!
//! The gateway is a whole Keyward node (store, verify cache, limits, usage events,
//! background jobs) whose main listener proxies instead of serving the API. Each
//! request's key is checked in-process by the node's own [`Verifier`], exactly as
//! `POST /v1/verify` would check it; the upstream then gets the request without the
//! credential and with `Keyward-Identity`, `Keyward-Key-Id` and `Keyward-Scopes`.
//! The management API is served on a second listener, `--api-listen`, when given: in the
//! same process, so a revocation there reaches the gateway's cache at once.
//!
//! **Architecture Invariant:** the upstream only ever sees `Keyward-*` headers the
//! gateway wrote, and never the credential (test: `gateway::identity_headers_cannot_be_spoofed`).

pub mod headers;
mod proxy;
pub mod rules;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use http::Uri;
use http::header::HeaderName;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;

pub use rules::{Rule, RuleError, Rules};

use crate::state::AppState;

/// How long the upstream gets to answer with its response headers, by default.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// What `keyward gateway` adds to the settings of `serve`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `http://host:port`, optionally with a base path every request path is appended to.
    pub upstream: Uri,
    /// Scopes every request's key must hold, whatever the route.
    pub require_scopes: Vec<String>,
    /// Scopes or permission queries by method and path prefix.
    pub rules: Rules,
    /// Where the key is read from besides `Authorization: Bearer`.
    pub key_header: Option<HeaderName>,
    /// Peers whose `X-Forwarded-For` is believed (proxies in front of the gateway).
    pub trusted_proxies: Vec<IpNet>,
    /// How long the upstream gets to send its response headers (504 after).
    pub upstream_timeout: Duration,
    /// Serve the management API here; `None`: the gateway serves no API.
    pub api_listen: Option<SocketAddr>,
    /// False only to measure the proxy alone (benchmarks): no key is checked.
    pub checks: bool,
}

impl GatewayConfig {
    /// A gateway in front of `upstream` (`http://host:port[/base]`), checks on, no rules.
    pub fn new(upstream: &str) -> Result<GatewayConfig, String> {
        Ok(GatewayConfig {
            upstream: parse_upstream(upstream)?,
            require_scopes: Vec::new(),
            rules: Rules::default(),
            key_header: None,
            trusted_proxies: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            api_listen: None,
            checks: true,
        })
    }
}

/// Validates `--upstream`: plain HTTP (the gateway and its upstream share a host or a
/// private network; TLS to the upstream is not supported), no query or fragment.
pub fn parse_upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("--upstream {s:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("--upstream {s:?} must be http://host:port"));
    }
    if uri.query().is_some() {
        return Err(format!("--upstream {s:?} must not have a query"));
    }
    Ok(uri)
}

/// A running management API listener of a gateway.
pub(crate) struct ApiServer {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Builds the proxy application for the main listener, and starts the management API on
/// `api_listen` when configured. Both stop when `stop` turns true.
pub(crate) async fn mount(
    cfg: GatewayConfig,
    state: &AppState,
    api: Router,
    tls: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Router, Option<ApiServer>)> {
    let api_server = match cfg.api_listen {
        None => None,
        Some(listen) => Some(serve_api(api, listen, stop).await?),
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(cfg.upstream_timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let gateway = Arc::new(proxy::Gateway {
        cfg,
        verifier: state.verifier.clone(),
        throttle: state.throttle.clone(),
        client,
        tls,
    });
    tracing::info!(upstream = %gateway.cfg.upstream, checks = gateway.cfg.checks, "gateway mode");
    Ok((proxy::router(gateway), api_server))
}

async fn serve_api(
    api: Router,
    listen: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<ApiServer> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding --api-listen {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "keyward API listening");
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("serving the API")
    });
    Ok(ApiServer { addr, task })
}
