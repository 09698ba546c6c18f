//! Anomalies (issue 6): what the detectors raised, the detectors' cursor over the usage
//! events, and each identity's automatic-response policy.
//!
//! The jobs leader tails the stored usage events of every node (`usage_events_after`,
//! by time, a few seconds behind), feeds its detectors, and writes what they raise
//! together with the cursor's move (`record_anomalies`), so an anomaly is written once
//! even across restarts and a change of leader. A recorded anomaly is *pending* until
//! its response has run (`finish_anomaly`: `action_taken` set and the
//! `anomaly.detected` audit record written, which fires the webhook) — an outbox, so a
//! crash between the two leaves it pending, and the next leader finishes it.

use async_trait::async_trait;
use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};
use keyward_core::anomaly_response::AnomalyPolicy;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use uuid::Uuid;

use crate::Result;

/// An anomaly to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAnomaly {
    pub id: Uuid,
    pub anomaly: Anomaly,
    /// What the anomaly is about, for grouping: the key id, else the identity id, else
    /// the address or network (see the server's `anomaly_detect::subject`).
    pub subject: String,
}

/// A recorded anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnomaly {
    pub id: Uuid,
    pub anomaly: Anomaly,
    /// `None` while its response is pending.
    pub action_taken: Option<String>,
}

/// The cursor's move that a batch of anomalies goes with: from the position the caller
/// read (`None`: no cursor yet) to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorMove {
    pub from: Option<Timestamp>,
    pub to: Timestamp,
}

/// `GET /v1/anomalies`: newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyQuery {
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    /// Only anomalies at or after this time.
    pub since: Option<Timestamp>,
    pub kind: Option<AnomalyKind>,
    pub severity: Option<Severity>,
    /// The page after this (at, id) (exclusive): the last item of the previous page.
    pub before: Option<(Timestamp, Uuid)>,
    pub limit: u32,
}

#[async_trait]
pub trait AnomalyStore: Send + Sync + 'static {
    /// Where detection got to: usage events up to this time have been fed.
    async fn detect_cursor(&self) -> Result<Option<Timestamp>>;

    /// Replaces what `out` holds with the usage events of `after < at <= until`, oldest
    /// first, at most `limit`. The caller's buffer is reused: the tail reads thousands
    /// of events many times a minute, and a fresh megabyte each time costs more in page
    /// faults than the decoding (BENCHMARKS.md, "Gateway").
    async fn usage_events_after(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: u32,
        out: &mut Vec<UsageEvent>,
    ) -> Result<()>;

    /// How many usage events have `after < at <= until` (what a detector that skips
    /// ahead leaves unseen).
    async fn count_usage_events_after(&self, after: Timestamp, until: Timestamp) -> Result<u64>;

    /// Moves the cursor and records `items` (pending), in one transaction. An item is
    /// left out when an anomaly of the same kind and subject is at most `regroup` older
    /// than it (one alert per episode, whatever the detectors remember). Returns the ids
    /// written; `None` (and writes nothing) if the cursor is no longer at `cursor.from`:
    /// another node moved it, and the caller must start again from the stored cursor.
    async fn record_anomalies(
        &self,
        cursor: CursorMove,
        items: &[NewAnomaly],
        regroup: chrono::TimeDelta,
    ) -> Result<Option<Vec<Uuid>>>;

    /// Anomalies whose response has not run yet, oldest first.
    async fn pending_anomalies(&self, limit: u32) -> Result<Vec<StoredAnomaly>>;

    /// Records the response's outcome and writes `audit` (the `anomaly.detected` record)
    /// in one transaction, if the anomaly is still pending. Returns whether it was.
    async fn finish_anomaly(
        &self,
        id: Uuid,
        action_taken: &str,
        audit: &AuditEntry,
    ) -> Result<bool>;

    async fn get_anomaly(&self, id: Uuid) -> Result<Option<StoredAnomaly>>;

    async fn list_anomalies(&self, q: &AnomalyQuery) -> Result<Vec<StoredAnomaly>>;

    /// The identity's policy, if one was set (otherwise [`AnomalyPolicy::default`]
    /// applies).
    async fn get_anomaly_policy(&self, identity_id: Uuid) -> Result<Option<AnomalyPolicy>>;

    /// Sets the identity's policy, with its audit record.
    async fn put_anomaly_policy(
        &self,
        identity_id: Uuid,
        policy: &AnomalyPolicy,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<()>;

    /// Removes anomalies older than `before` (finished ones only). Returns how many.
    async fn prune_anomalies(&self, before: Timestamp) -> Result<u64>;
}

// ------------------------------------------------------------ shared row decoding

pub(crate) fn parse_kind(s: &str) -> Result<AnomalyKind> {
    AnomalyKind::parse(s).ok_or_else(|| crate::StoreError::Corrupt(format!("anomaly kind {s:?}")))
}

pub(crate) fn parse_severity(s: &str) -> Result<Severity> {
    Severity::parse(s).ok_or_else(|| crate::StoreError::Corrupt(format!("severity {s:?}")))
}

pub(crate) fn parse_policy(action: &str, min_severity: &str) -> Result<AnomalyPolicy> {
    Ok(AnomalyPolicy {
        action: keyward_core::anomaly_response::ResponseAction::parse(action)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("anomaly action {action:?}")))?,
        min_severity: parse_severity(min_severity)?,
    })
}

/// A usage event's columns as both stores keep them (scopes space-separated, ip and
/// tags as text).
pub(crate) struct EventCols {
    pub at: Timestamp,
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    pub code: String,
    pub ip: Option<String>,
    pub scopes: String,
    pub latency_us: i64,
    pub tags: Option<String>,
}

impl EventCols {
    pub(crate) fn into_event(self) -> Result<UsageEvent> {
        let corrupt = |what: &str| crate::StoreError::Corrupt(format!("usage_events.{what}"));
        Ok(UsageEvent {
            at: self.at,
            key_id: self.key_id,
            identity_id: self.identity_id,
            code: crate::usage::parse_code(&self.code)?,
            ip: self
                .ip
                .map(|ip| ip.parse().map_err(|_| corrupt("ip")))
                .transpose()?,
            scopes: self.scopes.split_whitespace().map(str::to_owned).collect(),
            latency_us: u32::try_from(self.latency_us.max(0)).unwrap_or(u32::MAX),
            tags: self
                .tags
                .map(|t| serde_json::from_str(&t).map_err(|_| corrupt("tags")))
                .transpose()?,
        })
    }
}
