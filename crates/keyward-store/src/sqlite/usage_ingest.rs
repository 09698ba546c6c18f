//! Usage ingestion on a rusqlite connection with prepared statements.
//!
//! Why: every verification becomes a usage event, and the writer that stores them shares
//! the machine with the verifications themselves; on a saturated 2-core machine every
//! microsecond the writer spends per event is a microsecond verify does not get. Through
//! sqlx each event cost ~7 µs of CPU (a multi-row `INSERT` built and bound as boxed
//! arguments, then handed to the connection's thread); a cached prepared statement
//! executed once per row on the caller's thread, binding from stack buffers, costs a
//! fraction of that (figures in BENCHMARKS.md, "Usage events").
//!
//! Writes stay serialised in-process: the caller holds the sqlx writer connection (the
//! single write permit, see `sqlite.rs`) for the whole transaction, so this connection
//! never races the group commit; `busy_timeout` covers other processes. The transaction
//! is `BEGIN IMMEDIATE` and `synchronous=FULL`, as on the writer: a batch is durable when
//! `write` returns.
//!
//! The blocking work runs under `tokio::task::block_in_place` on a multi-threaded
//! runtime, so the worker's other tasks move elsewhere meanwhile.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use keyward_core::usage::UsageEvent;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use uuid::Uuid;

use super::BUSY_TIMEOUT;
use crate::usage::{rollup_rows, scope_uses};
use crate::{Result, StoreError};

const INSERT_EVENT: &str = "INSERT INTO usage_events \
    (at, key_id, identity_id, code, ip, scopes, latency_us, tags) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const UPSERT_ROLLUP: &str = "INSERT INTO usage_rollups \
    (granularity, start, key_id, identity_id, code, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
    ON CONFLICT (granularity, key_id, start, code) DO UPDATE SET count = count + excluded.count";

const UPSERT_SCOPE_USE: &str = "INSERT INTO usage_key_scopes (key_id, scope, last_used_at) \
    VALUES (?1, ?2, ?3) \
    ON CONFLICT (key_id, scope) \
    DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)";

/// The ingestion connection, opened on first use and reopened after a failure.
pub(crate) struct UsageIngest {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for UsageIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageIngest")
            .field("path", &self.path)
            .finish()
    }
}

impl UsageIngest {
    pub(crate) fn new(path: PathBuf) -> UsageIngest {
        UsageIngest {
            path,
            conn: Mutex::new(None),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "fullfsync", "ON")?;
        conn.pragma_update(None, "checkpoint_fullfsync", "ON")?;
        Ok(conn)
    }

    /// Writes one batch in one durable transaction. The caller holds the write permit.
    pub(crate) fn write(&self, events: &[UsageEvent]) -> Result<()> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.open().map_err(unavailable)?),
        };
        let written = write_batch(conn, events);
        if written.is_err() {
            // Whatever state the connection is in, a fresh one is certain.
            *slot = None;
        }
        written.map_err(unavailable)
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite (usage ingestion): {e}"))
}

fn write_batch(conn: &mut Connection, events: &[UsageEvent]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut ip = String::with_capacity(48);
        let mut scopes = String::with_capacity(128);
        let (mut key_buf, mut identity_buf) = (UuidText::new(), UuidText::new());
        for e in events {
            ip.clear();
            if let Some(addr) = e.ip {
                let _ = write!(ip, "{addr}");
            }
            scopes.clear();
            for (n, s) in e.scopes.iter().enumerate() {
                if n > 0 {
                    scopes.push(' ');
                }
                scopes.push_str(s);
            }
            let tags = match &e.tags {
                Some(t) => Some(
                    serde_json::to_string(t)
                        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?,
                ),
                None => None,
            };
            insert.execute(params![
                e.at.timestamp_micros(),
                e.key_id.map(|id| key_buf.text(id)),
                e.identity_id.map(|id| identity_buf.text(id)),
                e.code.as_str(),
                e.ip.map(|_| ip.as_str()),
                scopes.as_str(),
                i64::from(e.latency_us),
                tags,
            ])?;
        }
    }
    {
        let mut upsert = tx.prepare_cached(UPSERT_ROLLUP)?;
        let (mut key_buf, mut identity_buf) = (UuidText::new(), UuidText::new());
        for ((bucket, start, key, code), (identity, n)) in rollup_rows(events) {
            upsert.execute(params![
                bucket.as_str(),
                start,
                key_buf.text(key),
                identity_buf.text(identity),
                code.as_str(),
                n,
            ])?;
        }
    }
    {
        let mut upsert = tx.prepare_cached(UPSERT_SCOPE_USE)?;
        let mut key_buf = UuidText::new();
        for ((key, scope), at) in scope_uses(events) {
            upsert.execute(params![key_buf.text(key), scope, at.timestamp_micros()])?;
        }
    }
    tx.commit()
}

/// A uuid's hyphenated text (the store's uuid format), written into a reused buffer
/// rather than a fresh `String` per row.
struct UuidText([u8; uuid::fmt::Hyphenated::LENGTH]);

impl UuidText {
    fn new() -> UuidText {
        UuidText([0; uuid::fmt::Hyphenated::LENGTH])
    }

    fn text(&mut self, id: Uuid) -> &str {
        id.hyphenated().encode_lower(&mut self.0)
    }
}
