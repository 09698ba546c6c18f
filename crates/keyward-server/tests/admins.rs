//! Human administrators over HTTP, on both stores: enrolment, logins with password and
//! TOTP (skew, wrong and replayed codes), recovery codes, sessions that carry only
//! their administrator's scopes, step-up, and disabling.

#[macro_use]
mod common;

use chrono::Utc;
use common::TestServer;
use keyward_core::admin::{TotpSecret, recovery_code_hash};
use keyward_core::key::{self, KeyPrefix};
use keyward_core::model::KeyRecord;
use keyward_store::admins::SecondFactor;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

/// Creates an administrator as root; returns (answer body, its TOTP secret).
async fn enrol(s: &TestServer, username: &str, scopes: Value) -> (Value, TotpSecret) {
    let a = s
        .post(
            "/v1/admins",
            &s.root,
            json!({"username": username, "password": PASSWORD, "scopes": scopes}),
        )
        .await;
    let body = a.ok(201).clone();
    let uri = body["totp_uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("otpauth://totp/Keyward:{username}?secret=")),
        "{uri}"
    );
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let secret = TotpSecret::from_base32(secret);
    (body, secret)
}

async fn login(s: &TestServer, username: &str, password: &str, code: &str) -> common::Answer {
    s.send(
        Method::POST,
        "/v1/sessions",
        None,
        Some(json!({"username": username, "password": password, "totp": code})),
    )
    .await
}

