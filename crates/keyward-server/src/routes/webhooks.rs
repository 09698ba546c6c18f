//! `/v1/webhooks`: where events are sent, and the log of their deliveries. The signing
//! secret is answered once, by `POST`; it never appears in any other answer, in the
//! logs or in the audit log (which records the destination's host, not its URL: a URL
//! path may carry a token of the receiver's). The store keeps the secret sealed under
//! the vault's master key (`sealed_secrets.rs`); without one, `POST` answers 503.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyward_core::webhook::{self, Delivery, Webhook};
use keyward_proto as proto;
use serde_json::json;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit_entry;
use super::identities::{ListQuery, next_page};
use crate::auth::{Principal, WEBHOOKS_READ, WEBHOOKS_WRITE};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IdPath, id_cursor, page_limit};
use crate::sealed_secrets;
use crate::state::AppState;
use keyward_store::sealed_secrets::SealedKind;

/// Longest webhook URL accepted.
pub const URL_MAX: usize = 2048;

fn to_proto(w: Webhook) -> proto::Webhook {
    proto::Webhook {
        id: w.id,
        url: w.url,
        events: w.events,
        created_at: w.created_at,
    }
}

fn delivery_to_proto(d: Delivery) -> proto::WebhookDelivery {
    proto::WebhookDelivery {
        id: d.id,
        event_id: d.event_id,
        event_type: d.event_type,
        state: d.state.as_str().to_owned(),
        attempts: d.attempts,
        created_at: d.created_at,
        next_attempt_at: d.next_attempt_at,
        last_attempt_at: d.last_attempt_at,
        last_status: d.last_status,
        last_error: d.last_error,
        last_duration_ms: d.last_duration_ms,
    }
}

/// An absolute http(s) URL with a host and no credentials; returns it normalised.
fn check_url(raw: &str) -> Result<url::Url, ApiError> {
    if raw.len() > URL_MAX {
        return Err(ApiError::field(
            "url",
            format!("at most {URL_MAX} characters"),
        ));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| ApiError::field("url", format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::field("url", "must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::field("url", "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::field(
            "url",
            "must not hold credentials; deliveries are signed instead",
        ));
    }
    Ok(url)
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body = proto::CreateWebhook,
    responses((status = 201, description = "the webhook, with its signing secret (shown once)",
               body = proto::CreatedWebhook),
              (status = 400, body = proto::Problem), (status = 403, body = proto::Problem),
              (status = 503, description = "no master key to seal the signing secret with",
               body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<proto::CreateWebhook>,
) -> ApiResult<(StatusCode, Json<proto::CreatedWebhook>)> {
    who.require(WEBHOOKS_WRITE)?;
    let vault =
        sealed_secrets::vault_for_new_secret(st.vault.as_deref(), "webhook signing secret")?;
    let url = check_url(&body.url)?;
    let events = webhook::check_events(&body.events).map_err(|(i, detail)| {
        ApiError::field(
            i.map_or("events".into(), |i| format!("events[{i}]")),
            detail,
        )
    })?;
    let secret = match body.secret {
        Some(s) => {
            let s = Zeroizing::new(s);
            webhook::check_secret(&s).map_err(|d| ApiError::field("secret", d))?;
            s
        }
        None => webhook::generate_secret(),
    };
    let id = Uuid::now_v7();
    let sealed = sealed_secrets::seal(
        vault,
        SealedKind::WebhookSecret,
        &id.to_string(),
        secret.as_bytes(),
    );
    let w = Webhook {
        id,
        url: url.to_string(),
        events,
        // Only the sealed form is stored; the plaintext is answered once, below.
        secret: Zeroizing::new(String::new()),
        sealed_secret: Some(sealed),
        created_at: crate::now(),
        after_seq: 0,
    };
    let audit = audit_entry(
        &who,
        "webhook.create",
        w.id,
        json!({"host": url.host_str(), "events": w.events}),
    );
    let stored = st.store.create_webhook(&w, &audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(proto::CreatedWebhook {
            id: stored.id,
            url: stored.url.clone(),
            events: stored.events.clone(),
            secret: secret.to_string(),
            created_at: stored.created_at,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, body = proto::Page<proto::Webhook>)),
    security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<proto::Page<proto::Webhook>>> {
    who.require(WEBHOOKS_READ)?;
    let limit = page_limit(q.limit)?;
    let after = id_cursor(q.cursor.as_deref())?;
    let mut items = st.store.list_webhooks(after, limit + 1).await?;
    let next_cursor = next_page(&mut items, limit, |w| w.id.to_string());
    Ok(Json(proto::Page {
        items: items.into_iter().map(to_proto).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "the webhook's id")),
    responses((status = 200, body = proto::Webhook), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Webhook>> {
    who.require(WEBHOOKS_READ)?;
    let w = st
        .store
        .get_webhook(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no webhook with this id".into()))?;
    Ok(Json(to_proto(w)))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "the webhook's id")),
    responses((status = 200, description = "the deleted webhook; its pending deliveries are dropped",
               body = proto::Webhook),
              (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Webhook>> {
    who.require(WEBHOOKS_WRITE)?;
    let audit = audit_entry(&who, "webhook.delete", id, json!({}));
    let w = st
        .store
        .delete_webhook(id, &audit)
        .await?
        .ok_or_else(|| ApiError::NotFound("no webhook with this id".into()))?;
    Ok(Json(to_proto(w)))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "the webhook's id"), ListQuery),
    responses((status = 200, description = "deliveries, newest first",
               body = proto::Page<proto::WebhookDelivery>),
              (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<proto::Page<proto::WebhookDelivery>>> {
    who.require(WEBHOOKS_READ)?;
    let limit = page_limit(q.limit)?;
    let before = id_cursor(q.cursor.as_deref())?;
    if st.store.get_webhook(id).await?.is_none() {
        return Err(ApiError::NotFound("no webhook with this id".into()));
    }
    let mut items = st
        .store
        .list_webhook_deliveries(id, before, limit + 1)
        .await?;
    let next_cursor = next_page(&mut items, limit, |d| d.id.to_string());
    Ok(Json(proto::Page {
        items: items.into_iter().map(delivery_to_proto).collect(),
        next_cursor,
    }))
}
