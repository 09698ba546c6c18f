//! `GET /v1/anomalies` (contract) and each identity's automatic response,
//! `PUT|GET /v1/identities/{id}/anomaly-policy` (`anomalies/` detects and responds).
//!
//! Scopes: reading anomalies needs `keyward:anomalies:read`, which
//! `keyward:usage:read` and `keyward:keys:read` satisfy too (whoever may read a key's
//! usage may read what was odd about it); the policy is part of the identity:
//! `keyward:identities:read` / `keyward:identities:write`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use keyward_core::anomaly::{AnomalyKind, Severity};
use keyward_core::anomaly_response::{AnomalyPolicy, ResponseAction};
use keyward_proto as proto;
use keyward_store::anomalies::{AnomalyQuery, StoredAnomaly};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::audit_entry;
use super::identities::next_page;
use crate::auth::{
    ANOMALIES_READ, IDENTITIES_READ, IDENTITIES_WRITE, KEYS_READ, Principal, USAGE_READ,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IdPath, page_limit};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only anomalies about this key.
    pub key_id: Option<Uuid>,
    /// Only anomalies about this identity's keys.
    pub identity_id: Option<Uuid>,
    /// RFC 3339: only anomalies at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this kind (`NEW_NETWORK`, ...).
    pub kind: Option<String>,
    /// Only this severity (`low`, `medium`, `high`).
    pub severity: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn read_allowed(who: &Principal) -> Result<(), ApiError> {
    who.require(ANOMALIES_READ)
        .or_else(|_| who.require(USAGE_READ))
        .or_else(|_| who.require(KEYS_READ))
}

/// A page cursor: the last item's time (microseconds) and id.
fn page_cursor(a: &StoredAnomaly) -> String {
    format!("{}_{}", a.anomaly.at.timestamp_micros(), a.id)
}

fn parse_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::field("cursor", "not a cursor from a previous page");
    let (micros, id) = c.split_once('_').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

pub fn to_proto(a: StoredAnomaly) -> proto::Anomaly {
    proto::Anomaly {
        id: a.id,
        at: a.anomaly.at,
        key_id: a.anomaly.key_id,
        identity_id: a.anomaly.identity_id,
        kind: a.anomaly.kind.as_str().to_owned(),
        severity: a.anomaly.severity.as_str().to_owned(),
        detail: a.anomaly.detail,
        action_taken: a.action_taken,
        evidence: a.anomaly.evidence,
    }
}

#[utoipa::path(get, path = "/v1/anomalies", tag = "anomalies", params(ListQuery),
    responses((status = 200, body = proto::AnomalyList),
              (status = 400, body = proto::Problem), (status = 403, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<proto::AnomalyList>> {
    read_allowed(&who)?;
    let limit = page_limit(q.limit)?;
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            AnomalyKind::parse(k).ok_or_else(|| {
                let kinds: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::field("kind", format!("must be one of {}", kinds.join(", ")))
            })
        })
        .transpose()?;
    let severity = q
        .severity
        .as_deref()
        .map(|s| {
            Severity::parse(s)
                .ok_or_else(|| ApiError::field("severity", "must be low, medium or high"))
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(parse_cursor)
        .transpose()?;
    let query = AnomalyQuery {
        key_id: q.key_id,
        identity_id: q.identity_id,
        since: q.since,
        kind,
        severity,
        before,
        limit: limit + 1,
    };
    let mut items = st.store.list_anomalies(&query).await?;
    let next_cursor = next_page(&mut items, limit, page_cursor);
    Ok(Json(proto::AnomalyList {
        items: items.into_iter().map(to_proto).collect(),
        next_cursor,
    }))
}

fn policy_answer(identity_id: Uuid, p: AnomalyPolicy) -> proto::AnomalyPolicy {
    proto::AnomalyPolicy {
        identity_id,
        action: p.action.as_str().to_owned(),
        min_severity: p.min_severity.as_str().to_owned(),
    }
}

async fn live_identity(st: &AppState, id: Uuid) -> Result<(), ApiError> {
    match st.store.get_identity(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound("no identity with this id".into())),
    }
}

#[utoipa::path(get, path = "/v1/identities/{id}/anomaly-policy", tag = "anomalies",
    params(("id" = Uuid, Path, description = "the identity's id")),
    responses((status = 200, body = proto::AnomalyPolicy), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn show_policy(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::AnomalyPolicy>> {
    who.require(IDENTITIES_READ)?;
    live_identity(&st, id).await?;
    let policy = st.store.get_anomaly_policy(id).await?.unwrap_or_default();
    Ok(Json(policy_answer(id, policy)))
}

#[utoipa::path(put, path = "/v1/identities/{id}/anomaly-policy", tag = "anomalies",
    params(("id" = Uuid, Path, description = "the identity's id")),
    request_body = proto::PutAnomalyPolicy,
    responses((status = 200, body = proto::AnomalyPolicy),
              (status = 400, body = proto::Problem), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn put_policy(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<proto::PutAnomalyPolicy>,
) -> ApiResult<Json<proto::AnomalyPolicy>> {
    who.require(IDENTITIES_WRITE)?;
    let action = ResponseAction::parse(&body.action)
        .ok_or_else(|| ApiError::field("action", "must be notify or disable_key"))?;
    let min_severity = match body.min_severity.as_deref() {
        None => AnomalyPolicy::default().min_severity,
        Some(s) => Severity::parse(s)
            .ok_or_else(|| ApiError::field("min_severity", "must be low, medium or high"))?,
    };
    live_identity(&st, id).await?;
    let policy = AnomalyPolicy {
        action,
        min_severity,
    };
    let audit = audit_entry(
        &who,
        "identity.anomaly_policy",
        id,
        json!({"action": action, "min_severity": min_severity}),
    );
    st.store
        .put_anomaly_policy(id, &policy, crate::now(), &audit)
        .await?;
    Ok(Json(policy_answer(id, policy)))
}
