//! `keyward gateway` against a real upstream: pass-through, rejections, route rules,
//! client addresses, identity headers, streaming, WebSocket, upstream failures.

#[macro_use]
mod common;
mod gateway_support;

use std::time::Duration;

use axum::body::Body;
use futures_util::{SinkExt, StreamExt};
use gateway_support::{Gateway, config, pattern_bytes, seen, start_upstream, start_ws_upstream};
use keyward_server::gateway::Rules;
use serde_json::json;

use crate::common::TestServer;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

store_test!(requests_pass_through_with_identity_headers);
async fn requests_pass_through_with_identity_headers(s: TestServer) {
    let up = start_upstream().await;
    let gw = Gateway::start(&s, config(&up, |_| {})).await;
    let ident = s.identity("caller").await;
    let (key, key_id) = s.key(&ident, json!({"scopes": ["orders:read", "b"]})).await;
    let resp = http()
        .patch(format!("{}/a/b%20c?x=1&y=two", gw.base))
        .bearer_auth(&key)
        .header("x-custom", "kept")
        .header("x-want-status", "201")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-upstream"], "echo");
    // The upstream's hop-by-hop header stays between it and the gateway.
    assert!(resp.headers().get("x-upstream-hop").is_none());
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["method"], "PATCH");
    assert_eq!(got["path"], "/a/b%20c");
    assert_eq!(got["query"], "x=1&y=two");
    assert_eq!(got["body_len"], 5);
    let h = &got["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["keyward-identity"], ident.as_str());
    assert_eq!(h["keyward-key-id"], key_id.as_str());
    assert_eq!(h["keyward-scopes"], "orders:read b");
    assert!(h.get("authorization").is_none(), "credential stripped: {h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http")
    );
    // The same key again: keep-alive on both sides, the cache warm.
    for _ in 0..3 {
        let r = http()
            .get(format!("{}/again", gw.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(seen(r).await["path"], "/again");
    }
    gw.stop().await;
    s.stop().await;
}

store_test!(identity_headers_cannot_be_spoofed);
async fn identity_headers_cannot_be_spoofed(s: TestServer) {
    let up = start_upstream().await;
    let gw = Gateway::start(
        &s,
        config(&up, |c| c.key_header = Some("x-api-key".parse().unwrap())),
    )
    .await;
    let ident = s.identity("honest").await;
    let (key, key_id) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let resp = http()
        .get(format!("{}/x", gw.base))
        .header("x-api-key", &key)
        .header("keyward-identity", "00000000-0000-0000-0000-000000000000")
        .header("Keyward-Key-Id", "forged")
        .header("keyward-scopes", "admin")
        .header("keyward-anything", "forged")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    let got = seen(resp).await;
    let h = &got["headers"];
    assert_eq!(h["keyward-identity"], ident.as_str());
    assert_eq!(h["keyward-key-id"], key_id.as_str());
    assert_eq!(h["keyward-scopes"], "a");
    assert!(h.get("keyward-anything").is_none());
    assert!(h.get("x-api-key").is_none(), "credential stripped");
    // Another scheme is the upstream's own: it passes.
    assert_eq!(h["authorization"], "Basic dXNlcjpwYXNz");
    // No key at all: refused, and nothing forged reaches the upstream.
    let hits = up.hits();
    let r = http()
        .get(format!("{}/x", gw.base))
        .header("keyward-identity", ident.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(up.hits(), hits);
    gw.stop().await;
    s.stop().await;
}

/// Asserts a problem+json answer with this status; returns its body.
async fn problem(
    resp: reqwest::Response,
    status: u16,
) -> (reqwest::header::HeaderMap, serde_json::Value) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let headers = resp.headers().clone();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    (headers, body)
}

store_test!(rejections_are_answered_by_the_gateway);
async fn rejections_are_answered_by_the_gateway(s: TestServer) {
    let up = start_upstream().await;
    let gw = Gateway::start(
        &s,
        config(&up, |c| c.require_scopes = vec!["svc:use".into()]),
    )
    .await;
    let ident = s.identity("rejected").await;
    let get = |key: Option<&str>| {
        let mut r = http().get(format!("{}/r", gw.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let (h, _) = problem(get(None).await.unwrap(), 401).await;
    assert_eq!(h["www-authenticate"], "Bearer");
    problem(get(Some("not-a-key")).await.unwrap(), 401).await;
    let (revoked, revoked_id) = s.key(&ident, json!({"scopes": ["svc:use"]})).await;
    s.post(&format!("/v1/keys/{revoked_id}/revoke"), &s.root, json!({}))
        .await
        .ok(200);
    let (_, body) = problem(get(Some(&revoked)).await.unwrap(), 401).await;
    assert!(body["detail"].as_str().unwrap().contains("REVOKED"));
    let (narrow, _) = s.key(&ident, json!({"scopes": ["other"]})).await;
    let (_, body) = problem(get(Some(&narrow)).await.unwrap(), 403).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("INSUFFICIENT_SCOPE")
    );
    let (limited, _) = s
        .key(
            &ident,
            json!({"scopes": ["svc:use"], "rate_limits": [
                {"name": "per-minute", "limit": 2, "window_seconds": 60}
            ]}),
        )
        .await;
    let hits = up.hits();
    for _ in 0..2 {
        assert_eq!(get(Some(&limited)).await.unwrap().status(), 200);
    }
    let (h, _) = problem(get(Some(&limited)).await.unwrap(), 429).await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Only the two accepted calls reached the upstream.
    assert_eq!(up.hits(), hits + 2);
    gw.stop().await;
    s.stop().await;
}

store_test!(route_rules_pick_the_longest_prefix);
async fn route_rules_pick_the_longest_prefix(s: TestServer) {
    let up = start_upstream().await;
    let rules = Rules::parse_all(&[
        "/orders=orders:read",
        "POST,DELETE /orders=orders:write",
        "/admin=admin AND (ops OR oncall)",
        "/public=",
    ])
    .unwrap();
    let gw = Gateway::start(&s, config(&up, |c| c.rules = rules)).await;
    let ident = s.identity("router").await;
    let (reader, _) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    let (writer, _) = s
        .key(&ident, json!({"scopes": ["orders:read", "orders:write"]}))
        .await;
    let (admin, _) = s.key(&ident, json!({"scopes": ["admin", "oncall"]})).await;
    let status = |method: reqwest::Method, path: &str, key: &str| {
        http()
            .request(method, format!("{}{path}", gw.base))
            .bearer_auth(key)
            .send()
    };
    use reqwest::Method as M;
    for (method, path, key, want) in [
        (M::GET, "/orders/7", &reader, 200),
        (M::POST, "/orders", &reader, 403),
        (M::POST, "/orders/7/items", &writer, 200),
        (M::DELETE, "/orders/7", &writer, 200),
        (M::GET, "/%6frders/7", &admin, 403),
        (M::GET, "//orders", &admin, 403),
        (M::GET, "/admin/x", &reader, 403),
        (M::GET, "/admin/x", &admin, 200),
        (M::GET, "/public/x", &reader, 200),
        (M::GET, "/elsewhere", &reader, 200),
    ] {
        let r = status(method.clone(), path, key).await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
    }
    // Dot segments, sent as they are (an HTTP library would resolve them first).
    let raw: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    for path in [
        "/public/../admin/x",
        "/public/%2e%2E/admin/x",
        "/public/./x",
    ] {
        let req = axum::http::Request::get(format!("{}{path}", gw.base))
            .header("authorization", format!("Bearer {reader}"))
            .body(Body::empty())
            .unwrap();
        let r = raw.request(req).await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    gw.stop().await;
    s.stop().await;
}

store_test!(the_client_address_decides_ip_allowlists);
async fn the_client_address_decides_ip_allowlists(s: TestServer) {
    let up = start_upstream().await;
    let ident = s.identity("networked").await;
    let (office, _) = s
        .key(&ident, json!({"ip_allowlist": ["203.0.113.0/24"]}))
        .await;
    let (local, _) = s.key(&ident, json!({"ip_allowlist": ["127.0.0.1"]})).await;
    let call = |base: String, key: String, xff: Option<&'static str>| async move {
        let mut r = http().get(format!("{base}/ip")).bearer_auth(key);
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        r.send().await.unwrap()
    };
    // No trusted proxy: the TCP peer is the client, whatever X-Forwarded-For says.
    let direct = Gateway::start(&s, config(&up, |_| {})).await;
    let r = call(direct.base.clone(), office.clone(), Some("203.0.113.9")).await;
    problem(r, 403).await;
    let r = call(direct.base.clone(), local.clone(), Some("203.0.113.9")).await;
    // ... and the made-up chain does not reach the upstream either.
    assert_eq!(seen(r).await["headers"]["x-forwarded-for"], "127.0.0.1");
    direct.stop().await;
    // Behind a trusted proxy (the loopback here), the address it forwarded counts.
    let proxied = Gateway::start(
        &s,
        config(&up, |c| {
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]
        }),
    )
    .await;
    let r = call(
        proxied.base.clone(),
        office.clone(),
        Some("6.6.6.6, 203.0.113.9"),
    )
    .await;
    assert_eq!(
        seen(r).await["headers"]["x-forwarded-for"],
        "6.6.6.6, 203.0.113.9, 127.0.0.1"
    );
    let r = call(
        proxied.base.clone(),
        office.clone(),
        Some("203.0.113.9, 6.6.6.6"),
    )
    .await;
    problem(r, 403).await;
    let r = call(proxied.base.clone(), local.clone(), None).await;
    assert_eq!(r.status(), 200);
    proxied.stop().await;
    s.stop().await;
}

store_test!(multi_thread large_bodies_stream_both_ways);
async fn large_bodies_stream_both_ways(s: TestServer) {
    const SIZE: usize = 20 * 1024 * 1024;
    let up = start_upstream().await;
    let gw = Gateway::start(&s, config(&up, |_| {})).await;
    let ident = s.identity("bulk").await;
    let (key, _) = s.key(&ident, json!({})).await;
    let r = http()
        .post(format!("{}/upload", gw.base))
        .bearer_auth(&key)
        .body(pattern_bytes(0, SIZE))
        .send()
        .await
        .unwrap();
    let got = seen(r).await;
    assert_eq!(got["body_len"], SIZE);
    assert_eq!(got["body_is_pattern"], true);
    let r = http()
        .get(format!("{}/download?n={SIZE}", gw.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), SIZE);
    assert!(body.as_ref() == pattern_bytes(0, SIZE).as_slice());
    gw.stop().await;
    s.stop().await;
}

store_test!(multi_thread chunked_bodies_stream_without_buffering);
/// The upstream echoes the body as it arrives; each chunk is read back through the
/// gateway before the next is sent, which only works if neither direction is buffered.
async fn chunked_bodies_stream_without_buffering(s: TestServer) {
    const CHUNK: usize = 256 * 1024;
    let up = start_upstream().await;
    let gw = Gateway::start(&s, config(&up, |_| {})).await;
    let ident = s.identity("duplex").await;
    let (key, _) = s.key(&ident, json!({})).await;
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let upload = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
    });
    let req = axum::http::Request::post(format!("{}/duplex", gw.base))
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from_stream(upload))
        .unwrap();
    let wait = Duration::from_secs(20);
    tx.send(pattern_bytes(0, CHUNK)).await.unwrap();
    let resp = tokio::time::timeout(wait, client.request(req))
        .await
        .expect("response headers before the upload ends")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut download = Body::new(resp.into_body()).into_data_stream();
    for i in 0..6u64 {
        if i > 0 {
            tx.send(pattern_bytes(i * CHUNK as u64, CHUNK))
                .await
                .unwrap();
        }
        let mut got = 0usize;
        while got < CHUNK {
            let bytes = tokio::time::timeout(wait, download.next())
                .await
                .expect("chunk echoed before the next is sent")
                .unwrap()
                .unwrap();
            let from = i * CHUNK as u64 + got as u64;
            assert!(bytes.as_ref() == pattern_bytes(from, bytes.len()).as_slice());
            got += bytes.len();
        }
        assert_eq!(got, CHUNK);
    }
    drop(tx);
    assert!(
        tokio::time::timeout(wait, download.next())
            .await
            .unwrap()
            .is_none()
    );
    gw.stop().await;
    s.stop().await;
}

