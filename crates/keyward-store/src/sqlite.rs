//! The embedded store: SQLite in WAL mode, in the data folder.
//!
//! Layout: `<data_dir>/keyward.db` (plus SQLite's `-wal` and `-shm` files). Times are
//! stored as INTEGER microseconds since the Unix epoch (UTC), uuids as lowercase
//! hyphenated TEXT, JSON values as TEXT (see `migrations/sqlite/0001_init.sql`).
//!
//! Durability: `journal_mode=WAL` with `synchronous=FULL`, so every commit fsyncs the
//! WAL before it is acknowledged and survives `kill -9` and power loss.
//!
//! Concurrency: SQLite has one writer at a time. Two pools share the database file:
//!
//! * the **writer** pool has exactly one connection, so writes queue (fairly) inside
//!   the process instead of spinning in SQLite's busy handler, and a deferred transaction
//!   can never fail with `SQLITE_BUSY` when it upgrades to a write lock. Write
//!   transactions still start with `BEGIN IMMEDIATE` and the connection has a
//!   `busy_timeout`, which covers other processes (e.g. a CLI working on the same
//!   folder) as well;
//! * the **reader** pool has one connection per core (2), with `query_only=ON` so it can
//!   never write by mistake. In WAL mode readers never block the writer nor each other,
//!   and each statement sees a consistent snapshot.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use keyward_core::KeyDigest;
use keyward_core::model::{
    AuditEntry, AuditRecord, Identity, IdentityPatch, KeyPatch, KeyRecord, KeyWithIdentity,
};
use keyward_core::time::Timestamp;

use crate::{Bootstrap, Consumed, Result, Store, StoreError};

/// The database file inside the data folder.
pub const DB_FILE: &str = "keyward.db";

/// Connections of the reader pool: one per core of the 2-core target machine.
const READERS: u32 = 2;
/// How long SQLite waits for a lock held by another connection (or process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded SQLite store. Cheap to clone (the pools are reference-counted).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    group: group_commit::GroupCommit,
    /// The verify lookup on the caller's thread (`None` for an in-memory database,
    /// which lives on one pooled connection).
    sync_reader: Option<std::sync::Arc<sync_read::SyncReader>>,
    /// Usage ingestion on prepared statements (`usage_ingest.rs`); `None` in memory,
    /// where only the writer's connection sees the database.
    usage_ingest: Option<std::sync::Arc<usage_ingest::UsageIngest>>,
}

