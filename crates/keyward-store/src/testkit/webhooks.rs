//! Conformance tests of [`WebhookStore`](crate::WebhookStore): every store runs them
//! (`tests/webhooks.rs`). Each tolerates data written by others.

use std::sync::Arc;

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;
use zeroize::Zeroizing;

use keyward_core::model::KeyPatch;
use keyward_core::webhook::{Attempt, DeliveryState, NewDelivery, Webhook};

use super::{audit, audit_since, key, last_seq, new_identity, new_key, now};
use crate::Store;

/// A webhook for the tests, not yet stored.
pub fn webhook() -> Webhook {
    Webhook {
        id: Uuid::now_v7(),
        url: format!("https://hooks.example.com/{}", Uuid::now_v7()),
        events: vec!["key.created".into(), "key.expiring".into()],
        secret: Zeroizing::new(format!("whsec_{}", Uuid::now_v7().simple())),
        created_at: now(),
        after_seq: 0,
        sealed_secret: None,
    }
}

async fn new_webhook(store: &dyn Store) -> Webhook {
    let w = webhook();
    store
        .create_webhook(&w, &audit("webhook.create", w.id))
        .await
        .unwrap()
}

fn delivery(w: &Webhook, seq: i64) -> NewDelivery {
    NewDelivery {
        id: Uuid::now_v7(),
        webhook_id: w.id,
        audit_seq: seq,
        event_id: Uuid::now_v7(),
        event_type: "key.created".into(),
        body: format!(r#"{{"seq":{seq}}}"#),
        created_at: now(),
    }
}

pub async fn webhook_roundtrip(store: &dyn Store) {
    let w = webhook();
    let a = audit("webhook.create", w.id);
    let stored = store.create_webhook(&w, &a).await.unwrap();
    let seq = last_seq(store).await;
    assert_eq!(
        stored.after_seq, seq,
        "after_seq is the seq of its audit entry"
    );
    let entries = store.list_audit(Some(seq - 1), 10).await.unwrap();
    assert_eq!(entries[0].entry, a);
    assert_eq!(
        stored,
        Webhook {
            after_seq: seq,
            ..w.clone()
        }
    );
    let got = store.get_webhook(w.id).await.unwrap().unwrap();
    assert_eq!(got, stored, "every field round-trips, the secret included");
    assert!(
        store.webhook_cursor().await.unwrap().is_some(),
        "the cursor starts with the first webhook"
    );

    // Pagination by id.
    let more = [new_webhook(store).await, new_webhook(store).await];
    let page = store.list_webhooks(Some(w.id), 1).await.unwrap();
    assert_eq!(page, [more[0].clone()]);
    let page = store.list_webhooks(Some(more[0].id), 10).await.unwrap();
    assert!(page.contains(&more[1]) && !page.contains(&more[0]));

    let before = last_seq(store).await;
    let del = audit("webhook.delete", w.id);
    let gone = store.delete_webhook(w.id, &del).await.unwrap();
    assert_eq!(gone, Some(stored));
    assert_eq!(audit_since(store, before).await, std::slice::from_ref(&del));
    assert_eq!(store.get_webhook(w.id).await.unwrap(), None);
    let before = last_seq(store).await;
    assert_eq!(store.delete_webhook(w.id, &del).await.unwrap(), None);
    assert!(
        audit_since(store, before).await.is_empty(),
        "nothing deleted, nothing audit-logged"
    );
}

pub async fn webhook_fan_out_is_idempotent(store: &dyn Store) {
    let w = new_webhook(store).await;
    let start = store.webhook_cursor().await.unwrap().unwrap();
    let first = [delivery(&w, w.after_seq + 1), delivery(&w, w.after_seq + 2)];
    store
        .enqueue_webhook_deliveries(w.after_seq + 2, &first)
        .await
        .unwrap();
    let cursor = store.webhook_cursor().await.unwrap().unwrap();
    assert_eq!(cursor, (w.after_seq + 2).max(start));

    // The same records again (an overlapping fan-out, other ids): nothing new. A
    // delivery for a webhook that is gone is skipped. The cursor never moves back.
    let gone = webhook();
    let again = [
        delivery(&w, w.after_seq + 1),
        delivery(&w, w.after_seq + 2),
        delivery(&gone, w.after_seq + 2),
    ];
    store
        .enqueue_webhook_deliveries(w.after_seq + 1, &again)
        .await
        .unwrap();
    assert_eq!(store.webhook_cursor().await.unwrap().unwrap(), cursor);
    let listed = store.list_webhook_deliveries(w.id, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, first[1].id, "newest first");
    assert_eq!(listed[1].id, first[0].id);
    let d = &listed[1];
    assert_eq!(
        (
            d.audit_seq,
            d.event_id,
            &d.event_type,
            &d.body,
            d.created_at
        ),
        (
            first[0].audit_seq,
            first[0].event_id,
            &first[0].event_type,
            &first[0].body,
            first[0].created_at
        )
    );
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.attempts, 0);
    assert_eq!(d.next_attempt_at, Some(first[0].created_at));
    let older = store
        .list_webhook_deliveries(w.id, Some(first[1].id), 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].id, first[0].id);

    // Deleting the webhook deletes its deliveries.
    store
        .delete_webhook(w.id, &audit("webhook.delete", w.id))
        .await
        .unwrap();
    assert!(
        store
            .list_webhook_deliveries(w.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn webhook_claims_and_attempts(store: &dyn Store) {
    let w = new_webhook(store).await;
    let other = new_webhook(store).await;
    let ds = [delivery(&w, w.after_seq + 1), delivery(&w, w.after_seq + 2)];
    store
        .enqueue_webhook_deliveries(w.after_seq + 2, &ds)
        .await
        .unwrap();
    let t = now() + Duration::seconds(1);
    let lease = t + Duration::seconds(30);
    assert!(
        store
            .claim_webhook_delivery(other.id, t, lease)
            .await
            .unwrap()
            .is_none(),
        "another webhook's deliveries are not claimed"
    );
    let first = store
        .claim_webhook_delivery(w.id, t, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, ds[0].id, "oldest first");
    assert_eq!(first.next_attempt_at, Some(lease));
    let second = store
        .claim_webhook_delivery(w.id, t, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, ds[1].id, "a claimed delivery is leased");
    assert!(
        store
            .claim_webhook_delivery(w.id, t, lease)
            .await
            .unwrap()
            .is_none()
    );

    // A failed attempt, retried later; a delivered one is done.
    let retry_at = t + Duration::seconds(5);
    let failed = Attempt {
        at: t,
        status: Some(500),
        error: Some("HTTP 500".into()),
        duration_ms: 12,
        state: DeliveryState::Pending,
        next_attempt_at: Some(retry_at),
    };
    store
        .record_webhook_attempt(first.id, &failed)
        .await
        .unwrap();
    let ok = Attempt {
        at: t,
        status: Some(204),
        error: None,
        duration_ms: 3,
        state: DeliveryState::Delivered,
        next_attempt_at: None,
    };
    store.record_webhook_attempt(second.id, &ok).await.unwrap();
    let listed = store.list_webhook_deliveries(w.id, None, 10).await.unwrap();
    let (d2, d1) = (&listed[0], &listed[1]);
    assert_eq!(
        (
            d1.state,
            d1.attempts,
            d1.next_attempt_at,
            d1.last_attempt_at,
            d1.last_status,
            d1.last_error.as_deref(),
            d1.last_duration_ms
        ),
        (
            DeliveryState::Pending,
            1,
            Some(retry_at),
            Some(t),
            Some(500),
            Some("HTTP 500"),
            Some(12)
        )
    );
    assert_eq!(
        (d2.state, d2.attempts, d2.next_attempt_at, d2.last_status),
        (DeliveryState::Delivered, 1, None, Some(204))
    );
    assert!(
        store
            .claim_webhook_delivery(w.id, retry_at - Duration::seconds(1), lease)
            .await
            .unwrap()
            .is_none(),
        "not due before its retry time"
    );
    let again = store
        .claim_webhook_delivery(w.id, retry_at, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.attempts, 1);
    let gave_up = Attempt {
        state: DeliveryState::Failed,
        next_attempt_at: None,
        ..failed
    };
    store
        .record_webhook_attempt(first.id, &gave_up)
        .await
        .unwrap();
    assert!(
        store
            .claim_webhook_delivery(w.id, lease + Duration::days(1), lease)
            .await
            .unwrap()
            .is_none(),
        "failed and delivered deliveries are never claimed again"
    );
}

/// Two workers claiming at once never get the same delivery.
pub async fn webhook_concurrent_claims(store: Arc<dyn Store>) {
    let w = new_webhook(&*store).await;
    let ds: Vec<_> = (1..=20).map(|i| delivery(&w, w.after_seq + i)).collect();
    store
        .enqueue_webhook_deliveries(w.after_seq + 20, &ds)
        .await
        .unwrap();
    let t = now() + Duration::seconds(1);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut got = vec![];
            while let Some(d) = store
                .claim_webhook_delivery(w.id, t, t + Duration::seconds(60))
                .await
                .unwrap()
            {
                got.push(d.id);
            }
            got
        });
    }
    let mut all: Vec<Uuid> = tasks.join_all().await.into_iter().flatten().collect();
    all.sort();
    let mut want: Vec<Uuid> = ds.iter().map(|d| d.id).collect();
    want.sort();
    assert_eq!(all, want, "each delivery claimed exactly once");
}

