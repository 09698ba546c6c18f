//! The key lifecycle end to end over HTTP: identities, keys, verify, rotate, revoke,
//! audit.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;

store_test!(identity_crud_and_pagination);
async fn identity_crud_and_pagination(s: TestServer) {
    let created = s
        .post(
            "/v1/identities",
            &s.root,
            json!({"name": "billing-worker", "owner": "payments-team",
                   "description": "charges cards", "meta": {"env": "prod"}}),
        )
        .await;
    let ident = created.ok(201).clone();
    let id = ident["id"].as_str().unwrap();
    assert_eq!(ident["name"], "billing-worker");
    assert_eq!(ident["owner"], "payments-team");
    assert_eq!(ident["meta"]["env"], "prod");
    assert_eq!(ident["enabled"], true);
    assert!(ident["created_at"].is_string());

    assert_eq!(
        s.get(&format!("/v1/identities/{id}"), &s.root)
            .await
            .ok(200)["name"],
        "billing-worker"
    );
    let patched = s
        .patch(
            &format!("/v1/identities/{id}"),
            &s.root,
            json!({"description": "new", "owner": "team-b"}),
        )
        .await;
    assert_eq!(patched.ok(200)["owner"], "team-b");
    assert_eq!(patched.ok(200)["description"], "new");
    assert_eq!(patched.ok(200)["name"], "billing-worker");

    // Same name again: conflict.
    let dup = s
        .post(
            "/v1/identities",
            &s.root,
            json!({"name": "billing-worker", "owner": "x"}),
        )
        .await;
    dup.problem(409);

    for i in 0..5 {
        s.identity(&format!("svc-{i}")).await;
    }
    // root identity + billing-worker + 5 = 7; pages of 3.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/identities?limit=3&cursor={c}"),
            None => "/v1/identities?limit=3".to_owned(),
        };
        let page = s.get(&path, &s.root).await.ok(200).clone();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "pages overlap");

    let deleted = s.delete(&format!("/v1/identities/{id}"), &s.root).await;
    deleted.ok(200);
    s.get(&format!("/v1/identities/{id}"), &s.root)
        .await
        .problem(404);
    // The name is free again.
    s.post(
        "/v1/identities",
        &s.root,
        json!({"name": "billing-worker", "owner": "x"}),
    )
    .await
    .ok(201);
    s.stop().await;
}

