//! The proxy handler: check the key, rewrite the headers, forward, stream back.
//!
//! Bodies are never buffered: the client's body is handed to the upstream request as it
//! arrives, and the upstream's body to the client's response. A protocol switch
//! (WebSocket) is forwarded, and once both sides have switched the two connections are
//! joined byte for byte.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::HeaderValue;
use http::{StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use keyward_core::VerifyCode;
use keyward_core::policy::VerifyRequest;
use tower_http::catch_panic::CatchPanicLayer;

use super::GatewayConfig;
use super::headers::{self, IDENTITY, KEY_ID, SCOPES};
use super::rules::normalise_path;
use crate::error::ApiError;
use crate::throttle::Throttle;
use crate::verifier::{CachedKey, Verifier};

pub(crate) struct Gateway {
    pub cfg: GatewayConfig,
    pub verifier: Arc<Verifier>,
    pub throttle: Arc<Throttle>,
    pub client: Client<HttpConnector, Body>,
    /// Whether clients reach the gateway over HTTPS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("gateway handler panicked".into()).into_response()
        }))
        .with_state(gateway)
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    match forward(&gw, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn forward(gw: &Gateway, req: Request) -> Result<Response, ApiError> {
    // Split at once: the body is not `Sync`, so the checks borrow the parts only.
    let (mut parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
        .ok_or_else(|| ApiError::Internal("no peer address".into()))?;
    let trusted = &gw.cfg.trusted_proxies;
    let peer_trusted = trusted.iter().any(|n| n.contains(&peer));
    let client_ip = headers::client_ip(peer, &parts.headers, trusted);
    let key = if gw.cfg.checks {
        Some(check(gw, &parts, client_ip).await?)
    } else {
        None
    };

    let upgrade = headers::wants_upgrade(&parts.headers);
    let h = &mut parts.headers;
    // Room for the four forwarding headers and the three identity headers at once,
    // rather than a regrowth of the map on the way.
    h.reserve(7);
    headers::strip_hop_by_hop(h, upgrade);
    headers::strip_credential(h, gw.cfg.key_header.as_ref());
    headers::strip_keyward_headers(h);
    headers::add_forwarded(h, peer, peer_trusted, gw.tls);
    if let Some(k) = key {
        identity_headers(h, &k);
    }
    let client_upgrade = upgrade
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    parts.uri = upstream_uri(&gw.cfg.upstream, &parts.uri)?;
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    let sent = tokio::time::timeout(
        gw.cfg.upstream_timeout,
        gw.client.request(http::Request::from_parts(parts, body)),
    )
    .await;
    let mut resp = match sent {
        Err(_) => {
            return Err(ApiError::GatewayTimeout(format!(
                "the upstream did not answer within {} s",
                gw.cfg.upstream_timeout.as_secs_f64()
            )));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            return Err(ApiError::BadGateway(if e.is_connect() {
                "the upstream is unreachable".into()
            } else {
                "the upstream closed the connection without an answer".into()
            }));
        }
        Ok(Ok(resp)) => resp,
    };

    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_side) if switched => {
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(c), Ok(u)) = tokio::join!(client_side, upstream_side) else {
                    tracing::debug!("a protocol switch did not complete");
                    return;
                };
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
            });
        }
        _ => {}
    }
    headers::strip_hop_by_hop(resp.headers_mut(), switched);
    Ok(resp.map(Body::new))
}

