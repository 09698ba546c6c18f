//! Security headers on every answer (errors included), `Cache-Control: no-store` on the
//! API, no HSTS over plain HTTP, and CORS closed unless origins are configured.

#[macro_use]
mod common;

use common::TestServer;
use keyward_server::{Security, ServerConfig};

fn assert_hardened(h: &reqwest::header::HeaderMap, api: bool) {
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(h.get("cache-control").is_some_and(|v| v == "no-store"), api);
    assert!(
        h.get("strict-transport-security").is_none(),
        "HSTS over plain HTTP"
    );
    assert!(
        h.get("access-control-allow-origin").is_none(),
        "CORS is closed"
    );
}

store_test!(every_answer_carries_the_headers);
async fn every_answer_carries_the_headers(s: TestServer) {
    let get = |path: &str, token: Option<&str>| {
        let mut r = s
            .http
            .get(format!("{}{path}", s.base))
            .header("Origin", "https://evil.example");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let ok = get("/v1/keys", Some(&s.root)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_hardened(ok.headers(), true);
    let unauthorized = get("/v1/keys", None).await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_hardened(unauthorized.headers(), true);
    let missing = get("/v1/nothing", Some(&s.root)).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_hardened(missing.headers(), true);
    let health = get("/healthz", None).await.unwrap();
    assert_hardened(health.headers(), false);
    // A preflight gets no CORS answer either.
    let pre = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/keys", s.base))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(pre.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_opens_for_configured_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    let store = keyward_server::open_store(&cfg).await.unwrap();
    keyward_server::bootstrap(&*store).await.unwrap();
    let security = Security {
        cors_origins: vec!["https://console.example".into()],
        ..Security::default()
    };
    let server = keyward_server::start_with_parts(
        store,
        keyward_server::Parts {
            security,
            ..Default::default()
        },
        cfg.listen,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("http://{}/v1/keys", server.addr),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
    };
    let ok = preflight("https://console.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    assert!(
        ok.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.stop().await.unwrap();
}