mod admins;
mod alerts;
mod anomalies;
mod audit_chain;
mod console;
mod group_commit;
mod pending_rollups;
mod sealed_secrets;
mod tokens;
mod webhooks;

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`: creates the folder (mode 0700
    /// on unix) and `keyward.db`, and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore> {
        create_private_dir(data_dir)?;
        let opts = SqliteConnectOptions::new()
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true);
        Self::open_with(opts, false).await
    }

    /// Opens the store at a `sqlite://...` URL (e.g. `sqlite:///var/lib/keyward/kw.db`,
    /// `sqlite://kw.db?mode=rwc`, `sqlite::memory:`). The file is created if missing.
    /// An in-memory database lives on one connection, which serves reads and writes.
    pub async fn open_url(url: &str) -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = if in_memory {
            opts
        } else {
            opts.create_if_missing(true)
        };
        Self::open_with(opts, in_memory).await
    }

    async fn open_with(base: SqliteConnectOptions, in_memory: bool) -> Result<SqliteStore> {
        let base = base
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            // On macOS fsync() does not reach the platter; F_FULLFSYNC does. No-op elsewhere.
            .pragma("fullfsync", "ON")
            .pragma("checkpoint_fullfsync", "ON");

        // WAL is persistent in the file; only the writer switches it on, before anything
        // else opens the database.
        let writer_opts = if in_memory {
            base.clone()
        } else {
            base.clone().journal_mode(SqliteJournalMode::Wal)
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_opts)
            .await
            .map_err(map_err)?;

        MIGRATOR.run(&writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => map_err(e),
            other => StoreError::Unavailable(format!("migration failed: {other}")),
        })?;

        let sync_reader = (!in_memory)
            .then(|| std::sync::Arc::new(sync_read::SyncReader::new(base.get_filename().into())));
        let usage_ingest = (!in_memory).then(|| {
            std::sync::Arc::new(usage_ingest::UsageIngest::new(base.get_filename().into()))
        });
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READERS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(base.pragma("query_only", "ON"))
                .await
                .map_err(map_err)?
        };
        audit_chain::backfill(&writer).await?;
        let group = group_commit::GroupCommit::start(writer.clone());
        let store = SqliteStore {
            writer,
            reader,
            group,
            sync_reader,
            usage_ingest,
        };
        let recounted = store.recover_rollups().await?;
        if recounted > 0 {
            tracing::info!(
                events = recounted,
                "usage rollups recounted for events stored before the last stop"
            );
        }
        // After the recount: every block is counted before the conversion adds its own.
        let converted = store.convert_event_rows().await?;
        if converted > 0 {
            tracing::info!(
                events = converted,
                "usage events of an earlier version moved into event blocks"
            );
        }
        Ok(store)
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A write transaction: on the single writer connection, holding SQLite's write lock
    /// from the start (`BEGIN IMMEDIATE`), so it cannot fail half-way with `SQLITE_BUSY`.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        if let Ok(md) = std::fs::metadata(dir)
            && md.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                dir = %dir.display(),
                "the data folder is accessible to other users; consider chmod 700"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot create data folder {}: {e}", dir.display()))
        })
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Unavailable(format!("cannot create data folder {}: {e}", dir.display()))
    })
}

// ---------------------------------------------------------------- errors

/// Maps a sqlx error to a store error. SQLite's messages name tables and columns, never
/// bound values, so no key digest can end up in one.
fn map_err(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation => StoreError::Conflict(db.message().to_owned()),
                ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                    StoreError::Corrupt(format!("refused invalid data: {}", db.message()))
                }
                _ => match code & 0xff {
                    // SQLITE_CORRUPT, SQLITE_NOTADB
                    11 | 26 => StoreError::Corrupt(db.message().to_owned()),
                    _ => StoreError::Unavailable(db.message().to_owned()),
                },
            }
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

// ---------------------------------------------------------------- encoding

fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

fn opt_micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(micros)
}

fn from_micros(v: i64, col: &str) -> Result<Timestamp> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(&format!("{col}: time out of range")))
}

fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

/// A column type both drivers decode the same way.
pub(crate) trait ColType:
    for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + rusqlite::types::FromSql
{
}
impl<T> ColType for T where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + rusqlite::types::FromSql
{
}

/// A result row of the embedded store, as sqlx (the async pools) or rusqlite (the
/// synchronous verify lookup, `sync_read`) gives it: the row mappings below serve both.
pub(crate) trait Cols {
    fn col<T: ColType>(&self, idx: usize) -> Result<T>;
}

impl Cols for SqliteRow {
    fn col<T: ColType>(&self, idx: usize) -> Result<T> {
        self.try_get(idx).map_err(map_err)
    }
}

impl Cols for rusqlite::Row<'_> {
    fn col<T: ColType>(&self, idx: usize) -> Result<T> {
        self.get(idx)
            .map_err(|e| corrupt(&format!("column {idx}: {e}")))
    }
}

fn get<T: ColType>(row: &impl Cols, idx: usize) -> Result<T> {
    row.col(idx)
}

fn get_uuid(row: &impl Cols, idx: usize, col: &str) -> Result<Uuid> {
    let s: String = get(row, idx)?;
    Uuid::parse_str(&s).map_err(|_| corrupt(&format!("{col}: not a uuid")))
}

fn get_opt_uuid(row: &impl Cols, idx: usize, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = get(row, idx)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|_| corrupt(&format!("{col}: not a uuid"))))
        .transpose()
}

fn get_time(row: &impl Cols, idx: usize, col: &str) -> Result<Timestamp> {
    from_micros(get(row, idx)?, col)
}

