//! Bad input gets a clear 4xx problem+json naming the field; never a 500; and nothing
//! already stored is lost.

#[macro_use]
mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::json;

store_test!(malformed_bodies_are_400_naming_the_field);
async fn malformed_bodies_are_400_naming_the_field(s: TestServer) {
    let ident = s.identity("victim").await;
    let (_, key_id) = s.key(&ident, json!({"scopes": ["a"]})).await;
    let root = s.root.clone();
    let raw = |path: &'static str, body: &'static str| {
        let s = &s;
        let root = root.clone();
        async move {
            s.send_raw(
                Method::POST,
                path,
                Some(&root),
                "application/json",
                body.as_bytes().to_vec(),
            )
            .await
        }
    };
    // Not JSON at all, truncated JSON, trailing garbage, empty, wrong top-level type.
    for body in [
        "not json",
        "{\"name\": ",
        "{\"name\":\"a\",\"owner\":\"b\"} x",
        "",
        "[1,2]",
        "null",
    ] {
        let a = raw("/v1/identities", body).await;
        a.problem(400);
    }
    // Wrong types name the field.
    let cases = vec![
        ("/v1/identities", json!({"name": 5, "owner": "o"}), "name"),
        ("/v1/identities", json!({"name": "n"}), "owner"),
        (
            "/v1/identities",
            json!({"name": "n", "owner": "o", "meta": [1]}),
            "meta",
        ),
        (
            "/v1/identities",
            json!({"name": "n", "owner": "o", "surprise": 1}),
            "surprise",
        ),
        ("/v1/identities", json!({"name": "", "owner": "o"}), "name"),
        (
            "/v1/identities",
            json!({"name": "   ", "owner": "o"}),
            "name",
        ),
        (
            "/v1/identities",
            json!({"name": "a\u{0000}b", "owner": "o"}),
            "name",
        ),
        (
            "/v1/identities",
            json!({"name": "x".repeat(10_000), "owner": "o"}),
            "name",
        ),
        (
            "/v1/keys",
            json!({"identity_id": "not-a-uuid"}),
            "identity_id",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "scopes": "a"}),
            "scopes",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "scopes": ["ok", "bad scope"]}),
            "scopes[1]",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "prefix": "UPPER"}),
            "prefix",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "ttl_seconds": -5}),
            "ttl_seconds",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "remaining": -1}),
            "remaining",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "rate_limits": [{"name": "a", "limit": 0, "window_seconds": 1}]}),
            "rate_limits[0].limit",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "rate_limits": [{"name": "a", "limit": "many", "window_seconds": 1}]}),
            "rate_limits[0].limit",
        ),
        (
            "/v1/keys",
            json!({"identity_id": ident, "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            "/v1/keys",
            json!({"identity_id": uuid::Uuid::now_v7()}),
            "identity_id",
        ),
        ("/v1/verify", json!({"key": 12}), "key"),
        (
            "/v1/verify",
            json!({"key": "k", "permission": "a AND (b OR"}),
            "permission",
        ),
        (
            "/v1/verify",
            json!({"key": "k", "permission": "AND"}),
            "permission",
        ),
    ];
    for (path, body, field) in cases {
        let a = s.post(path, &s.root, body.clone()).await;
        let p = a.problem(400);
        assert_eq!(p["field"], field, "{path} {body}: {p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(field.split('[').next().unwrap()),
            "{p}"
        );
    }
    // PATCH with bad types leaves the key as it was.
    let a = s
        .patch(
            &format!("/v1/keys/{key_id}"),
            &s.root,
            json!({"scopes": [1]}),
        )
        .await;
    a.problem(400);
    let a = s
        .patch(
            &format!("/v1/keys/{key_id}"),
            &s.root,
            json!({"expires_at": 12}),
        )
        .await;
    a.problem(400);
    let k = s
        .get(&format!("/v1/keys/{key_id}"), &s.root)
        .await
        .ok(200)
        .clone();
    assert_eq!(k["scopes"], json!(["a"]));
    s.stop().await;
}

