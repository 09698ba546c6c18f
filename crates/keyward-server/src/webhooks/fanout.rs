//! The fan-out: audit records after the cursor become deliveries for the webhooks
//! that want their event, and the cursor moves past them, in one store transaction.

use keyward_core::webhook::{NewDelivery, Webhook, event_body, event_data, event_type_of};
use keyward_store::{Store, StoreError};
use uuid::Uuid;

/// Audit records read per transaction.
pub const BATCH: u32 = 500;
/// Batches per round at most: a long backlog is worked off over several rounds.
const BATCHES_PER_ROUND: usize = 20;

/// Fans out what the audit log holds past the cursor. Returns the deliveries queued.
pub async fn fan_out(store: &dyn Store) -> Result<usize, StoreError> {
    let mut queued = 0;
    for _ in 0..BATCHES_PER_ROUND {
        let Some(cursor) = store.webhook_cursor().await? else {
            return Ok(queued); // no webhook was ever created
        };
        let records = store.list_audit(Some(cursor), BATCH).await?;
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(queued);
        };
        let webhooks = all_webhooks(store).await?;
        let now = crate::now();
        let mut deliveries = Vec::new();
        for r in &records {
            let Some(event_type) = event_type_of(&r.entry.action) else {
                continue;
            };
            let wanted: Vec<&Webhook> = webhooks
                .iter()
                .filter(|w| w.after_seq < r.seq && w.wants(event_type))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            // One id per event, the same for every webhook and every attempt.
            let event_id = Uuid::now_v7();
            let body = event_body(event_id, event_type, r.entry.at, &event_data(r));
            for w in wanted {
                deliveries.push(NewDelivery {
                    id: Uuid::now_v7(),
                    webhook_id: w.id,
                    audit_seq: r.seq,
                    event_id,
                    event_type: event_type.to_owned(),
                    body: body.clone(),
                    created_at: now,
                });
            }
        }
        store.enqueue_webhook_deliveries(last, &deliveries).await?;
        queued += deliveries.len();
        if records.len() < BATCH as usize {
            break;
        }
    }
    Ok(queued)
}

/// Every webhook (there are few; pages of 1000).
pub async fn all_webhooks(store: &dyn Store) -> Result<Vec<Webhook>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_webhooks(after, 1000).await?;
        let done = page.len() < 1000;
        after = page.last().map(|w| w.id);
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}
