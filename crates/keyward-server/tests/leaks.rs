//! `POST /v1/leaks`: a leaked key of this server is revoked and audit-logged; anything
//! else is `{revoked: false}` and reveals nothing.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::json;

async fn reporter(s: &TestServer) -> String {
    let id = s.identity("scanner").await;
    s.key(&id, json!({"scopes": ["keyward:leaks:report"]}))
        .await
        .0
}

async fn code(s: &TestServer, key: &str) -> String {
    let a = s.post("/v1/verify", &s.root, json!({"key": key})).await;
    a.ok(200)["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_leaked_key_of_ours_is_revoked_and_audit_logged() {
    let s = TestServer::start().await;
    let rep = reporter(&s).await;
    let ident = s.identity("billing").await;
    let (key, key_id) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    assert_eq!(code(&s, &key).await, "VALID");

    let a = s
        .post(
            "/v1/leaks",
            &rep,
            json!({"key": key, "source": "github.com/acme/app@abc123:config.yml:4"}),
        )
        .await;
    let body = a.ok(200);
    assert_eq!(body, &json!({"revoked": true, "key_id": key_id}));
    assert_eq!(code(&s, &key).await, "REVOKED");

    // Reported again: still ours, still revoked.
    let a = s.post("/v1/leaks", &rep, json!({"key": key})).await;
    assert_eq!(a.ok(200), &json!({"revoked": true, "key_id": key_id}));

    let audit = s.get("/v1/audit?limit=100", &s.root).await;
    let items = audit.ok(200)["items"].as_array().unwrap().clone();
    let leaked: Vec<_> = items
        .iter()
        .filter(|i| i["action"] == "key.leaked")
        .collect();
    assert_eq!(leaked.len(), 2, "{items:?}");
    assert_eq!(leaked[0]["target"], key_id.as_str());
    assert_eq!(
        leaked[0]["detail"]["source"],
        "github.com/acme/app@abc123:config.yml:4"
    );
    assert_eq!(leaked[1]["detail"]["already_revoked"], true);
    assert!(
        !audit.body.to_string().contains(&key),
        "the audit log holds a key"
    );
    s.stop().await;
}

#[tokio::test]
async fn anything_else_is_not_revoked_and_reveals_nothing() {
    let s = TestServer::start().await;
    let rep = reporter(&s).await;
    let ident = s.identity("billing").await;
    let (key, _) = s.key(&ident, json!({})).await;
    // Well-formed but unknown: a key minted elsewhere.
    let other = keyward_core::key::mint(&keyward_core::key::KeyPrefix::default());
    // A near miss: the checksum fails.
    let mut near = key.clone();
    let last = near.pop().unwrap();
    near.push(if last == '0' { '1' } else { '0' });
    for k in [other.plaintext.as_str(), near.as_str(), "not a key", ""] {
        let a = s.post("/v1/leaks", &rep, json!({"key": k})).await;
        assert_eq!(a.ok(200), &json!({"revoked": false}), "{k}");
    }
    assert_eq!(code(&s, &key).await, "VALID");
    s.stop().await;
}

#[tokio::test]
async fn needs_its_scope_and_a_sane_source_and_may_revoke_admin_keys() {
    let s = TestServer::start().await;
    let ident = s.identity("svc").await;
    let (plain, _) = s.key(&ident, json!({"scopes": ["keyward:verify"]})).await;
    let (admin, admin_id) = s.key(&ident, json!({"scopes": ["keyward:admin"]})).await;

    let a = s
        .send(Method::POST, "/v1/leaks", None, Some(json!({"key": admin})))
        .await;
    a.problem(401);
    let a = s.post("/v1/leaks", &plain, json!({"key": admin})).await;
    a.problem(403);
    assert_eq!(code(&s, &admin).await, "VALID");

    let rep = reporter(&s).await;
    let a = s
        .post(
            "/v1/leaks",
            &rep,
            json!({"key": admin, "source": "x".repeat(2000)}),
        )
        .await;
    assert!(
        a.problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("source")
    );
    let a = s
        .post("/v1/leaks", &rep, json!({"key": admin, "extra": 1}))
        .await;
    a.problem(400);

    // Holding the key is the proof: a leaked admin key is revoked too.
    let a = s.post("/v1/leaks", &rep, json!({"key": admin})).await;
    assert_eq!(a.ok(200), &json!({"revoked": true, "key_id": admin_id}));
    assert_eq!(code(&s, &admin).await, "REVOKED");

    // The route is in the OpenAPI document.
    let doc = s.send(Method::GET, "/openapi.json", None, None).await;
    assert!(doc.ok(200)["paths"]["/v1/leaks"]["post"].is_object());
    s.stop().await;
}
