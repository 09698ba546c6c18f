//! Rollups and scope uses written behind the usage events they count.
//!
//! Why: every usage event adds to three rollup rows (its key's minute, hour and day) and
//! to its key's scope uses. Written with each batch, that was four B-tree upserts per
//! event whenever traffic spreads over many keys (20,000 keys: most events of a batch
//! have a key of their own), about 4 µs of the node's CPU per verification. Added up
//! over a minute instead, a busy key costs four upserts per settle, not per event.
//!
//! The events themselves are still inserted, durably, batch by batch; only their
//! counting waits. Nothing is lost to a crash: `usage_rollup_watermark` names the last
//! event whose rollups are written, in the same transaction as those rollups, and
//! opening the store counts the events beyond it ([`super::SqliteStore::recover_rollups`]).
//! Nothing is stale to a reader either: the store settles what is pending before any
//! read of rollups or scope uses.
//!
//! One process at a time defers: the one holding an exclusive lock on the file
//! `<database>-usage.lock` (an OS file lock, released when the process dies). Only it
//! recounts on opening, so another process opening the same folder (`keyward audit
//! verify` beside the server) can never count the server's pending events a second
//! time; a second store on the folder writes its counts with each batch, as before.
//!
//! **Architecture Invariant:** every usage event in a block (`event_blocks.rs`) with an
//! id up to `usage_rollup_watermark.through_block` is counted in `usage_rollups` and
//! `usage_key_scopes`, and none after it is (tested by
//! `rollups_lost_to_a_crash_are_recounted_on_opening`).

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;
use std::time::{Duration, Instant};

use keyward_core::VerifyCode;
use keyward_core::time::Timestamp;
use keyward_core::usage::{Bucket, UsageEvent};
use rusqlite::{Transaction, params};
use smallvec::SmallVec;
use uuid::Uuid;

/// Pending counts are written at least this often... A settle upserts every busy key's
/// minute, hour and day rows and its scope uses, whatever the traffic, so its cost per
/// event falls as the interval grows: at 5 s, with 40,000 verifications/s spread over
/// 20,000 keys, settling took 10% of the node's CPU; at 60 s, a twelfth of that. Reads
/// settle first, so nothing reads stale counts; a crash recounts at most this long.
pub(crate) const SETTLE_EVERY: Duration = Duration::from_secs(60);
/// ...or once this many rows are pending (bounds memory: ~100 bytes a row, 50 MB).
const MAX_PENDING_ROWS: usize = 500_000;

const UPSERT_ROLLUP: &str = "INSERT INTO usage_rollups \
    (granularity, start, key_id, identity_id, code, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
    ON CONFLICT (granularity, key_id, start, code) DO UPDATE SET count = count + excluded.count";

const UPSERT_SCOPE_USE: &str = "INSERT INTO usage_key_scopes (key_id, scope, last_used_at) \
    VALUES (?1, ?2, ?3) \
    ON CONFLICT (key_id, scope) \
    DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)";

pub(crate) const SET_WATERMARK: &str =
    "UPDATE usage_rollup_watermark SET through_block = ?1 WHERE id = 1";

/// A rollup row: granularity, bucket start (µs), key and outcome.
type RollupKey = (Bucket, i64, Uuid, VerifyCode);

/// Counts of events already inserted, not yet written, per key: its minutes by outcome
/// (the hour and day rows are summed from the minutes when written) and its exercised
/// scopes. Sorted only when written, so that SQLite walks its B-trees in order.
///
/// Why one entry per key, held inline: with traffic spread over many keys nearly every
/// event finds its key's counts cold in the CPU cache, and each separate map, vector or
/// string on the way was one more cache miss per event (two maps and a list of scope
/// names had cost ~5% of a node's CPU under verify load: `bench/load.sh`). Scope names
/// are interned: a node has few of them, so their table stays in cache, and a key's
/// entry holds small ids, compared without reading a name. Hashed with foldhash: the
/// keys are ids of stored keys, and the names granted scopes, which a client cannot
/// choose.
#[derive(Debug, Default)]
pub(crate) struct PendingRollups {
    keys: HashMap<Uuid, KeyCounts, RandomState>,
    /// Interned scope names: id → name, and name → id.
    scope_names: Vec<Box<str>>,
    scope_ids: HashMap<Box<str>, u32, RandomState>,
    /// (key, outcome, minute) rows and (key, scope) rows pending.
    minute_rows: usize,
    use_rows: usize,
    /// The id of the last event block counted here.
    through_block: i64,
    /// When the oldest pending count was added.
    since: Option<Instant>,
}

