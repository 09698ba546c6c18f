//! The audit log as a filterable table, newest first, with the result of the hash
//! chain's verification (`GET /v1/audit/verify`).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use keyward_proto as proto;
use keyward_store::console::AuditSearch;
use serde::Deserialize;

use super::pages::{self, Chrome, PageResult};
use super::session::ConsoleUser;
use crate::auth::AUDIT_READ;
use crate::extract::ApiQuery;
use crate::routes::audit_verify;
use crate::state::AppState;

const PAGE: u32 = 50;

#[derive(Debug, Deserialize, Default)]
pub struct AuditFilter {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    q: String,
    before: Option<i64>,
}

pub struct Row {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source_ip: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/audit_table.html")]
struct AuditTable {
    filter: AuditFilter,
    rows: Vec<Row>,
    next_before: Option<i64>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage<'a> {
    chrome: Chrome,
    filter: &'a AuditFilter,
    /// The rendered [`AuditTable`].
    table: String,
    chain: proto::AuditVerification,
}

fn blank_to_none(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

pub async fn table(
    State(st): State<AppState>,
    user: ConsoleUser,
    headers: HeaderMap,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> PageResult {
    user.who.require(AUDIT_READ)?;
    let search = AuditSearch {
        before: filter.before,
        action_prefix: blank_to_none(&filter.action),
        actor: blank_to_none(&filter.actor),
        text: blank_to_none(&filter.q),
        limit: PAGE + 1,
        ..Default::default()
    };
    let mut records = st.store.search_audit(&search).await?;
    let next_before = if records.len() > PAGE as usize {
        records.truncate(PAGE as usize);
        records.last().map(|r| r.seq)
    } else {
        None
    };
    let rows = records
        .into_iter()
        .map(|r| Row {
            seq: r.seq,
            at: pages::when(r.entry.at),
            actor: r.entry.actor,
            action: r.entry.action,
            target: r.entry.target,
            source_ip: r.entry.source_ip.unwrap_or_default(),
            detail: r.entry.detail.to_string(),
        })
        .collect();
    let table = AuditTable {
        filter,
        rows,
        next_before,
    };
    // The filter form asks through htmx for the table alone.
    if headers.contains_key("hx-request") {
        return Ok(pages::ok(table));
    }
    let axum::Json(chain) = audit_verify::verify(State(st.clone()), user.who.clone()).await?;
    let html = table
        .render()
        .map_err(|e| crate::error::ApiError::Internal(format!("audit table template: {e}")))?;
    Ok(pages::ok(AuditPage {
        chrome: Chrome::new(&user, "audit"),
        filter: &table.filter,
        table: html,
        chain,
    }))
}
