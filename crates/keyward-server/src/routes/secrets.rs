//! `/v1/secrets`: the secrets vault. Values are sealed in `crate::vault` before they
//! reach the store and opened only to answer a read; every read and write is in the
//! audit log with the path and version, never the value.
//!
//! Access: `secrets:read:<glob>` / `secrets:write:<glob>` (`keyward_core::secret`), or
//! `keyward:admin`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::secret::{self, Access};
use keyward_core::validate;
use keyward_proto as proto;
use keyward_store::StoreError;
use keyward_store::vault::SecretVersion;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use zeroize::Zeroize;

use super::audit_entry;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, page_limit};
use crate::state::AppState;
use crate::vault::Vault;

/// Tries at sealing for the next version when concurrent writers keep taking it: each
/// lost try means another writer succeeded, so N writers at once all get through.
const PUT_ATTEMPTS: usize = 16;

/// The vault, or 503 when no master key is configured (it stays off: fail closed).
pub fn vault_of(st: &AppState) -> ApiResult<&Arc<Vault>> {
    st.vault.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "the secrets vault is off: the server has no master key (KEYWARD_MASTER_KEY or \
             --master-key-file)"
                .into(),
        )
    })
}

/// 403 unless the principal may `access` `path`.
pub fn require_secret(who: &Principal, access: Access, path: &str) -> ApiResult<()> {
    if who.is_admin() || secret::any_grants(who.scopes(), access, path) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this call needs a scope granting {}",
            access.scope_for(path)
        )))
    }
}

/// The `{*path}` of the URL, validated.
fn secret_path(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(path) = path.map_err(|_| ApiError::field("path", "must be valid UTF-8"))?;
    secret::validate_path("path", &path)?;
    Ok(path)
}

#[utoipa::path(put, path = "/v1/secrets/{path}", tag = "secrets",
    params(("path" = String, Path, description = "the secret's path, `/`-separated")),
    request_body = proto::PutSecret,
    responses((status = 201, description = "the first version", body = proto::SecretWritten),
              (status = 200, description = "a new version", body = proto::SecretWritten),
              (status = 400, body = proto::Problem), (status = 403, body = proto::Problem),
              (status = 503, description = "the vault is off", body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn put(
    State(st): State<AppState>,
    who: Principal,
    path: Result<Path<String>, PathRejection>,
    ApiJson(mut body): ApiJson<proto::PutSecret>,
) -> ApiResult<(StatusCode, Json<proto::SecretWritten>)> {
    let result = put_inner(&st, &who, path, &body).await;
    body.value.zeroize();
    result
}

async fn put_inner(
    st: &AppState,
    who: &Principal,
    path: Result<Path<String>, PathRejection>,
    body: &proto::PutSecret,
) -> ApiResult<(StatusCode, Json<proto::SecretWritten>)> {
    let path = secret_path(path)?;
    require_secret(who, Access::Write, &path)?;
    let vault = vault_of(st)?;
    if body.value.len() > vault.value_max_bytes {
        return Err(ApiError::field(
            "value",
            format!("must be at most {} bytes", vault.value_max_bytes),
        ));
    }
    let meta = body.meta.clone().unwrap_or_default();
    validate::meta(&meta)?;
    for attempt in 1..=PUT_ATTEMPTS {
        let version = st.store.latest_secret_version(&path).await?.unwrap_or(0) + 1;
        let now = crate::now();
        let v = SecretVersion {
            path: path.clone(),
            version,
            sealed: vault.seal(&path, version, body.value.as_bytes()),
            meta: meta.clone(),
            created_at: now,
        };
        let audit = audit_entry(
            who,
            "secret.write",
            &path,
            json!({"path": path, "version": version}),
        );
        match st.store.put_secret_version(&v, &audit).await {
            Ok(()) => {
                let status = if version == 1 {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let written = proto::SecretWritten {
                    path,
                    version,
                    created_at: now,
                };
                return Ok((status, Json(written)));
            }
            // Another writer took this version: seal again for the next one.
            Err(StoreError::Conflict(_)) if attempt < PUT_ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(
        "too many concurrent writes to this secret; retry".into(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// A version number (default: the latest).
    pub version: Option<i64>,
}

#[utoipa::path(get, path = "/v1/secrets/{path}", tag = "secrets",
    params(("path" = String, Path, description = "the secret's path"), GetQuery),
    responses((status = 200, body = proto::Secret), (status = 404, body = proto::Problem),
              (status = 403, body = proto::Problem), (status = 503, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    path: Result<Path<String>, PathRejection>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> ApiResult<Json<proto::Secret>> {
    let path = secret_path(path)?;
    if q.version.is_some_and(|v| v < 1) {
        return Err(ApiError::field("version", "must be 1 or more"));
    }
    require_secret(&who, Access::Read, &path)?;
    let vault = vault_of(&st)?;
    let stored = st
        .store
        .get_secret_version(&path, q.version)
        .await?
        .ok_or_else(|| match q.version {
            Some(v) => ApiError::NotFound(format!("the secret has no version {v}")),
            None => ApiError::NotFound("no secret at this path".into()),
        })?;
    let plain = vault.open(&stored).map_err(|e| {
        ApiError::Internal(format!(
            "secret {} version {} cannot be opened: {e}",
            stored.path, stored.version
        ))
    })?;
    let value = String::from_utf8(plain.to_vec())
        .map_err(|_| ApiError::Internal("a stored secret is not UTF-8".into()))?;
    // The read is on record before the value leaves: no audit, no value.
    let audit = audit_entry(
        &who,
        "secret.read",
        &path,
        json!({"path": path, "version": stored.version}),
    );
    st.store.record_secret_access(&audit).await?;
    Ok(Json(proto::Secret {
        path,
        version: stored.version,
        value,
        created_at: stored.created_at,
        meta: stored.meta,
    }))
}

#[utoipa::path(delete, path = "/v1/secrets/{path}", tag = "secrets",
    params(("path" = String, Path, description = "the secret's path")),
    responses((status = 204, description = "every version deleted"),
              (status = 404, body = proto::Problem), (status = 403, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    who: Principal,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let path = secret_path(path)?;
    require_secret(&who, Access::Write, &path)?;
    let audit = audit_entry(&who, "secret.delete", &path, json!({"path": path}));
    match st.store.delete_secret(&path, &audit).await? {
        0 => Err(ApiError::NotFound("no secret at this path".into())),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only paths starting with this (literally).
    pub prefix: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/secrets", tag = "secrets",
    params(ListQuery),
    responses((status = 200, description = "the secrets the caller may read", body = proto::SecretList),
              (status = 400, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<proto::SecretList>> {
    let prefix = q.prefix.unwrap_or_default();
    secret::validate_prefix("prefix", &prefix)?;
    let limit = page_limit(q.limit)?;
    if let Some(c) = q.cursor.as_deref() {
        secret::validate_path("cursor", c)?;
    }
    let rows = st
        .store
        .list_secrets(&prefix, q.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize).then(|| rows[rows.len() - 1].path.clone());
    // Paths are only shown to those who may read them (a page may come out shorter).
    let items = rows
        .into_iter()
        .filter(|s| who.is_admin() || secret::any_grants(who.scopes(), Access::Read, &s.path))
        .map(|s| proto::SecretSummary {
            path: s.path,
            version: s.version,
            updated_at: s.updated_at,
        })
        .collect();
    Ok(Json(proto::SecretList { items, next_cursor }))
}
