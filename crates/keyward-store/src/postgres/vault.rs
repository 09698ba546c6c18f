//! `VaultStore` on PostgreSQL: secret versions and rotation policies
//! (`migrations/postgres/0030_vault.sql`).

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use keyward_core::envelope::Sealed;
use keyward_core::model::{AuditEntry, KeyRecord};
use keyward_core::rotation::RotationPolicy;
use keyward_core::time::Timestamp;

use super::{
    KEY_COLS, Lock, PgStore, earlier, get, get_json, insert_audit, insert_key, key_by_id,
    key_from_row, live_identity, map_err, notify_changed, to_json, write_key,
};
use crate::vault::{Rewrap, ScheduledRotation, SecretSummary, SecretVersion, VaultStore};
use crate::{Result, StoreError};

/// Secret version columns, in the order `version_from_row` reads them.
macro_rules! version_cols {
    () => {
        "path, version, ciphertext, wrapped_key, master_key_id, meta::text, created_at"
    };
}

/// Rotation policy columns (of `rotation_policies p`), as `policy_from_row` reads them.
macro_rules! policy_cols {
    () => {
        "p.key_id, p.max_age_seconds, p.grace_seconds, p.deliver_to, p.created_at, p.updated_at"
    };
}

fn version_from_row(row: &PgRow) -> Result<SecretVersion> {
    Ok(SecretVersion {
        path: get(row, 0)?,
        version: get(row, 1)?,
        sealed: Sealed {
            ciphertext: get(row, 2)?,
            wrapped_key: get(row, 3)?,
            master_key_id: get(row, 4)?,
        },
        meta: get_json(row, 5, "secret_versions.meta")?,
        created_at: get(row, 6)?,
    })
}

fn policy_from_row(row: &PgRow, at: usize) -> Result<RotationPolicy> {
    Ok(RotationPolicy {
        key_id: get(row, at)?,
        max_age_seconds: get(row, at + 1)?,
        grace_seconds: get(row, at + 2)?,
        deliver_to: get(row, at + 3)?,
        created_at: get(row, at + 4)?,
        updated_at: get(row, at + 5)?,
    })
}

