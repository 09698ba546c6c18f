//! Online anomaly detection end to end, on both stores: real verify traffic over HTTP,
//! the jobs leader's tail over the stored usage events, `GET /v1/anomalies`, the
//! `anomaly.detected` webhook at a real local receiver (signature checked here), the
//! `disable_key` response and its reversal, and restarts.
//!
//! The detectors are injected (`Parts::anomalies.detectors`): a test detector that
//! raises one anomaly per episode of verifications tagged `anomaly=<severity>`, so the
//! tests exercise the server's plumbing whatever `keyward-detect` decides.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::TestServer;
use hmac::{Hmac, KeyInit, Mac};
use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};
use keyward_core::usage::UsageEvent;
use keyward_server::anomalies::{AnomalySettings, Detect};
use keyward_server::webhooks::WebhookSettings;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

/// One anomaly per key per episode: verifications tagged `anomaly=<severity>` less than a
/// minute apart belong to one episode.
#[derive(Default)]
struct TaggedEpisodes {
    last_tagged: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
}

impl Detect for TaggedEpisodes {
    fn observe(&mut self, e: &UsageEvent, out: &mut Vec<Anomaly>) {
        let (Some(key), Some(sev)) = (e.key_id, e.tags.as_ref().and_then(|t| t.get("anomaly")))
        else {
            return;
        };
        let ongoing = self
            .last_tagged
            .insert(key, e.at)
            .is_some_and(|prev| e.at - prev < chrono::TimeDelta::minutes(1));
        if !ongoing {
            out.push(Anomaly {
                at: e.at,
                key_id: Some(key),
                identity_id: e.identity_id,
                kind: AnomalyKind::NewNetwork,
                severity: Severity::parse(sev).unwrap_or(Severity::Low),
                detail: format!("key used from {:?}, a network it has never used", e.ip),
                evidence: json!({"ip": e.ip, "observed": 1, "baseline": 0}),
            });
        }
    }
}

fn settings() -> AnomalySettings {
    AnomalySettings {
        detectors: Arc::new(|| Box::<TaggedEpisodes>::default()),
        lag: keyward_server::usage::FLUSH_EVERY + Duration::from_millis(600),
        poll: Duration::from_millis(100),
        // Only the replay keeps a restart from alerting an ongoing episode again here.
        regroup: Duration::ZERO,
        ..AnomalySettings::default()
    }
}

fn fast_webhooks() -> WebhookSettings {
    WebhookSettings {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        deny_private: false,
        poll: Duration::from_millis(50),
        ..WebhookSettings::default()
    }
}

async fn with_detection(mut s: TestServer) -> TestServer {
    s.restart_with_parts(keyward_server::Parts {
        anomalies: settings(),
        webhooks: fast_webhooks(),
        ..Default::default()
    })
    .await;
    s
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the anomalies of `key_id` to be responded to (no `action_taken` null).
async fn anomalies_of(s: &TestServer, key_id: &str, n: usize) -> Vec<Value> {
    eventually("anomalies", async || {
        let a = s
            .get(&format!("/v1/anomalies?key_id={key_id}"), &s.root)
            .await;
        let items = a.ok(200)["items"].as_array().unwrap().clone();
        (items.len() >= n && items.iter().all(|i| i["action_taken"].is_string())).then_some(items)
    })
    .await
}

async fn tagged_verify(s: &TestServer, verifier: &str, key: &str, severity: &str) -> Value {
    s.verify(
        verifier,
        key,
        json!({"ip": "203.0.113.9", "tags": {"anomaly": severity}}),
    )
    .await
}

/// A local webhook receiver that keeps what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let g = g.clone();
            async move {
                g.lock()
                    .push((headers, String::from_utf8_lossy(&body).into_owned()));
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hooks"),
            got,
        }
    }
}

