//! [`AlertStore`] on PostgreSQL: the conditional upsert locks the (key, kind) row, so a
//! node racing another sees the window it opened and writes nothing.

use async_trait::async_trait;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use uuid::Uuid;

use super::{PgStore, insert_audit, map_err};
use crate::Result;
use crate::alerts::AlertStore;

#[async_trait]
impl AlertStore for PgStore {
    async fn raise_key_alert(
        &self,
        key_id: Uuid,
        kind: &str,
        now: Timestamp,
        window_open_after: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let opened = sqlx::query(
            "INSERT INTO key_alerts (key_id, kind, window_start) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, kind) DO UPDATE SET window_start = excluded.window_start \
             WHERE key_alerts.window_start <= $4",
        )
        .bind(key_id)
        .bind(kind)
        .bind(now)
        .bind(window_open_after)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected()
            == 1;
        if !opened {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }
}
