//! Usage events end to end: analytics totals that match the verifications made, the
//! posture report on keys built to trigger each finding, a shutdown that loses no
//! queued event, and the retention job. Real servers over TCP, on both stores.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::TimeDelta;
use common::{TestServer, eventually};
use keyward_core::KeyPrefix;
use keyward_core::model::KeyRecord;
use keyward_core::policy::VerifyRequest;
use keyward_core::usage::{Bucket, UsageEvent};
use keyward_core::{VerifyCode, key};
use keyward_server::usage::UsageSettings;
use keyward_server::verifier::Verifier;
use keyward_store::Store;
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::usage::UsageSubject;
use serde_json::{Value, json};
use uuid::Uuid;

store_test!(analytics_totals_match_verifications);
async fn analytics_totals_match_verifications(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("usage-a").await;
    let (k, kid) = s
        .key(&ident, json!({"scopes": ["orders:read", "orders:write"]}))
        .await;
    let (other, _) = s.key(&ident, json!({})).await;
    for _ in 0..7 {
        let r = s
            .verify(
                &v,
                &k,
                json!({"scopes": ["orders:read"], "ip": "10.0.0.1",
                "tags": {"route": "/orders"}}),
            )
            .await;
        assert_eq!(r["code"], "VALID");
    }
    for _ in 0..3 {
        let r = s
            .verify(&v, &k, json!({"scopes": ["admin:all"], "ip": "10.0.0.1"}))
            .await;
        assert_eq!(r["code"], "INSUFFICIENT_SCOPE");
    }
    for _ in 0..2 {
        s.verify(&v, &k, json!({"ip": "10.0.0.2"})).await;
    }
    s.verify(&v, &other, json!({"ip": "10.0.0.3"})).await;
    // Unknown keys are events too (for the top sources), counted for no key.
    s.verify(&v, "kw_nope", json!({"ip": "10.9.9.9"})).await;

    let path = format!("/v1/usage?key_id={kid}&bucket=minute");
    let u = eventually(&s, &path, &s.root, |u| u["total"]["VALID"] == 9).await;
    assert_eq!(
        u["total"],
        json!({"VALID": 9, "INSUFFICIENT_SCOPE": 3}),
        "{u}"
    );
    let per_bucket: u64 = u["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["counts"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(per_bucket, 12);
    // Every event is in once the last one is (one writer, in order).
    let by_identity = eventually(
        &s,
        &format!("/v1/usage?identity_id={ident}&bucket=day"),
        &s.root,
        |u| u["total"]["VALID"] == 10,
    )
    .await;
    assert_eq!(
        by_identity["total"],
        json!({"VALID": 10, "INSUFFICIENT_SCOPE": 3})
    );

    let top = s
        .get(&format!("/v1/usage/top?identity_id={ident}"), &s.root)
        .await;
    let top = top.ok(200);
    assert_eq!(
        top["sources"],
        json!([{"ip": "10.0.0.1", "count": 10}, {"ip": "10.0.0.2", "count": 2},
               {"ip": "10.0.0.3", "count": 1}])
    );
    assert_eq!(top["keys"][0]["key_id"], kid.as_str());
    assert_eq!(top["keys"][0]["count"], 12);
    assert_eq!(top["keys"][0]["valid"], 9);
    eventually(&s, "/v1/usage/top?limit=100", &s.root, |t| {
        t["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["ip"] == "10.9.9.9")
    })
    .await;

    // The raw events hold exercised scopes and tags, never a key.
    let to = keyward_server::now() + TimeDelta::seconds(1);
    let counts = s
        .store
        .usage_counts(
            UsageSubject::Key(kid.parse().unwrap()),
            Bucket::Hour,
            to - TimeDelta::hours(2),
            to,
        )
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 12);
    s.stop().await;
}

store_test!(usage_input_is_checked);
async fn usage_input_is_checked(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("usage-bad").await;
    let (k, kid) = s.key(&ident, json!({})).await;
    let cases = [
        (format!("/v1/usage?key_id={kid}&bucket=week"), "bucket"),
        ("/v1/usage".to_string(), "key_id"),
        (
            format!("/v1/usage?key_id={kid}&identity_id={ident}"),
            "identity_id",
        ),
        (format!("/v1/usage?key_id={kid}&from=yesterday"), "from"),
        (
            format!("/v1/usage?key_id={kid}&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
            "to",
        ),
        (
            format!("/v1/usage?key_id={kid}&bucket=minute&from=2020-01-01T00:00:00Z"),
            "from",
        ),
        ("/v1/usage/top?limit=0".to_string(), "limit"),
    ];
    for (path, field) in cases {
        let a = s.get(&path, &s.root).await;
        let p = a.problem(400);
        assert!(p["detail"].as_str().unwrap().contains(field), "{path}: {p}");
    }
    s.get(&format!("/v1/usage?key_id={}", Uuid::now_v7()), &s.root)
        .await
        .problem(404);
    // Tags are bounded and named.
    let bad = s
        .post(
            "/v1/verify",
            &v,
            json!({"key": k, "tags": {"route": "x".repeat(300)}}),
        )
        .await;
    assert!(
        bad.problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("tags.route")
    );
    let many: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("t{i}"), json!("v"))).collect();
    s.post("/v1/verify", &v, json!({"key": k, "tags": many}))
        .await
        .problem(400);
    // Scopes: keyward:verify alone may not read usage; keys:read or usage:read may.
    s.get(&format!("/v1/usage?key_id={kid}"), &v)
        .await
        .problem(403);
    for scope in ["keyward:keys:read", "keyward:usage:read"] {
        let (reader, _) = s.key(&ident, json!({"scopes": [scope]})).await;
        s.get(&format!("/v1/usage?key_id={kid}"), &reader)
            .await
            .ok(200);
    }
    s.stop().await;
}

