//! The cluster store: PostgreSQL, shared by every Keyward node of a cluster.
//!
//! Schema: `migrations/postgres` (applied at open; sqlx's migrator holds an advisory
//! lock while it runs, so nodes starting together apply each migration once). Same
//! records and semantics as the embedded store, in native types: `uuid`, `timestamptz`
//! (microseconds), `bytea` digests, `json`/`jsonb`.
//!
//! Concurrency: read-modify-write methods lock the rows they change (`FOR UPDATE`) and
//! the identity a new key hangs on (`FOR SHARE`), so any node may run any method at any
//! time with the same outcomes as the single-writer embedded store:
//!
//! * **quotas** are taken with one atomic `UPDATE ... WHERE remaining > 0 RETURNING`;
//!   PostgreSQL re-checks the condition on the latest row version after waiting for a
//!   concurrent taker, so a key with `remaining = N` is accepted at most N times in
//!   total, however the calls are spread over nodes;
//! * **audit order**: see [`insert_audit`]: one sequence for the cluster, in commit order;
//! * **change feed**: every transaction that changes what a verification of a key would
//!   decide also sends, on channel [`CHANGES_CHANNEL`], the hex digests of the keys it
//!   touched (`pg_notify` inside the transaction: PostgreSQL delivers it at commit, and
//!   only if the transaction commits). [`PgChangeFeed`] is the receiving end, which
//!   each node's verify cache follows.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use keyward_core::KeyDigest;
use keyward_core::model::{
    AuditEntry, AuditRecord, Identity, IdentityPatch, KeyPatch, KeyRecord, KeyWithIdentity,
};
use keyward_core::time::Timestamp;

use crate::{Bootstrap, Change, ChangeFeed, Consumed, Leadership, Result, Store, StoreError};

/// The `LISTEN`/`NOTIFY` channel of key changes. A payload is either comma-separated
/// lowercase hex SHA-256 digests of keys (digests, never keys), or [`FLUSH`].
pub const CHANGES_CHANNEL: &str = "keyward_key_changes";
/// Payload asking every node to forget every cached key.
pub const FLUSH: &str = "flush";
/// Digests per notification: 100 × 65 bytes stays well under PostgreSQL's 8000-byte
/// payload limit. A change touching more keys sends several notifications.
const DIGESTS_PER_NOTIFY: usize = 100;

/// Key of the transaction-scoped advisory lock that orders audit sequence numbers
/// (an arbitrary constant: "kw" "audit").
const AUDIT_LOCK: i64 = 0x006b_7761_7564_6974;

/// Default size of a node's connection pool.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a pooled connection (or a new one, while PostgreSQL is
/// down) before `Unavailable` (503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

mod sealed_secrets;
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

mod admins;
mod alerts;
mod anomalies;
mod audit_chain;
mod console;
mod tokens;

