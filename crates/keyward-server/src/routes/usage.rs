//! `GET /v1/usage` (contract) and `GET /v1/usage/top`: usage analytics from the usage
//! events (`usage.rs` records them, `UsageStore` keeps them).
//!
//! Scope: `keyward:usage:read`, which `keyward:keys:read` also satisfies (whoever may
//! read a key may read its usage).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use keyward_core::usage::Bucket;
use keyward_proto as proto;
use keyward_store::usage::UsageSubject;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{KEYS_READ, Principal, USAGE_READ};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Buckets one answer may span at most.
pub const MAX_BUCKETS: i64 = 10_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The key whose usage to count (this or `identity_id`).
    pub key_id: Option<Uuid>,
    /// The identity whose keys' usage to count (this or `key_id`).
    pub identity_id: Option<Uuid>,
    /// RFC 3339; default: `to` minus 1 hour (minute), 1 day (hour) or 30 days (day).
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; default: now.
    pub to: Option<DateTime<Utc>>,
    /// `minute`, `hour` (default) or `day`.
    pub bucket: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// Only this key's sources.
    pub key_id: Option<Uuid>,
    /// Only this identity's sources and keys.
    pub identity_id: Option<Uuid>,
    /// RFC 3339; default: `to` minus 1 day.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; default: now.
    pub to: Option<DateTime<Utc>>,
    /// Entries per list, 1-100 (default 10).
    pub limit: Option<u32>,
}

pub fn require_usage_read(who: &Principal) -> Result<(), ApiError> {
    who.require(USAGE_READ).or_else(|_| who.require(KEYS_READ))
}

/// `from` and `to` with their defaults; `to` after `from`.
fn window(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    default_span: TimeDelta,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = to.unwrap_or_else(crate::now);
    let from = from.unwrap_or(to - default_span);
    if from >= to {
        return Err(ApiError::field("to", "must be later than from"));
    }
    Ok((from, to))
}

async fn subject(
    st: &AppState,
    key_id: Option<Uuid>,
    identity_id: Option<Uuid>,
) -> Result<Option<UsageSubject>, ApiError> {
    match (key_id, identity_id) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "identity_id",
            "give key_id or identity_id, not both",
        )),
        (Some(k), None) => match st.store.get_key(k).await? {
            Some(_) => Ok(Some(UsageSubject::Key(k))),
            None => Err(ApiError::NotFound("no such key".into())),
        },
        (None, Some(i)) => match st.store.get_identity(i).await? {
            Some(_) => Ok(Some(UsageSubject::Identity(i))),
            None => Err(ApiError::NotFound("no such identity".into())),
        },
        (None, None) => Ok(None),
    }
}

#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = proto::UsageResponse),
              (status = 400, body = proto::Problem), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn usage(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<proto::UsageResponse>> {
    require_usage_read(&who)?;
    let bucket = match q.bucket.as_deref() {
        None => Bucket::Hour,
        Some(b) => Bucket::parse(b)
            .ok_or_else(|| ApiError::field("bucket", "must be minute, hour or day"))?,
    };
    let default_span = match bucket {
        Bucket::Minute => TimeDelta::hours(1),
        Bucket::Hour => TimeDelta::days(1),
        Bucket::Day => TimeDelta::days(30),
    };
    let (from, to) = window(q.from, q.to, default_span)?;
    if (to - from).num_microseconds().unwrap_or(i64::MAX) / bucket.micros() >= MAX_BUCKETS {
        return Err(ApiError::field(
            "from",
            format!("the range spans more than {MAX_BUCKETS} buckets; use a larger bucket"),
        ));
    }
    let subject = subject(&st, q.key_id, q.identity_id)
        .await?
        .ok_or_else(|| ApiError::field("key_id", "give key_id or identity_id"))?;
    let counts = st.store.usage_counts(subject, bucket, from, to).await?;
    let mut buckets: BTreeMap<DateTime<Utc>, proto::CodeCounts> = BTreeMap::new();
    let mut total = proto::CodeCounts::new();
    for c in counts {
        *buckets
            .entry(c.start)
            .or_default()
            .entry(c.code.as_str().to_owned())
            .or_default() += c.count;
        *total.entry(c.code.as_str().to_owned()).or_default() += c.count;
    }
    Ok(Json(proto::UsageResponse {
        buckets: buckets
            .into_iter()
            .map(|(start, counts)| proto::UsageBucket { start, counts })
            .collect(),
        total,
        bucket: bucket.as_str().to_owned(),
        from: Some(bucket.start(from)),
        to: Some(to),
    }))
}

#[utoipa::path(get, path = "/v1/usage/top", tag = "usage", params(TopQuery),
    responses((status = 200, body = proto::UsageTopResponse),
              (status = 400, body = proto::Problem), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn top(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<TopQuery>,
) -> ApiResult<Json<proto::UsageTopResponse>> {
    require_usage_read(&who)?;
    let limit = match q.limit {
        None => 10,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => return Err(ApiError::field("limit", "must be between 1 and 100")),
    };
    let (from, to) = window(q.from, q.to, TimeDelta::days(1))?;
    let subject = subject(&st, q.key_id, q.identity_id).await?;
    let sources = st.store.top_sources(subject, from, to, limit).await?;
    let keys = match subject {
        Some(UsageSubject::Key(_)) => vec![],
        _ => st.store.top_keys(q.identity_id, from, to, limit).await?,
    };
    Ok(Json(proto::UsageTopResponse {
        sources: sources
            .into_iter()
            .map(|s| proto::TopSource {
                ip: s.ip,
                count: s.count,
            })
            .collect(),
        keys: keys
            .into_iter()
            .map(|k| proto::TopKey {
                key_id: k.key_id,
                identity_id: k.identity_id,
                count: k.count,
                valid: k.valid,
            })
            .collect(),
    }))
}
