//! Rate limits, quotas and the order of verify checks.

#[macro_use]
mod common;

use common::TestServer;
use serde_json::json;

store_test!(multi_thread remaining_is_strict_under_concurrent_calls);
async fn remaining_is_strict_under_concurrent_calls(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("quota").await;
    let (key, id) = s.key(&ident, json!({"remaining": 10})).await;
    let mut tasks = vec![];
    for _ in 0..60 {
        let (http, base, v, key) = (s.http.clone(), s.base.clone(), v.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let r: serde_json::Value = http
                .post(format!("{base}/v1/verify"))
                .bearer_auth(v)
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["code"].as_str().unwrap().to_owned()
        }));
    }
    let mut valid = 0;
    let mut exceeded = 0;
    for t in tasks {
        match t.await.unwrap().as_str() {
            "VALID" => valid += 1,
            "USAGE_EXCEEDED" => exceeded += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(valid, 10);
    assert_eq!(exceeded, 50);
    assert_eq!(
        s.get(&format!("/v1/keys/{id}"), &s.root).await.ok(200)["remaining"],
        0
    );
    // Topping up through PATCH takes effect at once.
    s.patch(&format!("/v1/keys/{id}"), &s.root, json!({"remaining": 2}))
        .await
        .ok(200);
    let r = s.verify(&v, &key, json!({})).await;
    assert_eq!(r["code"], "VALID");
    assert_eq!(r["remaining"], 1);
    s.stop().await;
}

store_test!(rate_limits_refuse_past_the_limit_and_name_it);
async fn rate_limits_refuse_past_the_limit_and_name_it(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("rl").await;
    let (key, _) = s
        .key(
            &ident,
            json!({"rate_limits": [
                {"name": "per-minute", "limit": 3, "window_seconds": 60},
                {"name": "per-day", "limit": 1000, "window_seconds": 86400}
            ]}),
        )
        .await;
    for i in 0..3 {
        let r = s.verify(&v, &key, json!({})).await;
        assert_eq!(r["code"], "VALID", "call {i}");
        assert!(r["rate_limit"]["name"].is_string());
    }
    let r = s.verify(&v, &key, json!({})).await;
    assert_eq!(r["code"], "RATE_LIMITED");
    assert_eq!(r["valid"], false);
    assert_eq!(r["rate_limit"]["name"], "per-minute");
    assert_eq!(r["rate_limit"]["limit"], 3);
    let reset = chrono::DateTime::parse_from_rfc3339(r["rate_limit"]["reset_at"].as_str().unwrap())
        .unwrap();
    assert!(reset > chrono::Utc::now());
    s.stop().await;
}

store_test!(rejected_calls_use_no_rate_limit_and_no_quota);
async fn rejected_calls_use_no_rate_limit_and_no_quota(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("order").await;
    let (key, id) = s
        .key(
            &ident,
            json!({"scopes": ["a:read"], "remaining": 2,
                   "rate_limits": [{"name": "m", "limit": 2, "window_seconds": 3600}]}),
        )
        .await;
    // Refused for scope many times: neither the limit nor the quota moves.
    for _ in 0..5 {
        let r = s.verify(&v, &key, json!({"scopes": ["a:write"]})).await;
        assert_eq!(r["code"], "INSUFFICIENT_SCOPE");
    }
    assert_eq!(
        s.get(&format!("/v1/keys/{id}"), &s.root).await.ok(200)["remaining"],
        2
    );
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "VALID");
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "VALID");
    // Both exhausted now: the rate limit is checked first.
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "RATE_LIMITED");

    // Quota 0 with room in the limit: USAGE_EXCEEDED, and the limit is not used up.
    let (k2, _) = s
        .key(&ident, json!({"remaining": 0, "rate_limits": [{"name": "m", "limit": 1, "window_seconds": 3600}]}))
        .await;
    for _ in 0..3 {
        assert_eq!(s.verify(&v, &k2, json!({})).await["code"], "USAGE_EXCEEDED");
    }
    s.stop().await;
}

store_test!(checks_run_in_contract_order);
async fn checks_run_in_contract_order(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("order").await;
    // A key failing IP, scope and quota at once reports the IP first.
    let (key, id) = s
        .key(
            &ident,
            json!({"ip_allowlist": ["10.0.0.1"], "scopes": ["a"], "remaining": 0}),
        )
        .await;
    let ask = json!({"ip": "10.0.0.2", "scopes": ["b"]});
    assert_eq!(
        s.verify(&v, &key, ask.clone()).await["code"],
        "IP_NOT_ALLOWED"
    );
    s.patch(
        &format!("/v1/keys/{id}"),
        &s.root,
        json!({"enabled": false}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, ask.clone()).await["code"], "DISABLED");
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    s.patch(
        &format!("/v1/keys/{id}"),
        &s.root,
        json!({"expires_at": past}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, ask.clone()).await["code"], "EXPIRED");
    s.post(&format!("/v1/keys/{id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);
    assert_eq!(s.verify(&v, &key, ask.clone()).await["code"], "REVOKED");
    s.patch(
        &format!("/v1/keys/{id}"),
        &s.root,
        json!({"enabled": true, "expires_at": null}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, ask).await["code"], "REVOKED");
    s.stop().await;
}
