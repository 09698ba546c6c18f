//! Short-lived tokens over real HTTP on both stores: exchange, offline verification with
//! a standard JWT library against the JWKS, narrowing and widening, expiry, signing-key
//! rotation, introspection after revocation, bad input.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestServer;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_server::tokens::SigningKeys;
use reqwest::Method;
use serde_json::{Value, json};

/// Exchanges `key` with `body`; returns the answer's body.
async fn exchange(s: &TestServer, key: &str, body: Value) -> Value {
    s.post("/v1/tokens", key, body).await.ok(201).clone()
}

async fn jwks(s: &TestServer) -> JwkSet {
    let a = s
        .send(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    serde_json::from_value(a.ok(200).clone()).unwrap()
}

/// Verifies `token` with jsonwebtoken alone, against the published JWKS.
fn verify_offline(
    set: &JwkSet,
    token: &str,
    audience: Option<&str>,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let header = jsonwebtoken::decode_header(token)?;
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("a kid");
    let jwk = set.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.leeway = 0;
    match audience {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|d| d.claims)
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

store_test!(exchange_round_trip_verifies_offline_against_the_jwks);
async fn exchange_round_trip_verifies_offline_against_the_jwks(s: TestServer) {
    let ident = s.identity("svc").await;
    let (key, key_id) = s
        .key(
            &ident,
            json!({"scopes": ["orders:read", "orders:write", "billing:*"]}),
        )
        .await;
    let b = exchange(
        &s,
        &key,
        json!({"scopes": ["orders:read", "billing:invoices"], "audience": "orders", "ttl_seconds": 120}),
    )
    .await;
    let token = b["token"].as_str().unwrap();
    let set = jwks(&s).await;
    let claims = verify_offline(&set, token, Some("orders")).unwrap();
    assert_eq!(claims["sub"], ident.as_str());
    assert_eq!(claims["key_id"], key_id.as_str());
    assert_eq!(claims["aud"], "orders");
    assert_eq!(claims["scope"], "orders:read billing:invoices");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(b["expires_at"].clone()).unwrap();
    assert_eq!(expires_at.timestamp(), claims["exp"].as_i64().unwrap());
    // Another audience is refused by a standard verifier.
    assert!(verify_offline(&set, token, Some("billing")).is_err());

    // No body: every scope of the key, 5 minutes, no audience.
    let t = s
        .send(Method::POST, "/v1/tokens", Some(&key), None)
        .await
        .ok(201)
        .clone();
    let claims = verify_offline(&set, t["token"].as_str().unwrap(), None).unwrap();
    assert_eq!(claims["scope"], "orders:read orders:write billing:*");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(claims.get("aud").is_none());

    // Introspection (scope keyward:verify) says active, with the claims.
    let v = s.verifier().await;
    let i = s
        .post("/v1/tokens/introspect", &v, json!({"token": token}))
        .await
        .ok(200)
        .clone();
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], ident.as_str());
    assert_eq!(i["scope"], "orders:read billing:invoices");
    assert_eq!(i["aud"], "orders");
    assert_eq!(i["key_id"], key_id.as_str());
    assert_eq!(i["token_type"], "Bearer");

    // Each issue is audit-logged, without the token.
    let audit = s.get("/v1/audit?limit=1000", &s.root).await.ok(200).clone();
    let text = audit.to_string();
    assert!(!text.contains(token));
    let issued: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.issue")
        .collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0]["actor"], key_id.as_str());
    assert_eq!(issued[0]["detail"]["key_id"], key_id.as_str());
    assert_eq!(issued[0]["detail"]["aud"], "orders");
    assert_eq!(issued[0]["target"], claims_jti(token));
}

fn claims_jti(token: &str) -> String {
    let claims: Value = jsonwebtoken::dangerous::insecure_decode(token)
        .unwrap()
        .claims;
    claims["jti"].as_str().unwrap().to_owned()
}

store_test!(widening_is_refused_naming_the_scopes);
async fn widening_is_refused_naming_the_scopes(s: TestServer) {
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    let a = s
        .post(
            "/v1/tokens",
            &key,
            json!({"scopes": ["orders:read", "orders:write"]}),
        )
        .await;
    let p = a.problem(403);
    assert!(p["detail"].as_str().unwrap().contains("orders:write"));
    // A wildcard over a scope the key holds alone is wider than the key.
    let a = s
        .post("/v1/tokens", &key, json!({"scopes": ["orders:*"]}))
        .await;
    assert!(
        a.problem(403)["detail"]
            .as_str()
            .unwrap()
            .contains("orders:*")
    );
    // An empty list narrows to nothing, which is allowed.
    let t = exchange(&s, &key, json!({"scopes": []})).await;
    let set = jwks(&s).await;
    let claims = verify_offline(&set, t["token"].as_str().unwrap(), None).unwrap();
    assert_eq!(claims["scope"], "");
}

