//! The verify lookup without a thread hop: read-only rusqlite connections that the
//! calling thread uses directly.
//!
//! Why: sqlx runs each SQLite connection on a thread of its own, so every query is a
//! message to that thread and a wake-up back, which on this 2-core machine cost most of
//! a cache miss's ~120 µs. The verify cache's cold path is one indexed point read
//! (`key_by_digest!`), which SQLite answers in a few microseconds from the page cache:
//! done on the caller's thread it costs less than the hop.
//!
//! Why it is safe to run on an async worker thread: in WAL mode a reader never waits for
//! the writer, and these connections have no busy timeout: a rare `SQLITE_BUSY` (WAL
//! recovery after a crash, a checkpoint restart) makes [`SyncReader::key_by_digest`]
//! answer `None` at once and the caller falls back to the async pool. The remaining
//! blocking is a page read from disk for a page not in the OS cache, as any file read.
//!
//! **Architecture Invariant:** these connections are opened read-only
//! (`SQLITE_OPEN_READ_ONLY` and `query_only`): the synchronous path can never write.

use std::path::PathBuf;
use std::sync::Mutex;

use keyward_core::KeyDigest;
use keyward_core::model::KeyWithIdentity;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::{KEY_COLS, get, key_from_row};
use crate::{Result, StoreError};

/// Idle connections kept for reuse: one per core is enough, as each is held only for
/// the length of one point read.
const KEEP_IDLE: usize = 4;

pub(crate) struct SyncReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SyncReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncReader")
            .field("path", &self.path)
            .finish()
    }
}

impl SyncReader {
    pub(crate) fn new(path: PathBuf) -> SyncReader {
        SyncReader {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }

    /// The key with that digest and its identity's state, read on this thread; `None`
    /// when SQLite is busy (use the async path then).
    pub(crate) fn key_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Option<Result<Option<KeyWithIdentity>>> {
        self.read(|conn| {
            conn.prepare_cached(key_by_digest!())?
                .query_row([&digest.as_bytes()[..]], |row| {
                    // Mapping errors are ours, not rusqlite's: carry them out intact.
                    Ok(key_from_row(row).and_then(|key| {
                        Ok(KeyWithIdentity {
                            key,
                            identity_enabled: get(row, KEY_COLS)?,
                        })
                    }))
                })
                .optional()
                .map(Option::transpose)
        })
    }

    /// Runs `read` on a pooled read-only connection, on this thread. The outer result is
    /// SQLite's (busy: `None`, so the caller takes the async path; anything else: the
    /// store is unusable), the inner one the mapping of rows, carried out intact.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<Result<T>>,
    ) -> Option<Result<T>> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => match self.open() {
                Ok(c) => c,
                Err(e) => return busy_or(e),
            },
        };
        let answer = match read(&conn) {
            Ok(mapped) => Some(mapped),
            Err(e) => return busy_or(e),
        };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
        answer
    }
}

/// Busy or locked: let the async path (which waits) answer. Anything else is the store
/// being unusable.
fn busy_or<T>(e: rusqlite::Error) -> Option<Result<T>> {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => None,
        _ => Some(Err(StoreError::Unavailable(format!("SQLite: {e}")))),
    }
}