fn assert_signed(headers: &HeaderMap, body: &str, secret: &str) {
    let sig = headers["keyward-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(",v1=").expect("t=...,v1=...");
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    assert_eq!(
        v1,
        hex::encode(mac.finalize().into_bytes()),
        "the signature verifies"
    );
}

store_test!(multi_thread verify_traffic_raises_an_anomaly_with_evidence_and_a_signed_webhook);
async fn verify_traffic_raises_an_anomaly_with_evidence_and_a_signed_webhook(s: TestServer) {
    let s = with_detection(s).await;
    let r = Receiver::start().await;
    let hook = s
        .post(
            "/v1/webhooks",
            &s.root,
            json!({"url": r.url, "events": ["anomaly.detected"]}),
        )
        .await;
    let secret = hook.ok(201)["secret"].as_str().unwrap().to_owned();
    let verifier = s.verifier().await;
    let ident = s.identity("payments").await;
    let (key, key_id) = s.key(&ident, json!({})).await;
    // Ordinary traffic raises nothing; the tagged episode raises one anomaly.
    for _ in 0..3 {
        assert_eq!(s.verify(&verifier, &key, json!({})).await["code"], "VALID");
    }
    for _ in 0..5 {
        assert_eq!(
            tagged_verify(&s, &verifier, &key, "high").await["code"],
            "VALID"
        );
    }
    let items = anomalies_of(&s, &key_id, 1).await;
    assert_eq!(items.len(), 1, "one anomaly per episode: {items:?}");
    let a = &items[0];
    assert_eq!(a["kind"], "NEW_NETWORK");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["key_id"], key_id);
    assert_eq!(a["identity_id"], ident);
    assert_eq!(
        a["action_taken"], "notified",
        "notify is the default policy"
    );
    assert_eq!(a["evidence"]["ip"], "203.0.113.9");
    assert!(a["detail"].as_str().unwrap().contains("203.0.113.9"));
    // Filters.
    let by_identity = s
        .get(
            &format!("/v1/anomalies?identity_id={ident}&kind=NEW_NETWORK&severity=high"),
            &s.root,
        )
        .await;
    assert_eq!(by_identity.ok(200)["items"][0]["id"], a["id"]);
    let none = s
        .get(
            &format!("/v1/anomalies?key_id={key_id}&severity=low"),
            &s.root,
        )
        .await;
    assert_eq!(none.ok(200)["items"].as_array().unwrap().len(), 0);
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = s
        .get(
            &format!("/v1/anomalies?key_id={key_id}&since={later}"),
            &s.root,
        )
        .await;
    assert_eq!(none.ok(200)["items"].as_array().unwrap().len(), 0);

    // The webhook: signed, the anomaly in `data`, no key.
    let (headers, body) = eventually("the webhook", async || r.got.lock().first().cloned()).await;
    assert_signed(&headers, &body, &secret);
    assert!(!body.contains(&key), "a payload holds the key");
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "anomaly.detected");
    assert_eq!(event["data"]["id"], a["id"]);
    assert_eq!(event["data"]["kind"], "NEW_NETWORK");
    assert_eq!(event["data"]["key_id"], key_id);
    assert_eq!(event["data"]["action_taken"], "notified");
    assert_eq!(event["data"]["evidence"]["ip"], "203.0.113.9");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("keyward_anomaly_events_observed_total"),
        "{metrics}"
    );
    s.stop().await;
}

