//! Storage of usage events: raw events, per-minute/hour/day rollups per key and outcome,
//! the last time each granted scope of a key was exercised, and their retention.
//!
//! Usage is telemetry, not a change to anything Keyward decides: recording it writes no
//! audit entry (like `record_last_used`), or the audit log would grow with traffic.

use async_trait::async_trait;
use uuid::Uuid;

use keyward_core::VerifyCode;
use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::posture::KeyUsage;
use keyward_core::time::Timestamp;
use keyward_core::usage::{Bucket, UsageEvent};

use crate::Result;

/// Whose usage a query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSubject {
    Key(Uuid),
    Identity(Uuid),
}

/// Verifications with one outcome in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub start: Timestamp,
    pub code: VerifyCode,
    pub count: u64,
}

/// A source address and how many verifications came from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopSource {
    pub ip: String,
    pub count: u64,
}

/// A key and how many verifications it had (every outcome), and how many were accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopKey {
    pub key_id: Uuid,
    pub identity_id: Uuid,
    pub count: u64,
    pub valid: u64,
}

/// A source that used a key: its address and the verifier's tags (either may be absent),
/// how many accepted verifications came from it and when the last one was.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySource {
    pub ip: Option<String>,
    pub tags: Option<serde_json::Value>,
    pub count: u64,
    pub last_seen: Timestamp,
}

/// What the retention job removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub rollups: u64,
}

/// The cut-off times of the retention job: rows strictly older are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCutoffs {
    /// Raw events (and the top-sources analytics built on them).
    pub raw_before: Timestamp,
    /// Per-minute rollups.
    pub minute_before: Timestamp,
    /// Per-hour and per-day rollups.
    pub rollup_before: Timestamp,
}

/// An identity and its keys with what usage says of each, for the posture report.
#[derive(Debug, Clone)]
pub struct PostureInput {
    pub identity: Identity,
    pub keys: Vec<(KeyRecord, KeyUsage)>,
}

/// Rows deleted per statement by the retention job, so the embedded store's single
/// writer is never held for long.
pub const PRUNE_CHUNK: i64 = 10_000;

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Stores a batch of events, adds the events with a key to the minute, hour and day
    /// rollups, and marks the scopes that accepted events exercised, in one transaction.
    async fn record_usage(&self, events: &[UsageEvent]) -> Result<()>;

    /// Writes counts a store keeps behind the events (the embedded store adds rollups
    /// and scope uses up over a few seconds): all of them (`everything`, on shutdown),
    /// else those that have waited long enough. The usage writer calls it on every
    /// tick, so they never wait much longer, busy or idle. Reads never depend on it: a
    /// store settles before it reads counts.
    async fn settle_usage(&self, everything: bool) -> Result<()> {
        let _ = everything;
        Ok(())
    }

    /// Counts per bucket start and outcome for `subject`, over buckets starting in
    /// `[bucket.start(from), to)`, ordered by start then code.
    async fn usage_counts(
        &self,
        subject: UsageSubject,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageCount>>;

    /// The source addresses with the most verifications in `[from, to)` (raw events, so
    /// within the raw retention), optionally of one key or identity.
    async fn top_sources(
        &self,
        subject: Option<UsageSubject>,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopSource>>;

    /// The keys with the most verifications in the hours starting in
    /// `[hour of from, to)` (hourly rollups), optionally of one identity.
    async fn top_keys(
        &self,
        identity_id: Option<Uuid>,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopKey>>;

    /// Removes events and rollups older than the cut-offs.
    async fn prune_usage(&self, cutoffs: RetentionCutoffs) -> Result<Pruned>;

    /// Live identities (one, or all ordered by id) with all their keys, and for each key
    /// the granted scopes exercised at or after `since`.
    async fn posture_inputs(
        &self,
        identity_id: Option<Uuid>,
        since: Timestamp,
    ) -> Result<Vec<PostureInput>>;

    /// The sources of the accepted (`VALID`) verifications of `key_id` at or after
    /// `since` (raw events, so within the raw retention), grouped by address and tags,
    /// the most recently seen first, at most `limit`.
    async fn key_sources_since(
        &self,
        key_id: Uuid,
        since: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeySource>>;

    /// Old keys in their grace: rotated (`rotated_to` set) with `revoked_at` in
    /// `(now, until]`, whose `key.old_version_in_use` notice is not written yet, and
    /// with accepted verifications in the minute rollups since the minute their
    /// successor was created (an index lookup per key: unused keys are left out here,
    /// not by scanning raw events; the caller checks the exact sources); the soonest
    /// revoked first, at most `limit`.
    async fn keys_in_grace(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeyRecord>>;

    /// Remembers that the old-version notice of `key_id` was sent and writes its audit
    /// entry, in one transaction, unless it was remembered already (another node, an
    /// earlier run). Returns whether it wrote.
    async fn record_old_version_notice(&self, key_id: Uuid, audit: &AuditEntry) -> Result<bool>;
}

/// Parses a stored outcome code.
pub(crate) fn parse_code(s: &str) -> Result<VerifyCode> {
    VerifyCode::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| crate::StoreError::Corrupt(format!("usage code: unknown {s:?}")))
}

/// The rollup rows a batch adds to: `(granularity, bucket start µs, key, code) →
/// (identity, count)`, ordered (so concurrent writers lock rows in one order).
pub(crate) fn rollup_rows(
    events: &[UsageEvent],
) -> std::collections::BTreeMap<(Bucket, i64, Uuid, VerifyCode), (Uuid, i64)> {
    let mut rows = std::collections::BTreeMap::new();
    for e in events {
        let (Some(key), Some(identity)) = (e.key_id, e.identity_id) else {
            continue;
        };
        let at = e.at.timestamp_micros();
        for b in Bucket::ALL {
            rows.entry((b, b.start_micros(at), key, e.code))
                .or_insert((identity, 0))
                .1 += 1;
        }
    }
    rows
}

/// The latest use of each (key, exercised scope) in a batch of accepted events, ordered.
pub(crate) fn scope_uses(
    events: &[UsageEvent],
) -> std::collections::BTreeMap<(Uuid, &str), Timestamp> {
    let mut uses = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e.code == VerifyCode::Valid) {
        let Some(key) = e.key_id else { continue };
        for s in &e.scopes {
            let t = uses.entry((key, s.as_str())).or_insert(e.at);
            *t = (*t).max(e.at);
        }
    }
    uses
}
