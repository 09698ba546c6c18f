//! `/v1/keys/{id}/rotation-policy`: when the scheduler (`vault_jobs.rs`) rotates a key,
//! how long the old one keeps working, and where the new one is delivered.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyward_core::model::KeyRecord;
use keyward_core::rotation::{self, RotationPolicy};
use keyward_core::secret::Access;
use keyward_proto as proto;
use serde_json::json;
use uuid::Uuid;

use super::audit_entry;
use super::secrets::require_secret;
use crate::auth::{KEYS_READ, KEYS_WRITE, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, IdPath};
use crate::state::AppState;

fn wire(p: RotationPolicy) -> proto::RotationPolicy {
    proto::RotationPolicy {
        key_id: p.key_id,
        max_age_seconds: p.max_age_seconds,
        grace_seconds: p.grace_seconds,
        deliver_to: p.deliver_to,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

async fn load_key(st: &AppState, id: Uuid) -> ApiResult<KeyRecord> {
    st.store
        .get_key(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))
}

#[utoipa::path(put, path = "/v1/keys/{id}/rotation-policy", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")),
    request_body = proto::PutRotationPolicy,
    responses((status = 200, body = proto::RotationPolicy), (status = 400, body = proto::Problem),
              (status = 404, body = proto::Problem), (status = 409, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn put(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<proto::PutRotationPolicy>,
) -> ApiResult<Json<proto::RotationPolicy>> {
    who.require(KEYS_WRITE)?;
    rotation::validate(
        body.max_age_seconds,
        body.grace_seconds,
        body.deliver_to.as_deref(),
    )?;
    let key = load_key(&st, id).await?;
    who.require_admin_for(&key.scopes)?;
    // Delivering writes the secret: the caller must be allowed to write it.
    if let Some(path) = &body.deliver_to {
        require_secret(&who, Access::Write, path)?;
    }
    let now = crate::now();
    if key.revoked_at.is_some_and(|t| t <= now) {
        return Err(ApiError::Conflict("the key is revoked".into()));
    }
    if key.rotated_to.is_some() {
        return Err(ApiError::Conflict(
            "the key was already rotated; set the policy on the key that replaced it".into(),
        ));
    }
    let created_at = st
        .store
        .get_rotation_policy(id)
        .await?
        .map_or(now, |p| p.created_at);
    let policy = RotationPolicy {
        key_id: id,
        max_age_seconds: body.max_age_seconds,
        grace_seconds: body.grace_seconds,
        deliver_to: body.deliver_to,
        created_at,
        updated_at: now,
    };
    let audit = audit_entry(
        &who,
        "key.rotation_policy.set",
        id,
        json!({"max_age_seconds": policy.max_age_seconds,
               "grace_seconds": policy.grace_seconds, "deliver_to": policy.deliver_to}),
    );
    if !st.store.put_rotation_policy(&policy, &audit).await? {
        return Err(ApiError::NotFound("no key with this id".into()));
    }
    Ok(Json(wire(policy)))
}

#[utoipa::path(get, path = "/v1/keys/{id}/rotation-policy", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")),
    responses((status = 200, body = proto::RotationPolicy), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::RotationPolicy>> {
    who.require(KEYS_READ)?;
    let policy = st
        .store
        .get_rotation_policy(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("this key has no rotation policy".into()))?;
    Ok(Json(wire(policy)))
}

#[utoipa::path(delete, path = "/v1/keys/{id}/rotation-policy", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")),
    responses((status = 204, description = "the policy is gone"), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    who.require(KEYS_WRITE)?;
    let key = load_key(&st, id).await?;
    who.require_admin_for(&key.scopes)?;
    let audit = audit_entry(&who, "key.rotation_policy.delete", id, json!({}));
    if st.store.delete_rotation_policy(id, &audit).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("this key has no rotation policy".into()))
    }
}
