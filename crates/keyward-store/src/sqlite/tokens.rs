//! [`TokenStore`] on SQLite.

use async_trait::async_trait;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use sqlx::Row;
use zeroize::Zeroizing;

use super::{SqliteStore, from_micros, get, insert_audit, map_err, micros};
use crate::Result;
use crate::sealed_secrets::sealed_from_row;
use crate::tokens::{SigningKeyRecord, TokenStore};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn signing_keys(&self, retired_after: Timestamp) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, public_key, private_key, created_at, retired_at, private_key_ciphertext, \
             private_key_wrapped_key, private_key_master_key_id FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > ? ORDER BY created_at DESC, kid DESC",
        )
        .bind(micros(retired_after))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let retired: Option<i64> = get(row, 4)?;
                Ok(SigningKeyRecord {
                    kid: get(row, 0)?,
                    public_key: get(row, 1)?,
                    private_key: Zeroizing::new(row.try_get(2).map_err(map_err)?),
                    created_at: from_micros(get(row, 3)?, "created_at")?,
                    retired_at: retired.map(|v| from_micros(v, "retired_at")).transpose()?,
                    sealed_private_key: sealed_from_row(
                        get(row, 5)?,
                        get(row, 6)?,
                        get(row, 7)?,
                        "signing_keys.private_key_*",
                    )?,
                })
            })
            .collect()
    }

    async fn rotate_signing_key(
        &self,
        new: &SigningKeyRecord,
        replacing: Option<&str>,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool> {
        // A sealed private key is never also kept in the clear.
        let sealed = new.sealed_private_key.as_ref();
        let plaintext: &[u8] = if sealed.is_some() {
            &[]
        } else {
            &new.private_key[..]
        };
        // Writers are serialised: what this transaction reads as current stays current
        // until it commits.
        let mut tx = self.begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        if current.as_deref() != replacing {
            return Ok(false);
        }
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, private_key, created_at, retired_at, \
             private_key_ciphertext, private_key_wrapped_key, private_key_master_key_id) \
             VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
        )
        .bind(&new.kid)
        .bind(&new.public_key)
        .bind(plaintext)
        .bind(micros(new.created_at))
        .bind(sealed.map(|s| &s.ciphertext))
        .bind(sealed.map(|s| &s.wrapped_key))
        .bind(sealed.map(|s| &s.master_key_id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn record_token_issue(&self, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }
}