/// The PostgreSQL store. Cheap to clone (the pool is reference-counted).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `postgres://...` and applies the migrations.
    pub async fn open(url: &str) -> Result<PgStore> {
        Self::open_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    pub async fn open_with(url: &str, max_connections: u32) -> Result<PgStore> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))?
            .application_name("keyward");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection broken by a PostgreSQL restart is noticed and replaced
            // before use instead of failing the request that picked it.
            .test_before_acquire(true)
            .connect_with(opts)
            .await
            .map_err(map_err)?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => map_err(e),
            other => StoreError::Unavailable(format!("migration failed: {other}")),
        })?;
        let store = PgStore { pool };
        audit_chain::backfill(&store).await?;
        Ok(store)
    }

    /// The connection pool (for the cluster machinery: listeners, advisory locks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }

    /// Asks every node to forget every cached key (e.g. after a manual repair in SQL).
    pub async fn publish_flush(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(FLUSH)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- errors

/// Maps a sqlx error to a store error. PostgreSQL's messages name constraints, never
/// bound values (those are in the error's detail, which is not used), so no digest can
/// end up in one.
fn map_err(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match db.kind() {
                ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation => {
                    StoreError::Conflict(db.message().to_owned())
                }
                ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                    StoreError::Corrupt(format!("refused invalid data: {}", db.message()))
                }
                // XX001 data_corrupted, XX002 index_corrupted
                _ if code.starts_with("XX00") => StoreError::Corrupt(db.message().to_owned()),
                _ => StoreError::Unavailable(format!("{code}: {}", db.message())),
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

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn get<'r, T>(row: &'r PgRow, idx: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(idx).map_err(map_err)
}

fn get_json<T: serde::de::DeserializeOwned>(row: &PgRow, idx: usize, col: &str) -> Result<T> {
    let s: String = get(row, idx)?;
    serde_json::from_str(&s).map_err(|e| corrupt(&format!("{col}: {e}")))
}

fn get_digest(row: &PgRow, idx: usize) -> Result<KeyDigest> {
    let b: Vec<u8> = get(row, idx)?;
    KeyDigest::from_slice(&b).ok_or_else(|| corrupt("digest: not 32 bytes"))
}

// ---------------------------------------------------------------- rows

/// Identity columns, in the order `identity_from_row` reads them.
macro_rules! identity_cols {
    () => {
        "id, name, owner, description, meta::text, enabled, created_at, updated_at"
    };
}

/// Key columns (of `keys k`), in the order `key_from_row` reads them.
macro_rules! key_cols {
    () => {
        "k.id, k.identity_id, k.name, k.prefix, k.start, k.digest, k.scopes::text, \
         k.created_at, k.updated_at, k.expires_at, k.revoked_at, k.enabled, \
         k.ip_allowlist::text, k.rate_limits::text, k.remaining, k.last_used_at, \
         k.meta::text, k.rotated_from, k.rotated_to"
    };
}
const KEY_COLS: usize = 19;

fn identity_from_row(row: &PgRow) -> Result<Identity> {
    Ok(Identity {
        id: get(row, 0)?,
        name: get(row, 1)?,
        owner: get(row, 2)?,
        description: get(row, 3)?,
        meta: get_json(row, 4, "identities.meta")?,
        enabled: get(row, 5)?,
        created_at: get(row, 6)?,
        updated_at: get(row, 7)?,
    })
}

fn key_from_row(row: &PgRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: get(row, 0)?,
        identity_id: get(row, 1)?,
        name: get(row, 2)?,
        prefix: get(row, 3)?,
        start: get(row, 4)?,
        digest: get_digest(row, 5)?,
        scopes: get_json(row, 6, "keys.scopes")?,
        created_at: get(row, 7)?,
        updated_at: get(row, 8)?,
        expires_at: get(row, 9)?,
        revoked_at: get(row, 10)?,
        enabled: get(row, 11)?,
        ip_allowlist: get_json(row, 12, "keys.ip_allowlist")?,
        rate_limits: get_json(row, 13, "keys.rate_limits")?,
        remaining: get(row, 14)?,
        last_used_at: get(row, 15)?,
        meta: get_json(row, 16, "keys.meta")?,
        rotated_from: get(row, 17)?,
        rotated_to: get(row, 18)?,
    })
}

