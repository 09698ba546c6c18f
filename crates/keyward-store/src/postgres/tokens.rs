//! [`TokenStore`] on PostgreSQL.

use async_trait::async_trait;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use sqlx::Row;
use zeroize::Zeroizing;

use super::{PgStore, get, insert_audit, map_err};
use crate::Result;
use crate::sealed_secrets::sealed_from_row;
use crate::tokens::{SigningKeyRecord, TokenStore};

/// The unique index that keeps one signing key current (migration 0130).
const ONE_CURRENT: &str = "signing_keys_one_current";

#[async_trait]
impl TokenStore for PgStore {
    async fn signing_keys(&self, retired_after: Timestamp) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, public_key, private_key, created_at, retired_at, private_key_ciphertext, \
             private_key_wrapped_key, private_key_master_key_id FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
        )
        .bind(retired_after)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(SigningKeyRecord {
                    kid: get(row, 0)?,
                    public_key: get(row, 1)?,
                    private_key: Zeroizing::new(row.try_get(2).map_err(map_err)?),
                    created_at: get(row, 3)?,
                    retired_at: get(row, 4)?,
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
        let mut tx = self.begin().await?;
        // Retiring the expected key takes its row lock: a node racing on the same key
        // waits, then finds it retired and updates nothing.
        let retired = sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid = $2",
        )
        .bind(now)
        .bind(replacing)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if replacing.is_some() && retired != 1 {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, private_key, created_at, retired_at, \
             private_key_ciphertext, private_key_wrapped_key, private_key_master_key_id) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7)",
        )
        .bind(&new.kid)
        .bind(&new.public_key)
        .bind(plaintext)
        .bind(new.created_at)
        .bind(sealed.map(|s| &s.ciphertext))
        .bind(sealed.map(|s| &s.wrapped_key))
        .bind(sealed.map(|s| &s.master_key_id))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Another node made a current key first: the one-current index refused
            // this one (a kid clash stays an error).
            Err(sqlx::Error::Database(db)) if db.constraint() == Some(ONE_CURRENT) => {
                return Ok(false);
            }
            Err(e) => return Err(map_err(e)),
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn record_token_issue(&self, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }
}
