//! `POST /v1/tokens` (exchange a key for a short-lived JWT), `POST /v1/tokens/introspect`
//! (RFC 7662) and `GET /.well-known/jwks.json`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use keyward_core::policy::VerifyRequest;
use keyward_core::{VerifyCode, scope};
use keyward_proto as proto;
use uuid::Uuid;

use crate::auth::{Principal, VERIFY};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, OptionalJson};
use crate::state::AppState;
use crate::tokens::{DEFAULT_TTL, MAX_TTL, SignError};

/// Longest `audience` accepted.
const MAX_AUDIENCE: usize = 256;

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = proto::CreateToken,
    responses((status = 201, description = "the token", body = proto::TokenCreated),
              (status = 400, body = proto::Problem),
              (status = 401, description = "the key to exchange is not valid", body = proto::Problem),
              (status = 403, description = "scopes the key does not hold", body = proto::Problem),
              (status = 429, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    PeerIp(source_ip): PeerIp,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<proto::CreateToken>,
) -> ApiResult<(StatusCode, Json<proto::TokenCreated>)> {
    let credential = bearer(&headers)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL);
    if ttl == 0 || ttl > MAX_TTL {
        return Err(ApiError::field(
            "ttl_seconds",
            format!("must be between 1 and {MAX_TTL}"),
        ));
    }
    if let Some(a) = &body.audience
        && (a.is_empty() || a.len() > MAX_AUDIENCE || a.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            "audience",
            format!("must be 1 to {MAX_AUDIENCE} characters, none of them control characters"),
        ));
    }
    if let Some(scopes) = &body.scopes {
        for (i, s) in scopes.iter().enumerate() {
            scope::validate(s)
                .map_err(|e| ApiError::field(format!("scopes[{i}]"), e.to_string()))?;
        }
    }

    // The key must pass every verify check now, rate limits and quota included.
    let now = crate::now();
    let req = VerifyRequest {
        scopes: &[],
        permission: None,
        ip: source_ip,
    };
    let outcome = st.verifier.verify(credential, &req, now).await?;
    let key = match (outcome.code, outcome.key) {
        (VerifyCode::Valid, Some(k)) => k,
        (VerifyCode::RateLimited, _) => {
            let wait = outcome.denied.map(|d| d.retry_after).unwrap_or_default();
            return Err(ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        (VerifyCode::Malformed | VerifyCode::NotFound, _) => {
            return Err(ApiError::Unauthorized("unknown credential".into()));
        }
        (code, _) => {
            return Err(ApiError::Unauthorized(format!(
                "the credential is not valid ({})",
                code.as_str()
            )));
        }
    };

    let granted = &key.policy.scopes;
    let scopes = match body.scopes {
        None => granted.iter().map(|s| s.to_string()).collect(),
        Some(asked) => {
            let refused: Vec<&str> = asked
                .iter()
                .filter(|s| !scope::covers(granted, s))
                .map(String::as_str)
                .collect();
            if !refused.is_empty() {
                return Err(ApiError::Forbidden(format!(
                    "the key does not hold these scopes: {}",
                    refused.join(" ")
                )));
            }
            asked
        }
    };

    let exp = now + chrono::Duration::seconds(ttl as i64);
    let claims = proto::TokenClaims {
        sub: key.identity_id.to_string(),
        aud: body.audience,
        iat: now.timestamp(),
        exp: exp.timestamp(),
        jti: Uuid::now_v7().to_string(),
        scope: scopes.join(" "),
        key_id: key.id,
    };
    let (token, kid) = st.tokens.sign(&claims).await.map_err(|e| match e {
        SignError::Store(e) => ApiError::from(e),
        SignError::Key(d) => ApiError::Internal(d),
    })?;
    let audit = keyward_core::model::AuditEntry {
        at: now,
        actor: key.id.to_string(),
        action: "token.issue".into(),
        target: claims.jti.clone(),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        source_ip: source_ip.map(|ip| ip.to_string()),
        detail: serde_json::json!({
            "key_id": key.id, "jti": claims.jti, "kid": kid, "scopes": scopes,
            "aud": claims.aud, "exp": exp,
        }),
    };
    st.store.record_token_issue(&audit).await?;
    let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or(exp);
    Ok((
        StatusCode::CREATED,
        Json(proto::TokenCreated { token, expires_at }),
    ))
}

#[utoipa::path(post, path = "/v1/tokens/introspect", tag = "tokens",
    request_body = proto::IntrospectToken,
    responses((status = 200, description = "RFC 7662: whether the token is active now", body = proto::TokenIntrospection),
              (status = 400, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn introspect(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::IntrospectToken>,
) -> ApiResult<Json<proto::TokenIntrospection>> {
    who.require(VERIFY)?;
    let inactive = Json(proto::TokenIntrospection::default());
    let Some(claims) = st.tokens.decode(&body.token).await? else {
        return Ok(inactive);
    };
    // The key behind the token must still pass the checks that do not depend on the
    // caller (not the IP allowlist: the token's holder is not here), as the verify cache
    // knows it: a revocation empties that entry at once on this node, and through the
    // change feed on the others.
    let now = crate::now();
    let Some(digest) = st.tokens.key_digest(claims.key_id).await? else {
        return Ok(inactive);
    };
    let Some(k) = st.verifier.cached_by_digest(&digest).await? else {
        return Ok(inactive);
    };
    let p = &k.policy;
    let live = p.revoked_at.is_none_or(|t| t > now)
        && p.expires_at.is_none_or(|t| t > now)
        && p.enabled
        && p.identity_enabled;
    if !live {
        return Ok(inactive);
    }
    Ok(Json(proto::TokenIntrospection {
        active: true,
        sub: Some(claims.sub),
        scope: Some(claims.scope),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        aud: claims.aud,
        jti: Some(claims.jti),
        key_id: Some(claims.key_id),
        client_id: Some(claims.key_id.to_string()),
        token_type: Some("Bearer".into()),
    }))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "the public keys that sign tokens", body = proto::Jwks)))]
pub async fn jwks(State(st): State<AppState>) -> ApiResult<Json<proto::Jwks>> {
    Ok(Json(st.tokens.jwks().await?))
}

/// The key in `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <key>".into()))
}

/// The TCP peer's address, when the server runs with `ConnectInfo` (always, but in
/// router-only tests).
pub struct PeerIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
        ))
    }
}
