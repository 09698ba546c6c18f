//! `key.rate_limited` and `key.usage_exceeded` alerts: raised by the usage writer from
//! refused verifications, at most once per key and kind per alert window, and delivered
//! to a real local webhook receiver. On both stores.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::TestServer;
use keyward_server::usage::FLUSH_EVERY;
use keyward_server::webhooks::WebhookSettings;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A webhook receiver on 127.0.0.1 that keeps every body and answers 200.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let b = bodies.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let b = b.clone();
            async move {
                b.lock().push(String::from_utf8_lossy(&body).into_owned());
                axum::http::StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hooks"),
            bodies,
        }
    }

    fn count(&self) -> usize {
        self.bodies.lock().len()
    }
}

fn fast_webhooks() -> WebhookSettings {
    WebhookSettings {
        poll: Duration::from_millis(50),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        ..Default::default()
    }
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The audit records with this action about this key.
async fn alerts(s: &TestServer, action: &str, key_id: &str) -> Vec<Value> {
    s.store
        .list_audit(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == action && r.entry.target == key_id)
        .map(|r| {
            assert_eq!(r.entry.actor, "system");
            r.entry.detail
        })
        .collect()
}

store_test!(multi_thread a_hammered_rate_limit_alerts_once_per_window);
async fn a_hammered_rate_limit_alerts_once_per_window(mut s: TestServer) {
    s.restart(fast_webhooks()).await;
    let r = Receiver::start().await;
    s.post(
        "/v1/webhooks",
        &s.root,
        json!({"url": r.url, "events": ["key.rate_limited"]}),
    )
    .await
    .ok(201);
    let v = s.verifier().await;
    let ident = s.identity("hammer").await;
    let (key, key_id) = s
        .key(
            &ident,
            json!({"rate_limits": [{"name": "tiny", "limit": 2, "window_seconds": 3600}]}),
        )
        .await;
    let mut refused = 0;
    for _ in 0..12 {
        if s.verify(&v, &key, json!({})).await["code"] == "RATE_LIMITED" {
            refused += 1;
        }
    }
    assert_eq!(refused, 10);
    wait_until("the webhook", async || r.count() >= 1).await;
    // More refusals in the same window, over several writer flushes: no new alert.
    for _ in 0..5 {
        s.verify(&v, &key, json!({})).await;
        tokio::time::sleep(FLUSH_EVERY / 2).await;
    }
    tokio::time::sleep(FLUSH_EVERY * 3 / 2).await;
    let found = alerts(&s, "key.rate_limited", &key_id).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["key_id"], key_id.as_str());
    assert_eq!(found[0]["identity_id"], ident.as_str());
    assert!(found[0]["count"].as_u64().unwrap() >= 1);
    assert!(found[0]["first_at"].is_string() && found[0]["last_at"].is_string());
    assert_eq!(r.count(), 1);
    let body = r.bodies.lock()[0].clone();
    assert!(!body.contains(&key), "the payload holds the key");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "key.rate_limited");
    assert_eq!(body["data"]["key_id"], key_id.as_str());
    s.stop().await;
}

store_test!(multi_thread a_used_up_quota_alerts_once);
async fn a_used_up_quota_alerts_once(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("quota").await;
    let (key, key_id) = s.key(&ident, json!({"remaining": 1})).await;
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "VALID");
    assert_eq!(
        s.verify(&v, &key, json!({})).await["code"],
        "USAGE_EXCEEDED"
    );
    wait_until("the alert", async || {
        !alerts(&s, "key.usage_exceeded", &key_id).await.is_empty()
    })
    .await;
    assert_eq!(
        s.verify(&v, &key, json!({})).await["code"],
        "USAGE_EXCEEDED"
    );
    // After a flush that holds the second refusal: still the one alert.
    tokio::time::sleep(FLUSH_EVERY * 3 / 2).await;
    let found = alerts(&s, "key.usage_exceeded", &key_id).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["limit"], "remaining");
    assert!(alerts(&s, "key.rate_limited", &key_id).await.is_empty());
    s.stop().await;
}