store_test!(bad_input_is_a_clear_4xx);
async fn bad_input_is_a_clear_4xx(s: TestServer) {
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    for (body, field) in [
        (json!({"ttl_seconds": 0}), "ttl_seconds"),
        (json!({"ttl_seconds": 3601}), "ttl_seconds"),
        (json!({"ttl_seconds": -1}), "ttl_seconds"),
        (json!({"scopes": ["bad scope"]}), "scopes[0]"),
        (json!({"audience": ""}), "audience"),
        (json!({"audience": 7}), "audience"),
    ] {
        let a = s.post("/v1/tokens", &key, body.clone()).await;
        let p = a.problem(400);
        assert_eq!(p["field"], field, "{body}");
    }
    assert_eq!(
        s.post("/v1/tokens", &key, json!({"ttl_seconds": 3600}))
            .await
            .status,
        201
    );
    s.post("/v1/tokens", &key, json!({"nope": 1}))
        .await
        .problem(400);
    s.send(Method::POST, "/v1/tokens", None, Some(json!({})))
        .await
        .problem(401);
    s.post("/v1/tokens", "kw_notakey", json!({}))
        .await
        .problem(401);

    let v = s.verifier().await;
    // Introspection needs keyward:verify.
    s.post("/v1/tokens/introspect", &key, json!({"token": "x"}))
        .await
        .problem(403);
    s.post("/v1/tokens/introspect", &v, json!({}))
        .await
        .problem(400);
    for junk in [
        "",
        "x",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        &"A".repeat(10_000),
    ] {
        let i = s
            .post("/v1/tokens/introspect", &v, json!({"token": junk}))
            .await;
        assert_eq!(i.ok(200), &json!({"active": false}), "{junk:.20}");
    }
}

