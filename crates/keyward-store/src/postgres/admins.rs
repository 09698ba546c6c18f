//! [`AdminStore`] on PostgreSQL. Concurrent logins with one TOTP code on several nodes
//! race on one conditional `UPDATE`: PostgreSQL re-checks its condition after waiting
//! for the other, so exactly one of them opens a session.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::time::Timestamp;

use super::{
    PgStore, get, get_json, insert_audit, insert_identity, insert_key, map_err, notify_changed,
    to_json,
};
use crate::Result;
use crate::admins::{AdminRecord, AdminStore, SecondFactor};
use crate::sealed_secrets::sealed_from_row;

const ADMIN_COLS: &str = "id, username, identity_id, password_hash, totp_secret, scopes::text, \
                          enabled, created_at, last_totp_step, totp_secret_ciphertext, \
                          totp_secret_wrapped_key, totp_secret_master_key_id";

fn admin_from_row(row: &PgRow) -> Result<AdminRecord> {
    Ok(AdminRecord {
        id: get(row, 0)?,
        username: get(row, 1)?,
        identity_id: get(row, 2)?,
        password_hash: get(row, 3)?,
        totp_secret: get(row, 4)?,
        scopes: get_json(row, 5, "admins.scopes")?,
        enabled: get(row, 6)?,
        created_at: get(row, 7)?,
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
impl AdminStore for PgStore {
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
        let mut tx = self.begin().await?;
        insert_identity(&mut tx, identity).await?;
        sqlx::query(
            "INSERT INTO admins (id, username, identity_id, password_hash, totp_secret, \
             scopes, enabled, created_at, last_totp_step, totp_secret_ciphertext, \
             totp_secret_wrapped_key, totp_secret_master_key_id) \
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, NULL, $9, $10, $11)",
        )
        .bind(admin.id)
        .bind(&admin.username)
        .bind(admin.identity_id)
        .bind(&admin.password_hash)
        .bind(plaintext)
        .bind(to_json(&admin.scopes)?)
        .bind(admin.enabled)
        .bind(admin.created_at)
        .bind(sealed.map(|s| &s.ciphertext))
        .bind(sealed.map(|s| &s.wrapped_key))
        .bind(sealed.map(|s| &s.master_key_id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        for h in recovery_code_hashes {
            sqlx::query("INSERT INTO admin_recovery_codes (admin_id, code_hash) VALUES ($1, $2)")
                .bind(admin.id)
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
            "SELECT {ADMIN_COLS} FROM admins WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(admin_from_row).transpose()
    }

    async fn list_admins(&self) -> Result<Vec<AdminRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ADMIN_COLS} FROM admins ORDER BY username"
        )))
        .fetch_all(&self.pool)
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
        let mut tx = self.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE admins SET enabled = $1 WHERE id = $2 RETURNING {ADMIN_COLS}"
        )))
        .bind(enabled)
        .bind(id)
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
        let mut tx = self.begin().await?;
        let consumed = match factor {
            SecondFactor::Totp { step } => sqlx::query(
                "UPDATE admins SET last_totp_step = $1 WHERE id = $2 AND enabled \
                 AND (last_totp_step IS NULL OR last_totp_step < $1)",
            )
            .bind(step)
            .bind(admin_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?,
            SecondFactor::Recovery { code_hash } => sqlx::query(
                "UPDATE admin_recovery_codes SET used_at = $1 WHERE admin_id = $2 \
                 AND code_hash = $3 AND used_at IS NULL \
                 AND EXISTS (SELECT 1 FROM admins WHERE id = $2 AND enabled)",
            )
            .bind(now)
            .bind(admin_id)
            .bind(code_hash)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?,
        }
        .rows_affected();
        if consumed == 0 {
            return Ok(false);
        }
        insert_key(&mut tx, session).await?;
        // Nodes that answered NOT_FOUND for this digest forget it.
        notify_changed(&mut tx, &[session.digest]).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn use_totp_step(&self, admin_id: Uuid, step: i64, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin().await?;
        let used = sqlx::query(
            "UPDATE admins SET last_totp_step = $1 WHERE id = $2 AND enabled \
             AND (last_totp_step IS NULL OR last_totp_step < $1)",
        )
        .bind(step)
        .bind(admin_id)
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
