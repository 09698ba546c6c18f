//! Usage ingestion on a rusqlite connection with prepared statements: events packed in
//! blocks (`event_blocks.rs`), their counts kept pending (`pending_rollups.rs`).
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
//! is `BEGIN IMMEDIATE` with `synchronous=NORMAL`: a batch is atomic, and once `write`
//! returns it survives the process crashing; an OS crash or power cut can lose the last
//! batches written since the WAL was last synced (by a checkpoint or by any commit of
//! the writer, which stays `FULL`: keys are durable when acknowledged). Usage events are
//! telemetry already queued in memory for up to a second before this; an fsync per batch
//! cost ~2% of a busy node's CPU. Events and the counts of them stay consistent either
//! way: both are written in one transaction.
//!
//! The blocking work runs under `tokio::task::block_in_place` when a runtime worker calls
//! it, so the worker's other tasks move elsewhere meanwhile; the server's usage writer
//! calls it from a thread of its own (`keyward-server/src/background.rs`), where it runs
//! inline.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::BUSY_TIMEOUT;
use super::event_blocks::BlockPacker;
use super::pending_rollups::{PendingRollups, SET_WATERMARK, SETTLE_EVERY, UuidText, write_counts};
use crate::usage::{rollup_rows, scope_uses};
use crate::{Result, StoreError};

pub(crate) const INSERT_BLOCK: &str = "INSERT INTO usage_event_blocks \
    (first_at, last_at, count, events) VALUES (?1, ?2, ?3, ?4)";

/// WAL pages after which a commit on this connection checkpoints (see `open`).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 128;

/// The ingestion connection, opened on first use and reopened after a failure.
pub(crate) struct UsageIngest {
    path: PathBuf,
    conn: Mutex<Ingest>,
    /// When the oldest pending count was added, in ms since `created` plus one; 0: none
    /// pending. Readers and the writer's tick look here without taking the lock (held
    /// for a whole batch write) or the write permit.
    pending_since: AtomicU64,
    created: Instant,
    /// The lock that lets this process keep counts pending (`pending_rollups.rs`);
    /// `None`: another process holds it, so counts are written with each batch.
    defer_lock: Option<std::fs::File>,
}