store_test!(oversized_bodies_are_413);
async fn oversized_bodies_are_413(s: TestServer) {
    let big = format!(
        "{{\"name\": \"{}\", \"owner\": \"o\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let a = s
        .send_raw(
            Method::POST,
            "/v1/identities",
            Some(&s.root),
            "application/json",
            big.into_bytes(),
        )
        .await;
    a.problem(413);
    // Large but under the limit, with oversized meta: 400 naming meta.
    let meta: serde_json::Map<String, serde_json::Value> = (0..2000)
        .map(|i| (format!("k{i}"), json!("v".repeat(20))))
        .collect();
    let a = s
        .post(
            "/v1/identities",
            &s.root,
            json!({"name": "m", "owner": "o", "meta": meta}),
        )
        .await;
    assert_eq!(a.problem(400)["field"], "meta");
    s.stop().await;
}

store_test!(odd_unicode_and_injection_strings_are_stored_verbatim);
async fn odd_unicode_and_injection_strings_are_stored_verbatim(s: TestServer) {
    let names = [
        "Robert'); DROP TABLE identities;--",
        "\" OR 1=1 --",
        "<script>alert(1)</script>",
        "名前-サービス",
        "emoji 🔑 key",
        "combining e\u{0301}",
        "${jndi:ldap://x}",
    ];
    for n in names {
        let a = s
            .post(
                "/v1/identities",
                &s.root,
                json!({"name": n, "owner": n, "description": n, "meta": {n: n}}),
            )
            .await;
        let b = a.ok(201);
        assert_eq!(b["name"], n);
        let id = b["id"].as_str().unwrap();
        let back = s
            .get(&format!("/v1/identities/{id}"), &s.root)
            .await
            .ok(200)
            .clone();
        assert_eq!(back["owner"], n);
        assert_eq!(back["meta"][n], n);
    }
    // Bidirectional overrides make a name display as something else ("Trojan Source").
    let a = s
        .post(
            "/v1/identities",
            &s.root,
            json!({"name": "right-to-left \u{202e}gnp.exe", "owner": "o"}),
        )
        .await;
    assert_eq!(a.problem(400)["field"], "name");
    // The store still holds everything.
    let all = s
        .get("/v1/identities?limit=1000", &s.root)
        .await
        .ok(200)
        .clone();
    assert_eq!(all["items"].as_array().unwrap().len(), names.len() + 1);
    s.stop().await;
}

store_test!(bad_paths_queries_and_methods_are_problems);
async fn bad_paths_queries_and_methods_are_problems(s: TestServer) {
    s.get("/v1/identities/not-a-uuid", &s.root)
        .await
        .problem(404);
    s.get(&format!("/v1/keys/{}", uuid::Uuid::now_v7()), &s.root)
        .await
        .problem(404);
    s.get("/v1/nowhere", &s.root).await.problem(404);
    s.send(Method::PUT, "/v1/identities", Some(&s.root), None)
        .await
        .problem(405);
    assert_eq!(
        s.get("/v1/identities?limit=0", &s.root).await.problem(400)["field"],
        "limit"
    );
    assert_eq!(
        s.get("/v1/identities?limit=abc", &s.root)
            .await
            .problem(400)["field"],
        "limit"
    );
    assert_eq!(
        s.get("/v1/identities?cursor=zzz", &s.root)
            .await
            .problem(400)["field"],
        "cursor"
    );
    assert_eq!(
        s.get("/v1/keys?identity_id=nope", &s.root)
            .await
            .problem(400)["field"],
        "identity_id"
    );
    assert_eq!(
        s.get("/v1/audit?after=x", &s.root).await.problem(400)["field"],
        "after"
    );
    let a = s
        .send_raw(
            Method::POST,
            "/v1/identities",
            Some(&s.root),
            "text/xml",
            b"<a/>".to_vec(),
        )
        .await;
    a.problem(415);
    s.stop().await;
}
