//! [`WebhookStore`] on PostgreSQL. Any node may call any method: claims skip rows
//! another node holds (`FOR UPDATE SKIP LOCKED`), fan-outs are idempotent per
//! (webhook, audit seq), and expiry notices per (key, expiry time).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use uuid::Uuid;
use zeroize::Zeroizing;

use keyward_core::envelope::Sealed;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::webhook::{Attempt, Delivery, DeliveryState, NewDelivery, Webhook};

use super::{PgStore, corrupt, get, get_json, insert_audit, map_err, to_json};
use crate::Result;
use crate::webhooks::{WEBHOOK_CURSOR, WebhookStore, expiring_audit};

macro_rules! webhook_cols {
    () => {
        "id, url, events::text, secret, created_at, after_seq, \
         secret_ciphertext, secret_wrapped_key, secret_master_key_id"
    };
}
macro_rules! delivery_cols {
    () => {
        "id, webhook_id, audit_seq, event_id, event_type, body, created_at, \
     state, attempts, next_attempt_at, last_attempt_at, last_status, last_error, last_duration_ms"
    };
}

fn webhook_from_row(row: &PgRow) -> Result<Webhook> {
    Ok(Webhook {
        id: get(row, 0)?,
        url: get(row, 1)?,
        events: get_json(row, 2, "webhooks.events")?,
        secret: Zeroizing::new(get(row, 3)?),
        created_at: get(row, 4)?,
        after_seq: get(row, 5)?,
        sealed_secret: sealed_from_row(row)?,
    })
}

/// The sealed secret, if the row has one (rows from before sealing have none until the
/// upgrade at startup seals them).
fn sealed_from_row(row: &PgRow) -> Result<Option<Sealed>> {
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

fn delivery_from_row(row: &PgRow) -> Result<Delivery> {
    let state: String = get(row, 7)?;
    Ok(Delivery {
        id: get(row, 0)?,
        webhook_id: get(row, 1)?,
        audit_seq: get(row, 2)?,
        event_id: get(row, 3)?,
        event_type: get(row, 4)?,
        body: get(row, 5)?,
        created_at: get(row, 6)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt("webhook_deliveries.state: unknown state"))?,
        attempts: get(row, 8)?,
        next_attempt_at: get(row, 9)?,
        last_attempt_at: get(row, 10)?,
        last_status: get(row, 11)?,
        last_error: get(row, 12)?,
        last_duration_ms: get(row, 13)?,
    })
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, webhook: &Webhook, audit: &AuditEntry) -> Result<Webhook> {
        // A sealed secret is never also kept in the clear.
        let sealed = webhook.sealed_secret.as_ref();
        let plaintext = if sealed.is_some() {
            ""
        } else {
            webhook.secret.as_str()
        };
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, audit).await?;
        // insert_audit holds the audit lock until commit: the newest seq is ours.
        let seq: i64 = sqlx::query_scalar("SELECT max(seq) FROM audit_log")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO webhooks (id, url, events, secret, created_at, after_seq, \
             secret_ciphertext, secret_wrapped_key, secret_master_key_id) \
             VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9)",
        )
        .bind(webhook.id)
        .bind(&webhook.url)
        .bind(to_json(&webhook.events)?)
        .bind(plaintext)
        .bind(webhook.created_at)
        .bind(seq)
        .bind(sealed.map(|s| &s.ciphertext))
        .bind(sealed.map(|s| &s.wrapped_key))
        .bind(sealed.map(|s| &s.master_key_id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
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
            " FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn list_webhooks(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            webhook_cols!(),
            " FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn delete_webhook(&self, id: Uuid, audit: &AuditEntry) -> Result<Option<Webhook>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "DELETE FROM webhooks WHERE id = $1 RETURNING ",
            webhook_cols!()
        ))
        .bind(id)
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
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(WEBHOOK_CURSOR)
            .fetch_optional(&self.pool)
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
        let mut tx = self.begin().await?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, audit_seq, event_id, event_type, \
                 body, created_at, state, next_attempt_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, 'pending', $7 \
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $2) \
                 ON CONFLICT (webhook_id, audit_seq) DO NOTHING",
            )
            .bind(d.id)
            .bind(d.webhook_id)
            .bind(d.audit_seq)
            .bind(d.event_id)
            .bind(&d.event_type)
            .bind(&d.body)
            .bind(d.created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE \
             SET value = greatest(settings.value::bigint, excluded.value::bigint)::text",
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
        let row = sqlx::query(concat!(
            "UPDATE webhook_deliveries SET next_attempt_at = $3 WHERE id = \
             (SELECT id FROM webhook_deliveries WHERE webhook_id = $1 AND state = 'pending' \
              AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT 1 \
              FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            delivery_cols!()
        ))
        .bind(webhook_id)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn record_webhook_attempt(&self, delivery_id: Uuid, a: &Attempt) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, state = $2, \
             next_attempt_at = $3, last_attempt_at = $4, last_status = $5, last_error = $6, \
             last_duration_ms = $7 WHERE id = $1",
        )
        .bind(delivery_id)
        .bind(a.state.as_str())
        .bind(a.next_attempt_at)
        .bind(a.at)
        .bind(a.status)
        .bind(&a.error)
        .bind(a.duration_ms)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
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
            " FROM webhook_deliveries WHERE webhook_id = $1 \
             AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(webhook_id)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT k.id, k.identity_id, k.name, k.expires_at FROM keys k \
             WHERE k.expires_at IS NOT NULL AND k.expires_at > $1 AND k.expires_at <= $2 \
             AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at) \
             AND NOT EXISTS (SELECT 1 FROM key_expiry_notices n \
                             WHERE n.key_id = k.id AND n.expires_at = k.expires_at) \
             ORDER BY k.expires_at, k.id LIMIT $3",
        )
        .bind(now)
        .bind(now + lead)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: Uuid = get(r, 0)?;
            let identity_id: Uuid = get(r, 1)?;
            let name: String = get(r, 2)?;
            let expires_at: Timestamp = get(r, 3)?;
            // A second job running at once waits on this row's key, then inserts
            // nothing: only the first records the notice and its audit entry.
            let inserted = sqlx::query(
                "INSERT INTO key_expiry_notices (key_id, expires_at, notified_at) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            if inserted == 1 {
                insert_audit(
                    &mut tx,
                    &expiring_audit(now, id, identity_id, &name, expires_at),
                )
                .await?;
                ids.push(id);
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ids)
    }
}
