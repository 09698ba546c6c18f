//! `/v1/keys`: mint, list, change, rotate and revoke keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Duration;
use keyward_core::ip::IpAllowlist;
use keyward_core::key::{self, KeyPrefix};
use keyward_core::model::{KeyPatch, KeyRecord};
use keyward_core::ratelimit::{self, RateLimitSpec};
use keyward_core::time::Timestamp;
use keyward_core::validate::{self, FieldError, NAME_MAX};
use keyward_proto as proto;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::audit_entry;
use super::identities::next_page;
use crate::auth::{KEYS_READ, KEYS_WRITE, Principal};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IdPath, OptionalJson, id_cursor, page_limit};
use crate::state::AppState;

/// Longest grace period a rotation may give the old key: 30 days.
pub const GRACE_MAX_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only keys of this identity.
    pub identity_id: Option<Uuid>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn ip_allowlist(entries: &[String]) -> Result<Vec<String>, FieldError> {
    IpAllowlist::parse(entries)
        .map(|l| l.to_strings())
        .map_err(|e| FieldError::new(format!("ip_allowlist[{}]", e.index), e.to_string()))
}

fn rate_limits(given: Vec<proto::RateLimit>) -> Result<Vec<RateLimitSpec>, FieldError> {
    let specs: Vec<RateLimitSpec> = given.into_iter().map(convert::rate_limit_spec).collect();
    ratelimit::validate(&specs)
        .map_err(|e| FieldError::new(format!("rate_limits[{}].{}", e.index, e.field), e.reason))?;
    Ok(specs)
}