/// Verifies the request's key for its route with the node's verifier (cache, limits,
/// IP allowlist against `client_ip`, usage event); the key if it is valid.
async fn check(
    gw: &Gateway,
    req: &http::request::Parts,
    client_ip: IpAddr,
) -> Result<Arc<CachedKey>, ApiError> {
    let path = normalise_path(req.uri.path()).ok_or_else(|| {
        ApiError::field(
            "path",
            "paths with . or .. segments or undecodable bytes are refused",
        )
    })?;
    let rule = gw.cfg.rules.matching(req.method.as_str(), &path);
    let Some(key) = headers::credential(&req.headers, gw.cfg.key_header.as_ref()) else {
        let header = gw
            .cfg
            .key_header
            .as_ref()
            .map_or_else(String::new, |h| format!(" or {h}: <key>"));
        return Err(ApiError::Unauthorized(format!(
            "send Authorization: Bearer <key>{header}"
        )));
    };
    let verify = VerifyRequest {
        scopes: &gw.cfg.require_scopes,
        permission: rule.and_then(|r| r.permission.as_ref()),
        ip: Some(client_ip),
    };
    let outcome = gw.verifier.verify(&key, &verify, crate::now()).await?;
    let code = outcome.code;
    match (code, outcome.key) {
        (VerifyCode::Valid, Some(k)) => Ok(k),
        (VerifyCode::Malformed | VerifyCode::NotFound, _) => Err(gw.throttle.unknown_bearer(
            Some(client_ip),
            ApiError::Unauthorized("unknown credential".into()),
        )),
        (VerifyCode::Revoked | VerifyCode::Expired | VerifyCode::Disabled, _) => Err(
            ApiError::Unauthorized(format!("the key is not valid ({})", code.as_str())),
        ),
        (VerifyCode::IpNotAllowed, _) => Err(ApiError::Forbidden(format!(
            "the key may not be used from {client_ip} ({})",
            code.as_str()
        ))),
        (VerifyCode::InsufficientScope, _) => Err(ApiError::Forbidden(match rule {
            Some(r) => format!(
                "{} {} needs more than the key holds ({})",
                req.method,
                r.prefix,
                code.as_str()
            ),
            None => format!("the gateway needs scopes the key lacks ({})", code.as_str()),
        })),
        (VerifyCode::RateLimited, _) => Err(ApiError::TooManyRequests {
            retry_after_secs: outcome.denied.map_or(1, |d| {
                (d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0)).max(1)
            }),
        }),
        // A used-up quota does not come back by waiting: refused, not throttled.
        (VerifyCode::UsageExceeded, _) => Err(ApiError::Forbidden(format!(
            "the key's quota is used up ({})",
            code.as_str()
        ))),
        (VerifyCode::Valid, None) => {
            Err(ApiError::Internal("a valid key without its record".into()))
        }
    }
}

/// The identity headers the upstream trusts, built once per cached key.
fn identity_headers(h: &mut http::HeaderMap, key: &CachedKey) {
    let headers = key.upstream_headers.get_or_init(|| {
        // Ids are hex and dashes and scopes validated names: always valid values, but
        // a value that is not is left out rather than sent empty.
        let value = |s: String| HeaderValue::try_from(s).ok();
        Box::new([
            value(key.identity_id.to_string()),
            value(key.id.to_string()),
            value(key.policy.scopes.join(" ")),
        ])
    });
    let [identity, key_id, scopes] = &**headers;
    for (name, value) in [(IDENTITY, identity), (KEY_ID, key_id), (SCOPES, scopes)] {
        if let Some(v) = value {
            h.insert(name, v.clone());
        }
    }
}

/// The upstream's scheme, authority and base path, then the request's path and query.
fn upstream_uri(upstream: &Uri, request: &Uri) -> Result<Uri, ApiError> {
    let base = upstream.path().trim_end_matches('/');
    let tail = request.path_and_query().map_or("/", |pq| pq.as_str());
    let mut builder = Uri::builder();
    if let Some(s) = upstream.scheme() {
        builder = builder.scheme(s.clone());
    }
    if let Some(a) = upstream.authority() {
        builder = builder.authority(a.clone());
    }
    builder
        .path_and_query(format!("{base}{tail}"))
        .build()
        .map_err(|_| ApiError::field("path", "not a valid request target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uris_keep_the_base_path_and_the_query() {
        let up: Uri = "http://127.0.0.1:9/api/".parse().unwrap();
        let req: Uri = "/orders/7?x=1&y=%20".parse().unwrap();
        assert_eq!(
            upstream_uri(&up, &req).unwrap().to_string(),
            "http://127.0.0.1:9/api/orders/7?x=1&y=%20"
        );
        let up: Uri = "http://127.0.0.1:9".parse().unwrap();
        assert_eq!(
            upstream_uri(&up, &req).unwrap().to_string(),
            "http://127.0.0.1:9/orders/7?x=1&y=%20"
        );
    }
}