fn get_opt_time(row: &impl Cols, idx: usize, col: &str) -> Result<Option<Timestamp>> {
    let v: Option<i64> = get(row, idx)?;
    v.map(|v| from_micros(v, col)).transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(row: &impl Cols, idx: usize, col: &str) -> Result<T> {
    let s: String = get(row, idx)?;
    serde_json::from_str(&s).map_err(|e| corrupt(&format!("{col}: {e}")))
}

fn get_digest(row: &impl Cols, idx: usize) -> Result<KeyDigest> {
    let b: Vec<u8> = get(row, idx)?;
    KeyDigest::from_slice(&b).ok_or_else(|| corrupt("digest: not 32 bytes"))
}

// ---------------------------------------------------------------- rows

/// Identity columns, in the order `identity_from_row` reads them.
macro_rules! identity_cols {
    () => {
        "id, name, owner, description, meta, enabled, created_at, updated_at"
    };
}

/// Key columns (of `keys k`), in the order `key_from_row` reads them.
macro_rules! key_cols {
    () => {
        "k.id, k.identity_id, k.name, k.prefix, k.start, k.digest, k.scopes, k.created_at, \
         k.updated_at, k.expires_at, k.revoked_at, k.enabled, k.ip_allowlist, k.rate_limits, \
         k.remaining, (SELECT u.at FROM key_last_used u WHERE u.key_id = k.id), k.meta, \
         k.rotated_from, k.rotated_to"
    };
}
const KEY_COLS: usize = 19;

/// The verify lookup: one query on the unique digest index, joined to the identity by
/// its primary key.
macro_rules! key_by_digest {
    () => {
        concat!(
            "SELECT ",
            key_cols!(),
            ", (i.enabled AND i.deleted_at IS NULL) FROM keys k \
             JOIN identities i ON i.id = k.identity_id WHERE k.digest = ?"
        )
    };
}

// After the macros it uses.
mod event_blocks;
mod sync_read;
mod usage_ingest;

fn identity_from_row(row: &SqliteRow) -> Result<Identity> {
    Ok(Identity {
        id: get_uuid(row, 0, "identities.id")?,
        name: get(row, 1)?,
        owner: get(row, 2)?,
        description: get(row, 3)?,
        meta: get_json(row, 4, "identities.meta")?,
        enabled: get(row, 5)?,
        created_at: get_time(row, 6, "identities.created_at")?,
        updated_at: get_time(row, 7, "identities.updated_at")?,
    })
}

fn key_from_row(row: &impl Cols) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: get_uuid(row, 0, "keys.id")?,
        identity_id: get_uuid(row, 1, "keys.identity_id")?,
        name: get(row, 2)?,
        prefix: get(row, 3)?,
        start: get(row, 4)?,
        digest: get_digest(row, 5)?,
        scopes: get_json(row, 6, "keys.scopes")?,
        created_at: get_time(row, 7, "keys.created_at")?,
        updated_at: get_time(row, 8, "keys.updated_at")?,
        expires_at: get_opt_time(row, 9, "keys.expires_at")?,
        revoked_at: get_opt_time(row, 10, "keys.revoked_at")?,
        enabled: get(row, 11)?,
        ip_allowlist: get_json(row, 12, "keys.ip_allowlist")?,
        rate_limits: get_json(row, 13, "keys.rate_limits")?,
        remaining: get(row, 14)?,
        last_used_at: get_opt_time(row, 15, "keys.last_used_at")?,
        meta: get_json(row, 16, "keys.meta")?,
        rotated_from: get_opt_uuid(row, 17, "keys.rotated_from")?,
        rotated_to: get_opt_uuid(row, 18, "keys.rotated_to")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: get(row, 0)?,
        entry: AuditEntry {
            at: get_time(row, 1, "audit_log.at")?,
            actor: get(row, 2)?,
            action: get(row, 3)?,
            target: get(row, 4)?,
            request_id: get(row, 5)?,
            source_ip: get(row, 6)?,
            detail: get_json(row, 7, "audit_log.detail")?,
        },
    })
}

