//! Rotation status end to end (issue 7, item 5): a real server on each store, real
//! verifications from two source addresses, and a real webhook receiver (an axum server
//! on 127.0.0.1:0) for `key.old_version_in_use`.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::TestServer;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A webhook receiver that keeps every body it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let g = g.clone();
        async move {
            g.lock().push(String::from_utf8_lossy(&body).into_owned());
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks"), got)
}

/// Polls the rotation status of `id` until `done` holds (usage is written in batches).
async fn status_until(s: &TestServer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let b = s
            .get(&format!("/v1/keys/{id}/rotation-status"), &s.root)
            .await
            .ok(200)
            .clone();
        if done(&b) {
            return b;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "status never became ready: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sources_of(status: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = status["previous"][0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["ip"].as_str().unwrap().to_owned(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

store_test!(multi_thread old_key_sources_and_one_notice_before_the_grace_ends);
async fn old_key_sources_and_one_notice_before_the_grace_ends(s: TestServer) {
    let (url, got) = receiver().await;
    s.post(
        "/v1/webhooks",
        &s.root,
        json!({"url": url, "events": ["key.old_version_in_use"]}),
    )
    .await
    .ok(201);
    let ident = s.identity("billing").await;
    let (old_key, old_id) = s.key(&ident, json!({"name": "deploy"})).await;
    let verifier = s.verifier().await;
    // Used before the rotation: not a source of the old key "since it was rotated".
    s.verify(&verifier, &old_key, json!({"ip": "192.0.2.9"}))
        .await;

    // A grace of 8 s: the notice is due in its last half (the 1 h default is longer).
    let rotated = s
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            &s.root,
            json!({"grace_seconds": 8}),
        )
        .await
        .ok(201)
        .clone();
    let rotated_at = Instant::now();
    let (new_key, new_id) = (
        rotated["key"].as_str().unwrap().to_owned(),
        rotated["id"].as_str().unwrap().to_owned(),
    );
    for ip in ["10.1.0.1", "10.1.0.1", "10.2.0.2"] {
        let v = s.verify(&verifier, &old_key, json!({"ip": ip})).await;
        assert_eq!(v["code"], "VALID", "the old key works during its grace");
    }
    s.verify(&verifier, &new_key, json!({"ip": "10.3.0.3"}))
        .await;

    // Asked through either key of the lineage, the answer is the same.
    let want = [("10.1.0.1".to_owned(), 2), ("10.2.0.2".to_owned(), 1)];
    let by_new = status_until(&s, &new_id, |b| sources_of(b) == want).await;
    assert_eq!(by_new["current"]["id"], new_id);
    let previous = by_new["previous"].as_array().unwrap();
    assert_eq!(previous.len(), 1, "{by_new}");
    assert_eq!(previous[0]["id"], old_id);
    assert!(
        previous[0]["expires_at"].is_string(),
        "the end of the grace"
    );
    let last_seen: Vec<&str> = previous[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["last_seen"].as_str().unwrap())
        .collect();
    assert!(last_seen.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let by_old = status_until(&s, &old_id, |b| sources_of(b) == want).await;
    assert_eq!(by_old["current"]["id"], new_id);
    assert_eq!(by_old["previous"][0]["id"], old_id);

    // The notice: once, before the grace ends, naming both sources and no key.
    let deadline = Duration::from_secs(8);
    while got.lock().is_empty() {
        assert!(
            rotated_at.elapsed() < deadline,
            "no notice before the grace ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the end of the grace and a few more checks: still one.
    tokio::time::sleep(deadline.saturating_sub(rotated_at.elapsed()) + Duration::from_secs(4))
        .await;
    let bodies = got.lock().clone();
    assert_eq!(bodies.len(), 1, "one notice per old key: {bodies:?}");
    let event: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(event["type"], "key.old_version_in_use");
    assert_eq!(event["data"]["key_id"], old_id);
    assert_eq!(event["data"]["new_key_id"], new_id);
    assert_eq!(event["data"]["actor"], "system");
    assert!(event["data"]["grace_ends_at"].is_string());
    let mut ips: Vec<&str> = event["data"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ip"].as_str().unwrap())
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.1.0.1", "10.2.0.2"]);
    for k in [&old_key, &new_key] {
        assert!(!bodies[0].contains(k.as_str()), "a key in the event");
    }
    let audit = s.get("/v1/audit?limit=1000", &s.root).await.ok(200).clone();
    let notices: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.old_version_in_use")
        .collect();
    assert_eq!(notices.len(), 1, "one audit entry per old key");
    assert_eq!(notices[0]["actor"], "system");
    let audit = audit.to_string();
    assert!(!audit.contains(old_key.as_str()) && !audit.contains(new_key.as_str()));
}

store_test!(a_key_never_rotated_has_no_previous_keys);
async fn a_key_never_rotated_has_no_previous_keys(s: TestServer) {
    let ident = s.identity("solo").await;
    let (_, id) = s.key(&ident, json!({})).await;
    let b = s
        .get(&format!("/v1/keys/{id}/rotation-status"), &s.root)
        .await;
    assert_eq!(
        b.ok(200).clone(),
        json!({"current": {"id": id}, "previous": []})
    );
}

store_test!(bad_ids_and_missing_scope);
async fn bad_ids_and_missing_scope(s: TestServer) {
    let missing = uuid::Uuid::now_v7();
    s.get(&format!("/v1/keys/{missing}/rotation-status"), &s.root)
        .await
        .problem(404);
    // Like every `/v1/keys/{id}` path: an id that is no uuid names no key.
    s.get("/v1/keys/not-a-uuid/rotation-status", &s.root)
        .await
        .problem(404);
    let ident = s.identity("scoped").await;
    let (_, id) = s.key(&ident, json!({})).await;
    // A verifier may verify keys but not read them.
    let verifier = s.verifier().await;
    s.get(&format!("/v1/keys/{id}/rotation-status"), &verifier)
        .await
        .problem(403);
}
