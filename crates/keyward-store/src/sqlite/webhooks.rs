//! [`WebhookStore`] on the embedded store. Writes go through the single writer
//! connection (`BEGIN IMMEDIATE`), so claims, fan-outs and notices never race.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;
use zeroize::Zeroizing;

use keyward_core::envelope::Sealed;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::webhook::{Attempt, Delivery, DeliveryState, NewDelivery, Webhook};

use super::{
    SqliteStore, corrupt, get, get_json, get_opt_time, get_time, get_uuid, id_text, insert_audit,
    map_err, micros, opt_micros, to_json,
};
use crate::Result;
use crate::webhooks::{WEBHOOK_CURSOR, WebhookStore, expiring_audit};

macro_rules! webhook_cols {
    () => {
        "id, url, events, secret, created_at, after_seq, \
         secret_ciphertext, secret_wrapped_key, secret_master_key_id"
    };
}
macro_rules! delivery_cols {
    () => {
        "id, webhook_id, audit_seq, event_id, event_type, body, created_at, \
     state, attempts, next_attempt_at, last_attempt_at, last_status, last_error, last_duration_ms"
    };
}

fn webhook_from_row(row: &SqliteRow) -> Result<Webhook> {
    Ok(Webhook {
        id: get_uuid(row, 0, "webhooks.id")?,
        url: get(row, 1)?,
        events: get_json(row, 2, "webhooks.events")?,
        secret: Zeroizing::new(get(row, 3)?),
        created_at: get_time(row, 4, "webhooks.created_at")?,
        after_seq: get(row, 5)?,
        sealed_secret: sealed_from_row(row)?,
    })
}