// ---------------------------------------------------------------- statements on a transaction

/// Appends an audit entry with its chain hash (see `sqlite/audit_chain.rs`).
async fn insert_audit(conn: &mut SqliteConnection, a: &AuditEntry) -> Result<()> {
    audit_chain::insert_chained(conn, a).await
}

async fn insert_identity(conn: &mut SqliteConnection, i: &Identity) -> Result<()> {
    sqlx::query(
        "INSERT INTO identities \
         (id, name, owner, description, meta, enabled, created_at, updated_at, deleted_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
    )
    .bind(id_text(i.id))
    .bind(&i.name)
    .bind(&i.owner)
    .bind(&i.description)
    .bind(to_json(&i.meta)?)
    .bind(i.enabled)
    .bind(micros(i.created_at))
    .bind(micros(i.updated_at))
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_key(conn: &mut SqliteConnection, k: &KeyRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (id, identity_id, name, prefix, start, digest, scopes, created_at, \
         updated_at, expires_at, revoked_at, enabled, ip_allowlist, rate_limits, remaining, \
         meta, rotated_from, rotated_to) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id_text(k.id))
    .bind(id_text(k.identity_id))
    .bind(&k.name)
    .bind(&k.prefix)
    .bind(&k.start)
    .bind(&k.digest.as_bytes()[..])
    .bind(to_json(&k.scopes)?)
    .bind(micros(k.created_at))
    .bind(micros(k.updated_at))
    .bind(opt_micros(k.expires_at))
    .bind(opt_micros(k.revoked_at))
    .bind(k.enabled)
    .bind(to_json(&k.ip_allowlist)?)
    .bind(to_json(&k.rate_limits)?)
    .bind(k.remaining)
    .bind(to_json(&k.meta)?)
    .bind(k.rotated_from.map(id_text))
    .bind(k.rotated_to.map(id_text))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    if let Some(at) = k.last_used_at {
        sqlx::query("INSERT INTO key_last_used (key_id, at) VALUES (?, ?)")
            .bind(id_text(k.id))
            .bind(micros(at))
            .execute(conn)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

async fn live_identity(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Identity>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        identity_cols!(),
        " FROM identities WHERE id = ? AND deleted_at IS NULL"
    ))
    .bind(id_text(id))
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(identity_from_row).transpose()
}

async fn key_by_id(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        key_cols!(),
        " FROM keys k WHERE k.id = ?"
    ))
    .bind(id_text(id))
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(key_from_row).transpose()
}