store_test!(key_lifecycle_create_verify_patch_revoke);
async fn key_lifecycle_create_verify_patch_revoke(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("orders").await;
    let a = s
        .post(
            "/v1/keys",
            &s.root,
            json!({"identity_id": ident, "name": "orders-prod", "prefix": "acme_live",
                   "scopes": ["orders:*", "billing:read"], "meta": {"team": "x"}}),
        )
        .await;
    let body = a.ok(201).clone();
    let key = body["key"].as_str().unwrap().to_owned();
    let key_id = body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("acme_live_"));
    assert_eq!(key.len(), "acme_live_".len() + 38);
    assert!(key.starts_with(body["start"].as_str().unwrap()));
    assert_eq!(body["prefix"], "acme_live");
    assert_eq!(body["scopes"], json!(["orders:*", "billing:read"]));

    // The key is never shown again.
    let shown = s
        .get(&format!("/v1/keys/{key_id}"), &s.root)
        .await
        .ok(200)
        .clone();
    assert!(shown.get("key").is_none());
    assert!(!shown.to_string().contains(&key));
    let listed = s
        .get(&format!("/v1/keys?identity_id={ident}"), &s.root)
        .await
        .ok(200)
        .clone();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&key));

    let r = s.verify(&v, &key, json!({"scopes": ["orders:read"]})).await;
    assert_eq!(r["valid"], true);
    assert_eq!(r["code"], "VALID");
    assert_eq!(r["key_id"], key_id);
    assert_eq!(r["identity_id"], ident);

    let r = s
        .verify(
            &v,
            &key,
            json!({"permission": "orders:write AND (billing:read OR billing:admin)"}),
        )
        .await;
    assert_eq!(r["code"], "VALID");
    let r = s
        .verify(
            &v,
            &key,
            json!({"permission": "billing:admin OR payments:read"}),
        )
        .await;
    assert_eq!(r["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(r["valid"], false);

    // Disable, then enable.
    s.patch(
        &format!("/v1/keys/{key_id}"),
        &s.root,
        json!({"enabled": false}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "DISABLED");
    s.patch(
        &format!("/v1/keys/{key_id}"),
        &s.root,
        json!({"enabled": true}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "VALID");

    // Narrow the scopes.
    let p = s
        .patch(
            &format!("/v1/keys/{key_id}"),
            &s.root,
            json!({"scopes": ["orders:read"]}),
        )
        .await;
    assert_eq!(p.ok(200)["scopes"], json!(["orders:read"]));
    assert_eq!(
        s.verify(&v, &key, json!({"scopes": ["orders:write"]}))
            .await["code"],
        "INSUFFICIENT_SCOPE"
    );

    // Disabling the identity disables its keys.
    s.patch(
        &format!("/v1/identities/{ident}"),
        &s.root,
        json!({"enabled": false}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "DISABLED");
    s.patch(
        &format!("/v1/identities/{ident}"),
        &s.root,
        json!({"enabled": true}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "VALID");

    let revoked = s
        .post(&format!("/v1/keys/{key_id}/revoke"), &s.root, json!({}))
        .await;
    assert!(revoked.ok(200)["revoked_at"].is_string());
    assert_eq!(s.verify(&v, &key, json!({})).await["code"], "REVOKED");
    s.stop().await;
}

store_test!(malformed_and_unknown_keys);
async fn malformed_and_unknown_keys(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("a").await;
    let (key, _) = s.key(&ident, json!({})).await;
    assert_eq!(
        s.verify(&v, "nonsense", json!({})).await["code"],
        "MALFORMED"
    );
    assert_eq!(s.verify(&v, "", json!({})).await["code"], "MALFORMED");
    // One character changed: the checksum catches it without a lookup.
    let mut broken: Vec<char> = key.chars().collect();
    let i = key.len() - 10;
    broken[i] = if broken[i] == 'a' { 'b' } else { 'a' };
    let broken: String = broken.into_iter().collect();
    assert_eq!(s.verify(&v, &broken, json!({})).await["code"], "MALFORMED");
    // Well-formed with a valid checksum, but never issued.
    let other = keyward_core::key::mint(&keyward_core::KeyPrefix::default());
    let r = s.verify(&v, other.plaintext.as_str(), json!({})).await;
    assert_eq!(r["code"], "NOT_FOUND");
    assert!(r.get("key_id").is_none());
    s.stop().await;
}

store_test!(expiry_by_ttl_and_by_time);
async fn expiry_by_ttl_and_by_time(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("a").await;
    let (short, _) = s.key(&ident, json!({"ttl_seconds": 1})).await;
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (later, later_id) = s.key(&ident, json!({"expires_at": at})).await;
    assert_eq!(s.verify(&v, &short, json!({})).await["code"], "VALID");
    let r = s.verify(&v, &later, json!({})).await;
    assert_eq!(r["code"], "VALID");
    assert!(r["expires_at"].is_string());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.verify(&v, &short, json!({})).await["code"], "EXPIRED");
    // Clearing the expiry brings the other back from any expiry; setting it in the past expires it.
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    s.patch(
        &format!("/v1/keys/{later_id}"),
        &s.root,
        json!({"expires_at": past}),
    )
    .await
    .ok(200);
    assert_eq!(s.verify(&v, &later, json!({})).await["code"], "EXPIRED");
    let p = s
        .patch(
            &format!("/v1/keys/{later_id}"),
            &s.root,
            json!({"expires_at": null}),
        )
        .await;
    assert!(p.ok(200)["expires_at"].is_null());
    assert_eq!(s.verify(&v, &later, json!({})).await["code"], "VALID");
    // Both ways at once, or a past time, are refused.
    let both = s
        .post(
            "/v1/keys",
            &s.root,
            json!({"identity_id": ident, "ttl_seconds": 5, "expires_at": at}),
        )
        .await;
    both.problem(400);
    let past_create = s
        .post(
            "/v1/keys",
            &s.root,
            json!({"identity_id": ident, "expires_at": past}),
        )
        .await;
    assert_eq!(past_create.problem(400)["field"], "expires_at");
    s.stop().await;
}

store_test!(rotation_with_grace_keeps_the_old_key_until_it_ends);
async fn rotation_with_grace_keeps_the_old_key_until_it_ends(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("a").await;
    let (old, old_id) = s
        .key(
            &ident,
            json!({"scopes": ["x:read"], "ip_allowlist": ["10.0.0.0/8"], "meta": {"k": 1},
                   "rate_limits": [{"name": "burst", "limit": 100, "window_seconds": 60}]}),
        )
        .await;
    let a = s
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            &s.root,
            json!({"grace_seconds": 2}),
        )
        .await;
    let new = a.ok(201).clone();
    let new_key = new["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old);
    assert_eq!(new["previous"]["id"], old_id);
    assert!(new["previous"]["expires_at"].is_string());
    assert_eq!(new["scopes"], json!(["x:read"]));
    assert_eq!(new["ip_allowlist"], json!(["10.0.0.0/8"]));
    assert_eq!(new["meta"], json!({"k": 1}));
    assert_eq!(new["identity_id"], ident);
    assert_eq!(new["rotated_from"], old_id);
    assert_eq!(new["rate_limits"][0]["name"], "burst");
    let old_now = s
        .get(&format!("/v1/keys/{old_id}"), &s.root)
        .await
        .ok(200)
        .clone();
    assert_eq!(old_now["rotated_to"], new["id"]);

    let ip = json!({"ip": "10.1.2.3"});
    assert_eq!(s.verify(&v, &old, ip.clone()).await["code"], "VALID");
    assert_eq!(s.verify(&v, &new_key, ip.clone()).await["code"], "VALID");
    // Rotating the old key again is a conflict.
    s.post(
        &format!("/v1/keys/{old_id}/rotate"),
        &s.root,
        json!({"grace_seconds": 0}),
    )
    .await
    .problem(409);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.verify(&v, &old, ip.clone()).await["code"], "REVOKED");
    assert_eq!(s.verify(&v, &new_key, ip.clone()).await["code"], "VALID");

    // grace 0: at once; an empty body means grace 0.
    let new_id = new["id"].as_str().unwrap();
    let r = s
        .send(
            reqwest::Method::POST,
            &format!("/v1/keys/{new_id}/rotate"),
            Some(&s.root),
            None,
        )
        .await;
    let third = r.ok(201)["key"].as_str().unwrap().to_owned();
    assert_eq!(s.verify(&v, &new_key, ip.clone()).await["code"], "REVOKED");
    assert_eq!(s.verify(&v, &third, ip).await["code"], "VALID");
    s.stop().await;
}

store_test!(deleting_an_identity_revokes_its_keys_and_keeps_them);
async fn deleting_an_identity_revokes_its_keys_and_keeps_them(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("doomed").await;
    let (k1, id1) = s.key(&ident, json!({})).await;
    let (k2, _) = s.key(&ident, json!({})).await;
    assert_eq!(s.verify(&v, &k1, json!({})).await["code"], "VALID");
    s.delete(&format!("/v1/identities/{ident}"), &s.root)
        .await
        .ok(200);
    assert_eq!(s.verify(&v, &k1, json!({})).await["code"], "REVOKED");
    assert_eq!(s.verify(&v, &k2, json!({})).await["code"], "REVOKED");
    // History stays.
    let kept = s
        .get(&format!("/v1/keys/{id1}"), &s.root)
        .await
        .ok(200)
        .clone();
    assert!(kept["revoked_at"].is_string());
    s.stop().await;
}

store_test!(ip_allowlists_v4_and_v6);
async fn ip_allowlists_v4_and_v6(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("a").await;
    let (key, _) = s
        .key(
            &ident,
            json!({"ip_allowlist": ["192.168.1.0/24", "2001:db8::/32", "203.0.113.7"]}),
        )
        .await;
    for (ip, code) in [
        ("192.168.1.77", "VALID"),
        ("192.168.2.1", "IP_NOT_ALLOWED"),
        ("2001:db8:1::5", "VALID"),
        ("2001:db9::1", "IP_NOT_ALLOWED"),
        ("203.0.113.7", "VALID"),
        ("203.0.113.8", "IP_NOT_ALLOWED"),
        ("::ffff:192.168.1.5", "VALID"),
    ] {
        assert_eq!(
            s.verify(&v, &key, json!({"ip": ip})).await["code"],
            code,
            "{ip}"
        );
    }
    // No address given: refused, since the key has an allowlist.
    assert_eq!(
        s.verify(&v, &key, json!({})).await["code"],
        "IP_NOT_ALLOWED"
    );
    let bad = s
        .post(
            "/v1/keys",
            &s.root,
            json!({"identity_id": ident, "ip_allowlist": ["10.0.0.0/8", "nope"]}),
        )
        .await;
    assert_eq!(bad.problem(400)["field"], "ip_allowlist[1]");
    let bad_ip = s
        .post("/v1/verify", &v, json!({"key": key, "ip": "300.1.1.1"}))
        .await;
    assert_eq!(bad_ip.problem(400)["field"], "ip");
    s.stop().await;
}

store_test!(audit_log_records_every_change_without_keys);
async fn audit_log_records_every_change_without_keys(s: TestServer) {
    let ident = s.identity("audited").await;
    let (key, key_id) = s.key(&ident, json!({"scopes": ["a:b"]})).await;
    s.patch(
        &format!("/v1/keys/{key_id}"),
        &s.root,
        json!({"name": "renamed"}),
    )
    .await
    .ok(200);
    let rotated = s
        .post(
            &format!("/v1/keys/{key_id}/rotate"),
            &s.root,
            json!({"grace_seconds": 0}),
        )
        .await;
    let new_key = rotated.ok(201)["key"].as_str().unwrap().to_owned();
    let new_id = rotated.ok(201)["id"].as_str().unwrap().to_owned();
    s.post(&format!("/v1/keys/{new_id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);
    s.delete(&format!("/v1/identities/{ident}"), &s.root)
        .await
        .ok(200);

    let log = s.get("/v1/audit?limit=1000", &s.root).await.ok(200).clone();
    let items = log["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    for a in [
        "store.bootstrap",
        "identity.create",
        "key.create",
        "key.update",
        "key.rotate",
        "key.revoke",
        "identity.delete",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let seqs: Vec<i64> = items.iter().map(|i| i["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let text = log.to_string();
    assert!(!text.contains(&key) && !text.contains(&new_key) && !text.contains(&s.root));
    let rotate = items.iter().find(|i| i["action"] == "key.rotate").unwrap();
    assert_eq!(rotate["target"], key_id);
    assert!(rotate["actor"].is_string() && rotate["request_id"].is_string());
    assert_eq!(rotate["source_ip"], "127.0.0.1");

    // Paging with after=.
    let first = s.get("/v1/audit?limit=2", &s.root).await.ok(200).clone();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s
        .get(&format!("/v1/audit?limit=2&after={cursor}"), &s.root)
        .await
        .ok(200)
        .clone();
    assert!(second["items"][0]["seq"].as_i64().unwrap() > cursor.parse::<i64>().unwrap());
    s.stop().await;
}

store_test!(last_used_at_is_written_behind);
async fn last_used_at_is_written_behind(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("a").await;
    let (key, id) = s.key(&ident, json!({})).await;
    assert!(s.get(&format!("/v1/keys/{id}"), &s.root).await.ok(200)["last_used_at"].is_null());
    s.verify(&v, &key, json!({})).await;
    let mut seen = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if s.get(&format!("/v1/keys/{id}"), &s.root).await.ok(200)["last_used_at"].is_string() {
            seen = true;
            break;
        }
    }
    assert!(seen, "last_used_at was not written within 10 s");
    s.stop().await;
}

store_test!(operations_endpoints);
async fn operations_endpoints(s: TestServer) {
    let h = s.send(reqwest::Method::GET, "/healthz", None, None).await;
    h.ok(200);
    let r = s.send(reqwest::Method::GET, "/readyz", None, None).await;
    r.ok(200);
    let v = s.verifier().await;
    s.verify(&v, "bad", json!({})).await;
    let m = s.metrics().await;
    assert!(m.contains("keyward_verify_total"), "{m}");
    assert!(m.contains("keyward_http_requests_total"));
    assert!(m.contains("keyward_http_request_duration_seconds"));
    let o = s
        .send(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    let doc = o.ok(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/identities",
        "/v1/identities/{id}",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/keys/{id}/rotate",
        "/v1/keys/{id}/revoke",
        "/v1/verify",
        "/v1/audit",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from openapi.json"
        );
    }
    s.stop().await;
}