pub async fn notify_expiring_keys(store: &dyn Store) {
    let i = new_identity(store, "expiring").await;
    let t = now();
    let lead = Duration::days(7);
    let with = |expires: Option<chrono::DateTime<chrono::Utc>>| {
        let mut k = key(i.id);
        k.expires_at = expires;
        k
    };
    let soon = new_key(store, with(Some(t + Duration::days(2)))).await;
    let later = new_key(store, with(Some(t + Duration::days(30)))).await;
    let past = new_key(store, with(Some(t - Duration::seconds(1)))).await;
    let never = new_key(store, with(None)).await;
    let mut revoked = with(Some(t + Duration::days(1)));
    revoked.revoked_at = Some(t - Duration::seconds(1));
    let revoked = new_key(store, revoked).await;

    let seq = last_seq(store).await;
    let ids = store.notify_expiring_keys(t, lead, 10_000).await.unwrap();
    assert!(ids.contains(&soon.id));
    for k in [&later, &past, &never, &revoked] {
        assert!(!ids.contains(&k.id), "{}", k.name);
    }
    let entries = audit_since(store, seq).await;
    assert_eq!(entries.len(), ids.len());
    let e = entries
        .iter()
        .find(|e| e.target == soon.id.to_string())
        .unwrap();
    assert_eq!(
        (e.action.as_str(), e.actor.as_str()),
        ("key.expiring", "system")
    );
    assert_eq!(
        e.detail,
        json!({"identity_id": i.id, "name": soon.name, "expires_at": soon.expires_at})
    );

    // Once per key and expiry time; a new expiry time is notified again.
    let again = store.notify_expiring_keys(t, lead, 10_000).await.unwrap();
    assert!(!again.contains(&soon.id));
    let new_expiry = t + Duration::days(3);
    store
        .update_key(
            soon.id,
            &KeyPatch {
                expires_at: Some(Some(new_expiry)),
                ..KeyPatch::default()
            },
            t,
            &audit("key.update", soon.id),
        )
        .await
        .unwrap();
    let renewed = store.notify_expiring_keys(t, lead, 10_000).await.unwrap();
    assert!(renewed.contains(&soon.id));
    // Its turn comes for the later key too.
    let much_later = store
        .notify_expiring_keys(t + Duration::days(24), lead, 10_000)
        .await
        .unwrap();
    assert!(much_later.contains(&later.id));
    assert!(!much_later.contains(&soon.id));
}
