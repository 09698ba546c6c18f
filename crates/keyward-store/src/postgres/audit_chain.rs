//! The audit hash chain on PostgreSQL: the chained append every mutation uses, the
//! one-time chaining of records written before the chain existed, and
//! [`AuditChainStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use keyward_core::audit_chain::{
    AuditCheckpoint, AuditFields, GENESIS, StoredAudit, hash_from_slice, link_hash,
};
use keyward_core::model::AuditEntry;
use keyward_core::time::truncate;

use super::{AUDIT_LOCK, PgStore, get, map_err, to_json};
use crate::audit_chain::AuditChainStore;
use crate::{Result, StoreError};

/// Audit columns, in the order `stored_from_row` reads them.
macro_rules! stored_cols {
    () => {
        "seq, at, actor, action, target, request_id, source_ip, detail::text, hash"
    };
}

/// The settings marker the 0040 migration leaves until old records are chained.
const BACKFILL_MARK: &str = "audit_chain_backfill";

/// Appends `a` with its chain hash. The caller holds the audit advisory lock (taken by
/// `insert_audit`), so appends are serialised cluster-wide: the last record read here
/// is still the last when this transaction commits, and `nextval` hands out the next
/// sequence number in that same order (moved past any record inserted by hand, so such
/// a record cannot block appends). The sequence number is taken before the insert
/// because it is part of what is hashed.
pub(super) async fn insert_chained(conn: &mut PgConnection, a: &AuditEntry) -> Result<()> {
    let row = sqlx::query(
        "SELECT setval(pg_get_serial_sequence('audit_log', 'seq'), \
                       GREATEST(nextval(pg_get_serial_sequence('audit_log', 'seq')), \
                                (SELECT COALESCE(max(seq), 0) + 1 FROM audit_log))), \
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
    // What PostgreSQL keeps (it would round finer times; truncate them ourselves so the
    // hashed value is the stored one).
    let at = truncate(a.at);
    let hash = link_hash(
        &prev,
        AuditFields {
            seq,
            at_micros: at.timestamp_micros(),
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
         OVERRIDING SYSTEM VALUE \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, $9)",
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

/// Chains the records written before migration 0040, once: under the audit lock (no
/// append runs meanwhile, on any node) and in one transaction with the removal of its
/// marker, so it never runs again.
pub(super) async fn backfill(store: &PgStore) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let pending = sqlx::query("DELETE FROM settings WHERE key = $1")
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
        sqlx::query("UPDATE audit_log SET hash = $1 WHERE seq = $2")
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

fn stored_from_row(row: &PgRow) -> Result<StoredAudit> {
    let at: DateTime<Utc> = get(row, 1)?;
    let hash: Option<Vec<u8>> = get(row, 8)?;
    Ok(StoredAudit {
        seq: get(row, 0)?,
        at_micros: at.timestamp_micros(),
        actor: get(row, 2)?,
        action: get(row, 3)?,
        target: get(row, 4)?,
        request_id: get(row, 5)?,
        source_ip: get(row, 6)?,
        detail: get(row, 7)?,
        hash: hash.as_deref().and_then(hash_from_slice),
    })
}

fn checkpoint_from_row(row: &PgRow) -> Result<AuditCheckpoint> {
    let hash: Vec<u8> = get(row, 1)?;
    let at: DateTime<Utc> = get(row, 4)?;
    Ok(AuditCheckpoint {
        seq: get(row, 0)?,
        hash: hash_from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("audit_checkpoints.hash: not 32 bytes".into()))?,
        signature: get(row, 2)?,
        key_id: get(row, 3)?,
        at_micros: at.timestamp_micros(),
    })
}

#[async_trait]
impl AuditChainStore for PgStore {
    async fn list_stored_audit(&self, after: i64, limit: u32) -> Result<Vec<StoredAudit>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            stored_cols!(),
            " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn list_audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        let rows = sqlx::query(
            "SELECT seq, hash, signature, key_id, at FROM audit_checkpoints ORDER BY seq, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn last_audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        let row = sqlx::query(
            "SELECT seq, hash, signature, key_id, at FROM audit_checkpoints \
             ORDER BY seq DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn add_audit_checkpoint(&self, cp: &AuditCheckpoint) -> Result<()> {
        let at = DateTime::<Utc>::from_timestamp_micros(cp.at_micros)
            .ok_or_else(|| StoreError::Corrupt("checkpoint time out of range".into()))?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, signature, key_id, at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(cp.seq)
        .bind(&cp.hash[..])
        .bind(&cp.signature)
        .bind(&cp.key_id)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}
