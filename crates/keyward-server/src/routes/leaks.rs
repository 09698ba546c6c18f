//! `POST /v1/leaks`: a key was found where it should not be (a scanner, a paste site, a
//! support ticket). If it is a key of this server, it is revoked at once and the leak is
//! audit-logged. The answer reveals only `{revoked, key_id?}`: a string that is not one
//! of our keys (malformed, failing its checksum, unknown) gives `{revoked: false}`.
//!
//! Whoever holds a leaked key may have it revoked, whatever its scopes, including keys
//! with `keyward:` scopes: holding the key is the proof, and a leaked admin key is the one
//! that most needs revoking. The reporter needs only `keyward:leaks:report`.

use axum::Json;
use axum::extract::State;
use keyward_core::digest::KeyDigest;
use keyward_core::key;
use keyward_proto as proto;
use serde_json::json;

use super::audit_entry;
use crate::auth::{LEAKS_REPORT, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

/// Longest `source` kept in the audit log.
pub const SOURCE_MAX: usize = 1024;

#[utoipa::path(post, path = "/v1/leaks", tag = "leaks", request_body = proto::LeakReport,
    responses((status = 200, description = "whether a key of this server was revoked", body = proto::LeakResponse),
              (status = 400, body = proto::Problem), (status = 403, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn report(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::LeakReport>,
) -> ApiResult<Json<proto::LeakResponse>> {
    who.require(LEAKS_REPORT)?;
    if let Some(source) = &body.source
        && (source.chars().count() > SOURCE_MAX || source.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            "source",
            format!("at most {SOURCE_MAX} characters, no control characters"),
        ));
    }
    let not_ours = Json(proto::LeakResponse {
        revoked: false,
        key_id: None,
    });
    // Decided without a lookup, like MALFORMED.
    if key::parse(&body.key).is_err() {
        return Ok(not_ours);
    }
    let digest = KeyDigest::of(&body.key);
    let Some(found) = st.store.get_key_by_digest(&digest).await? else {
        return Ok(not_ours);
    };
    let id = found.key.id;
    let now = crate::now();
    let already = found.key.revoked_at.is_some_and(|t| t <= now);
    let audit = audit_entry(
        &who,
        "key.leaked",
        id,
        json!({
            "start": found.key.start,
            "source": body.source,
            "already_revoked": already,
            "revoked": true,
        }),
    );
    // Sets revoked_at = now, or keeps an earlier one; the audit record goes with it.
    let revoked = st
        .store
        .revoke_key(id, now, &audit)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))?;
    st.verifier.forget(&revoked.digest);
    // The `key.leaked` audit record written with the revoke fires the `leak.detected`
    // webhook (the webhook worker tails the audit log).
    Ok(Json(proto::LeakResponse {
        revoked: true,
        key_id: Some(id),
    }))
}
