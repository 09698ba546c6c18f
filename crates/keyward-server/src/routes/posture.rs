//! `GET /v1/reports/posture` (contract): findings per identity and a score. The rules
//! are `keyward_core::posture`; the data comes from `UsageStore::posture_inputs`.
//!
//! Scopes: `keyward:keys:read` and `keyward:identities:read` (it names both). Identities
//! are listed worst score first.

use axum::Json;
use axum::extract::State;
use keyward_core::posture::{self, FindingKind, PostureSettings};
use keyward_proto as proto;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{IDENTITIES_READ, KEYS_READ, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Largest `stale_days` and `max_age_days`: 10 years.
const MAX_DAYS: u32 = 3660;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PostureQuery {
    /// Only this identity.
    pub identity_id: Option<Uuid>,
    /// Unused this many days makes a key STALE and a scope unused (default 90).
    pub stale_days: Option<u32>,
    /// Keys older than this many days are NOT_ROTATED (default 90).
    pub max_age_days: Option<u32>,
}

fn days(field: &str, v: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(d) if (1..=MAX_DAYS).contains(&d) => Ok(d),
        Some(_) => Err(ApiError::field(
            field,
            format!("must be between 1 and {MAX_DAYS}"),
        )),
    }
}

fn kind(k: FindingKind) -> proto::FindingKind {
    match k {
        FindingKind::NoExpiry => proto::FindingKind::NoExpiry,
        FindingKind::NotRotated => proto::FindingKind::NotRotated,
        FindingKind::Stale => proto::FindingKind::Stale,
        FindingKind::UnusedScopes => proto::FindingKind::UnusedScopes,
        FindingKind::NoIpRestriction => proto::FindingKind::NoIpRestriction,
        FindingKind::AdminKey => proto::FindingKind::AdminKey,
    }
}

#[utoipa::path(get, path = "/v1/reports/posture", tag = "reports", params(PostureQuery),
    responses((status = 200, body = proto::PostureReport),
              (status = 400, body = proto::Problem), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn report(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PostureQuery>,
) -> ApiResult<Json<proto::PostureReport>> {
    who.require(KEYS_READ)?;
    who.require(IDENTITIES_READ)?;
    let defaults = PostureSettings::default();
    let settings = PostureSettings {
        stale_days: days("stale_days", q.stale_days, defaults.stale_days)?,
        max_age_days: days("max_age_days", q.max_age_days, defaults.max_age_days)?,
    };
    let now = crate::now();
    let since = now - chrono::TimeDelta::days(i64::from(settings.stale_days));
    let inputs = st.store.posture_inputs(q.identity_id, since).await?;
    if q.identity_id.is_some() && inputs.is_empty() {
        return Err(ApiError::NotFound("no such identity".into()));
    }
    let mut identities: Vec<proto::PostureIdentity> = inputs
        .into_iter()
        .map(|input| {
            let findings: Vec<posture::Finding> = input
                .keys
                .iter()
                .filter(|(k, _)| posture::is_live(k, now))
                .flat_map(|(k, usage)| posture::key_findings(k, usage, settings, now))
                .collect();
            proto::PostureIdentity {
                id: input.identity.id,
                name: input.identity.name,
                owner: input.identity.owner,
                score: posture::score(&findings),
                findings: findings
                    .into_iter()
                    .map(|f| proto::PostureFinding {
                        key_id: f.key_id,
                        kind: kind(f.kind),
                        detail: f.detail,
                        scopes: f.scopes,
                    })
                    .collect(),
            }
        })
        .collect();
    identities.sort_by(|a, b| a.score.cmp(&b.score).then_with(|| a.name.cmp(&b.name)));
    Ok(Json(proto::PostureReport {
        identities,
        stale_days: settings.stale_days,
        max_age_days: settings.max_age_days,
    }))
}
