//! [`SealedSecretStore`] on the embedded store.

use async_trait::async_trait;
use zeroize::Zeroizing;

use keyward_core::envelope::Sealed;
use keyward_core::model::AuditEntry;

use super::{SqliteStore, get, insert_audit, map_err};
use crate::Result;
use crate::sealed_secrets::{
    PlaintextSecret, SealedKind, SealedRewrap, SealedSecret, SealedSecretStore,
};

#[async_trait]
impl SealedSecretStore for SqliteStore {
    async fn plaintext_secrets(
        &self,
        kind: SealedKind,
        limit: u32,
    ) -> Result<Vec<PlaintextSecret>> {
        // Fixed table and column names (`SealedKind::columns`), never input.
        let (table, plain, pre) = kind.columns();
        let id = kind.id_column();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {id}, {plain} FROM {table} WHERE {pre}_ciphertext IS NULL \
             ORDER BY {id} LIMIT ?"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                // Bytes (a private key) or text (a TOTP secret, a webhook secret).
                let plaintext = if kind.plaintext_is_bytes() {
                    Zeroizing::new(get::<Vec<u8>>(r, 1)?)
                } else {
                    Zeroizing::new(get::<String>(r, 1)?.into_bytes())
                };
                Ok(PlaintextSecret {
                    id: get(r, 0)?,
                    plaintext,
                })
            })
            .collect()
    }

    async fn seal_plaintext_secrets(
        &self,
        kind: SealedKind,
        sealed: &[SealedSecret],
        audit: &AuditEntry,
    ) -> Result<u64> {
        // Fixed table and column names (`SealedKind::columns`), never input.
        let (table, plain, pre) = kind.columns();
        let id = kind.id_column();
        // Cleared to the empty value of the column's type (STRICT tables check it).
        let empty = if kind.plaintext_is_bytes() {
            "X''"
        } else {
            "''"
        };
        let sql = format!(
            "UPDATE {table} SET {plain} = {empty}, {pre}_ciphertext = ?, {pre}_wrapped_key = ?, \
             {pre}_master_key_id = ? WHERE {id} = ? AND {pre}_ciphertext IS NULL"
        );
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for s in sealed {
            n += sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&s.sealed.ciphertext)
                .bind(&s.sealed.wrapped_key)
                .bind(&s.sealed.master_key_id)
                .bind(&s.id)
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

    async fn sealed_secrets_to_rewrap(
        &self,
        kind: SealedKind,
        current_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SealedSecret>> {
        // Fixed table and column names (`SealedKind::columns`), never input.
        let (table, _, pre) = kind.columns();
        let id = kind.id_column();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {id}, {pre}_ciphertext, {pre}_wrapped_key, {pre}_master_key_id FROM {table} \
             WHERE {pre}_master_key_id <> ? ORDER BY {id} LIMIT ?"
        )))
        .bind(current_key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(SealedSecret {
                    id: get(r, 0)?,
                    sealed: Sealed {
                        ciphertext: get(r, 1)?,
                        wrapped_key: get(r, 2)?,
                        master_key_id: get(r, 3)?,
                    },
                })
            })
            .collect()
    }

    async fn rewrap_sealed_secrets(
        &self,
        kind: SealedKind,
        rewraps: &[SealedRewrap],
        audit: &AuditEntry,
    ) -> Result<u64> {
        // Fixed table and column names (`SealedKind::columns`), never input.
        let (table, _, pre) = kind.columns();
        let id = kind.id_column();
        let sql = format!(
            "UPDATE {table} SET {pre}_wrapped_key = ?, {pre}_master_key_id = ? \
             WHERE {id} = ? AND {pre}_master_key_id = ?"
        );
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for r in rewraps {
            n += sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&r.wrapped_key)
                .bind(&r.master_key_id)
                .bind(&r.id)
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
}
