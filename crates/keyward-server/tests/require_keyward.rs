//! keyward-client's `RequireKeyward` tower layer in a real axum service over TCP, in
//! front of a real Keyward server: keys checked through `POST /v1/verify`, tokens offline
//! against the JWKS, refusals answered as problem+json.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use common::TestServer;
use keyward_client::{Client, Credential, KeywardPrincipal, RequireKeyward};
use keyward_server::tokens::SigningKeys;
use serde_json::{Value, json};

async fn whoami(who: KeywardPrincipal) -> Json<Value> {
    let kind = match who.credential {
        Credential::Key => "key",
        Credential::Token { .. } => "token",
    };
    Json(json!({
        "identity_id": who.identity_id, "key_id": who.key_id, "scopes": who.scopes, "kind": kind,
    }))
}

/// An axum service requiring `orders:read`, tokens for audience `orders`; its base URL.
async fn service(s: &TestServer, cache_for: Duration) -> String {
    let client = Client::new(&s.base, Some(s.verifier().await)).unwrap();
    let app = Router::new().route("/orders", get(whoami)).layer(
        RequireKeyward::new(client)
            .require_scopes(["orders:read"])
            .audience("orders")
            .cache_for(cache_for),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

async fn call(base: &str, credential: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(format!("{base}/orders"));
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        assert_eq!(body["status"], status);
    }
    (status, body, headers)
}

async fn token(s: &TestServer, key: &str, body: Value) -> String {
    s.post("/v1/tokens", key, body).await.ok(201)["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

store_test!(multi_thread keys_and_tokens_are_required_in_one_line);
async fn keys_and_tokens_are_required_in_one_line(s: TestServer) {
    let svc = service(&s, Duration::from_secs(5)).await;
    let ident = s.identity("caller").await;
    let (reader, reader_id) = s
        .key(&ident, json!({"scopes": ["orders:read", "other"]}))
        .await;
    let (wildcard, _) = s.key(&ident, json!({"scopes": ["orders:*"]})).await;
    let (stranger, _) = s.key(&ident, json!({"scopes": ["billing:read"]})).await;

    // A key, verified by Keyward.
    let (st, body, _) = call(&svc, Some(&reader)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["identity_id"], ident.as_str());
    assert_eq!(body["key_id"], reader_id.as_str());
    assert_eq!(body["kind"], "key");
    assert_eq!(call(&svc, Some(&wildcard)).await.0, 200);
    assert_eq!(call(&svc, Some(&stranger)).await.0, 403);
    let (st, _, headers) = call(&svc, None).await;
    assert_eq!(st, 401);
    assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(call(&svc, Some("kw_notakey")).await.0, 401);

    // A token, verified offline.
    let t = token(
        &s,
        &reader,
        json!({"scopes": ["orders:read"], "audience": "orders"}),
    )
    .await;
    let (st, body, _) = call(&svc, Some(&t)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["kind"], "token");
    assert_eq!(body["key_id"], reader_id.as_str());
    assert_eq!(body["scopes"], json!(["orders:read"]));
    let t = token(&s, &wildcard, json!({"audience": "orders"})).await;
    assert_eq!(
        call(&svc, Some(&t)).await.0,
        200,
        "orders:* grants orders:read"
    );
    let narrowed = token(
        &s,
        &reader,
        json!({"scopes": ["other"], "audience": "orders"}),
    )
    .await;
    assert_eq!(call(&svc, Some(&narrowed)).await.0, 403);
    let elsewhere = token(&s, &reader, json!({"audience": "billing"})).await;
    assert_eq!(call(&svc, Some(&elsewhere)).await.0, 401);
    let no_audience = token(&s, &reader, json!({})).await;
    assert_eq!(call(&svc, Some(&no_audience)).await.0, 401);
    // A changed signature byte (not the last character, whose low bits are padding).
    let sig_at = t.rfind('.').unwrap() + 10;
    let flipped = if &t[sig_at..=sig_at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &t[..sig_at], &t[sig_at + 1..]);
    assert_eq!(call(&svc, Some(&forged)).await.0, 401);
}

store_test!(multi_thread key_answers_are_cached_briefly_and_tokens_survive_rotation);
async fn key_answers_are_cached_briefly_and_tokens_survive_rotation(s: TestServer) {
    let cached = service(&s, Duration::from_secs(30)).await;
    let uncached = service(&s, Duration::ZERO).await;
    let ident = s.identity("caller").await;
    let (key, id) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    assert_eq!(call(&cached, Some(&key)).await.0, 200);
    assert_eq!(call(&uncached, Some(&key)).await.0, 200);
    let before = token(&s, &key, json!({"audience": "orders"})).await;
    assert_eq!(call(&cached, Some(&before)).await.0, 200);

    // Rotation: the layer fetches the JWKS again for the new kid; the old token stays good.
    SigningKeys::new(s.store.clone(), Some(s.vault.clone()))
        .rotate(keyward_server::now())
        .await
        .unwrap();
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid;
    let mut after = before.clone();
    for _ in 0..50 {
        after = token(&s, &key, json!({"audience": "orders"})).await;
        if jsonwebtoken::decode_header(&after).unwrap().kid != old_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(jsonwebtoken::decode_header(&after).unwrap().kid, old_kid);
    assert_eq!(call(&cached, Some(&after)).await.0, 200);
    assert_eq!(call(&cached, Some(&before)).await.0, 200);

    // Revocation: seen at once without a cache, after the cache time with one.
    s.post(&format!("/v1/keys/{id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);
    assert_eq!(call(&uncached, Some(&key)).await.0, 401);
    assert_eq!(call(&cached, Some(&key)).await.0, 200, "cached for 30 s");
}
