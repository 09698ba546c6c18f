//! Requiring a Keyward key or token in a Rust (axum/tower) service, in one line:
//!
//! ```no_run
//! # use axum::{Router, routing::get};
//! # use keyward_client::{Client, KeywardPrincipal, RequireKeyward};
//! # fn app(verifier: Client) -> Router {
//! async fn orders(who: KeywardPrincipal) -> String { who.identity_id.to_string() }
//! Router::new()
//!     .route("/orders", get(orders))
//!     .layer(RequireKeyward::new(verifier).require_scopes(["orders:read"]))
//! # }
//! ```
//!
//! A key (`Authorization: Bearer kw_...`) is checked by `POST /v1/verify` (the client
//! given must hold `keyward:verify`), with the peer address when the service serves with
//! `ConnectInfo`; answers, refusals included, are cached for a few seconds (by a digest
//! of key and address, never the key itself). A token (a JWT from `POST /v1/tokens`) is
//! checked offline against the JWKS. Refusals are answered here as problem+json: 401
//! (no or bad credential), 403 (missing scope), 429 (rate limited), 503 (Keyward
//! unreachable: fail closed).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use keyward_proto::{Problem, VerifyCode, VerifyRequest};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Client;
use crate::tokens::TokenVerifier;

/// Who called, as the layer established it; an extractor for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywardPrincipal {
    pub identity_id: Uuid,
    pub key_id: Uuid,
    pub scopes: Vec<String>,
    pub credential: Credential,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A key, verified by the server.
    Key,
    /// A token, verified offline; `exp` in seconds since the epoch.
    Token { jti: String, exp: i64 },
}

impl KeywardPrincipal {
    /// Whether the principal holds `scope` (`*` wildcards as Keyward grants them).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|g| grants(g, scope))
    }
}

/// A refusal, answered as problem+json.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: StatusCode,
    pub detail: String,
    pub retry_after: Option<u64>,
}

impl Rejection {
    fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Rejection {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let problem = Problem {
            type_: "about:blank".into(),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Refused")
                .to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: None,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl<S: Send + Sync> FromRequestParts<S> for KeywardPrincipal {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        // Absent only when the route is not behind `RequireKeyward`: refuse (fail closed).
        parts
            .extensions
            .get::<KeywardPrincipal>()
            .cloned()
            .ok_or_else(|| {
                Rejection::new(
                    StatusCode::UNAUTHORIZED,
                    "this route requires a Keyward credential",
                )
            })
    }
}

/// The tower layer (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct RequireKeyward {
    inner: Arc<Guard>,
}

struct Guard {
    client: Client,
    tokens: TokenVerifier,
    scopes: Vec<String>,
    cache_for: Duration,
    cache: quick_cache::sync::Cache<[u8; 32], (Instant, Result<KeywardPrincipal, Rejection>)>,
}

/// Keys whose answers are cached at most.
const CACHE_CAPACITY: usize = 100_000;

impl RequireKeyward {
    /// Checks credentials through `client`'s server (whose own credential must hold
    /// `keyward:verify`); no scope required; answers cached for 10 s.
    pub fn new(client: Client) -> Self {
        let tokens = TokenVerifier::new(client.clone());
        Self::build(client, tokens, Vec::new(), Duration::from_secs(10))
    }

    /// Every one of `scopes` is required (403 otherwise).
    pub fn require_scopes<I: IntoIterator<Item = S>, S: Into<String>>(self, scopes: I) -> Self {
        let g = &self.inner;
        let scopes = scopes.into_iter().map(Into::into).collect();
        Self::build(g.client.clone(), g.tokens.clone(), scopes, g.cache_for)
    }

    /// Tokens must be for this audience.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        let g = &self.inner;
        let tokens = TokenVerifier::new(g.client.clone()).with_audience(audience);
        Self::build(g.client.clone(), tokens, g.scopes.clone(), g.cache_for)
    }

    /// How long a key's answer is reused (a revocation takes this long to be seen).
    pub fn cache_for(self, ttl: Duration) -> Self {
        let g = &self.inner;
        Self::build(g.client.clone(), g.tokens.clone(), g.scopes.clone(), ttl)
    }

    fn build(client: Client, tokens: TokenVerifier, scopes: Vec<String>, ttl: Duration) -> Self {
        RequireKeyward {
            inner: Arc::new(Guard {
                client,
                tokens,
                scopes,
                cache_for: ttl,
                cache: quick_cache::sync::Cache::new(CACHE_CAPACITY),
            }),
        }
    }