store_test!(multi_thread disable_key_policy_disables_and_enable_reverses);
async fn disable_key_policy_disables_and_enable_reverses(s: TestServer) {
    let s = with_detection(s).await;
    let verifier = s.verifier().await;
    let ident = s.identity("batch").await;
    let policy = s
        .put(
            &format!("/v1/identities/{ident}/anomaly-policy"),
            &s.root,
            json!({"action": "disable_key", "min_severity": "medium"}),
        )
        .await;
    assert_eq!(policy.ok(200)["action"], "disable_key");
    let shown = s
        .get(&format!("/v1/identities/{ident}/anomaly-policy"), &s.root)
        .await;
    assert_eq!(shown.ok(200)["min_severity"], "medium");
    let (key, key_id) = s.key(&ident, json!({})).await;
    let (low_key, low_id) = s.key(&ident, json!({})).await;
    let (admin_key, admin_id) = s
        .key(&ident, json!({"scopes": ["keyward:usage:read"]}))
        .await;

    tagged_verify(&s, &verifier, &key, "high").await;
    tagged_verify(&s, &verifier, &low_key, "low").await;
    tagged_verify(&s, &verifier, &admin_key, "high").await;
    let a = &anomalies_of(&s, &key_id, 1).await[0];
    assert_eq!(a["action_taken"], "key_disabled");
    assert_eq!(
        anomalies_of(&s, &low_id, 1).await[0]["action_taken"],
        "notified",
        "below the minimum"
    );
    assert_eq!(
        anomalies_of(&s, &admin_id, 1).await[0]["action_taken"],
        "notified_admin_key_kept",
        "keyward: keys are never disabled automatically"
    );
    assert_eq!(
        s.verify(&verifier, &key, json!({})).await["code"],
        "DISABLED"
    );
    assert_eq!(
        s.verify(&verifier, &low_key, json!({})).await["code"],
        "VALID"
    );
    assert_eq!(
        s.verify(&verifier, &admin_key, json!({})).await["code"],
        "VALID"
    );
    let audit = s.get("/v1/audit?limit=1000", &s.root).await;
    let items = audit.ok(200)["items"].as_array().unwrap().clone();
    let disable = items
        .iter()
        .find(|r| r["action"] == "key.disable")
        .expect("the disable is audit-logged");
    assert_eq!(disable["actor"], "keyward:anomaly-response");
    assert_eq!(disable["target"], key_id);
    assert_eq!(disable["detail"]["anomaly_id"], a["id"]);
    assert!(
        items
            .iter()
            .any(|r| r["action"] == "anomaly.detected" && r["target"] == a["id"])
    );
    assert!(!audit.body.to_string().contains(&key));

    // Reversible: re-enable the key the usual way, audit-logged too.
    let enabled = s
        .patch(
            &format!("/v1/keys/{key_id}"),
            &s.root,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(enabled.ok(200)["enabled"], true);
    assert_eq!(s.verify(&verifier, &key, json!({})).await["code"], "VALID");
    let audit = s.get("/v1/audit?limit=1000", &s.root).await;
    assert!(audit.ok(200)["items"].as_array().unwrap().iter().any(|r| {
        r["action"] == "key.update"
            && r["target"] == key_id
            && r["detail"]["changed"] == json!(["enabled"])
    }));
    s.stop().await;
}

store_test!(multi_thread a_restart_does_not_alert_an_ongoing_episode_again);
async fn a_restart_does_not_alert_an_ongoing_episode_again(s: TestServer) {
    let mut s = with_detection(s).await;
    let verifier = s.verifier().await;
    let ident = s.identity("restarts").await;
    let (key, key_id) = s.key(&ident, json!({})).await;
    tagged_verify(&s, &verifier, &key, "medium").await;
    assert_eq!(anomalies_of(&s, &key_id, 1).await.len(), 1);
    s.restart_with_parts(keyward_server::Parts {
        anomalies: settings(),
        ..Default::default()
    })
    .await;
    // The same episode goes on after the restart.
    for _ in 0..3 {
        tagged_verify(&s, &verifier, &key, "medium").await;
    }
    let sent = chrono::Utc::now();
    eventually("detection past the new events", async || {
        s.store.detect_cursor().await.unwrap().filter(|c| *c > sent)
    })
    .await;
    let items = anomalies_of(&s, &key_id, 1).await;
    assert_eq!(items.len(), 1, "alerted once: {items:?}");
    s.stop().await;
}

store_test!(anomaly_calls_check_scopes_and_input);
async fn anomaly_calls_check_scopes_and_input(s: TestServer) {
    let ident = s.identity("readers").await;
    let (verify_only, _) = s.key(&ident, json!({"scopes": ["keyward:verify"]})).await;
    let (reader, _) = s
        .key(&ident, json!({"scopes": ["keyward:anomalies:read"]}))
        .await;
    let (usage_reader, _) = s
        .key(&ident, json!({"scopes": ["keyward:usage:read"]}))
        .await;
    let (ident_reader, _) = s
        .key(&ident, json!({"scopes": ["keyward:identities:read"]}))
        .await;
    s.get("/v1/anomalies", &verify_only).await.problem(403);
    s.send(reqwest::Method::GET, "/v1/anomalies", None, None)
        .await
        .problem(401);
    s.get("/v1/anomalies", &reader).await.ok(200);
    s.get("/v1/anomalies", &usage_reader).await.ok(200);
    let policy_path = format!("/v1/identities/{ident}/anomaly-policy");
    assert_eq!(
        s.get(&policy_path, &ident_reader).await.ok(200)["action"],
        "notify"
    );
    s.get(&policy_path, &reader).await.problem(403);
    s.put(
        &policy_path,
        &ident_reader,
        json!({"action": "disable_key"}),
    )
    .await
    .problem(403);

    for (query, field) in [
        ("since=yesterday", "since"),
        ("key_id=nope", "key_id"),
        ("identity_id=12", "identity_id"),
        ("kind=STOLEN", "kind"),
        ("severity=urgent", "severity"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("cursor=abc", "cursor"),
        ("colour=red", "colour"),
    ] {
        let a = s.get(&format!("/v1/anomalies?{query}"), &s.root).await;
        let p = a.problem(400);
        assert!(
            p["detail"].as_str().unwrap().contains(field),
            "{query}: {p}"
        );
    }
    for (body, field) in [
        (json!({"action": "explode"}), "action"),
        (
            json!({"action": "notify", "min_severity": "extreme"}),
            "min_severity",
        ),
        (json!({"min_severity": "high"}), "action"),
        (json!({"action": "notify", "extra": 1}), "extra"),
    ] {
        let a = s.put(&policy_path, &s.root, body.clone()).await;
        let p = a.problem(400);
        assert!(p["detail"].as_str().unwrap().contains(field), "{body}: {p}");
    }
    let unknown = format!("/v1/identities/{}/anomaly-policy", Uuid::now_v7());
    s.get(&unknown, &s.root).await.problem(404);
    s.put(&unknown, &s.root, json!({"action": "notify"}))
        .await
        .problem(404);
    s.stop().await;
}

store_test!(multi_thread the_real_detectors_catch_key_guessing_from_live_traffic);
/// `keyward-detect`'s own detectors (the server's default), not a test's: unknown keys
/// tried from one address are key guessing, with the address and the count as evidence.
async fn the_real_detectors_catch_key_guessing_from_live_traffic(mut s: TestServer) {
    s.restart_with_parts(keyward_server::Parts {
        anomalies: AnomalySettings {
            lag: keyward_server::usage::FLUSH_EVERY + Duration::from_millis(600),
            poll: Duration::from_millis(100),
            ..AnomalySettings::default()
        },
        ..Default::default()
    })
    .await;
    let verifier = s.verifier().await;
    let ident = s.identity("guessed").await;
    let (key, _) = s.key(&ident, json!({})).await;
    // A well-formed key of this server with its last characters changed: NOT_FOUND.
    let guess = |n: usize| {
        let cut = key.len() - 6;
        format!("{}{:06}", &key[..cut], n)
    };
    for n in 0..60 {
        let code = s
            .verify(&verifier, &guess(n), json!({"ip": "198.51.100.23"}))
            .await["code"]
            .clone();
        assert!(code == "NOT_FOUND" || code == "MALFORMED", "{code}");
    }
    let found = eventually("a KEY_GUESSING anomaly", async || {
        let a = s.get("/v1/anomalies?kind=KEY_GUESSING", &s.root).await;
        a.ok(200)["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(found["key_id"], Value::Null, "no key is concerned: {found}");
    let detail = found["detail"].as_str().unwrap();
    assert!(detail.contains("198.51.100"), "names the address: {detail}");
    assert!(!detail.contains(&key), "never the key");
}
