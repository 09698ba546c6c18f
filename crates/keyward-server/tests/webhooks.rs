//! Webhooks end to end: a real Keyward server and real HTTP receivers (axum servers on
//! 127.0.0.1:0 inside the test), on both stores. Signatures are checked with an HMAC
//! computed here, independently of the server's code.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{Backend, TestServer};
use hmac::{Hmac, KeyInit, Mac};
use keyward_server::webhooks::WebhookSettings;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;

/// What a receiver answers.
#[derive(Clone)]
enum Behaviour {
    /// 200 after answering 500 this many times.
    FailFirst(usize),
    /// 307 to this URL.
    Redirect(String),
    /// Answers 200 after this long.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Got {
    headers: HeaderMap,
    body: String,
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let (g, b) = (got.clone(), behaviour);
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (g, b, calls) = (g.clone(), b.clone(), calls.clone());
            async move {
                g.lock().push(Got {
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let answer: Response = match b {
                    Behaviour::FailFirst(k) if n < k => {
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                    Behaviour::FailFirst(_) => StatusCode::OK.into_response(),
                    Behaviour::Redirect(to) => {
                        (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
                    }
                    Behaviour::Slow(d) => {
                        tokio::time::sleep(d).await;
                        StatusCode::OK.into_response()
                    }
                };
                answer
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hooks/keyward"),
            got,
        }
    }

    fn ok() -> impl std::future::Future<Output = Receiver> {
        Receiver::start(Behaviour::FailFirst(0))
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .iter()
            .map(|g| serde_json::from_str(&g.body).unwrap())
            .collect()
    }

    fn count(&self) -> usize {
        self.got.lock().len()
    }
}

/// Settings for quick tests: short waits everywhere.
fn fast() -> WebhookSettings {
    WebhookSettings {
        timeout: Duration::from_secs(5),
        max_attempts: 5,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        deny_private: false,
        expiring_before: Duration::from_secs(7 * 24 * 3600),
        old_version_before: Duration::from_secs(3600),
        poll: Duration::from_millis(50),
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn webhook(s: &TestServer, url: &str, events: &[&str]) -> (String, String) {
    let a = s
        .post(
            "/v1/webhooks",
            &s.root,
            json!({"url": url, "events": events}),
        )
        .await;
    let b = a.ok(201);
    (
        b["id"].as_str().unwrap().to_owned(),
        b["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(s: &TestServer, id: &str) -> Vec<Value> {
    s.get(&format!("/v1/webhooks/{id}/deliveries"), &s.root)
        .await
        .ok(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn wait_for_delivery_state(s: &TestServer, id: &str, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let items = deliveries(s, id).await;
        if let Some(d) = items.iter().find(|d| d["state"] == state) {
            return d.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no delivery became {state}: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks `Keyward-Signature: t=<t>,v1=<hex>` against an HMAC computed here.
fn assert_signed(got: &Got, secret: &str) {
    let sig = got.headers["keyward-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(",v1=").expect("t=...,v1=...");
    let t = t.strip_prefix("t=").unwrap();
    let t_num: i64 = t.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - t_num).abs() < 60);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", got.body).as_bytes());
    let want = hex::encode(mac.finalize().into_bytes());
    assert_eq!(v1, want, "the signature verifies");
}

store_test!(multi_thread signed_events_reach_the_receiver);
async fn signed_events_reach_the_receiver(s: TestServer) {
    let s = restarted(s, fast()).await;
    let r = Receiver::ok().await;
    let (hook, secret) = webhook(&s, &r.url, &["key.created", "key.revoked"]).await;
    assert!(secret.starts_with("whsec_"));
    let ident = s.identity("payments").await;
    let (key, key_id) = s.key(&ident, json!({"name": "deploy"})).await;
    // Not subscribed: a rotation (key.rotated) and an identity change.
    let (_, other) = s.key(&ident, json!({})).await;
    s.post(
        &format!("/v1/keys/{other}/rotate"),
        &s.root,
        json!({"grace_seconds": 0}),
    )
    .await
    .ok(201);
    s.post(&format!("/v1/keys/{key_id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);

    wait_until("three deliveries", Duration::from_secs(10), || {
        r.count() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = r.got.lock().clone();
    let bodies = r.bodies();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["key.created", "key.created", "key.revoked"],
        "filtered, in order"
    );
    for g in &got {
        assert_signed(g, &secret);
        assert_eq!(g.headers["content-type"], "application/json");
        assert!(!g.body.contains(&key), "a payload holds the key");
        assert!(!g.body.contains(&secret));
    }
    let created = &bodies[0];
    assert_eq!(
        created.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["at", "data", "id", "type"]
    );
    assert_eq!(created["data"]["key_id"], key_id);
    assert_eq!(created["data"]["identity_id"], ident);
    assert!(created["data"].get("start").is_none(), "part of the key");
    assert_eq!(bodies[2]["data"]["key_id"], key_id);
    let ids: std::collections::HashSet<&str> =
        bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "one id per event");

    // The delivery log; the secret is never shown again, nor audit-logged.
    let log = deliveries(&s, &hook).await;
    assert_eq!(log.len(), 3);
    for d in &log {
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_i64()),
            (Some("delivered"), Some(1))
        );
        assert_eq!(d["last_status"], 200);
        assert!(d["last_duration_ms"].is_i64());
    }
    let listed = s.get("/v1/webhooks", &s.root).await;
    assert_eq!(listed.ok(200)["items"][0]["url"], r.url);
    let shown = s.get(&format!("/v1/webhooks/{hook}"), &s.root).await;
    for a in [&listed, &shown] {
        assert!(!a.body.to_string().contains(&secret), "{}", a.body);
    }
    let audit = s.get("/v1/audit?limit=1000", &s.root).await;
    assert!(!audit.body.to_string().contains(&secret));
    assert!(audit.body.to_string().contains("webhook.create"));
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("keyward_webhook_deliveries_total{result=\"delivered\"}"),
        "{metrics}"
    );
    s.stop().await;
}

/// A server on the same store with other webhook settings.
async fn restarted(mut s: TestServer, settings: WebhookSettings) -> TestServer {
    s.restart(settings).await;
    s
}

store_test!(multi_thread a_failing_receiver_is_retried_with_the_same_event);
async fn a_failing_receiver_is_retried_with_the_same_event(s: TestServer) {
    let s = restarted(s, fast()).await;
    let r = Receiver::start(Behaviour::FailFirst(2)).await;
    let (hook, secret) = webhook(&s, &r.url, &["key.created"]).await;
    let ident = s.identity("retries").await;
    s.key(&ident, json!({})).await;
    let d = wait_for_delivery_state(&s, &hook, "delivered").await;
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_status"], 200);
    let got = r.got.lock().clone();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|g| g.body == got[0].body),
        "every attempt sends the same body, with the same event id"
    );
    for g in &got {
        assert_signed(g, &secret);
    }
    s.stop().await;
}

store_test!(multi_thread redirects_are_not_followed_and_deliveries_give_up);
async fn redirects_are_not_followed_and_deliveries_give_up(s: TestServer) {
    let s = restarted(
        s,
        WebhookSettings {
            max_attempts: 2,
            ..fast()
        },
    )
    .await;
    let target = Receiver::ok().await;
    let r = Receiver::start(Behaviour::Redirect(target.url.clone())).await;
    let (hook, _) = webhook(&s, &r.url, &["key.created"]).await;
    let ident = s.identity("redirects").await;
    s.key(&ident, json!({})).await;
    let d = wait_for_delivery_state(&s, &hook, "failed").await;
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["last_status"], 307);
    assert!(d["last_error"].as_str().unwrap().contains("redirect"));
    assert_eq!(d["next_attempt_at"], Value::Null);
    assert_eq!(r.count(), 2);
    assert_eq!(target.count(), 0, "the redirect was not followed");
    s.stop().await;
}

store_test!(multi_thread a_slow_receiver_times_out_without_delaying_others);
async fn a_slow_receiver_times_out_without_delaying_others(s: TestServer) {
    let s = restarted(
        s,
        WebhookSettings {
            timeout: Duration::from_millis(500),
            max_attempts: 1,
            ..fast()
        },
    )
    .await;
    let slow = Receiver::start(Behaviour::Slow(Duration::from_secs(30))).await;
    let quick = Receiver::ok().await;
    let (slow_hook, _) = webhook(&s, &slow.url, &["key.created"]).await;
    webhook(&s, &quick.url, &["key.created"]).await;
    let ident = s.identity("slowness").await;
    let started = Instant::now();
    for _ in 0..3 {
        s.key(&ident, json!({})).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests do not wait for deliveries"
    );
    wait_until("the quick receiver", Duration::from_secs(5), || {
        quick.count() == 3
    })
    .await;
    let d = wait_for_delivery_state(&s, &slow_hook, "failed").await;
    assert_eq!(d["last_error"], "timed out");
    assert_eq!(d["last_status"], Value::Null);
    s.stop().await;
}

store_test!(multi_thread private_destinations_can_be_refused);
async fn private_destinations_can_be_refused(s: TestServer) {
    let s = restarted(
        s,
        WebhookSettings {
            deny_private: true,
            max_attempts: 1,
            ..fast()
        },
    )
    .await;
    let r = Receiver::ok().await;
    let (by_address, _) = webhook(&s, &r.url, &["key.created"]).await;
    // A name that resolves to loopback is refused on its resolved address.
    let by_name = r.url.replace("127.0.0.1", "localhost");
    let (by_name, _) = webhook(&s, &by_name, &["key.created"]).await;
    let ident = s.identity("private").await;
    s.key(&ident, json!({})).await;
    for hook in [by_address, by_name] {
        let d = wait_for_delivery_state(&s, &hook, "failed").await;
        assert!(
            d["last_error"]
                .as_str()
                .unwrap()
                .contains("destination refused"),
            "{d}"
        );
    }
    assert_eq!(r.count(), 0);
    s.stop().await;
}

store_test!(multi_thread events_survive_a_restart_once);
async fn events_survive_a_restart_once(s: TestServer) {
    let mut s = restarted(s, fast()).await;
    let r = Receiver::ok().await;
    webhook(&s, &r.url, &["key.created"]).await;
    let ident = s.identity("restarts").await;
    let (_, first) = s.key(&ident, json!({})).await;
    wait_until("the first event", Duration::from_secs(10), || {
        r.count() == 1
    })
    .await;

    // While no server runs, a key is created (by another process on the store).
    s.shutdown().await;
    let ident_id = uuid::Uuid::parse_str(&ident).unwrap();
    let offline = keyward_store::testkit::minimal_key(ident_id);
    s.store
        .create_key(
            &offline,
            &keyward_store::testkit::audit("key.create", offline.id),
        )
        .await
        .unwrap();
    s.restart(fast()).await;
    let (_, third) = s.key(&ident, json!({})).await;
    wait_until("the other events", Duration::from_secs(10), || {
        r.count() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let keys: Vec<String> = r
        .bodies()
        .iter()
        .map(|b| b["data"]["key_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        [first, offline.id.to_string(), third],
        "none lost, none twice"
    );
    s.stop().await;
}

store_test!(multi_thread key_expiring_fires_once);
async fn key_expiring_fires_once(s: TestServer) {
    let mut s = restarted(s, fast()).await;
    let r = Receiver::ok().await;
    webhook(&s, &r.url, &["key.expiring"]).await;
    let ident = s.identity("expiring").await;
    let (_, soon) = s.key(&ident, json!({"ttl_seconds": 86_400})).await;
    s.key(&ident, json!({"ttl_seconds": 30 * 86_400})).await;
    s.key(&ident, json!({})).await;
    // The job runs every few seconds.
    wait_until("key.expiring", Duration::from_secs(15), || r.count() == 1).await;
    let body = &r.bodies()[0];
    assert_eq!(body["type"], "key.expiring");
    assert_eq!(body["data"]["key_id"], soon);
    assert_eq!(body["data"]["identity_id"], ident);
    assert!(body["data"]["expires_at"].is_string());
    // A restart does not notify it again.
    s.restart(fast()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.count(), 1);
    s.stop().await;
}

store_test!(webhook_calls_check_input_and_scopes);
async fn webhook_calls_check_input_and_scopes(s: TestServer) {
    let url = "https://hooks.example.com/k";
    for (body, field) in [
        (
            json!({"url": "ftp://x.example/", "events": ["key.created"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["key.created"]}),
            "url",
        ),
        (
            json!({"url": "https://u:p@x.example/", "events": ["key.created"]}),
            "url",
        ),
        (json!({"url": url, "events": []}), "events"),
        (
            json!({"url": url, "events": ["key.created", "key.deleted"]}),
            "events[1]",
        ),
        (
            json!({"url": url, "events": ["key.created"], "secret": "short"}),
            "secret",
        ),
        (json!({"url": url, "events": "key.created"}), "events"),
        (json!({"events": ["key.created"]}), "url"),
        (
            json!({"url": url, "events": ["key.created"], "extra": 1}),
            "extra",
        ),
    ] {
        let a = s.post("/v1/webhooks", &s.root, body.clone()).await;
        let p = a.problem(400);
        assert!(p["detail"].as_str().unwrap().contains(field), "{body}: {p}");
    }
    // A secret of one's own is kept, and shown once.
    let a = s
        .post(
            "/v1/webhooks",
            &s.root,
            json!({"url": url, "events": ["leak.detected"], "secret": "my-own-secret-0123456789"}),
        )
        .await;
    let created = a.ok(201).clone();
    assert_eq!(created["secret"], "my-own-secret-0123456789");
    assert_eq!(created["events"], json!(["leak.detected"]));
    let id = created["id"].as_str().unwrap();

    // Scopes: read may list, not create or delete; nothing without them.
    let ident = s.identity("hook-admin").await;
    let (reader, _) = s
        .key(&ident, json!({"scopes": ["keyward:webhooks:read"]}))
        .await;
    let (other, _) = s
        .key(&ident, json!({"scopes": ["keyward:keys:read"]}))
        .await;
    s.get("/v1/webhooks", &reader).await.ok(200);
    s.get(&format!("/v1/webhooks/{id}/deliveries"), &reader)
        .await
        .ok(200);
    s.post(
        "/v1/webhooks",
        &reader,
        json!({"url": url, "events": ["key.created"]}),
    )
    .await
    .problem(403);
    s.delete(&format!("/v1/webhooks/{id}"), &reader)
        .await
        .problem(403);
    s.get("/v1/webhooks", &other).await.problem(403);

    // Delete: once, audit-logged; then unknown.
    let gone = s.delete(&format!("/v1/webhooks/{id}"), &s.root).await;
    assert_eq!(gone.ok(200)["id"], id);
    assert!(gone.body.get("secret").is_none());
    s.delete(&format!("/v1/webhooks/{id}"), &s.root)
        .await
        .problem(404);
    s.get(&format!("/v1/webhooks/{id}"), &s.root)
        .await
        .problem(404);
    s.get(&format!("/v1/webhooks/{id}/deliveries"), &s.root)
        .await
        .problem(404);
    s.get("/v1/webhooks/nope", &s.root).await.problem(404);
    let audit = s.get("/v1/audit?limit=1000", &s.root).await;
    let text = audit.body.to_string();
    assert!(text.contains("webhook.delete") && !text.contains("my-own-secret"));
    let _ = Backend::Sqlite;

    let doc = s
        .send(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    let doc = doc.ok(200);
    for p in [
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/deliveries",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from openapi.json"
        );
    }
    assert!(doc["components"]["schemas"].get("CreateWebhook").is_some());
}

/// In a cluster only the jobs leader delivers, and each event reaches a receiver once,
/// whichever node recorded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_delivers_each_event_once() {
    let a = restarted(TestServer::start_with(Backend::Postgres).await, fast()).await;
    let b = restarted(a.another_node().await, fast()).await;
    let r = Receiver::ok().await;
    webhook(&a, &r.url, &["key.created"]).await;
    let ident = b.identity("cluster").await;
    for _ in 0..5 {
        b.key(&ident, json!({})).await;
        a.key(&ident, json!({})).await;
    }
    wait_until("ten deliveries", Duration::from_secs(15), || {
        r.count() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: std::collections::HashSet<String> = r
        .bodies()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((r.count(), ids.len()), (10, 10), "each event once");
    b.stop().await;
    a.stop().await;
}

store_test!(multi_thread a_reported_leak_fires_leak_detected);
async fn a_reported_leak_fires_leak_detected(s: TestServer) {
    let s = restarted(s, fast()).await;
    let r = Receiver::ok().await;
    webhook(&s, &r.url, &["leak.detected"]).await;
    let ident = s.identity("leaky").await;
    let (key, key_id) = s.key(&ident, json!({})).await;
    let a = s
        .post(
            "/v1/leaks",
            &s.root,
            json!({"key": key, "source": "paste.example/abc"}),
        )
        .await;
    a.ok(200);
    wait_until("leak.detected", Duration::from_secs(10), || r.count() == 1).await;
    let got = r.got.lock()[0].body.clone();
    assert!(!got.contains(&key), "the payload holds the key");
    let body: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(body["type"], "leak.detected");
    assert_eq!(body["data"]["key_id"], key_id);
    assert_eq!(body["data"]["source"], "paste.example/abc");
    assert_eq!(body["data"]["revoked"], true);
    s.stop().await;
}