fn key_name(name: Option<String>) -> Result<Option<String>, FieldError> {
    match name {
        Some(n) if !n.trim().is_empty() => {
            validate::text("name", &n, NAME_MAX)?;
            Ok(Some(n.trim().to_owned()))
        }
        Some(_) => Ok(Some(String::new())),
        None => Ok(None),
    }
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = proto::CreateKey,
    responses((status = 201, description = "the key, shown this once", body = proto::CreatedKey),
              (status = 400, body = proto::Problem), (status = 403, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    who: Principal,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<proto::CreateKey>,
) -> ApiResult<(StatusCode, Json<proto::CreatedKey>)> {
    who.require(KEYS_WRITE)?;
    let now = crate::now();
    let name = key_name(body.name)?.unwrap_or_default();
    let prefix = match &body.prefix {
        Some(p) => KeyPrefix::parse(p).map_err(|e| ApiError::field("prefix", e.to_string()))?,
        None => KeyPrefix::default(),
    };
    let scopes = validate::scopes(&body.scopes.unwrap_or_default())?;
    who.require_admin_for(&scopes)?;
    if keyward_core::scope::any_grants(&scopes, crate::auth::ADMIN) {
        crate::auth::require_step_up(&who, &headers, &st).await?;
    }
    let expires_at = validate::expiry(body.expires_at, body.ttl_seconds, now)?;
    let ip_allowlist = ip_allowlist(&body.ip_allowlist.unwrap_or_default())?;
    let rate_limits = rate_limits(body.rate_limits.unwrap_or_default())?;
    validate::remaining(body.remaining)?;
    let meta = body.meta.unwrap_or_default();
    validate::meta(&meta)?;
    if st.store.get_identity(body.identity_id).await?.is_none() {
        return Err(ApiError::field("identity_id", "no identity with this id"));
    }
    let minted = key::mint(&prefix);
    let record = KeyRecord {
        id: Uuid::now_v7(),
        identity_id: body.identity_id,
        name,
        prefix: prefix.as_str().to_owned(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes,
        created_at: now,
        updated_at: now,
        expires_at,
        revoked_at: None,
        enabled: body.enabled.unwrap_or(true),
        ip_allowlist,
        rate_limits,
        remaining: body.remaining,
        last_used_at: None,
        meta,
        rotated_from: None,
        rotated_to: None,
    };
    let audit = audit_entry(
        &who,
        "key.create",
        record.id,
        json!({"identity_id": record.identity_id, "scopes": record.scopes, "start": record.start}),
    );
    st.store
        .create_key(&record, &audit)
        .await
        .map_err(|e| match e {
            keyward_store::StoreError::Conflict(_) => {
                ApiError::field("identity_id", "no identity with this id")
            }
            other => other.into(),
        })?;
    // A NOT_FOUND for this digest may be cached from before it existed.
    st.verifier.forget(&record.digest);
    let created = proto::CreatedKey {
        key: minted.plaintext.as_str().to_owned(),
        fields: convert::key(record),
        previous: None,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(ListQuery),
    responses((status = 200, body = proto::Page<proto::Key>)),
    security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<proto::Page<proto::Key>>> {
    who.require(KEYS_READ)?;
    let limit = page_limit(q.limit)?;
    let after = id_cursor(q.cursor.as_deref())?;
    let mut items = st.store.list_keys(q.identity_id, after, limit + 1).await?;
    let next_cursor = next_page(&mut items, limit, |k| k.id.to_string());
    Ok(Json(proto::Page {
        items: items.into_iter().map(convert::key).collect(),
        next_cursor,
    }))
}

async fn load(st: &AppState, id: Uuid) -> ApiResult<KeyRecord> {
    st.store
        .get_key(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))
}

#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")),
    responses((status = 200, body = proto::Key), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Key>> {
    who.require(KEYS_READ)?;
    Ok(Json(convert::key(load(&st, id).await?)))
}

#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")), request_body = proto::UpdateKey,
    responses((status = 200, body = proto::Key), (status = 400, body = proto::Problem),
              (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<proto::UpdateKey>,
) -> ApiResult<Json<proto::Key>> {
    who.require(KEYS_WRITE)?;
    let scopes = body.scopes.as_deref().map(validate::scopes).transpose()?;
    let ip_allowlist = body.ip_allowlist.as_deref().map(ip_allowlist).transpose()?;
    let rate_limits = body.rate_limits.map(rate_limits).transpose()?;
    if let Some(r) = body.remaining {
        validate::remaining(r)?;
    }
    if let Some(m) = &body.meta {
        validate::meta(m)?;
    }
    let name = key_name(body.name)?;
    let existing = load(&st, id).await?;
    who.require_admin_for(&existing.scopes)?;
    if let Some(s) = &scopes {
        who.require_admin_for(s)?;
    }
    let patch = KeyPatch {
        name,
        scopes,
        expires_at: body.expires_at,
        ip_allowlist,
        rate_limits,
        remaining: body.remaining,
        enabled: body.enabled,
        meta: body.meta,
    };
    let changed: Vec<&str> = [
        ("name", patch.name.is_some()),
        ("scopes", patch.scopes.is_some()),
        ("expires_at", patch.expires_at.is_some()),
        ("ip_allowlist", patch.ip_allowlist.is_some()),
        ("rate_limits", patch.rate_limits.is_some()),
        ("remaining", patch.remaining.is_some()),
        ("enabled", patch.enabled.is_some()),
        ("meta", patch.meta.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    let audit = audit_entry(&who, "key.update", id, json!({"changed": changed}));
    let updated = st
        .store
        .update_key(id, &patch, crate::now(), &audit)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))?;
    st.verifier.forget(&updated.digest);
    Ok(Json(convert::key(updated)))
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")),
    request_body = proto::RotateKey,
    responses((status = 201, description = "the new key, shown this once", body = proto::CreatedKey),
              (status = 404, body = proto::Problem), (status = 409, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn rotate(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<proto::RotateKey>,
) -> ApiResult<(StatusCode, Json<proto::CreatedKey>)> {
    who.require(KEYS_WRITE)?;
    if !(0..=GRACE_MAX_SECONDS).contains(&body.grace_seconds) {
        return Err(ApiError::field(
            "grace_seconds",
            format!("must be between 0 and {GRACE_MAX_SECONDS}"),
        ));
    }
    let old = load(&st, id).await?;
    who.require_admin_for(&old.scopes)?;
    let now = crate::now();
    if old.revoked_at.is_some_and(|t| t <= now) {
        return Err(ApiError::Conflict("the key is revoked".into()));
    }
    if old.rotated_to.is_some() {
        return Err(ApiError::Conflict("the key was already rotated".into()));
    }
    let prefix = KeyPrefix::parse(&old.prefix)
        .map_err(|_| ApiError::Internal(format!("stored prefix of key {id} is invalid")))?;
    let minted = key::mint(&prefix);
    let grace_end: Timestamp = now + Duration::seconds(body.grace_seconds);
    let new = KeyRecord {
        id: Uuid::now_v7(),
        start: minted.start.clone(),
        digest: minted.digest,
        created_at: now,
        updated_at: now,
        // The new key gets the lifetime the old one was given, counted from now.
        expires_at: old.expires_at.map(|e| now + (e - old.created_at)),
        revoked_at: None,
        last_used_at: None,
        rotated_from: Some(old.id),
        rotated_to: None,
        ..old.clone()
    };
    let audit = audit_entry(
        &who,
        "key.rotate",
        old.id,
        json!({"new_key_id": new.id, "grace_seconds": body.grace_seconds, "start": new.start}),
    );
    let updated_old = st
        .store
        .rotate_key(old.id, &new, grace_end, now, &audit)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))?;
    st.verifier.forget(&updated_old.digest);
    st.verifier.forget(&new.digest);
    let previous = proto::PreviousKey {
        id: updated_old.id,
        expires_at: updated_old.revoked_at.unwrap_or(grace_end),
    };
    let created = proto::CreatedKey {
        key: minted.plaintext.as_str().to_owned(),
        fields: convert::key(new),
        previous: Some(previous),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys",
    params(("id" = Uuid, Path, description = "the key's id")),
    responses((status = 200, body = proto::Key), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Key>> {
    who.require(KEYS_WRITE)?;
    let existing = load(&st, id).await?;
    who.require_admin_for(&existing.scopes)?;
    let audit = audit_entry(&who, "key.revoke", id, json!({"start": existing.start}));
    let revoked = st
        .store
        .revoke_key(id, crate::now(), &audit)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))?;
    st.verifier.forget(&revoked.digest);
    Ok(Json(convert::key(revoked)))
}