/// Now, in Unix seconds, away from a TOTP step boundary (so "the previous step" stays
/// the previous step while the test runs).
async fn settled_now() -> u64 {
    loop {
        let t = Utc::now().timestamp() as u64;
        if (2..8).contains(&(t % 30)) {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

store_test!(logins_with_totp_skew_replay_and_recovery_codes);
async fn logins_with_totp_skew_replay_and_recovery_codes(s: TestServer) {
    let (body, secret) = enrol(&s, "alice", json!(["keyward:keys:read"])).await;
    let codes: Vec<String> = serde_json::from_value(body["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);

    let t = settled_now().await;
    // Wrong password, wrong code, unknown user: the same 401.
    let wrong = format!(
        "{:06}",
        (secret.code_at(t).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    for (user, pw, code) in [
        ("alice", "wrong password!!", secret.code_at(t)),
        ("alice", PASSWORD, wrong),
        ("nobody", PASSWORD, secret.code_at(t)),
    ] {
        let d = login(&s, user, pw, &code).await.problem(401)["detail"].clone();
        assert_eq!(d, "wrong username, password or code");
    }
    // One step of skew back is accepted; then the current step; a code used once is
    // refused, and so is an earlier step; one step ahead is accepted.
    login(&s, "alice", PASSWORD, &secret.code_at(t - 30))
        .await
        .ok(201);
    let a = login(&s, "alice", PASSWORD, &secret.code_at(t)).await;
    let session = a.ok(201).clone();
    login(&s, "alice", PASSWORD, &secret.code_at(t))
        .await
        .problem(401);
    login(&s, "alice", PASSWORD, &secret.code_at(t - 30))
        .await
        .problem(401);
    login(&s, "alice", PASSWORD, &secret.code_at(t + 30))
        .await
        .ok(201);

    // The session carries alice's scopes and nothing more.
    let token = session["token"].as_str().unwrap();
    assert!(token.starts_with("kws_"));
    let expires: chrono::DateTime<Utc> =
        serde_json::from_value(session["expires_at"].clone()).unwrap();
    assert!(expires > Utc::now() + chrono::Duration::minutes(14));
    s.get("/v1/keys", token).await.ok(200);
    s.get("/v1/audit", token).await.problem(403);
    s.post("/v1/identities", token, json!({"name": "x", "owner": "y"}))
        .await
        .problem(403);

    // A recovery code instead of a TOTP code, once.
    login(&s, "alice", PASSWORD, &codes[3].to_uppercase())
        .await
        .ok(201);
    login(&s, "alice", PASSWORD, &codes[3]).await.problem(401);

    // Disabled: its sessions end and it cannot log in.
    let id = body["id"].as_str().unwrap();
    let d = s
        .post(&format!("/v1/admins/{id}/disable"), &s.root, json!({}))
        .await;
    assert_eq!(d.ok(200)["enabled"], false);
    s.get("/v1/keys", token).await.problem(401);
    login(&s, "alice", PASSWORD, &codes[4]).await.problem(401);

    let list = s.get("/v1/admins", &s.root).await;
    let items = list.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("totp_secret").is_none() && items[0].get("password_hash").is_none());
    // All of it was audit-logged, without a secret, and the log chains.
    let log = s
        .get("/v1/audit?limit=1000", &s.root)
        .await
        .ok(200)
        .to_string();
    for secret_text in [PASSWORD, secret.base32(), token, &codes[3]] {
        assert!(!log.contains(secret_text), "a secret in the audit log");
    }
    assert!(log.contains("session.create") && log.contains("admin.disable"));
    assert_eq!(s.get("/v1/audit/verify", &s.root).await.ok(200)["ok"], true);
}

store_test!(enrolment_refuses_bad_input);
async fn enrolment_refuses_bad_input(s: TestServer) {
    let cases = [
        (
            json!({"username": "Bad Name", "password": PASSWORD, "scopes": ["keyward:admin"]}),
            "username",
        ),
        (
            json!({"username": "bob", "password": "short", "scopes": ["keyward:admin"]}),
            "password",
        ),
        (
            json!({"username": "bob", "password": PASSWORD, "scopes": ["orders:read"]}),
            "scopes[0]",
        ),
        (
            json!({"username": "bob", "password": PASSWORD, "scopes": []}),
            "scopes",
        ),
    ];
    for (body, field) in cases {
        let a = s.post("/v1/admins", &s.root, body).await;
        assert!(
            a.problem(400)["detail"].as_str().unwrap().contains(field),
            "{}",
            a.body
        );
    }
    enrol(&s, "bob", json!(["keyward:admin"])).await;
    s.post(
        "/v1/admins",
        &s.root,
        json!({"username": "bob", "password": PASSWORD, "scopes": ["keyward:admin"]}),
    )
    .await
    .problem(409);
    // Only keyward:admin creates administrators.
    let ident = s.identity("ops").await;
    let (reader, _) = s
        .key(&ident, json!({"scopes": ["keyward:keys:write"]}))
        .await;
    s.post(
        "/v1/admins",
        &reader,
        json!({"username": "carol", "password": PASSWORD, "scopes": ["keyward:admin"]}),
    )
    .await
    .problem(403);
}

store_test!(sensitive_calls_need_a_young_session_or_a_fresh_code);
async fn sensitive_calls_need_a_young_session_or_a_fresh_code(s: TestServer) {
    let (body, secret) = enrol(&s, "root-human", json!(["keyward:admin"])).await;
    let t = settled_now().await;
    let young = login(&s, "root-human", PASSWORD, &secret.code_at(t)).await;
    let young = young.ok(201)["token"].as_str().unwrap().to_owned();
    let ident = s.identity("svc").await;
    let admin_key = json!({"identity_id": ident, "scopes": ["keyward:admin"]});
    // A young session mints an admin key and creates administrators.
    s.post("/v1/keys", &young, admin_key.clone()).await.ok(201);

    // A session ten minutes old (written straight to the store, as time cannot be
    // wound forward over HTTP).
    let admin_id: Uuid = serde_json::from_value(body["id"].clone()).unwrap();
    let identity_id = s.get("/v1/admins", &s.root).await.ok(200)["items"][0]["identity_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let minted = key::mint(&KeyPrefix::parse("kws").unwrap());
    let now = keyward_server::now();
    let old = KeyRecord {
        id: Uuid::now_v7(),
        identity_id,
        name: "session".into(),
        prefix: "kws".into(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes: vec!["keyward:admin".into()],
        created_at: now - chrono::Duration::minutes(10),
        updated_at: now,
        expires_at: Some(now + chrono::Duration::minutes(5)),
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec![],
        rate_limits: vec![],
        remaining: None,
        last_used_at: None,
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    };
    let codes: Vec<String> = serde_json::from_value(body["recovery_codes"].clone()).unwrap();
    let factor = SecondFactor::Recovery {
        code_hash: recovery_code_hash(&codes[0]),
    };
    let audit = keyward_store::testkit::audit("session.create", old.id);
    assert!(
        s.store
            .open_session(admin_id, &factor, &old, now, &audit)
            .await
            .unwrap()
    );
    let old_token = minted.plaintext.to_string();

    // Without a fresh code: refused, for admin keys and for administrators; other calls
    // need no step-up.
    let a = s.post("/v1/keys", &old_token, admin_key.clone()).await;
    assert!(
        a.problem(403)["detail"]
            .as_str()
            .unwrap()
            .contains("Keyward-TOTP")
    );
    s.post(
        "/v1/admins",
        &old_token,
        json!({"username": "eve", "password": PASSWORD, "scopes": ["keyward:admin"]}),
    )
    .await
    .problem(403);
    s.post(
        "/v1/keys",
        &old_token,
        json!({"identity_id": ident, "scopes": ["orders:read"]}),
    )
    .await
    .ok(201);
    // With a fresh code (a step not used yet): accepted once.
    let code = secret.code_at(t + 30);
    let send = |code: String| {
        s.http
            .post(format!("{}/v1/keys", s.base))
            .bearer_auth(&old_token)
            .header("Keyward-TOTP", code)
            .json(&admin_key)
            .send()
    };
    assert_eq!(send(code.clone()).await.unwrap().status(), 201);
    assert_eq!(
        send(code).await.unwrap().status(),
        403,
        "a replayed step-up code"
    );
    assert_eq!(send("000000".into()).await.unwrap().status(), 403);
    // Keys of non-human identities never step up (the root key).
    s.post("/v1/keys", &s.root, admin_key).await.ok(201);
}