/// The connection and the counts written behind (`pending_rollups.rs`).
#[derive(Default)]
struct Ingest {
    conn: Option<Connection>,
    pending: PendingRollups,
    packer: BlockPacker,
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
        let defer_lock = take_defer_lock(&path);
        UsageIngest {
            path,
            conn: Mutex::new(Ingest::default()),
            pending_since: AtomicU64::new(0),
            created: Instant::now(),
            defer_lock,
        }
    }

    /// Whether this process keeps counts pending (and so recounts on opening).
    pub(crate) fn defers(&self) -> bool {
        self.defer_lock.is_some()
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "checkpoint_fullfsync", "ON")?;
        // Commits here fill the WAL fastest, so they run most checkpoints: at SQLite's
        // default of 1,000 pages, each copied ~4 MB in one call of ~4 ms that nothing can
        // interrupt, a stall for every request waiting for the core (`perf sched
        // timehist` under verify load). At 128 pages each takes a fraction of a
        // millisecond.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        Ok(conn)
    }

    /// The ingestion connection, opened if there is none (first use, or after a failure).
    fn connection<'c>(
        &self,
        slot: &'c mut Option<Connection>,
    ) -> rusqlite::Result<&'c mut Connection> {
        match slot {
            Some(c) => Ok(c),
            None => Ok(slot.insert(self.open()?)),
        }
    }

    /// Writes one batch in one transaction; its rollups and scope uses join the
    /// pending counts, all written in this transaction when they are due. The caller
    /// holds the write permit.
    pub(crate) fn write(&self, events: &[UsageEvent]) -> Result<()> {
        let mut ingest = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Ingest {
            conn,
            pending,
            packer,
        } = &mut *ingest;
        let settle = !self.defers() || pending.due_with(events);
        let written = self
            .connection(conn)
            .and_then(|c| write_batch(c, packer, events, settle.then_some(&*pending)));
        match written {
            Ok(_) if settle => pending.clear(),
            Ok(through_block) => pending.add(events, through_block),
            Err(e) => {
                // Whatever state the connection is in, a fresh one is certain. Nothing of
                // the batch was stored, and the pending counts are still pending.
                *conn = None;
                return Err(unavailable(e));
            }
        }
        self.publish(pending);
        Ok(())
    }

    /// Records last-use times (each key's only if later than the stored one) in one
    /// transaction on this connection: a prepared statement per key rather than a JSON
    /// batch through sqlx's thread, and no fsync (see the module's note: last-use times
    /// are at most seconds stale by design). The caller holds the write permit.
    pub(crate) fn write_last_used(&self, uses: &[(uuid::Uuid, Timestamp)]) -> Result<()> {
        let mut ingest = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let written = self.connection(&mut ingest.conn).and_then(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut update = tx.prepare_cached(
                    "INSERT INTO key_last_used (key_id, at) VALUES (?1, ?2) \
                     ON CONFLICT (key_id) DO UPDATE SET at = excluded.at \
                     WHERE excluded.at > key_last_used.at",
                )?;
                let mut id = UuidText::new();
                let mut yielder = super::usage::Yielder::new();
                for (key, at) in uses {
                    yielder.tick();
                    update.execute(params![id.text(*key), at.timestamp_micros()])?;
                }
            }
            tx.commit()
        });
        if let Err(e) = written {
            ingest.conn = None;
            return Err(unavailable(e));
        }
        Ok(())
    }

    /// Writes the pending counts now (`only_aged`: only if they have waited long
    /// enough), so that a read of rollups sees every stored event. The caller holds the
    /// write permit.
    pub(crate) fn settle(&self, only_aged: bool) -> Result<()> {
        if !self.has_pending(only_aged) {
            return Ok(());
        }
        let mut ingest = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Ingest { conn, pending, .. } = &mut *ingest;
        if pending.is_empty() || (only_aged && !pending.aged()) {
            return Ok(());
        }
        let written = self.connection(conn).and_then(|c| settle(c, pending));
        if let Err(e) = written {
            *conn = None;
            return Err(unavailable(e));
        }
        pending.clear();
        self.publish(pending);
        Ok(())
    }

    /// Whether accepted verifications of any of `keys` are still uncounted in the
    /// rollups (pending here).
    pub(crate) fn pending_valid_use_of(
        &self,
        keys: &std::collections::HashSet<uuid::Uuid>,
    ) -> bool {
        if !self.has_pending(false) {
            return false;
        }
        let ingest = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        ingest.pending.counts_valid_use_of(keys)
    }

    /// Whether counts are pending (`aged`: and have waited long enough to be due), a
    /// cheap check without the lock.
    pub(crate) fn has_pending(&self, aged: bool) -> bool {
        match self.pending_since.load(Ordering::Acquire) {
            0 => false,
            since => {
                !aged
                    || self.millis(Instant::now()).saturating_sub(since)
                        >= SETTLE_EVERY.as_millis() as u64
            }
        }
    }

    /// Tells [`has_pending`](Self::has_pending) what is pending now.
    fn publish(&self, pending: &PendingRollups) {
        let since = pending.since().map_or(0, |t| self.millis(t));
        self.pending_since.store(since, Ordering::Release);
    }

    /// `t` in ms since this ingester was made, plus one (0 means "none").
    fn millis(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.created).as_millis() as u64 + 1
    }
}

/// The exclusive lock on `<database>-usage.lock`, if no other process (or store in this
/// process) holds it.
fn take_defer_lock(db: &std::path::Path) -> Option<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push("-usage.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .ok()?;
    file.try_lock().ok().map(|()| file)
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite (usage ingestion): {e}"))
}

/// Inserts `events` (as blocks, `event_blocks.rs`) and, when `settle` holds the pending
/// counts, writes those and the batch's own counts with the watermark: one
/// transaction. Returns the id of the batch's last block.
fn write_batch(
    conn: &mut Connection,
    packer: &mut BlockPacker,
    events: &[UsageEvent],
    settle: Option<&PendingRollups>,
) -> rusqlite::Result<i64> {
    let mut yielder = super::usage::Yielder::new();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT_BLOCK)?;
        // A failed insert stops the packing; its own error is the one to report.
        let mut failed = None;
        let packed = packer.pack(events, |b| {
            insert
                .execute(params![b.first_at, b.last_at, b.count, b.bytes])
                .map(drop)
                .map_err(|e| {
                    let stop = StoreError::Unavailable(e.to_string());
                    failed = Some(e);
                    stop
                })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        packed.map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
    }
    let through_block = tx.last_insert_rowid();
    // Between packing and the commit, give a waiting worker the core (see Yielder).
    yielder.now();
    if let Some(pending) = settle {
        pending.write(&tx)?;
        let uses = scope_uses(events);
        write_counts(
            &tx,
            rollup_rows(events).into_iter(),
            uses.iter().map(|((key, scope), at)| (*key, *scope, *at)),
        )?;
        tx.execute(SET_WATERMARK, [through_block])?;
    }
    tx.commit()?;
    Ok(through_block)
}

fn settle(conn: &mut Connection, pending: &PendingRollups) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    pending.write(&tx)?;
    tx.commit()
}