/// A key as the store holds it, with its plaintext, `age_days` old.
fn old_key(identity: Uuid, age_days: i64, scopes: &[&str]) -> (String, KeyRecord) {
    let minted = key::mint(&KeyPrefix::default());
    let created = keyward_server::now() - TimeDelta::days(age_days);
    let record = KeyRecord {
        id: Uuid::now_v7(),
        identity_id: identity,
        name: format!("aged-{age_days}"),
        prefix: "kw".into(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        created_at: created,
        updated_at: created,
        expires_at: None,
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec![],
        rate_limits: vec![],
        remaining: None,
        last_used_at: None,
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    };
    (minted.plaintext.as_str().to_owned(), record)
}

fn kinds_of(report: &Value, key_id: &str) -> Vec<String> {
    let mut kinds: Vec<String> = report["identities"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["key_id"] == key_id)
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

store_test!(posture_finds_each_kind);
async fn posture_finds_each_kind(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("posture-a").await;
    let ident_id: Uuid = ident.parse().unwrap();
    let now = keyward_server::now();
    // Old, unexpiring, unrestricted, used recently for orders:read only.
    let (a_plain, a) = old_key(ident_id, 200, &["orders:read", "orders:write"]);
    s.store
        .create_key(&a, &testkit::audit("key.create", a.id))
        .await
        .unwrap();
    s.store
        .record_last_used(&[(a.id, now - TimeDelta::days(1))])
        .await
        .unwrap();
    s.store
        .record_usage(&[UsageEvent {
            at: now - TimeDelta::days(1),
            key_id: Some(a.id),
            identity_id: Some(ident_id),
            code: VerifyCode::Valid,
            ip: None,
            scopes: vec!["orders:read".into()],
            latency_us: 10,
            tags: None,
        }])
        .await
        .unwrap();
    // Well kept but unused for 120 days.
    let (_, mut b) = old_key(ident_id, 120, &["orders:read"]);
    b.expires_at = Some(now + TimeDelta::days(30));
    b.ip_allowlist = vec!["10.0.0.0/8".into()];
    s.store
        .create_key(&b, &testkit::audit("key.create", b.id))
        .await
        .unwrap();
    // New, restricted and expiring, but holds Keyward's own scopes.
    let (_, c) = s
        .key(
            &ident,
            json!({"scopes": ["keyward:keys:read"], "ttl_seconds": 3600,
                   "ip_allowlist": ["10.0.0.0/8"]}),
        )
        .await;

    let path = format!("/v1/reports/posture?identity_id={ident}&max_age_days=180");
    let r = s.get(&path, &s.root).await.ok(200).clone();
    assert_eq!(r["identities"].as_array().unwrap().len(), 1);
    assert_eq!(r["identities"][0]["name"], "posture-a");
    assert_eq!(
        kinds_of(&r, &a.id.to_string()),
        [
            "NOT_ROTATED",
            "NO_EXPIRY",
            "NO_IP_RESTRICTION",
            "UNUSED_SCOPES"
        ]
    );
    let unused = r["identities"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "UNUSED_SCOPES")
        .unwrap()
        .clone();
    assert_eq!(unused["scopes"], json!(["orders:write"]));
    assert!(unused["detail"].as_str().unwrap().contains("orders:write"));
    assert_eq!(kinds_of(&r, &b.id.to_string()), ["STALE"]);
    assert_eq!(kinds_of(&r, &c), ["ADMIN_KEY"]);
    assert_eq!(
        r["identities"][0]["score"],
        100 - 15 - 10 - 5 - 10 - 15 - 25
    );

    // Using the scope through verify is what clears the advice.
    let ok = s
        .verify(&v, &a_plain, json!({"scopes": ["orders:write"]}))
        .await;
    assert_eq!(ok["code"], "VALID");
    let r = eventually(&s, &path, &s.root, |r| {
        !kinds_of(r, &a.id.to_string()).contains(&"UNUSED_SCOPES".to_string())
    })
    .await;
    assert_eq!(r["identities"][0]["score"], 100 - 15 - 10 - 5 - 15 - 25);

    // The whole report; bad input; scopes.
    let all = s.get("/v1/reports/posture", &s.root).await;
    assert!(all.ok(200)["identities"].as_array().unwrap().len() >= 3);
    s.get("/v1/reports/posture?stale_days=0", &s.root)
        .await
        .problem(400);
    s.get(
        &format!("/v1/reports/posture?identity_id={}", Uuid::now_v7()),
        &s.root,
    )
    .await
    .problem(404);
    s.get("/v1/reports/posture", &v).await.problem(403);
    s.stop().await;
}

store_test!(multi_thread shutdown_flushes_events_over_http);
async fn shutdown_flushes_events_over_http(mut s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("usage-stop").await;
    let (k, kid) = s.key(&ident, json!({})).await;
    let calls = 400;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..calls {
        let (http, base, v, k) = (s.http.clone(), s.base.clone(), v.clone(), k.clone());
        tasks.spawn(async move {
            let r = http
                .post(format!("{base}/v1/verify"))
                .bearer_auth(v)
                .json(&json!({"key": k, "ip": format!("10.1.{}.{}", n / 200, n % 200)}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        });
    }
    tasks.join_all().await;
    // Stop at once: events still queued must be written before stop returns.
    s.shutdown().await;
    let to = keyward_server::now() + TimeDelta::seconds(1);
    let counts = s
        .store
        .usage_counts(
            UsageSubject::Key(kid.parse().unwrap()),
            Bucket::Day,
            to - TimeDelta::days(1),
            to,
        )
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), calls);
}

/// Deterministic: events pile up in the queue (the writer cannot run while this
/// current-thread test verifies), then stopping writes every one of them.
async fn shutdown_writes_every_queued_event(store: Arc<dyn Store>) {
    let ident = testkit::identity("stop");
    store
        .create_identity(&ident, &testkit::audit("identity.create", ident.id))
        .await
        .unwrap();
    let (plain, rec) = old_key(ident.id, 0, &["orders:read"]);
    store
        .create_key(&rec, &testkit::audit("key.create", rec.id))
        .await
        .unwrap();
    let (verifier, _last_used) = Verifier::new(store.clone(), 100);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(keyward_server::usage::write_usage(
        verifier.usage().clone(),
        store.clone(),
        stopped,
    ));
    let scopes = vec!["orders:read".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: Some("10.2.0.1".parse().unwrap()),
    };
    let now = keyward_server::now();
    verifier.verify(&plain, &req, now).await.unwrap();
    const N: usize = 20_000;
    for _ in 1..N {
        assert_eq!(
            verifier.try_verify_warm(&plain, &req, now).unwrap().code,
            VerifyCode::Valid
        );
    }
    assert!(
        verifier.usage().depth() >= N - 1,
        "the writer ran meanwhile"
    );
    stop.send(true).unwrap();
    writer.await.unwrap();
    assert_eq!(verifier.usage().depth(), 0);
    let counts = store
        .usage_counts(
            UsageSubject::Key(rec.id),
            Bucket::Minute,
            now - TimeDelta::minutes(1),
            now + TimeDelta::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), N as u64);
    let inputs = store.posture_inputs(Some(ident.id), now).await.unwrap();
    assert!(inputs[0].keys[0].1.exercised.contains("orders:read"));
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_writes_every_queued_event_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyward_store::SqliteStore::open(dir.path()).await.unwrap();
    shutdown_writes_every_queued_event(Arc::new(store)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_writes_every_queued_event_postgres() {
    let db = TempDatabase::create().await;
    let store = keyward_store::PgStore::open(&db.url).await.unwrap();
    shutdown_writes_every_queued_event(Arc::new(store.clone())).await;
    store.close().await;
}

/// The jobs leader removes usage older than the retention settings.
async fn retention_job_prunes(store: Arc<dyn Store>) {
    let ident = testkit::identity("retention");
    store
        .create_identity(&ident, &testkit::audit("identity.create", ident.id))
        .await
        .unwrap();
    let (_, rec) = old_key(ident.id, 30, &[]);
    store
        .create_key(&rec, &testkit::audit("key.create", rec.id))
        .await
        .unwrap();
    let now = keyward_server::now();
    let at = |days| UsageEvent {
        at: now - TimeDelta::days(days),
        key_id: Some(rec.id),
        identity_id: Some(ident.id),
        code: VerifyCode::Valid,
        ip: Some("10.3.0.1".parse().unwrap()),
        scopes: vec![],
        latency_us: 1,
        tags: None,
    };
    store.record_usage(&[at(20), at(10), at(1)]).await.unwrap();
    let settings = UsageSettings {
        raw_retention_days: 5,
        rollup_retention_days: 15,
        ..UsageSettings::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let jobs = keyward_server::jobs::spawn(
        store.clone(),
        Arc::new(AtomicBool::new(false)),
        stopped,
        settings,
        (
            keyward_server::tokens::SigningKeys::new(store.clone(), None),
            keyward_server::tokens::DEFAULT_ROTATION,
        ),
    );
    let subject = UsageSubject::Key(rec.id);
    let from = now - TimeDelta::days(40);
    let mut pruned = false;
    for _ in 0..50 {
        let days = store
            .usage_counts(subject, Bucket::Day, from, now + TimeDelta::days(1))
            .await
            .unwrap();
        if days.len() == 2 {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    jobs.await.unwrap();
    assert!(pruned, "day rollups older than 15 days were not removed");
    let minutes = store
        .usage_counts(subject, Bucket::Minute, from, now + TimeDelta::days(1))
        .await
        .unwrap();
    assert_eq!(minutes.len(), 1, "minute rollups older than 5 days remain");
    let sources = store
        .top_sources(Some(subject), from, now + TimeDelta::days(1), 10)
        .await
        .unwrap();
    assert_eq!(sources[0].count, 1, "raw events older than 5 days remain");
}

#[tokio::test]
async fn retention_job_prunes_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyward_store::SqliteStore::open(dir.path()).await.unwrap();
    retention_job_prunes(Arc::new(store)).await;
}

#[tokio::test]
async fn retention_job_prunes_postgres() {
    let db = TempDatabase::create().await;
    let store = keyward_store::PgStore::open(&db.url).await.unwrap();
    retention_job_prunes(Arc::new(store.clone())).await;
    store.close().await;
}

store_test!(usage_metrics_are_exported);
async fn usage_metrics_are_exported(s: TestServer) {
    let v = s.verifier().await;
    s.verify(&v, "kw_nope", json!({})).await;
    // The latency histogram is recorded by the usage writer, on its next flush.
    let mut m = String::new();
    for _ in 0..100 {
        m = s.metrics().await;
        if m.contains("keyward_verify_duration_seconds") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in [
        "keyward_verify_duration_seconds",
        "keyward_usage_queue_depth",
        "keyward_usage_events_written_total",
        "keyward_usage_events_dropped_total",
        "keyward_verify_cache_total",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    let doc = s
        .send(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    for path in ["/v1/usage", "/v1/usage/top", "/v1/reports/posture"] {
        assert!(
            doc.ok(200)["paths"][path]["get"].is_object(),
            "{path} missing from the OpenAPI description"
        );
    }
    s.stop().await;
}
