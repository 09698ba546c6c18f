//! [`AlertStore`] on SQLite: the single writer connection orders the windows.

use async_trait::async_trait;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use uuid::Uuid;

use super::{SqliteStore, id_text, insert_audit, map_err, micros};
use crate::Result;
use crate::alerts::AlertStore;

#[async_trait]
impl AlertStore for SqliteStore {
    async fn raise_key_alert(
        &self,
        key_id: Uuid,
        kind: &str,
        now: Timestamp,
        window_open_after: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let opened = sqlx::query(
            "INSERT INTO key_alerts (key_id, kind, window_start) VALUES (?, ?, ?) \
             ON CONFLICT (key_id, kind) DO UPDATE SET window_start = excluded.window_start \
             WHERE key_alerts.window_start <= ?",
        )
        .bind(id_text(key_id))
        .bind(kind)
        .bind(micros(now))
        .bind(micros(window_open_after))
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
