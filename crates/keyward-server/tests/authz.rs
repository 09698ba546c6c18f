//! Every `/v1` call needs a credential (401) holding the right `keyward:` scope (403).

#[macro_use]
mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

/// (method, path, body, scope that grants it)
fn calls(ident: &str, key_id: &str) -> Vec<(Method, String, Option<Value>, &'static str)> {
    vec![
        (
            Method::POST,
            "/v1/identities".into(),
            Some(json!({"name": "n-authz", "owner": "o"})),
            "keyward:identities:write",
        ),
        (
            Method::GET,
            "/v1/identities".into(),
            None,
            "keyward:identities:read",
        ),
        (
            Method::GET,
            format!("/v1/identities/{ident}"),
            None,
            "keyward:identities:read",
        ),
        (
            Method::PATCH,
            format!("/v1/identities/{ident}"),
            Some(json!({"description": "d"})),
            "keyward:identities:write",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"identity_id": ident})),
            "keyward:keys:write",
        ),
        (Method::GET, "/v1/keys".into(), None, "keyward:keys:read"),
        (
            Method::GET,
            format!("/v1/keys/{key_id}"),
            None,
            "keyward:keys:read",
        ),
        (
            Method::PATCH,
            format!("/v1/keys/{key_id}"),
            Some(json!({"name": "x"})),
            "keyward:keys:write",
        ),
        (
            Method::POST,
            format!("/v1/keys/{key_id}/rotate"),
            Some(json!({"grace_seconds": 60})),
            "keyward:keys:write",
        ),
        (
            Method::POST,
            format!("/v1/keys/{key_id}/revoke"),
            None,
            "keyward:keys:write",
        ),
        (
            Method::POST,
            "/v1/verify".into(),
            Some(json!({"key": "x"})),
            "keyward:verify",
        ),
        (
            Method::POST,
            "/v1/verify/batch".into(),
            Some(json!({"requests": [{"key": "x"}]})),
            "keyward:verify",
        ),
        (Method::GET, "/v1/audit".into(), None, "keyward:audit:read"),
        (
            Method::DELETE,
            format!("/v1/identities/{ident}"),
            None,
            "keyward:identities:write",
        ),
    ]
}

store_test!(every_call_needs_a_credential_and_its_scope);
async fn every_call_needs_a_credential_and_its_scope(s: TestServer) {
    let holder = s.identity("holders").await;
    let scopes = [
        "keyward:verify",
        "keyward:identities:read",
        "keyward:identities:write",
        "keyward:keys:read",
        "keyward:keys:write",
        "keyward:audit:read",
    ];
    let mut creds = std::collections::HashMap::new();
    for sc in scopes {
        creds.insert(sc, s.key(&holder, json!({"scopes": [sc]})).await.0);
    }
    let (_, revoked_id) = s.key(&holder, json!({"scopes": ["keyward:admin"]})).await;
    let revoked_key = {
        let (k, id) = s.key(&holder, json!({"scopes": ["keyward:admin"]})).await;
        s.post(&format!("/v1/keys/{id}/revoke"), &s.root, json!({}))
            .await
            .ok(200);
        k
    };
    let _ = revoked_id;
    let ident = s.identity("target").await;
    let (_, key_id) = s.key(&ident, json!({})).await;

    for (method, path, body, needed) in calls(&ident, &key_id) {
        // No credential, a garbage one, a well-formed unknown one, a revoked one: 401.
        let none = s.send(method.clone(), &path, None, body.clone()).await;
        none.problem(401);
        assert_eq!(none.headers.get("www-authenticate").unwrap(), "Bearer");
        s.send(method.clone(), &path, Some("garbage"), body.clone())
            .await
            .problem(401);
        let unknown = keyward_core::key::mint(&keyward_core::KeyPrefix::default());
        s.send(
            method.clone(),
            &path,
            Some(unknown.plaintext.as_str()),
            body.clone(),
        )
        .await
        .problem(401);
        s.send(method.clone(), &path, Some(&revoked_key), body.clone())
            .await
            .problem(401);
        // Every other scope: 403.
        for sc in scopes.iter().filter(|sc| **sc != needed) {
            let a = s
                .send(method.clone(), &path, Some(&creds[sc]), body.clone())
                .await;
            assert_eq!(
                a.status.as_u16(),
                403,
                "{method} {path} with {sc}: {}",
                a.body
            );
            a.problem(403);
        }
    }
    // And the granting scope passes the door (non-destructive calls first, DELETE last).
    for (method, path, body, needed) in calls(&ident, &key_id) {
        let a = s
            .send(method.clone(), &path, Some(&creds[needed]), body)
            .await;
        assert!(
            a.status.is_success(),
            "{method} {path} with {needed}: {} {}",
            a.status,
            a.body
        );
    }
    s.stop().await;
}

store_test!(only_admin_mints_or_changes_keyward_keys);
async fn only_admin_mints_or_changes_keyward_keys(s: TestServer) {
    let holder = s.identity("holders").await;
    let (writer, _) = s
        .key(
            &holder,
            json!({"scopes": ["keyward:keys:write", "keyward:keys:read"]}),
        )
        .await;
    let ident = s.identity("t").await;
    for scope in ["keyward:verify", "keyward:*", "*", "key*"] {
        let a = s
            .post(
                "/v1/keys",
                &writer,
                json!({"identity_id": ident, "scopes": [scope]}),
            )
            .await;
        a.problem(403);
    }
    // Ordinary scopes are fine.
    s.post(
        "/v1/keys",
        &writer,
        json!({"identity_id": ident, "scopes": ["orders:*"]}),
    )
    .await
    .ok(201);
    // Nor may the writer raise a key into keyward: or touch the admin's keys.
    let (_, plain_id) = s.key(&ident, json!({"scopes": ["a"]})).await;
    s.patch(
        &format!("/v1/keys/{plain_id}"),
        &writer,
        json!({"scopes": ["keyward:admin"]}),
    )
    .await
    .problem(403);
    let (_, admin_id) = s.key(&ident, json!({"scopes": ["keyward:admin"]})).await;
    s.post(&format!("/v1/keys/{admin_id}/revoke"), &writer, json!({}))
        .await
        .problem(403);
    s.post(&format!("/v1/keys/{admin_id}/rotate"), &writer, json!({}))
        .await
        .problem(403);
    // The admin may.
    s.post(
        "/v1/keys",
        &s.root,
        json!({"identity_id": ident, "scopes": ["keyward:verify"]}),
    )
    .await
    .ok(201);
    s.stop().await;
}

store_test!(a_credential_with_an_ip_allowlist_is_refused_from_elsewhere);
async fn a_credential_with_an_ip_allowlist_is_refused_from_elsewhere(s: TestServer) {
    let holder = s.identity("holders").await;
    let (elsewhere, _) = s
        .key(
            &holder,
            json!({"scopes": ["keyward:admin"], "ip_allowlist": ["10.9.9.9"]}),
        )
        .await;
    let (local, _) = s
        .key(
            &holder,
            json!({"scopes": ["keyward:admin"], "ip_allowlist": ["127.0.0.0/8", "::1"]}),
        )
        .await;
    s.get("/v1/identities", &elsewhere).await.problem(401);
    s.get("/v1/identities", &local).await.ok(200);
    s.stop().await;
}