async fn insert_version(conn: &mut PgConnection, v: &SecretVersion) -> Result<()> {
    sqlx::query(
        "INSERT INTO secret_versions \
         (path, version, ciphertext, wrapped_key, master_key_id, meta, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6::json, $7)",
    )
    .bind(&v.path)
    .bind(v.version)
    .bind(&v.sealed.ciphertext)
    .bind(&v.sealed.wrapped_key)
    .bind(&v.sealed.master_key_id)
    .bind(to_json(&v.meta)?)
    .bind(v.created_at)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl VaultStore for PgStore {
    async fn latest_secret_version(&self, path: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT max(version) FROM secret_versions WHERE path = $1")
            .bind(path)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn put_secret_version(&self, v: &SecretVersion, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_version(&mut tx, v).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_secret_version(
        &self,
        path: &str,
        version: Option<i64>,
    ) -> Result<Option<SecretVersion>> {
        let row = match version {
            Some(v) => sqlx::query(concat!(
                "SELECT ",
                version_cols!(),
                " FROM secret_versions WHERE path = $1 AND version = $2"
            ))
            .bind(path)
            .bind(v)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?,
            None => sqlx::query(concat!(
                "SELECT ",
                version_cols!(),
                " FROM secret_versions WHERE path = $1 ORDER BY version DESC LIMIT 1"
            ))
            .bind(path)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?,
        };
        row.as_ref().map(version_from_row).transpose()
    }

    async fn record_secret_access(&self, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_secrets(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SecretSummary>> {
        // `starts_with` compares literally (no LIKE wildcards to escape); `COLLATE "C"`
        // makes the order byte order, the same as SQLite's.
        let rows = sqlx::query(
            "SELECT path, max(version), max(created_at) FROM secret_versions \
             WHERE starts_with(path, $1) AND path COLLATE \"C\" > $2 \
             GROUP BY path ORDER BY path COLLATE \"C\" LIMIT $3",
        )
        .bind(prefix)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(SecretSummary {
                    path: get(r, 0)?,
                    version: get(r, 1)?,
                    updated_at: get(r, 2)?,
                })
            })
            .collect()
    }

    async fn delete_secret(&self, path: &str, audit: &AuditEntry) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM secret_versions WHERE path = $1")
            .bind(path)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        if n == 0 {
            return Ok(0);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }

    async fn secrets_to_rewrap(
        &self,
        current_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SecretVersion>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            version_cols!(),
            " FROM secret_versions WHERE master_key_id <> $1 ORDER BY path, version LIMIT $2"
        ))
        .bind(current_key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn rewrap_secrets(&self, rewraps: &[Rewrap], audit: &AuditEntry) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut n = 0;
        for r in rewraps {
            n += sqlx::query(
                "UPDATE secret_versions SET wrapped_key = $1, master_key_id = $2 \
                 WHERE path = $3 AND version = $4 AND master_key_id = $5",
            )
            .bind(&r.wrapped_key)
            .bind(&r.master_key_id)
            .bind(&r.path)
            .bind(r.version)
            .bind(&r.old_master_key_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        }
        if n > 0 {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }

    async fn put_rotation_policy(&self, p: &RotationPolicy, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin().await?;
        if key_by_id(&mut tx, p.key_id, Lock::Update).await?.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO rotation_policies \
             (key_id, max_age_seconds, grace_seconds, deliver_to, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (key_id) DO UPDATE SET max_age_seconds = excluded.max_age_seconds, \
             grace_seconds = excluded.grace_seconds, deliver_to = excluded.deliver_to, \
             updated_at = excluded.updated_at",
        )
        .bind(p.key_id)
        .bind(p.max_age_seconds)
        .bind(p.grace_seconds)
        .bind(&p.deliver_to)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn get_rotation_policy(&self, key_id: Uuid) -> Result<Option<RotationPolicy>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            policy_cols!(),
            " FROM rotation_policies p WHERE p.key_id = $1"
        ))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(|r| policy_from_row(r, 0)).transpose()
    }

    async fn delete_rotation_policy(&self, key_id: Uuid, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM rotation_policies WHERE key_id = $1")
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn due_rotations(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(RotationPolicy, KeyRecord)>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            ", ",
            policy_cols!(),
            " FROM rotation_policies p JOIN keys k ON k.id = p.key_id \
             WHERE k.rotated_to IS NULL AND (k.revoked_at IS NULL OR k.revoked_at > $1) \
             AND k.created_at + make_interval(secs => p.max_age_seconds) <= $1 \
             ORDER BY k.created_at LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((policy_from_row(r, KEY_COLS)?, key_from_row(r)?)))
            .collect()
    }

    async fn rotate_on_schedule(&self, r: &ScheduledRotation) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin().await?;
        let Some(mut old) = key_by_id(&mut tx, r.old_id, Lock::Update).await? else {
            return Ok(None);
        };
        if old.revoked_at.is_some_and(|t| t <= r.now) {
            return Err(StoreError::Conflict("the key is already revoked".into()));
        }
        if old.rotated_to.is_some() {
            return Err(StoreError::Conflict("the key is already rotated".into()));
        }
        if live_identity(&mut tx, r.new.identity_id, Lock::Share)
            .await?
            .is_none()
        {
            return Err(StoreError::Conflict(
                "the identity does not exist or is deleted".into(),
            ));
        }
        let mut new = r.new.clone();
        new.rotated_from = Some(r.old_id);
        insert_key(&mut tx, &new).await?;
        old.rotated_to = Some(new.id);
        old.revoked_at = Some(earlier(old.revoked_at, r.old_revoked_at));
        old.updated_at = r.now;
        write_key(&mut tx, &old).await?;
        sqlx::query("UPDATE rotation_policies SET key_id = $1, updated_at = $2 WHERE key_id = $3")
            .bind(new.id)
            .bind(r.now)
            .bind(r.old_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if let Some(v) = &r.delivery {
            insert_version(&mut tx, v).await?;
        }
        notify_changed(&mut tx, &[old.digest, new.digest]).await?;
        for a in &r.audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Some(old))
    }
}