fn audit_from_row(row: &PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: get(row, 0)?,
        entry: AuditEntry {
            at: get(row, 1)?,
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

/// Appends an audit entry: the last statement of every mutating transaction.
///
/// One sequence for the whole cluster is an identity column; but sequence values are
/// handed out when a row is inserted, not when its transaction commits, so two
/// concurrent transactions could commit seq 11 before seq 10, and a reader tailing
/// the log with `after=11` would never see 10. To keep seq order equal to commit order,
/// the insert first takes a transaction-scoped advisory lock, released only after the
/// commit is visible: audit appends (and so the commits of changes) are serialised
/// cluster-wide for the few microseconds between this statement and the commit.
/// Management writes are rare next to verifications, which never take it.
async fn insert_audit(conn: &mut PgConnection, a: &AuditEntry) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    // With its chain hash (see `postgres/audit_chain.rs`).
    audit_chain::insert_chained(conn, a).await
}

/// Tells every node (at commit) that these keys changed.
async fn notify_changed(conn: &mut PgConnection, digests: &[KeyDigest]) -> Result<()> {
    for chunk in digests.chunks(DIGESTS_PER_NOTIFY) {
        let payload = chunk
            .iter()
            .map(KeyDigest::to_hex)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

async fn insert_identity(conn: &mut PgConnection, i: &Identity) -> Result<()> {
    sqlx::query(
        "INSERT INTO identities \
         (id, name, owner, description, meta, enabled, created_at, updated_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5::json, $6, $7, $8, NULL)",
    )
    .bind(i.id)
    .bind(&i.name)
    .bind(&i.owner)
    .bind(&i.description)
    .bind(to_json(&i.meta)?)
    .bind(i.enabled)
    .bind(i.created_at)
    .bind(i.updated_at)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_key(conn: &mut PgConnection, k: &KeyRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (id, identity_id, name, prefix, start, digest, scopes, created_at, \
         updated_at, expires_at, revoked_at, enabled, ip_allowlist, rate_limits, remaining, \
         last_used_at, meta, rotated_from, rotated_to) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13::jsonb, \
         $14::jsonb, $15, $16, $17::json, $18, $19)",
    )
    .bind(k.id)
    .bind(k.identity_id)
    .bind(&k.name)
    .bind(&k.prefix)
    .bind(&k.start)
    .bind(&k.digest.as_bytes()[..])
    .bind(to_json(&k.scopes)?)
    .bind(k.created_at)
    .bind(k.updated_at)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(k.enabled)
    .bind(to_json(&k.ip_allowlist)?)
    .bind(to_json(&k.rate_limits)?)
    .bind(k.remaining)
    .bind(k.last_used_at)
    .bind(to_json(&k.meta)?)
    .bind(k.rotated_from)
    .bind(k.rotated_to)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// How a read inside a write transaction locks the row it reads.
#[derive(Clone, Copy)]
enum Lock {
    /// A plain read.
    None,
    /// To change the row.
    Update,
    /// To hang a key on an identity: a concurrent delete of the identity waits for the
    /// new key's commit, then revokes it too.
    Share,
}

macro_rules! live_identity_sql {
    ($lock:literal) => {
        concat!(
            "SELECT ",
            identity_cols!(),
            " FROM identities WHERE id = $1 AND deleted_at IS NULL",
            $lock
        )
    };
}

macro_rules! key_by_id_sql {
    ($lock:literal) => {
        concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys k WHERE k.id = $1",
            $lock
        )
    };
}

async fn live_identity(conn: &mut PgConnection, id: Uuid, lock: Lock) -> Result<Option<Identity>> {
    let sql = match lock {
        Lock::None => live_identity_sql!(""),
        Lock::Update => live_identity_sql!(" FOR UPDATE"),
        Lock::Share => live_identity_sql!(" FOR SHARE"),
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    row.as_ref().map(identity_from_row).transpose()
}

async fn key_by_id(conn: &mut PgConnection, id: Uuid, lock: Lock) -> Result<Option<KeyRecord>> {
    let sql = match lock {
        Lock::None => key_by_id_sql!(""),
        Lock::Update | Lock::Share => key_by_id_sql!(" FOR UPDATE"),
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    row.as_ref().map(key_from_row).transpose()
}

/// Writes every mutable column of a key from the record.
async fn write_key(conn: &mut PgConnection, k: &KeyRecord) -> Result<()> {
    sqlx::query(
        "UPDATE keys SET name = $1, scopes = $2::jsonb, updated_at = $3, expires_at = $4, \
         revoked_at = $5, enabled = $6, ip_allowlist = $7::jsonb, rate_limits = $8::jsonb, \
         remaining = $9, meta = $10::json, rotated_to = $11 WHERE id = $12",
    )
    .bind(&k.name)
    .bind(to_json(&k.scopes)?)
    .bind(k.updated_at)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(k.enabled)
    .bind(to_json(&k.ip_allowlist)?)
    .bind(to_json(&k.rate_limits)?)
    .bind(k.remaining)
    .bind(to_json(&k.meta)?)
    .bind(k.rotated_to)
    .bind(k.id)
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

async fn digests_of_identity(conn: &mut PgConnection, identity_id: Uuid) -> Result<Vec<KeyDigest>> {
    let rows = sqlx::query("SELECT digest FROM keys WHERE identity_id = $1 ORDER BY id")
        .bind(identity_id)
        .fetch_all(conn)
        .await
        .map_err(map_err)?;
    rows.iter().map(|r| get_digest(r, 0)).collect()
}

mod vault;

// ---------------------------------------------------------------- the trait

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn bootstrap(&self, b: &Bootstrap) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Nodes starting together on an empty database race here: the loser waits on
        // the primary key for the winner's commit, then inserts nothing.
        let marked = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('bootstrapped', $1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(b.audit.at.timestamp_micros().to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if marked.rows_affected() == 0 {
            return Ok(false); // dropping the transaction rolls it back
        }
        insert_identity(&mut tx, &b.identity).await?;
        insert_key(&mut tx, &b.key).await?;
        notify_changed(&mut tx, &[b.key.digest]).await?;
        insert_audit(&mut tx, &b.audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn create_identity(&self, identity: &Identity, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_identity(&mut tx, identity).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_identity(&self, id: Uuid) -> Result<Option<Identity>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        live_identity(&mut conn, id, Lock::None).await
    }

    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Identity>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            identity_cols!(),
            " FROM identities WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut tx = self.begin().await?;
        let Some(mut i) = live_identity(&mut tx, id, Lock::Update).await? else {
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
        i.updated_at = now;
        sqlx::query(
            "UPDATE identities SET name = $1, owner = $2, description = $3, meta = $4::json, \
             enabled = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(&i.name)
        .bind(&i.owner)
        .bind(&i.description)
        .bind(to_json(&i.meta)?)
        .bind(i.enabled)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // Verify reads the identity's enabled flag with each of its keys.
        let digests = digests_of_identity(&mut tx, id).await?;
        notify_changed(&mut tx, &digests).await?;
        let updated = live_identity(&mut tx, id, Lock::None).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(updated)
    }

    async fn delete_identity(
        &self,
        id: Uuid,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyDigest>>> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(
            "UPDATE identities SET deleted_at = $1, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        // Keys not yet revoked: never revoked, or revoked in the future (a rotated key in
        // its grace period). Those get `revoked_at = now`; earlier revocations stay.
        let rows = sqlx::query(
            "UPDATE keys SET revoked_at = $1, updated_at = $1 \
             WHERE identity_id = $2 AND (revoked_at IS NULL OR revoked_at > $1) \
             RETURNING digest",
        )
        .bind(now)
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let digests = rows
            .iter()
            .map(|r| get_digest(r, 0))
            .collect::<Result<Vec<_>>>()?;
        // Every key of the identity: those revoked earlier also read the identity.
        let all = digests_of_identity(&mut tx, id).await?;
        notify_changed(&mut tx, &all).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(digests))
    }

    async fn key_digests_of_identity(&self, identity_id: Uuid) -> Result<Vec<KeyDigest>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        digests_of_identity(&mut conn, identity_id).await
    }

    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        if live_identity(&mut tx, key.identity_id, Lock::Share)
            .await?
            .is_none()
        {
            return Err(StoreError::Conflict(
                "the identity does not exist or is deleted".to_owned(),
            ));
        }
        insert_key(&mut tx, key).await?;
        // Nodes that answered NOT_FOUND for this digest forget it.
        notify_changed(&mut tx, &[key.digest]).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<KeyRecord>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        key_by_id(&mut conn, id, Lock::None).await
    }

    async fn get_key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyWithIdentity>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            ", (i.enabled AND i.deleted_at IS NULL) FROM keys k \
             JOIN identities i ON i.id = k.identity_id WHERE k.digest = $1"
        ))
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
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
        let after = after.unwrap_or(Uuid::nil());
        let rows = match identity_id {
            Some(identity_id) => sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM keys k WHERE k.identity_id = $1 AND k.id > $2 ORDER BY k.id LIMIT $3"
            ))
            .bind(identity_id)
            .bind(after)
            .bind(i64::from(limit)),
            None => sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM keys k WHERE k.id > $1 ORDER BY k.id LIMIT $2"
            ))
            .bind(after)
            .bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
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
        let mut tx = self.begin().await?;
        let Some(mut k) = key_by_id(&mut tx, id, Lock::Update).await? else {
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
        notify_changed(&mut tx, &[k.digest]).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(k))
    }

    async fn revoke_key(
        &self,
        id: Uuid,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin().await?;
        let Some(mut k) = key_by_id(&mut tx, id, Lock::Update).await? else {
            return Ok(None);
        };
        let revoked_at = earlier(k.revoked_at, now);
        if k.revoked_at != Some(revoked_at) {
            k.revoked_at = Some(revoked_at);
            k.updated_at = now;
            write_key(&mut tx, &k).await?;
            notify_changed(&mut tx, &[k.digest]).await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(k))
    }

    async fn rotate_key(
        &self,
        old_id: Uuid,
        new: &KeyRecord,
        old_revoked_at: Timestamp,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin().await?;
        let Some(mut old) = key_by_id(&mut tx, old_id, Lock::Update).await? else {
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
        if live_identity(&mut tx, new.identity_id, Lock::Share)
            .await?
            .is_none()
        {
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
        notify_changed(&mut tx, &[old.digest, new.digest]).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(old))
    }

    async fn consume_remaining(&self, id: Uuid) -> Result<Consumed> {
        // One statement, one round trip, no explicit transaction. The UPDATE takes the
        // row lock; a concurrent taker on any node waits for it and then re-checks
        // `remaining > 0` on the row as committed (READ COMMITTED re-evaluation), so the
        // last unit is taken once. The outer SELECT reads the key in the statement's
        // snapshot, only to tell "no quota" and "no such key" from "used up".
        let row = sqlx::query(
            "WITH taken AS ( \
                 UPDATE keys SET remaining = remaining - 1 \
                 WHERE id = $1 AND remaining > 0 RETURNING remaining) \
             SELECT (SELECT remaining FROM taken), k.remaining FROM keys k WHERE k.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(Consumed::Missing);
        };
        let taken: Option<i64> = get(&row, 0)?;
        let before: Option<i64> = get(&row, 1)?;
        Ok(match (taken, before) {
            (Some(left), _) => Consumed::Taken { left },
            (None, None) => Consumed::Unlimited,
            (None, Some(_)) => Consumed::Exhausted,
        })
    }

    async fn refund_remaining(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE keys SET remaining = remaining + 1 WHERE id = $1 AND remaining IS NOT NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn record_last_used(&self, uses: &[(Uuid, Timestamp)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // One statement for the batch. Sorted by id so that two nodes writing
        // overlapping batches lock rows in the same order (no deadlock).
        let mut uses = uses.to_vec();
        uses.sort_by_key(|(id, _)| *id);
        uses.dedup_by_key(|(id, _)| *id);
        let (ids, ats): (Vec<Uuid>, Vec<Timestamp>) = uses.into_iter().unzip();
        sqlx::query(
            "UPDATE keys k SET last_used_at = u.at \
             FROM (SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) \
                   ORDER BY id) u \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(ats)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_audit(&self, after: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, request_id, source_ip, detail::text \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn sweep_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<Uuid>> {
        let mut tx = self.begin().await?;
        // The mark's row, locked: a second sweep (a brief overlap of leaders) waits,
        // then starts after what this one recorded.
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, '') ON CONFLICT DO NOTHING")
            .bind(crate::EXPIRY_MARK)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let mark: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1 FOR UPDATE")
                .bind(crate::EXPIRY_MARK)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
        let (t, id) = crate::parse_expiry_mark(Some(&mark));
        let after: Option<Timestamp> = if t == i64::MIN {
            None // never swept
        } else {
            Some(
                chrono::DateTime::from_timestamp_micros(t)
                    .ok_or_else(|| corrupt("settings.expiry_swept_to: time out of range"))?,
            )
        };
        let rows = sqlx::query(
            "SELECT id, identity_id, expires_at FROM keys \
             WHERE expires_at IS NOT NULL AND expires_at <= $1 \
             AND ($2::timestamptz IS NULL OR (expires_at, id) > ($2, $3)) \
             AND (revoked_at IS NULL OR revoked_at > expires_at) \
             ORDER BY expires_at, id LIMIT $4",
        )
        .bind(now)
        .bind(after)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in &rows {
            let id: Uuid = get(r, 0)?;
            let identity_id: Uuid = get(r, 1)?;
            let at: Timestamp = get(r, 2)?;
            insert_audit(&mut tx, &crate::expiry_audit(now, id, identity_id, at)).await?;
            ids.push(id);
            last = Some((at.timestamp_micros(), id));
        }
        if let Some((t, id)) = last {
            sqlx::query("UPDATE settings SET value = $2 WHERE key = $1")
                .bind(crate::EXPIRY_MARK)
                .bind(format!("{t}/{id}"))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ids)
    }

    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        Some(Box::new(PgChangeFeed {
            pool: self.pool.clone(),
            listener: None,
        }))
    }

    fn leadership(&self) -> Option<Box<dyn Leadership>> {
        Some(Box::new(PgLeadership {
            pool: self.pool.clone(),
            conn: None,
            held: false,
        }))
    }
}

// ---------------------------------------------------------------- job leadership

/// Key of the session-level advisory lock whose holder runs the background jobs
/// (an arbitrary constant: "kw" "jobs").
const JOBS_LOCK: i64 = 0x0000_6b77_6a6f_6273;

/// Holds [`JOBS_LOCK`] on a dedicated connection (not one of the pool's: a session lock
/// belongs to its connection). The lock goes with the session: when the leader process
/// dies, PostgreSQL ends its session and frees the lock, and the next node to try takes
/// it.
pub struct PgLeadership {
    pool: PgPool,
    conn: Option<PgConnection>,
    held: bool,
}

#[async_trait]
impl Leadership for PgLeadership {
    async fn lead(&mut self) -> bool {
        use sqlx::Connection;
        if self.conn.is_none() {
            let opts = self.pool.connect_options();
            match PgConnection::connect_with(&opts).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "job leadership: cannot connect");
                    return false;
                }
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        let answer = if self.held {
            // Still our session? Then still our lock.
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut *conn)
                .await
                .map(|_| true)
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(JOBS_LOCK)
                .fetch_one(&mut *conn)
                .await
        };
        match answer {
            Ok(held) => {
                self.held = held;
                held
            }
            Err(e) => {
                if self.held {
                    tracing::warn!(error = %e, "job leadership lost with the connection");
                }
                self.conn = None;
                self.held = false;
                false
            }
        }
    }
}