/// Writes every mutable column of a key from the record.
async fn write_key(conn: &mut SqliteConnection, k: &KeyRecord) -> Result<()> {
    sqlx::query(
        "UPDATE keys SET name = ?, scopes = ?, updated_at = ?, expires_at = ?, revoked_at = ?, \
         enabled = ?, ip_allowlist = ?, rate_limits = ?, remaining = ?, meta = ?, \
         rotated_to = ? WHERE id = ?",
    )
    .bind(&k.name)
    .bind(to_json(&k.scopes)?)
    .bind(micros(k.updated_at))
    .bind(opt_micros(k.expires_at))
    .bind(opt_micros(k.revoked_at))
    .bind(k.enabled)
    .bind(to_json(&k.ip_allowlist)?)
    .bind(to_json(&k.rate_limits)?)
    .bind(k.remaining)
    .bind(to_json(&k.meta)?)
    .bind(k.rotated_to.map(id_text))
    .bind(id_text(k.id))
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The earlier of an existing revocation time and a new one.
fn earlier(existing: Option<Timestamp>, new: Timestamp) -> Timestamp {
    match existing {
        Some(t) if t <= new => t,
        _ => new,
    }
}

// ---------------------------------------------------------------- the trait

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn bootstrap(&self, b: &Bootstrap) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let marked = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('bootstrapped', ?) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(micros(b.audit.at).to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if marked.rows_affected() == 0 {
            return Ok(false); // dropping the transaction rolls it back
        }
        insert_identity(&mut tx, &b.identity).await?;
        insert_key(&mut tx, &b.key).await?;
        insert_audit(&mut tx, &b.audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn create_identity(&self, identity: &Identity, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_identity(&mut tx, identity).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_identity(&self, id: Uuid) -> Result<Option<Identity>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        live_identity(&mut conn, id).await
    }

    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Identity>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            identity_cols!(),
            " FROM identities WHERE deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.map(id_text).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(identity_from_row).collect()
    }

    async fn update_identity(
        &self,
        id: Uuid,
        patch: &IdentityPatch,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<Identity>> {
        let mut tx = self.begin_write().await?;
        let Some(mut i) = live_identity(&mut tx, id).await? else {
            return Ok(None);
        };
        if let Some(v) = &patch.name {
            i.name.clone_from(v);
        }
        if let Some(v) = &patch.owner {
            i.owner.clone_from(v);
        }
        if let Some(v) = &patch.description {
            i.description.clone_from(v);
        }
        if let Some(v) = &patch.meta {
            i.meta.clone_from(v);
        }
        if let Some(v) = patch.enabled {
            i.enabled = v;
        }
        sqlx::query(
            "UPDATE identities SET name = ?, owner = ?, description = ?, meta = ?, enabled = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(&i.name)
        .bind(&i.owner)
        .bind(&i.description)
        .bind(to_json(&i.meta)?)
        .bind(i.enabled)
        .bind(micros(now))
        .bind(id_text(id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        let updated = live_identity(&mut tx, id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(updated)
    }

    async fn delete_identity(
        &self,
        id: Uuid,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyDigest>>> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "UPDATE identities SET deleted_at = ?, updated_at = ? \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(micros(now))
        .bind(micros(now))
        .bind(id_text(id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        // Keys not yet revoked: never revoked, or revoked in the future (a rotated key in
        // its grace period). Those get `revoked_at = now`; earlier revocations stay.
        let rows = sqlx::query(
            "UPDATE keys SET revoked_at = ?, updated_at = ? \
             WHERE identity_id = ? AND (revoked_at IS NULL OR revoked_at > ?) \
             RETURNING digest",
        )
        .bind(micros(now))
        .bind(micros(now))
        .bind(id_text(id))
        .bind(micros(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let digests = rows
            .iter()
            .map(|r| get_digest(r, 0))
            .collect::<Result<Vec<_>>>()?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(digests))
    }

    async fn key_digests_of_identity(&self, identity_id: Uuid) -> Result<Vec<KeyDigest>> {
        let rows = sqlx::query("SELECT digest FROM keys WHERE identity_id = ? ORDER BY id")
            .bind(id_text(identity_id))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| get_digest(r, 0)).collect()
    }

    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        let op = group_commit::Op::CreateKey {
            key: Box::new(key.clone()),
            audit: Box::new(audit.clone()),
        };
        self.group.submit(op).await.map(|_| ())
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<KeyRecord>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        key_by_id(&mut conn, id).await
    }

    fn get_key_by_digest_now(&self, digest: &KeyDigest) -> Option<Result<Option<KeyWithIdentity>>> {
        self.sync_reader.as_ref()?.key_by_digest(digest)
    }

    async fn get_key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyWithIdentity>> {
        let row = sqlx::query(key_by_digest!())
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(KeyWithIdentity {
            key: key_from_row(&row)?,
            identity_enabled: get(&row, KEY_COLS)?,
        }))
    }

    async fn list_keys(
        &self,
        identity_id: Option<Uuid>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>> {
        let after = after.map(id_text).unwrap_or_default();
        let rows = match identity_id {
            Some(identity_id) => sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM keys k WHERE k.identity_id = ? AND k.id > ? ORDER BY k.id LIMIT ?"
            ))
            .bind(id_text(identity_id))
            .bind(after)
            .bind(i64::from(limit)),
            None => sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM keys k WHERE k.id > ? ORDER BY k.id LIMIT ?"
            ))
            .bind(after)
            .bind(i64::from(limit)),
        }
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn update_key(
        &self,
        id: Uuid,
        patch: &KeyPatch,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let Some(mut k) = key_by_id(&mut tx, id).await? else {
            return Ok(None);
        };
        if let Some(v) = &patch.name {
            k.name.clone_from(v);
        }
        if let Some(v) = &patch.scopes {
            k.scopes.clone_from(v);
        }
        if let Some(v) = patch.expires_at {
            k.expires_at = v;
        }
        if let Some(v) = &patch.ip_allowlist {
            k.ip_allowlist.clone_from(v);
        }
        if let Some(v) = &patch.rate_limits {
            k.rate_limits.clone_from(v);
        }
        if let Some(v) = patch.remaining {
            k.remaining = v;
        }
        if let Some(v) = patch.enabled {
            k.enabled = v;
        }
        if let Some(v) = &patch.meta {
            k.meta.clone_from(v);
        }
        k.updated_at = now;
        write_key(&mut tx, &k).await?;
        insert_audit(&mut tx, audit).await?;
        let updated = key_by_id(&mut tx, id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(updated)
    }

    async fn revoke_key(
        &self,
        id: Uuid,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let Some(mut k) = key_by_id(&mut tx, id).await? else {
            return Ok(None);
        };
        let revoked_at = earlier(k.revoked_at, now);
        if k.revoked_at != Some(revoked_at) {
            k.revoked_at = Some(revoked_at);
            k.updated_at = now;
            write_key(&mut tx, &k).await?;
        }
        insert_audit(&mut tx, audit).await?;
        let updated = key_by_id(&mut tx, id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(updated)
    }

    async fn rotate_key(
        &self,
        old_id: Uuid,
        new: &KeyRecord,
        old_revoked_at: Timestamp,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let Some(mut old) = key_by_id(&mut tx, old_id).await? else {
            return Ok(None);
        };
        if old.revoked_at.is_some_and(|t| t <= now) {
            return Err(StoreError::Conflict(
                "the key is already revoked".to_owned(),
            ));
        }
        if old.rotated_to.is_some() {
            return Err(StoreError::Conflict(
                "the key is already rotated".to_owned(),
            ));
        }
        if live_identity(&mut tx, new.identity_id).await?.is_none() {
            return Err(StoreError::Conflict(
                "the identity does not exist or is deleted".to_owned(),
            ));
        }
        let mut new = new.clone();
        new.rotated_from = Some(old_id);
        insert_key(&mut tx, &new).await?;
        old.rotated_to = Some(new.id);
        old.revoked_at = Some(earlier(old.revoked_at, old_revoked_at));
        old.updated_at = now;
        write_key(&mut tx, &old).await?;
        insert_audit(&mut tx, audit).await?;
        let updated = key_by_id(&mut tx, old_id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(updated)
    }

    async fn consume_remaining(&self, id: Uuid) -> Result<Consumed> {
        match self
            .group
            .submit(group_commit::Op::ConsumeRemaining { id })
            .await?
        {
            group_commit::Done::Consumed(c) => Ok(c),
            group_commit::Done::Created => Err(corrupt("group commit answered the wrong job")),
        }
    }

    async fn refund_remaining(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE keys SET remaining = remaining + 1 WHERE id = ? AND remaining IS NOT NULL",
        )
        .bind(id_text(id))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn record_last_used(&self, uses: &[(Uuid, Timestamp)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // One short transaction per chunk, so a node with thousands of keys to record
        // never holds the writer (or its core) for long.
        if let Some(ingest) = &self.usage_ingest {
            for chunk in uses.chunks(512) {
                let _permit = self.writer.acquire().await.map_err(map_err)?;
                usage::run_blocking(|| ingest.write_last_used(chunk))?;
            }
            return Ok(());
        }
        // In memory: one statement per chunk rather than one per key (each statement is
        // a round trip to SQLite's worker thread).
        for chunk in uses.chunks(512) {
            let mut tx = self.begin_write().await?;
            let batch: Vec<(String, i64)> = chunk
                .iter()
                .map(|(id, at)| (id_text(*id), micros(*at)))
                .collect();
            sqlx::query(
                "INSERT INTO key_last_used (key_id, at) \
                 SELECT json_extract(value, '$[0]'), max(json_extract(value, '$[1]')) \
                 FROM json_each(?) WHERE json_extract(value, '$[0]') IN (SELECT id FROM keys) \
                 GROUP BY 1 \
                 ON CONFLICT (key_id) DO UPDATE SET at = excluded.at \
                 WHERE excluded.at > key_last_used.at",
            )
            .bind(to_json(&batch)?)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn list_audit(&self, after: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, request_id, source_ip, detail \
             FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn sweep_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<Uuid>> {
        // Under the write lock: two sweeps cannot read the same mark.
        let mut tx = self.begin_write().await?;
        let mark: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(crate::EXPIRY_MARK)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let (t, id) = crate::parse_expiry_mark(mark.as_deref());
        let rows = sqlx::query(
            "SELECT id, identity_id, expires_at FROM keys \
             WHERE expires_at IS NOT NULL AND expires_at <= ? \
             AND (expires_at > ? OR (expires_at = ? AND id > ?)) \
             AND (revoked_at IS NULL OR revoked_at > expires_at) \
             ORDER BY expires_at, id LIMIT ?",
        )
        .bind(micros(now))
        .bind(t)
        .bind(t)
        .bind(id_text(id))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in &rows {
            let id = get_uuid(r, 0, "keys.id")?;
            let identity_id = get_uuid(r, 1, "keys.identity_id")?;
            let at = get_time(r, 2, "keys.expires_at")?;
            insert_audit(&mut tx, &crate::expiry_audit(now, id, identity_id, at)).await?;
            ids.push(id);
            last = Some((micros(at), id));
        }
        if let Some((t, id)) = last {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES (?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(crate::EXPIRY_MARK)
            .bind(format!("{t}/{id}"))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ids)
    }
}

mod vault;

#[cfg(test)]
mod tests {
    use super::*;

    /// The durability settings are per connection: check them on the writer.
    #[tokio::test]
    async fn writer_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
        let mut conn = store.writer.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(busy > 0);
        drop(conn);
        let mut r = store.reader.acquire().await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *r)
            .await
            .unwrap();
        assert_eq!(sync, 2);
        let err = sqlx::query("DELETE FROM settings").execute(&mut *r).await;
        assert!(err.is_err(), "readers are query_only");
    }

    /// The verify lookup and the listings use indexes, never a table scan.
    #[tokio::test]
    async fn lookups_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut conn = store.reader.acquire().await.unwrap();
        let plan = |rows: Vec<SqliteRow>| {
            rows.iter()
                .map(|r| r.get::<String, _>(3))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let rows = sqlx::query(concat!("EXPLAIN QUERY PLAN ", key_by_digest!()))
            .bind(vec![0u8; 32])
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let p = plan(rows);
        assert!(!p.contains("SCAN"), "{p}");
        assert!(p.contains("digest"), "{p}");
        let rows = sqlx::query(concat!(
            "EXPLAIN QUERY PLAN SELECT ",
            key_cols!(),
            " FROM keys k WHERE k.identity_id = ? AND k.id > ? ORDER BY k.id LIMIT ?"
        ))
        .bind("a")
        .bind("b")
        .bind(1i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let p = plan(rows);
        assert!(p.contains("keys_identity_id"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        let _store = SqliteStore::open(&data).await.unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(data.join(DB_FILE).is_file());
    }

    #[tokio::test]
    async fn open_url_memory_and_file() {
        let mem = SqliteStore::open_url("sqlite::memory:").await.unwrap();
        mem.ping().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let file = SqliteStore::open_url(&url).await.unwrap();
        file.ping().await.unwrap();
        assert!(dir.path().join("x.db").is_file());
    }
}

// After the row macros above, which it uses.
mod usage;