/// A key's pending counts. Inline for the usual few minutes, outcomes and scopes.
#[derive(Debug, Default)]
struct KeyCounts {
    /// The key's identity, as its first event with one named it.
    identity: Option<Uuid>,
    /// (minute start µs, outcome, count).
    minutes: SmallVec<[(i64, VerifyCode, i64); 2]>,
    /// (interned scope, latest use).
    uses: SmallVec<[(u32, Timestamp); 2]>,
}

impl PendingRollups {
    pub(crate) fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    /// When the oldest pending count was added (`None`: nothing pending).
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Whether the oldest pending count has waited [`SETTLE_EVERY`].
    pub(crate) fn aged(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= SETTLE_EVERY)
    }

    /// Whether accepted verifications of any of `keys` are among the pending counts.
    pub(crate) fn counts_valid_use_of(&self, keys: &std::collections::HashSet<Uuid>) -> bool {
        keys.iter().any(|key| {
            self.keys.get(key).is_some_and(|k| {
                k.identity.is_some() && k.minutes.iter().any(|m| m.1 == VerifyCode::Valid)
            })
        })
    }

    /// Whether, with `events` added, the counts are due to be written.
    pub(crate) fn due_with(&self, events: &[UsageEvent]) -> bool {
        // A minute row becomes up to three rollup rows.
        self.aged() || 3 * self.minute_rows + self.use_rows + 4 * events.len() > MAX_PENDING_ROWS
    }

    /// Adds the counts of `events`, inserted in blocks up to `through_block`: as
    /// [`rollup_rows`](crate::usage::rollup_rows) and
    /// [`scope_uses`](crate::usage::scope_uses) count them.
    pub(crate) fn add(&mut self, events: &[UsageEvent], through_block: i64) {
        let PendingRollups {
            keys,
            scope_names,
            scope_ids,
            minute_rows,
            use_rows,
            ..
        } = self;
        for e in events {
            let Some(key) = e.key_id else { continue };
            let uses = e.code == VerifyCode::Valid && !e.scopes.is_empty();
            if e.identity_id.is_none() && !uses {
                continue;
            }
            let counts = keys.entry(key).or_default();
            if let Some(identity) = e.identity_id {
                counts.identity.get_or_insert(identity);
                let minute = Bucket::Minute.start_micros(e.at.timestamp_micros());
                match counts
                    .minutes
                    .iter_mut()
                    .find(|m| m.0 == minute && m.1 == e.code)
                {
                    Some(m) => m.2 += 1,
                    None => {
                        counts.minutes.push((minute, e.code, 1));
                        *minute_rows += 1;
                    }
                }
            }
            if !uses {
                continue;
            }
            for scope in &e.scopes {
                let id = match scope_ids.get(scope.as_str()) {
                    Some(&id) => id,
                    None => {
                        let id = scope_names.len() as u32;
                        scope_names.push(scope.as_str().into());
                        scope_ids.insert(scope.as_str().into(), id);
                        id
                    }
                };
                match counts.uses.iter_mut().find(|u| u.0 == id) {
                    Some(u) => u.1 = u.1.max(e.at),
                    None => {
                        counts.uses.push((id, e.at));
                        *use_rows += 1;
                    }
                }
            }
        }
        self.through_block = through_block;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Writes the pending counts and the watermark into `tx` (the caller clears them
    /// once `tx` commits).
    pub(crate) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let rollups = self.rollup_rows();
        write_counts(tx, rollups.into_iter(), self.scope_uses().into_iter())?;
        tx.execute(SET_WATERMARK, [self.through_block])?;
        Ok(())
    }

    /// The minute, hour and day rows the pending minutes add to, in key order.
    fn rollup_rows(&self) -> BTreeMap<RollupKey, (Uuid, i64)> {
        let mut rows = BTreeMap::new();
        for (&key, counts) in &self.keys {
            let Some(identity) = counts.identity else {
                continue;
            };
            for &(minute, code, n) in &counts.minutes {
                for b in Bucket::ALL {
                    rows.entry((b, b.start_micros(minute), key, code))
                        .or_insert((identity, 0))
                        .1 += n;
                }
            }
        }
        rows
    }

    /// The latest use of each (key, scope) pending, in key order.
    fn scope_uses(&self) -> Vec<(Uuid, &str, Timestamp)> {
        let mut uses: Vec<(Uuid, &str, Timestamp)> = self
            .keys
            .iter()
            .flat_map(|(key, counts)| {
                counts
                    .uses
                    .iter()
                    .map(|&(id, at)| (*key, &*self.scope_names[id as usize], at))
            })
            .collect();
        uses.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        uses
    }

    pub(crate) fn clear(&mut self) {
        *self = PendingRollups::default();
    }
}