store_test!(tokens_expire);
async fn tokens_expire(s: TestServer) {
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let v = s.verifier().await;
    let t = exchange(&s, &key, json!({"ttl_seconds": 1})).await;
    let token = t["token"].as_str().unwrap();
    let set = jwks(&s).await;
    // Issued within this second, valid for one more: it may already be at its end.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let i = s
        .post("/v1/tokens/introspect", &v, json!({"token": token}))
        .await;
    assert_eq!(i.ok(200)["active"], false);
    let err = verify_offline(&set, token, None).unwrap_err();
    assert_eq!(
        *err.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
}

store_test!(revoking_or_disabling_the_key_makes_its_tokens_inactive_at_once);
async fn revoking_or_disabling_the_key_makes_its_tokens_inactive_at_once(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("svc").await;
    let (key, id) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let (key2, id2) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let t1 = exchange(&s, &key, json!({})).await["token"].clone();
    let t2 = exchange(&s, &key2, json!({})).await["token"].clone();
    let active = |t: Value| {
        let s = &s;
        let v = &v;
        async move {
            s.post("/v1/tokens/introspect", v, json!({"token": t}))
                .await
                .ok(200)["active"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(active(t1.clone()).await && active(t2.clone()).await);
    s.post(&format!("/v1/keys/{id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);
    assert!(!active(t1.clone()).await, "revoked key: inactive at once");
    s.patch(
        &format!("/v1/keys/{id2}"),
        &s.root,
        json!({"enabled": false}),
    )
    .await
    .ok(200);
    assert!(!active(t2.clone()).await, "disabled key: inactive at once");
    // And a revoked key cannot get new tokens.
    s.post("/v1/tokens", &key, json!({})).await.problem(401);
}

store_test!(exchange_applies_every_verify_check);
async fn exchange_applies_every_verify_check(s: TestServer) {
    let ident = s.identity("svc").await;
    // The test client connects from 127.0.0.1.
    let (elsewhere, _) = s.key(&ident, json!({"ip_allowlist": ["10.0.0.0/8"]})).await;
    let p = s.post("/v1/tokens", &elsewhere, json!({})).await;
    assert!(
        p.problem(401)["detail"]
            .as_str()
            .unwrap()
            .contains("IP_NOT_ALLOWED")
    );
    let (here, _) = s
        .key(&ident, json!({"ip_allowlist": ["127.0.0.0/8"]}))
        .await;
    exchange(&s, &here, json!({})).await;

    let (limited, _) = s
        .key(
            &ident,
            json!({"rate_limits": [{"name": "per-minute", "limit": 2, "window_seconds": 60}]}),
        )
        .await;
    exchange(&s, &limited, json!({})).await;
    exchange(&s, &limited, json!({})).await;
    let a = s.post("/v1/tokens", &limited, json!({})).await;
    a.problem(429);
    assert!(a.headers.get("retry-after").is_some());

    let (quota, _) = s.key(&ident, json!({"remaining": 1})).await;
    exchange(&s, &quota, json!({})).await;
    let p = s.post("/v1/tokens", &quota, json!({})).await;
    assert!(
        p.problem(401)["detail"]
            .as_str()
            .unwrap()
            .contains("USAGE_EXCEEDED")
    );
}

store_test!(signing_key_rotation_keeps_every_token_valid);
async fn signing_key_rotation_keeps_every_token_valid(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let before = exchange(&s, &key, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = kid(&before);

    // Not due: a key a moment old, rotated daily.
    let leader = SigningKeys::new(s.store.clone(), Some(s.vault.clone()));
    let now = keyward_server::now();
    assert!(
        !leader
            .rotate_if_due(now, Duration::from_secs(86400))
            .await
            .unwrap()
    );
    // Due at once with a zero period (what the jobs leader does on schedule).
    assert!(leader.rotate_if_due(now, Duration::ZERO).await.unwrap());

    // The server picks the new current key up within its refresh period.
    let mut after = String::new();
    for _ in 0..50 {
        after = exchange(&s, &key, json!({})).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        if kid(&after) != old_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(kid(&after), old_kid, "the new key never became current");

    let set = jwks(&s).await;
    assert!(set.find(&old_kid).is_some(), "the old key stays published");
    assert!(set.find(&kid(&after)).is_some());
    for t in [&before, &after] {
        verify_offline(&set, t, None).unwrap();
        let i = s
            .post("/v1/tokens/introspect", &v, json!({"token": t}))
            .await;
        assert_eq!(i.ok(200)["active"], true);
    }
    // Rotations are audit-logged.
    let audit = s.get("/v1/audit?limit=1000", &s.root).await.ok(200).clone();
    let rotations = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.signing_key.rotate")
        .count();
    assert!(rotations >= 2, "first key and the rotation: {rotations}");
}

store_test!(token_routes_are_in_the_openapi_document);
async fn token_routes_are_in_the_openapi_document(s: TestServer) {
    let doc = s
        .send(Method::GET, "/openapi.json", None, None)
        .await
        .ok(200)
        .clone();
    for p in [
        "/v1/tokens",
        "/v1/tokens/introspect",
        "/.well-known/jwks.json",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from openapi.json"
        );
    }
    for schema in ["CreateToken", "TokenCreated", "TokenIntrospection", "Jwks"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing from openapi.json"
        );
    }
}

store_test!(disabling_the_identity_makes_its_tokens_inactive);
async fn disabling_the_identity_makes_its_tokens_inactive(s: TestServer) {
    let v = s.verifier().await;
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let t = exchange(&s, &key, json!({})).await["token"].clone();
    let active = || async {
        s.post("/v1/tokens/introspect", &v, json!({"token": t}))
            .await
            .ok(200)["active"]
            .as_bool()
            .unwrap()
    };
    assert!(active().await);
    s.patch(
        &format!("/v1/identities/{ident}"),
        &s.root,
        json!({"enabled": false}),
    )
    .await
    .ok(200);
    assert!(!active().await);
}

/// A revocation on one node of a cluster makes the tokens inactive on the others as soon
/// as the change feed reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_on_one_node_reaches_introspection_on_another() {
    let a = TestServer::start_with(common::Backend::Postgres).await;
    let b = a.another_node().await;
    let v = a.verifier().await;
    let ident = a.identity("svc").await;
    let (key, id) = a.key(&ident, json!({"scopes": ["a"]})).await;
    let t = exchange(&a, &key, json!({})).await["token"].clone();
    let on_b = || async {
        b.post("/v1/tokens/introspect", &v, json!({"token": t}))
            .await
            .ok(200)["active"]
            .as_bool()
            .unwrap()
    };
    // Node b signs with the same keys and knows the key (its cache is now warm).
    assert!(on_b().await);
    a.post(&format!("/v1/keys/{id}/revoke"), &a.root, json!({}))
        .await
        .ok(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while on_b().await {
        assert!(
            std::time::Instant::now() < deadline,
            "node b still says active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop().await;
    a.stop().await;
}