    /// Decides on the credential in `headers`, presented from `peer`.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<KeywardPrincipal, Rejection> {
        let credential = bearer(headers).ok_or_else(|| {
            Rejection::new(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <key or token>",
            )
        })?;
        // Keyward keys never contain a dot; JWTs always do.
        if credential.contains('.') {
            self.check_token(credential).await
        } else {
            self.check_key(credential, peer).await
        }
    }

    async fn check_token(&self, token: &str) -> Result<KeywardPrincipal, Rejection> {
        let claims = self.inner.tokens.verify(token).await.map_err(|e| match e {
            crate::TokenError::Invalid(d) => Rejection::new(StatusCode::UNAUTHORIZED, d),
            crate::TokenError::Jwks(e) => Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token: {e}"),
            ),
        })?;
        let identity_id = Uuid::parse_str(&claims.sub).map_err(|_| {
            Rejection::new(StatusCode::UNAUTHORIZED, "the token's sub is not an id")
        })?;
        let principal = KeywardPrincipal {
            identity_id,
            key_id: claims.key_id,
            scopes: claims.scopes().map(str::to_owned).collect(),
            credential: Credential::Token {
                jti: claims.jti.clone(),
                exp: claims.exp,
            },
        };
        let missing: Vec<&str> = self
            .inner
            .scopes
            .iter()
            .filter(|s| !principal.has_scope(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                format!("the token lacks the scopes {}", missing.join(" ")),
            ));
        }
        Ok(principal)
    }

    async fn check_key(
        &self,
        key: &str,
        peer: Option<IpAddr>,
    ) -> Result<KeywardPrincipal, Rejection> {
        let digest = cache_key(key, peer);
        if let Some((at, answer)) = self.inner.cache.get(&digest)
            && at.elapsed() < self.inner.cache_for
        {
            return answer;
        }
        let req = VerifyRequest {
            key: key.to_owned(),
            scopes: (!self.inner.scopes.is_empty()).then(|| self.inner.scopes.clone()),
            permission: None,
            ip: peer.map(|ip| ip.to_string()),
            tags: None,
        };
        // Not cached: Keyward may be back at the next call.
        let answer = self.inner.client.verify(&req).await.map_err(|e| {
            Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the key: {e}"),
            )
        })?;
        let decided = match (answer.code, answer.key_id, answer.identity_id) {
            (VerifyCode::Valid, Some(key_id), Some(identity_id)) => Ok(KeywardPrincipal {
                identity_id,
                key_id,
                scopes: answer.scopes.unwrap_or_default(),
                credential: Credential::Key,
            }),
            (VerifyCode::InsufficientScope, _, _) => Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "the key lacks a required scope",
            )),
            (VerifyCode::RateLimited, _, _) => {
                let now = chrono::Utc::now();
                let wait = answer
                    .rate_limit
                    .map(|r| (r.reset_at - now).num_seconds().max(1) as u64)
                    .unwrap_or(1);
                // The limit resets on its own clock: do not cache past it.
                return Err(Rejection {
                    retry_after: Some(wait),
                    ..Rejection::new(StatusCode::TOO_MANY_REQUESTS, "the key is rate limited")
                });
            }
            (code, _, _) => Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                format!("the key is not valid ({})", code_name(code)),
            )),
        };
        self.inner
            .cache
            .insert(digest, (Instant::now(), decided.clone()));
        decided
    }
}

fn code_name(code: VerifyCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What the cache is keyed by: a digest of the key and the address, so the cache holds
/// no key.
fn cache_key(key: &str, peer: Option<IpAddr>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    if let Some(ip) = peer {
        h.update(ip.to_string().as_bytes());
    }
    h.finalize().into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Whether the granted scope grants `required`: equal, or a `prefix*` wildcard over it
/// (the rule of `keyward_core::scope::grants`, which this crate does not depend on).
fn grants(granted: &str, required: &str) -> bool {
    granted == required
        || granted
            .strip_suffix('*')
            .is_some_and(|prefix| required.starts_with(prefix))
}

impl<S> tower::Layer<S> for RequireKeyward {
    type Service = RequireKeywardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKeywardService {
            guard: self.clone(),
            inner,
        }
    }
}

/// The service [`RequireKeyward`] wraps around a router or handler.
#[derive(Clone)]
pub struct RequireKeywardService<S> {
    guard: RequireKeyward,
    inner: S,
}

impl<S> tower::Service<Request> for RequireKeywardService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone that was polled ready serves this request; the new one waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip());
            match guard.check(req.headers(), peer).await {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}