/// Upserts rollup counts and scope uses (additive: counts add up, last uses take the
/// latest), in key order.
pub(crate) fn write_counts<'s>(
    tx: &Transaction<'_>,
    rollups: impl Iterator<Item = ((Bucket, i64, Uuid, VerifyCode), (Uuid, i64))>,
    uses: impl Iterator<Item = (Uuid, &'s str, Timestamp)>,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(UPSERT_ROLLUP)?;
    let (mut key_buf, mut identity_buf) = (UuidText::new(), UuidText::new());
    let mut yielder = super::usage::Yielder::new();
    for ((bucket, start, key, code), (identity, n)) in rollups {
        yielder.tick();
        upsert.execute(params![
            bucket.as_str(),
            start,
            key_buf.text(key),
            identity_buf.text(identity),
            code.as_str(),
            n,
        ])?;
    }
    let mut upsert = tx.prepare_cached(UPSERT_SCOPE_USE)?;
    for (key, scope, at) in uses {
        yielder.tick();
        upsert.execute(params![key_buf.text(key), scope, at.timestamp_micros()])?;
    }
    Ok(())
}

/// A uuid's hyphenated text (the store's uuid format), written into a reused buffer
/// rather than a fresh `String` per row.
pub(crate) struct UuidText([u8; uuid::fmt::Hyphenated::LENGTH]);

impl UuidText {
    pub(crate) fn new() -> UuidText {
        UuidText([0; uuid::fmt::Hyphenated::LENGTH])
    }

    pub(crate) fn text(&mut self, id: Uuid) -> &str {
        id.hyphenated().encode_lower(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{rollup_rows, scope_uses};

    /// Events over a few keys, identities, codes, scopes and minutes, some without a
    /// key or an identity: every case the counting distinguishes.
    fn events() -> Vec<UsageEvent> {
        let keys = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let codes = [
            VerifyCode::Valid,
            VerifyCode::RateLimited,
            VerifyCode::InsufficientScope,
            VerifyCode::NotFound,
        ];
        let base: Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        (0..500u32)
            .map(|n| {
                let key = (n % 7 != 0).then(|| keys[n as usize % 3]);
                UsageEvent {
                    at: base + chrono::Duration::seconds(i64::from(n * 37 % 7200)),
                    key_id: key,
                    identity_id: key.filter(|_| n % 11 != 0).map(|_| Uuid::from_u128(9)),
                    code: codes[n as usize % 4],
                    ip: None,
                    scopes: match n % 3 {
                        0 => vec![],
                        1 => vec!["orders:read".into()],
                        _ => vec!["orders:read".into(), format!("s{}", n % 5)],
                    },
                    latency_us: 1,
                    tags: None,
                }
            })
            .collect()
    }

    #[test]
    fn adds_up_as_the_per_batch_counts_do() {
        let all = events();
        let mut pending = PendingRollups::default();
        for (n, batch) in all.chunks(64).enumerate() {
            pending.add(batch, n as i64);
        }
        let expected_rows = rollup_rows(&all);
        assert_eq!(pending.rollup_rows(), expected_rows);
        let minutes = expected_rows.keys().filter(|r| r.0 == Bucket::Minute);
        assert_eq!(pending.minute_rows, minutes.count());
        let uses: Vec<_> = pending
            .scope_uses()
            .into_iter()
            .map(|(k, s, at)| ((k, s.to_owned()), at))
            .collect();
        let expected: Vec<_> = scope_uses(&all)
            .into_iter()
            .map(|((k, s), at)| ((k, s.to_owned()), at))
            .collect();
        assert_eq!(uses, expected);
        assert_eq!(pending.use_rows, expected.len());
        assert_eq!(pending.through_block, (all.len() / 64) as i64);
    }
}
