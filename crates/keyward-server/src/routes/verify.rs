//! `POST /v1/verify`: the hot path over HTTP.

use axum::Json;
use axum::extract::State;
use keyward_core::permission::Permission;
use keyward_core::policy::VerifyRequest;
use keyward_core::{VerifyCode, scope};
use keyward_proto as proto;

use crate::auth::{Principal, VERIFY};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/verify", tag = "verify", request_body = proto::VerifyRequest,
    responses((status = 200, description = "the decision, whatever it is", body = proto::VerifyResponse),
              (status = 400, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn verify(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::VerifyRequest>,
) -> ApiResult<Json<proto::VerifyResponse>> {
    who.require(VERIFY)?;
    let scopes = body.scopes.unwrap_or_default();
    for (i, s) in scopes.iter().enumerate() {
        scope::validate(s).map_err(|e| ApiError::field(format!("scopes[{i}]"), e.to_string()))?;
    }
    let permission = body
        .permission
        .as_deref()
        .map(Permission::parse)
        .transpose()
        .map_err(|e| ApiError::field("permission", e.to_string()))?;
    let ip = body
        .ip
        .as_deref()
        .map(|s| s.trim().parse::<std::net::IpAddr>())
        .transpose()
        .map_err(|_| ApiError::field("ip", "not an IPv4 or IPv6 address"))?;
    let tags = body
        .tags
        .map(|t| {
            keyward_core::usage::validate_tags(&t)
                .map(|()| Box::new(t))
                .map_err(|e| ApiError::field(e.field, e.reason))
        })
        .transpose()?;
    let req = VerifyRequest {
        scopes: &scopes,
        permission: permission.as_ref(),
        ip,
    };
    let now = crate::now();
    let outcome = st
        .verifier
        .verify_tagged(&body.key, &req, now, tags)
        .await?;
    let key = outcome.key.as_deref();
    let rate_limit = match (&outcome.denied, &outcome.allowance) {
        (Some(d), _) => Some(proto::RateLimitStatus {
            name: d.name.clone(),
            limit: d.limit,
            remaining: 0,
            reset_at: now + d.retry_after,
        }),
        (None, Some(a)) => Some(proto::RateLimitStatus {
            name: key
                .and_then(|k| k.rate_limits.get(a.index))
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            limit: a.limit,
            remaining: a.remaining,
            reset_at: now + a.reset_after,
        }),
        _ => None,
    };
    Ok(Json(proto::VerifyResponse {
        valid: outcome.code == VerifyCode::Valid,
        code: convert::code(outcome.code),
        key_id: key.map(|k| k.id),
        identity_id: key.map(|k| k.identity_id),
        scopes: key.map(|k| k.policy.scopes.clone()),
        remaining: outcome.remaining,
        rate_limit,
        expires_at: key.and_then(|k| k.expires_at),
    }))
}
