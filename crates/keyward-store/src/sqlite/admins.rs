//! [`AdminStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::time::Timestamp;

use super::{
    SqliteStore, get, get_json, get_time, get_uuid, id_text, insert_audit, insert_identity,
    insert_key, map_err, micros, to_json,
};
use crate::Result;
use crate::admins::{AdminRecord, AdminStore, SecondFactor};
use crate::sealed_secrets::sealed_from_row;

const ADMIN_COLS: &str = "id, username, identity_id, password_hash, totp_secret, scopes, \
                          enabled, created_at, last_totp_step, totp_secret_ciphertext, \
                          totp_secret_wrapped_key, totp_secret_master_key_id";

fn admin_from_row(row: &SqliteRow) -> Result<AdminRecord> {
    Ok(AdminRecord {
        id: get_uuid(row, 0, "admins.id")?,
        username: get(row, 1)?,
        identity_id: get_uuid(row, 2, "admins.identity_id")?,
        password_hash: get(row, 3)?,
        totp_secret: get(row, 4)?,
        scopes: get_json(row, 5, "admins.scopes")?,
        enabled: get(row, 6)?,
        created_at: get_time(row, 7, "admins.created_at")?,
        last_totp_step: get(row, 8)?,
        sealed_totp_secret: sealed_from_row(
            get(row, 9)?,
            get(row, 10)?,
            get(row, 11)?,
            "admins.totp_secret_*",
        )?,
    })
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn create_admin(
        &self,
        admin: &AdminRecord,
        identity: &Identity,
        recovery_code_hashes: &[String],
        audit: &AuditEntry,
    ) -> Result<()> {
        // A sealed TOTP secret is never also kept in the clear.
        let sealed = admin.sealed_totp_secret.as_ref();
        let plaintext = if sealed.is_some() {
            ""
        } else {
            admin.totp_secret.as_str()
        };
        let mut tx = self.begin_write().await?;
        insert_identity(&mut tx, identity).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO admins ({ADMIN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)"
        )))
        .bind(id_text(admin.id))
        .bind(&admin.username)
        .bind(id_text(admin.identity_id))
        .bind(&admin.password_hash)
        .bind(plaintext)
        .bind(to_json(&admin.scopes)?)
        .bind(admin.enabled)
        .bind(micros(admin.created_at))
        .bind(sealed.map(|s| &s.ciphertext))
        .bind(sealed.map(|s| &s.wrapped_key))
        .bind(sealed.map(|s| &s.master_key_id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        for h in recovery_code_hashes {
            sqlx::query("INSERT INTO admin_recovery_codes (admin_id, code_hash) VALUES (?, ?)")
                .bind(id_text(admin.id))
                .bind(h)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn admin_by_username(&self, username: &str) -> Result<Option<AdminRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ADMIN_COLS} FROM admins WHERE username = ?"
        )))
        .bind(username)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(admin_from_row).transpose()
    }

    async fn list_admins(&self) -> Result<Vec<AdminRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ADMIN_COLS} FROM admins ORDER BY username"
        )))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(admin_from_row).collect()
    }

    async fn set_admin_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<AdminRecord>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE admins SET enabled = ? WHERE id = ? RETURNING {ADMIN_COLS}"
        )))
        .bind(enabled)
        .bind(id_text(id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let admin = admin_from_row(&row)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(admin))
    }

    async fn open_session(
        &self,
        admin_id: Uuid,
        factor: &SecondFactor,
        session: &KeyRecord,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        // Compare-and-set: only a later step, or an unused code, of an enabled admin.
        let consumed = match factor {
            SecondFactor::Totp { step } => sqlx::query(
                "UPDATE admins SET last_totp_step = ? WHERE id = ? AND enabled = 1 \
                 AND (last_totp_step IS NULL OR last_totp_step < ?)",
            )
            .bind(step)
            .bind(id_text(admin_id))
            .bind(step)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?,
            SecondFactor::Recovery { code_hash } => sqlx::query(
                "UPDATE admin_recovery_codes SET used_at = ? WHERE admin_id = ? \
                 AND code_hash = ? AND used_at IS NULL \
                 AND EXISTS (SELECT 1 FROM admins WHERE id = ? AND enabled = 1)",
            )
            .bind(micros(now))
            .bind(id_text(admin_id))
            .bind(code_hash)
            .bind(id_text(admin_id))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?,
        }
        .rows_affected();
        if consumed == 0 {
            return Ok(false);
        }
        insert_key(&mut tx, session).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn use_totp_step(&self, admin_id: Uuid, step: i64, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let used = sqlx::query(
            "UPDATE admins SET last_totp_step = ? WHERE id = ? AND enabled = 1 \
             AND (last_totp_step IS NULL OR last_totp_step < ?)",
        )
        .bind(step)
        .bind(id_text(admin_id))
        .bind(step)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if used == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }
}
