//! Storage of webhooks, their deliveries, the fan-out cursor over the audit log, and
//! the `key.expiring` notices: the [`WebhookStore`] part of every [`Store`](crate::Store).
//!
//! The audit log is the event source: the leader reads it from the fan-out cursor on,
//! queues one delivery per (webhook, audit record) it concerns, and moves the cursor in
//! the same transaction, so events survive restarts and no record is queued twice.

use async_trait::async_trait;
use uuid::Uuid;

use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::webhook::{Attempt, Delivery, NewDelivery, Webhook};

use crate::Result;

/// The fan-out cursor in the `settings` table: the last audit seq fanned out.
pub(crate) const WEBHOOK_CURSOR: &str = "webhook_cursor";

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a webhook; sets its `after_seq` to the seq of `audit` (written in the same
    /// transaction), so it receives the events recorded after its creation, and starts
    /// the fan-out cursor there if it never started. Returns the webhook as stored.
    async fn create_webhook(&self, webhook: &Webhook, audit: &AuditEntry) -> Result<Webhook>;
    async fn get_webhook(&self, id: Uuid) -> Result<Option<Webhook>>;
    /// Webhooks ordered by id, with id > `after`, at most `limit`.
    async fn list_webhooks(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Webhook>>;
    /// Deletes the webhook and its deliveries; `None` if there is no such webhook.
    async fn delete_webhook(&self, id: Uuid, audit: &AuditEntry) -> Result<Option<Webhook>>;

    /// The last audit seq fanned out; `None` before the first webhook was created.
    async fn webhook_cursor(&self) -> Result<Option<i64>>;
    /// In one transaction: queues `deliveries` (skipping any whose webhook is gone, or
    /// whose (webhook, audit seq) is already queued) and moves the cursor to `up_to`
    /// (never back).
    async fn enqueue_webhook_deliveries(
        &self,
        up_to: i64,
        deliveries: &[NewDelivery],
    ) -> Result<()>;
    /// Takes the webhook's oldest pending delivery due by `now`, if any, and sets its
    /// `next_attempt_at` to `lease_until`: if this process dies while sending, it is
    /// due again then. Two callers never take the same delivery at once.
    async fn claim_webhook_delivery(
        &self,
        webhook_id: Uuid,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Delivery>>;
    /// Records an attempt: counts it, keeps its status, error and duration, and sets
    /// the delivery's state and next attempt time.
    async fn record_webhook_attempt(&self, delivery_id: Uuid, attempt: &Attempt) -> Result<()>;
    /// The webhook's deliveries, newest first (id < `before`), at most `limit`.
    async fn list_webhook_deliveries(
        &self,
        webhook_id: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;

    /// The expiring-keys job: for each key whose `expires_at` is in `(now, now + lead]`,
    /// not revoked before it expires, and not yet notified for that expiry time,
    /// records the notice and a `key.expiring` audit entry (actor `system`, target the
    /// key id, detail `{identity_id, name, expires_at}`); at most `limit` keys. Returns
    /// their ids. Each (key, expiry time) is notified once, even if two jobs run at once.
    async fn notify_expiring_keys(
        &self,
        now: Timestamp,
        lead: chrono::Duration,
        limit: u32,
    ) -> Result<Vec<Uuid>>;
}

pub(crate) fn expiring_audit(
    now: Timestamp,
    id: Uuid,
    identity_id: Uuid,
    name: &str,
    expires_at: Timestamp,
) -> AuditEntry {
    AuditEntry {
        at: now,
        actor: "system".into(),
        action: keyward_core::webhook::EXPIRING_ACTION.into(),
        target: id.to_string(),
        request_id: None,
        source_ip: None,
        detail: serde_json::json!({
            "identity_id": identity_id,
            "name": name,
            "expires_at": expires_at,
        }),
    }
}