store_test!(multi_thread websockets_pass_through);
async fn websockets_pass_through(s: TestServer) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_addr = start_ws_upstream().await;
    let up = start_upstream().await;
    let mut cfg = config(&up, |_| {});
    cfg.upstream = format!("http://{ws_addr}").parse().unwrap();
    let gw = Gateway::start(&s, cfg).await;
    let ident = s.identity("socket").await;
    let (key, _) = s.key(&ident, json!({})).await;
    let mut req = format!("ws://{}/socket", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await.unwrap().unwrap();
    assert_eq!(hello, Message::text(format!("identity={ident}")));
    for text in ["one", "two", "three"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    ws.send(Message::binary(pattern_bytes(0, 100_000)))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(pattern_bytes(0, 100_000))
    );
    ws.close(None).await.unwrap();
    // Without a key the upgrade is refused by the gateway.
    let req = format!("ws://{}/socket", gw.addr)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    gw.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_slow_one_a_504() {
    let s = TestServer::start().await;
    let up = start_upstream().await;
    let ident = s.identity("patient").await;
    let (key, _) = s.key(&ident, json!({})).await;
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = config(&up, |c| c.upstream_timeout = Duration::from_millis(500));
    cfg.upstream = format!("http://{closed}").parse().unwrap();
    let down = Gateway::start(&s, cfg).await;
    let r = http()
        .get(format!("{}/x", down.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (_, body) = problem(r, 502).await;
    assert!(body["detail"].as_str().unwrap().contains("unreachable"));
    down.stop().await;
    let slow = Gateway::start(
        &s,
        config(&up, |c| c.upstream_timeout = Duration::from_millis(300)),
    )
    .await;
    let r = http()
        .get(format!("{}/slow", slow.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 504).await;
    slow.stop().await;
    s.stop().await;
}

store_test!(the_api_listens_apart_and_revocations_apply_at_once);
async fn the_api_listens_apart_and_revocations_apply_at_once(s: TestServer) {
    let up = start_upstream().await;
    let gw = Gateway::start(
        &s,
        config(&up, |c| c.api_listen = Some("127.0.0.1:0".parse().unwrap())),
    )
    .await;
    let api = gw.api.clone().expect("an API listener");
    let ident = s.identity("revocable").await;
    let (key, key_id) = s.key(&ident, json!({})).await;
    // API paths on the gateway's listener are the upstream's.
    let r = http()
        .get(format!("{}/v1/identities", gw.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(seen(r).await["path"], "/v1/identities");
    // Revoked through the gateway node's own API: its cache forgets the key at once.
    let r = http()
        .post(format!("{api}/v1/keys/{key_id}/revoke"))
        .bearer_auth(&s.root)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .get(format!("{}/after", gw.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    gw.stop().await;
    s.stop().await;
}

store_test!(gateway_checks_are_usage_events);
async fn gateway_checks_are_usage_events(s: TestServer) {
    let up = start_upstream().await;
    let rules = Rules::parse_all(&["POST /orders=orders:write"]).unwrap();
    let gw = Gateway::start(&s, config(&up, |c| c.rules = rules)).await;
    let ident = s.identity("metered").await;
    let (key, key_id) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    for (method, want) in [(reqwest::Method::GET, 200), (reqwest::Method::POST, 403)] {
        for _ in 0..3 {
            let r = http()
                .request(method.clone(), format!("{}/orders", gw.base))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), want);
        }
    }
    // The gateway node's usage writer flushes every second into the shared store.
    let path = format!("/v1/usage?key_id={key_id}&bucket=minute");
    let mut total = serde_json::Value::Null;
    for _ in 0..50 {
        total = s.get(&path, &s.root).await.ok(200)["total"].clone();
        if total == json!({"VALID": 3, "INSUFFICIENT_SCOPE": 3}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total, json!({"VALID": 3, "INSUFFICIENT_SCOPE": 3}));
    gw.stop().await;
    s.stop().await;
}
