//! The audit hash chain on SQLite: the chained append every mutation uses, the one-time
//! chaining of records written before the chain existed, and [`AuditChainStore`].

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};

use keyward_core::audit_chain::{
    AuditCheckpoint, AuditFields, GENESIS, StoredAudit, hash_from_slice, link_hash,
};
use keyward_core::model::AuditEntry;

use super::{SqliteStore, get, map_err, micros, to_json};
use crate::audit_chain::AuditChainStore;
use crate::{Result, StoreError};

/// Audit columns, in the order `stored_from_row` reads them.
macro_rules! stored_cols {
    () => {
        "seq, at, actor, action, target, request_id, source_ip, detail, hash"
    };
}

/// The settings marker the 0040 migration leaves until old records are chained.
const BACKFILL_MARK: &str = "audit_chain_backfill";

/// Appends `a` to the log with its chain hash. Writes are serialised (one writer
/// connection, `BEGIN IMMEDIATE`), so the last record read here is still the last one
/// when this transaction commits. The sequence number is taken from AUTOINCREMENT's
/// counter before the insert, as it is part of what is hashed.
pub(super) async fn insert_chained(conn: &mut SqliteConnection, a: &AuditEntry) -> Result<()> {
    let row = sqlx::query(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'), 0) + 1, \
                (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    let seq: i64 = get(&row, 0)?;
    let prev: Option<Vec<u8>> = get(&row, 1)?;
    // A damaged last hash must not stop every write: chain on from GENESIS, and let
    // verification report the damaged record.
    let prev = prev.as_deref().and_then(hash_from_slice).unwrap_or(GENESIS);
    let detail = to_json(&a.detail)?;
    let at = micros(a.at);
    let hash = link_hash(
        &prev,
        AuditFields {
            seq,
            at_micros: at,
            actor: &a.actor,
            action: &a.action,
            target: &a.target,
            request_id: a.request_id.as_deref(),
            source_ip: a.source_ip.as_deref(),
            detail: &detail,
        },
    );
    sqlx::query(
        "INSERT INTO audit_log \
         (seq, at, actor, action, target, request_id, source_ip, detail, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(at)
    .bind(&a.actor)
    .bind(&a.action)
    .bind(&a.target)
    .bind(&a.request_id)
    .bind(&a.source_ip)
    .bind(detail)
    .bind(&hash[..])
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Chains the records written before migration 0040, once: in one transaction with the
/// removal of its marker, so it never runs again (a record without a hash found later
/// is then reported by verification, not silently chained).
pub(super) async fn backfill(writer: &SqlitePool) -> Result<()> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(map_err)?;
    let pending = sqlx::query("DELETE FROM settings WHERE key = ?")
        .bind(BACKFILL_MARK)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    if pending == 0 {
        return Ok(());
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        stored_cols!(),
        " FROM audit_log ORDER BY seq"
    ))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut prev = GENESIS;
    for row in &rows {
        let r = stored_from_row(row)?;
        let hash = link_hash(&prev, r.fields());
        sqlx::query("UPDATE audit_log SET hash = ? WHERE seq = ?")
            .bind(&hash[..])
            .bind(r.seq)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        prev = hash;
    }
    tx.commit().await.map_err(map_err)?;
    if !rows.is_empty() {
        tracing::info!(records = rows.len(), "chained the existing audit log");
    }
    Ok(())
}

fn stored_from_row(row: &SqliteRow) -> Result<StoredAudit> {
    let hash: Option<Vec<u8>> = get(row, 8)?;
    Ok(StoredAudit {
        seq: get(row, 0)?,
        at_micros: get(row, 1)?,
        actor: get(row, 2)?,
        action: get(row, 3)?,
        target: get(row, 4)?,
        request_id: get(row, 5)?,
        source_ip: get(row, 6)?,
        detail: get(row, 7)?,
        hash: hash.as_deref().and_then(hash_from_slice),
    })
}

fn checkpoint_from_row(row: &SqliteRow) -> Result<AuditCheckpoint> {
    let hash: Vec<u8> = get(row, 1)?;
    Ok(AuditCheckpoint {
        seq: get(row, 0)?,
        hash: hash_from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("audit_checkpoints.hash: not 32 bytes".into()))?,
        signature: get(row, 2)?,
        key_id: get(row, 3)?,
        at_micros: get(row, 4)?,
    })
}

#[async_trait]
impl AuditChainStore for SqliteStore {
    async fn list_stored_audit(&self, after: i64, limit: u32) -> Result<Vec<StoredAudit>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            stored_cols!(),
            " FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn list_audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        let rows = sqlx::query(
            "SELECT seq, hash, signature, key_id, at FROM audit_checkpoints ORDER BY seq, id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn last_audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        let row = sqlx::query(
            "SELECT seq, hash, signature, key_id, at FROM audit_checkpoints \
             ORDER BY seq DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn add_audit_checkpoint(&self, cp: &AuditCheckpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, signature, key_id, at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(cp.seq)
        .bind(&cp.hash[..])
        .bind(&cp.signature)
        .bind(&cp.key_id)
        .bind(cp.at_micros)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}