/// The sealed secret, if the row has one (rows from before sealing have none until the
/// upgrade at startup seals them).
fn sealed_from_row(row: &SqliteRow) -> Result<Option<Sealed>> {
    let ciphertext: Option<Vec<u8>> = get(row, 6)?;
    let wrapped_key: Option<Vec<u8>> = get(row, 7)?;
    let master_key_id: Option<String> = get(row, 8)?;
    Ok(match (ciphertext, wrapped_key, master_key_id) {
        (Some(ciphertext), Some(wrapped_key), Some(master_key_id)) => Some(Sealed {
            ciphertext,
            wrapped_key,
            master_key_id,
        }),
        (None, None, None) => None,
        _ => return Err(corrupt("webhooks.secret_*: partly sealed")),
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery> {
    let state: String = get(row, 7)?;
    Ok(Delivery {
        id: get_uuid(row, 0, "webhook_deliveries.id")?,
        webhook_id: get_uuid(row, 1, "webhook_deliveries.webhook_id")?,
        audit_seq: get(row, 2)?,
        event_id: get_uuid(row, 3, "webhook_deliveries.event_id")?,
        event_type: get(row, 4)?,
        body: get(row, 5)?,
        created_at: get_time(row, 6, "webhook_deliveries.created_at")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt("webhook_deliveries.state: unknown state"))?,
        attempts: get(row, 8)?,
        next_attempt_at: get_opt_time(row, 9, "webhook_deliveries.next_attempt_at")?,
        last_attempt_at: get_opt_time(row, 10, "webhook_deliveries.last_attempt_at")?,
        last_status: get(row, 11)?,
        last_error: get(row, 12)?,
        last_duration_ms: get(row, 13)?,
    })
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, webhook: &Webhook, audit: &AuditEntry) -> Result<Webhook> {
        // A sealed secret is never also kept in the clear.
        let sealed = webhook.sealed_secret.as_ref();
        let plaintext = if sealed.is_some() {
            ""
        } else {
            webhook.secret.as_str()
        };
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, audit).await?;
        // Under the write lock: the newest seq is the entry just written.
        let seq: i64 = sqlx::query_scalar("SELECT max(seq) FROM audit_log")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO webhooks (id, url, events, secret, created_at, after_seq, \
             secret_ciphertext, secret_wrapped_key, secret_master_key_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id_text(webhook.id))
        .bind(&webhook.url)
        .bind(to_json(&webhook.events)?)
        .bind(plaintext)
        .bind(micros(webhook.created_at))
        .bind(seq)
        .bind(sealed.map(|s| &s.ciphertext))
        .bind(sealed.map(|s| &s.wrapped_key))
        .bind(sealed.map(|s| &s.master_key_id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(WEBHOOK_CURSOR)
            .bind(seq.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Webhook {
            after_seq: seq,
            secret: Zeroizing::new(plaintext.to_owned()),
            ..webhook.clone()
        })
    }

    async fn get_webhook(&self, id: Uuid) -> Result<Option<Webhook>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            webhook_cols!(),
            " FROM webhooks WHERE id = ?"
        ))
        .bind(id_text(id))
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn list_webhooks(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            webhook_cols!(),
            " FROM webhooks WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.map(id_text).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn delete_webhook(&self, id: Uuid, audit: &AuditEntry) -> Result<Option<Webhook>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "DELETE FROM webhooks WHERE id = ? RETURNING ",
            webhook_cols!()
        ))
        .bind(id_text(id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let webhook = webhook_from_row(&row)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(webhook))
    }

    async fn webhook_cursor(&self) -> Result<Option<i64>> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(WEBHOOK_CURSOR)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        v.map(|v| {
            v.parse()
                .map_err(|_| corrupt("settings.webhook_cursor: not a number"))
        })
        .transpose()
    }

    async fn enqueue_webhook_deliveries(
        &self,
        up_to: i64,
        deliveries: &[NewDelivery],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, audit_seq, event_id, event_type, \
                 body, created_at, state, next_attempt_at) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, 'pending', ? \
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?) \
                 ON CONFLICT (webhook_id, audit_seq) DO NOTHING",
            )
            .bind(id_text(d.id))
            .bind(id_text(d.webhook_id))
            .bind(d.audit_seq)
            .bind(id_text(d.event_id))
            .bind(&d.event_type)
            .bind(&d.body)
            .bind(micros(d.created_at))
            .bind(micros(d.created_at))
            .bind(id_text(d.webhook_id))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE \
             SET value = CAST(max(CAST(value AS INTEGER), CAST(?2 AS INTEGER)) AS TEXT)",
        )
        .bind(WEBHOOK_CURSOR)
        .bind(up_to.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn claim_webhook_delivery(
        &self,
        webhook_id: Uuid,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Delivery>> {
        // A read first: an idle webhook costs no write lock.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM webhook_deliveries WHERE webhook_id = ? AND state = 'pending' \
             AND next_attempt_at <= ? LIMIT 1",
        )
        .bind(id_text(webhook_id))
        .bind(micros(now))
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        if due.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = \
             (SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND state = 'pending' \
              AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT 1) \
             RETURNING ",
            delivery_cols!()
        ))
        .bind(micros(lease_until))
        .bind(id_text(webhook_id))
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn record_webhook_attempt(&self, delivery_id: Uuid, a: &Attempt) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, state = ?, \
             next_attempt_at = ?, last_attempt_at = ?, last_status = ?, last_error = ?, \
             last_duration_ms = ? WHERE id = ?",
        )
        .bind(a.state.as_str())
        .bind(opt_micros(a.next_attempt_at))
        .bind(micros(a.at))
        .bind(a.status)
        .bind(&a.error)
        .bind(a.duration_ms)
        .bind(id_text(delivery_id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn list_webhook_deliveries(
        &self,
        webhook_id: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_cols!(),
            " FROM webhook_deliveries WHERE webhook_id = ? \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        ))
        .bind(id_text(webhook_id))
        .bind(before.map(id_text))
        .bind(before.map(id_text))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn notify_expiring_keys(
        &self,
        now: Timestamp,
        lead: chrono::Duration,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT k.id, k.identity_id, k.name, k.expires_at FROM keys k \
             WHERE k.expires_at IS NOT NULL AND k.expires_at > ? AND k.expires_at <= ? \
             AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at) \
             AND NOT EXISTS (SELECT 1 FROM key_expiry_notices n \
                             WHERE n.key_id = k.id AND n.expires_at = k.expires_at) \
             ORDER BY k.expires_at, k.id LIMIT ?",
        )
        .bind(micros(now))
        .bind(micros(now + lead))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = get_uuid(r, 0, "keys.id")?;
            let identity_id = get_uuid(r, 1, "keys.identity_id")?;
            let name: String = get(r, 2)?;
            let expires_at = get_time(r, 3, "keys.expires_at")?;
            sqlx::query(
                "INSERT INTO key_expiry_notices (key_id, expires_at, notified_at) VALUES (?, ?, ?)",
            )
            .bind(id_text(id))
            .bind(micros(expires_at))
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            insert_audit(
                &mut tx,
                &expiring_audit(now, id, identity_id, &name, expires_at),
            )
            .await?;
            ids.push(id);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ids)
    }
}
