//! `GET /v1/audit`: the audit log, oldest first.

use axum::Json;
use axum::extract::State;
use keyward_proto as proto;
use serde::Deserialize;

use crate::auth::{AUDIT_READ, Principal};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, page_limit};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records after this sequence number.
    pub after: Option<i64>,
    /// Same as `after`: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = proto::Page<proto::AuditRecord>)),
    security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<proto::Page<proto::AuditRecord>>> {
    who.require(AUDIT_READ)?;
    let limit = page_limit(q.limit)?;
    let after = match (q.after, q.cursor.as_deref().filter(|c| !c.is_empty())) {
        (Some(a), _) => Some(a),
        (None, Some(c)) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor from a previous page"))?,
        ),
        (None, None) => None,
    };
    let mut items = st.store.list_audit(after, limit + 1).await?;
    let next_cursor = super::identities::next_page(&mut items, limit, |r| r.seq.to_string());
    Ok(Json(proto::Page {
        items: items.into_iter().map(convert::audit).collect(),
        next_cursor,
    }))
}
