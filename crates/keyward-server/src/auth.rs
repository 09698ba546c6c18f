//! Authentication of API calls: `Authorization: Bearer <key>`, checked by the same
//! verifier as `POST /v1/verify`, and the `keyward:` scopes that authorise each route.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use keyward_core::policy::VerifyRequest;
use keyward_core::time::Timestamp;
use keyward_core::{VerifyCode, scope};
use std::sync::Arc;

use uuid::Uuid;

use crate::verifier::CachedKey;

use crate::error::ApiError;
use crate::state::AppState;

pub const ADMIN: &str = "keyward:admin";
pub const VERIFY: &str = "keyward:verify";
pub const IDENTITIES_READ: &str = "keyward:identities:read";
pub const IDENTITIES_WRITE: &str = "keyward:identities:write";
pub const KEYS_READ: &str = "keyward:keys:read";
pub const KEYS_WRITE: &str = "keyward:keys:write";
pub const AUDIT_READ: &str = "keyward:audit:read";
pub const LEAKS_REPORT: &str = "keyward:leaks:report";
pub const WEBHOOKS_READ: &str = "keyward:webhooks:read";
pub const WEBHOOKS_WRITE: &str = "keyward:webhooks:write";
/// Usage analytics (`GET /v1/usage`); `keyward:keys:read` satisfies it too.
pub const USAGE_READ: &str = "keyward:usage:read";
/// Anomalies (`GET /v1/anomalies`); `keyward:usage:read` (and so `keyward:keys:read`)
/// satisfies it too.
pub const ANOMALIES_READ: &str = "keyward:anomalies:read";

pub use crate::sessions::require_step_up;
/// Keyward's own namespace: minting or changing keys that hold it needs `keyward:admin`.
pub const NAMESPACE: &str = "keyward:";

/// Who is calling: the key behind the bearer credential.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: Uuid,
    pub identity_id: Uuid,
    /// The credential's key as cached: its scopes are read in place, not copied.
    pub key: Arc<CachedKey>,
    /// The TCP peer address.
    pub source_ip: Option<std::net::IpAddr>,
    /// The request's `x-request-id`, as the header holds it: only changes (their audit
    /// entries) read it, so a verification pays a reference count rather than a copy.
    pub request_id: Option<header::HeaderValue>,
    /// Whether the credential is a human administrator's session (`POST /v1/sessions`),
    /// which the most sensitive calls make step up (`require_step_up`).
    pub session: bool,
    /// When the credential was checked: the time of the request, for handlers that need
    /// one (verify's expiry checks and usage event), so a request reads the clock once.
    pub at: Timestamp,
}

impl Principal {
    pub fn scopes(&self) -> &[compact_str::CompactString] {
        &self.key.policy.scopes
    }

    pub fn is_admin(&self) -> bool {
        scope::any_grants(self.scopes(), ADMIN)
    }

    /// 403 unless the principal holds `required` (or `keyward:admin`).
    pub fn require(&self, required: &str) -> Result<(), ApiError> {
        if self.is_admin() || scope::any_grants(self.scopes(), required) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this call needs the scope {required}"
            )))
        }
    }

    /// 403 unless the principal is an admin, when `scopes` reach into `keyward:`.
    pub fn require_admin_for(&self, scopes: &[String]) -> Result<(), ApiError> {
        if !self.is_admin() && scopes.iter().any(|s| touches_namespace(s)) {
            return Err(ApiError::Forbidden(format!(
                "keys with {NAMESPACE} scopes can only be minted or changed with {ADMIN}"
            )));
        }
        Ok(())
    }

    /// The request id, for the audit log.
    pub fn request_id(&self) -> Option<String> {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The actor recorded in the audit log.
    pub fn actor(&self) -> String {
        self.key_id.to_string()
    }
}

/// Whether a scope is in, or a wildcard over, Keyward's own namespace (`keyward:x`,
/// `keyward:*`, `key*`, `*`).
pub fn touches_namespace(s: &str) -> bool {
    match s.strip_suffix('*') {
        Some(stem) => NAMESPACE.starts_with(stem) || stem.starts_with(NAMESPACE),
        None => s.starts_with(NAMESPACE),
    }
}

/// The TCP peer's address and the request id, for the principal of a request.
pub fn peer_and_request_id(
    parts: &Parts,
) -> (Option<std::net::IpAddr>, Option<header::HeaderValue>) {
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    // A `HeaderName` rather than a `&str`: a string is parsed as a header name on every
    // lookup (~200 instructions more per authenticated call, by callgrind).
    static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");
    let request_id = parts.headers.get(&X_REQUEST_ID).cloned();
    (source_ip, request_id)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (source_ip, request_id) = peer_and_request_id(parts);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <key>".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <key>".into()))?;
        authenticate(state, token, source_ip, request_id).await
    }
}

/// The principal behind a bearer credential, checked as `POST /v1/verify` checks a key
/// (also used by the web console, whose cookie carries the credential).
pub async fn authenticate(
    state: &AppState,
    token: &str,
    source_ip: Option<std::net::IpAddr>,
    request_id: Option<header::HeaderValue>,
) -> Result<Principal, ApiError> {
    let req = VerifyRequest {
        scopes: &[],
        permission: None,
        ip: source_ip,
    };
    let at = crate::now();
    let outcome = state.verifier.authenticate(token, &req, at).await?;
    match (outcome.code, outcome.key) {
        (VerifyCode::Valid, Some(k)) => Ok(Principal {
            key_id: k.id,
            identity_id: k.identity_id,
            key: k,
            source_ip,
            request_id,
            session: token.starts_with(crate::sessions::SESSION_PREFIX_),
            at,
        }),
        (VerifyCode::Malformed | VerifyCode::NotFound, _) => Err(state.throttle.unknown_bearer(
            source_ip,
            ApiError::Unauthorized("unknown credential".into()),
        )),
        (code, _) => Err(ApiError::Unauthorized(format!(
            "the credential is not valid ({})",
            code.as_str()
        ))),
    }
}
