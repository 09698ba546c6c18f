//! `/v1/identities`: the non-human identities that hold keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyward_core::model::{Identity, IdentityPatch};
use keyward_core::validate::{self, NAME_MAX, OWNER_MAX};
use keyward_proto as proto;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::audit_entry;
use crate::auth::{IDENTITIES_READ, IDENTITIES_WRITE, Principal};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IdPath, id_cursor, page_limit};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/identities", tag = "identities",
    request_body = proto::CreateIdentity,
    responses((status = 201, body = proto::Identity), (status = 400, body = proto::Problem),
              (status = 409, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::CreateIdentity>,
) -> ApiResult<(StatusCode, Json<proto::Identity>)> {
    who.require(IDENTITIES_WRITE)?;
    validate::text("name", &body.name, NAME_MAX)?;
    validate::text("owner", &body.owner, OWNER_MAX)?;
    let description = body.description.unwrap_or_default();
    validate::description(&description)?;
    let meta = body.meta.unwrap_or_default();
    validate::meta(&meta)?;
    let now = crate::now();
    let identity = Identity {
        id: Uuid::now_v7(),
        name: body.name.trim().to_owned(),
        owner: body.owner.trim().to_owned(),
        description,
        meta,
        enabled: body.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    let audit = audit_entry(
        &who,
        "identity.create",
        identity.id,
        json!({"name": identity.name, "owner": identity.owner}),
    );
    st.store
        .create_identity(&identity, &audit)
        .await
        .map_err(name_conflict)?;
    Ok((StatusCode::CREATED, Json(convert::identity(identity))))
}

fn name_conflict(e: keyward_store::StoreError) -> ApiError {
    match e {
        keyward_store::StoreError::Conflict(_) => {
            ApiError::Conflict("an identity with this name already exists".into())
        }
        other => other.into(),
    }
}

#[utoipa::path(get, path = "/v1/identities", tag = "identities", params(ListQuery),
    responses((status = 200, body = proto::Page<proto::Identity>)),
    security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<proto::Page<proto::Identity>>> {
    who.require(IDENTITIES_READ)?;
    let limit = page_limit(q.limit)?;
    let after = id_cursor(q.cursor.as_deref())?;
    let mut items = st.store.list_identities(after, limit + 1).await?;
    let next_cursor = next_page(&mut items, limit, |i| i.id.to_string());
    Ok(Json(proto::Page {
        items: items.into_iter().map(convert::identity).collect(),
        next_cursor,
    }))
}

/// Trims a `limit + 1` fetch to `limit` and returns the cursor of the next page.
pub fn next_page<T>(
    items: &mut Vec<T>,
    limit: u32,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(cursor)
    } else {
        None
    }
}

#[utoipa::path(get, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = Uuid, Path, description = "the identity's id")),
    responses((status = 200, body = proto::Identity), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Identity>> {
    who.require(IDENTITIES_READ)?;
    let identity = st.store.get_identity(id).await?.ok_or_else(not_found)?;
    Ok(Json(convert::identity(identity)))
}

fn not_found() -> ApiError {
    ApiError::NotFound("no identity with this id".into())
}

#[utoipa::path(patch, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = Uuid, Path, description = "the identity's id")),
    request_body = proto::UpdateIdentity,
    responses((status = 200, body = proto::Identity), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<proto::UpdateIdentity>,
) -> ApiResult<Json<proto::Identity>> {
    who.require(IDENTITIES_WRITE)?;
    if let Some(n) = &body.name {
        validate::text("name", n, NAME_MAX)?;
    }
    if let Some(o) = &body.owner {
        validate::text("owner", o, OWNER_MAX)?;
    }
    if let Some(d) = &body.description {
        validate::description(d)?;
    }
    if let Some(m) = &body.meta {
        validate::meta(m)?;
    }
    let changed: Vec<&str> = [
        ("name", body.name.is_some()),
        ("owner", body.owner.is_some()),
        ("description", body.description.is_some()),
        ("meta", body.meta.is_some()),
        ("enabled", body.enabled.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    let enabled_changed = body.enabled.is_some();
    let patch = IdentityPatch {
        name: body.name.map(|n| n.trim().to_owned()),
        owner: body.owner.map(|o| o.trim().to_owned()),
        description: body.description,
        meta: body.meta,
        enabled: body.enabled,
    };
    let audit = audit_entry(&who, "identity.update", id, json!({"changed": changed}));
    let identity = st
        .store
        .update_identity(id, &patch, crate::now(), &audit)
        .await
        .map_err(name_conflict)?
        .ok_or_else(not_found)?;
    if enabled_changed {
        let digests = st.store.key_digests_of_identity(id).await?;
        st.verifier.forget_all(&digests);
    }
    Ok(Json(convert::identity(identity)))
}

#[utoipa::path(delete, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = Uuid, Path, description = "the identity's id")),
    responses((status = 200, description = "the deleted identity; its keys are revoked", body = proto::Identity),
              (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Identity>> {
    who.require(IDENTITIES_WRITE)?;
    let identity = st.store.get_identity(id).await?.ok_or_else(not_found)?;
    let audit = audit_entry(&who, "identity.delete", id, json!({"name": identity.name}));
    let digests = st
        .store
        .delete_identity(id, crate::now(), &audit)
        .await?
        .ok_or_else(not_found)?;
    st.verifier.forget_all(&digests);
    Ok(Json(convert::identity(identity)))
}
