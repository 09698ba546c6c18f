//! The alerts and anomalies timeline.
//!
//! [`gather`] is the one place that collects timeline entries. Today they come from the
//! audit log: usage alerts (`key.rate_limited`, `key.usage_exceeded`), leaks
//! (`key.leaked`), old key versions still in use after a rotation
//! (`key.old_version_in_use`) and anomaly records (`anomaly.detected`, whose detail
//! carries `kind`, `severity`, `detail`, `evidence` and `action_taken`: the anomaly
//! responder, `anomalies/respond.rs`, writes one for every anomaly once its identity's
//! policy has run, so the audit log is the timeline's single source).

use askama::Template;
use axum::extract::State;
use chrono::{DateTime, Utc};
use keyward_store::console::AuditSearch;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::pages::{self, Chrome, PageError, PageResult};
use super::session::ConsoleUser;
use crate::auth::{AUDIT_READ, Principal};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Audit actions that are alerts, with the severity and explanation each has unless
/// its detail says otherwise.
const ALERT_ACTIONS: &[(&str, &str, &str)] = &[
    (
        "key.leaked",
        "high",
        "The key was reported leaked and has been revoked.",
    ),
    (
        "anomaly.detected",
        "medium",
        "Unusual use of the key was detected.",
    ),
    (
        "key.rate_limited",
        "medium",
        "The key hit its rate limit: calls were refused.",
    ),
    (
        "key.usage_exceeded",
        "medium",
        "The key used up its quota: calls were refused.",
    ),
    (
        "key.old_version_in_use",
        "low",
        "A rotated-out version of the key is still in use; its grace period is ending.",
    ),
];

/// One entry of the timeline.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// The audit action or anomaly kind (`key.rate_limited`, `anomaly.detected`).
    pub kind: String,
    /// `high`, `medium` or `low`.
    pub severity: String,
    /// What happened, in a sentence.
    pub explanation: String,
    /// The evidence: the record's detail, field by field.
    pub evidence: Vec<(String, String)>,
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    /// What Keyward did about it, if anything.
    pub action_taken: Option<String>,
}

/// Which entries to gather.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    pub limit: u32,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn uuid_in(detail: &Value, field: &str) -> Option<Uuid> {
    detail.get(field)?.as_str()?.parse().ok()
}

fn entry(record: keyward_core::model::AuditRecord) -> Entry {
    let e = record.entry;
    let (severity, explanation) = ALERT_ACTIONS
        .iter()
        .find(|(a, _, _)| *a == e.action)
        .map(|(_, s, x)| (*s, *x))
        .unwrap_or(("low", "An alert."));
    let d = &e.detail;
    let key_id = uuid_in(d, "key_id").or_else(|| {
        // Key alerts are audit-logged with the key as their target.
        e.target
            .parse()
            .ok()
            .filter(|_| e.action.starts_with("key."))
    });
    let kind = match d.get("kind").and_then(Value::as_str) {
        Some(k) if e.action == "anomaly.detected" => format!("anomaly: {k}"),
        _ => e.action.clone(),
    };
    let evidence = d
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "key_id" | "identity_id" | "severity" | "action_taken" | "kind"
                    )
                })
                .map(|(k, v)| (k.clone(), text(v)))
                .collect()
        })
        .unwrap_or_default();
    Entry {
        at: e.at,
        kind,
        severity: d
            .get("severity")
            .and_then(Value::as_str)
            .unwrap_or(severity)
            .to_owned(),
        explanation: d
            .get("explanation")
            .and_then(Value::as_str)
            .unwrap_or(explanation)
            .to_owned(),
        evidence,
        key_id,
        identity_id: uuid_in(d, "identity_id"),
        action_taken: d.get("action_taken").map(text),
    }
}

/// The timeline's entries, newest first. Reading them needs `keyward:audit:read`.
pub async fn gather(st: &AppState, who: &Principal, f: &Filter) -> Result<Vec<Entry>, PageError> {
    who.require(AUDIT_READ)?;
    // Key alerts name the key as their target, anomaly records (whose target is the
    // anomaly) in their detail: a substring search finds both.
    let search = AuditSearch {
        actions: ALERT_ACTIONS
            .iter()
            .map(|(a, _, _)| (*a).to_owned())
            .collect(),
        text: f.key_id.or(f.identity_id).map(|i| i.to_string()),
        limit: f.limit.max(1),
        ..Default::default()
    };
    let records = st.store.search_audit(&search).await?;
    Ok(records.into_iter().map(entry).collect())
}

#[derive(Template)]
#[template(path = "console/alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    key_id: Option<Uuid>,
    identity_id: Option<Uuid>,
}

pub async fn timeline(
    State(st): State<AppState>,
    user: ConsoleUser,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> PageResult {
    let f = Filter {
        key_id: q.key_id,
        identity_id: q.identity_id,
        limit: 200,
    };
    let entries = gather(&st, &user.who, &f).await?;
    Ok(pages::ok(AlertsPage {
        chrome: Chrome::new(&user, "alerts"),
        entries,
    }))
}

/// Used by templates: the time of an entry.
impl Entry {
    pub fn when(&self) -> String {
        pages::when(self.at)
    }
}