// ---------------------------------------------------------------- the change feed

/// Follows [`CHANGES_CHANNEL`] on a dedicated connection (not one of the pool's).
///
/// When the connection is lost, notifications sent meanwhile are lost with it; so after
/// every (re)connection — once `LISTEN` is in place, so nothing committed from then on
/// can be missed — the feed yields [`Change::Flush`] first.
pub struct PgChangeFeed {
    pool: PgPool,
    listener: Option<PgListener>,
}

/// Pause between attempts to reconnect the listener.
const RELISTEN_EVERY: Duration = Duration::from_millis(250);

impl PgChangeFeed {
    async fn connect(&self) -> std::result::Result<PgListener, sqlx::Error> {
        // Reconnection is ours to do (a fresh listener each time, see `next`): the feed
        // must know of it, to say `Flush`.
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen(CHANGES_CHANNEL).await?;
        Ok(l)
    }
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn next(&mut self) -> Change {
        loop {
            let Some(listener) = self.listener.as_mut() else {
                match self.connect().await {
                    Ok(l) => {
                        self.listener = Some(l);
                        return Change::Flush;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "change feed: cannot listen yet");
                        tokio::time::sleep(RELISTEN_EVERY).await;
                        continue;
                    }
                }
            };
            match listener.try_recv().await {
                Ok(Some(n)) => return parse_payload(n.payload()),
                Ok(None) | Err(_) => {
                    tracing::warn!("change feed: connection to PostgreSQL lost; reconnecting");
                    self.listener = None;
                }
            }
        }
    }
}

fn parse_payload(payload: &str) -> Change {
    if payload == FLUSH {
        return Change::Flush;
    }
    let mut digests = Vec::new();
    for hex in payload.split(',') {
        match KeyDigest::from_hex(hex) {
            Some(d) => digests.push(d),
            // Not ours to understand (a newer node?): forgetting everything is safe.
            None => return Change::Flush,
        }
    }
    Change::Keys(digests)
}

// After the row macros above, which it uses.
mod usage;
