//! Throttled guessing over HTTP, on both stores: an account locks after repeated failed
//! logins (and unlocks after the lockout), an address that keeps failing is throttled
//! with 429 and `Retry-After`, unknown bearer credentials likewise, and a valid
//! verifier from that same address is not slowed.

use std::time::Duration;

use keyward_core::admin::TotpSecret;
use keyward_server::throttle::Limits;
use keyward_server::{Security, ServerConfig};
use keyward_store::testkit::TempDatabase;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

async fn throttled(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = if postgres {
        Some(TempDatabase::create().await)
    } else {
        None
    };
    let cfg = ServerConfig {
        database_url: db.as_ref().map(|d| d.url.clone()),
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"))
    };
    let store = keyward_server::open_store(&cfg).await.unwrap();
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let root = root.as_str().to_owned();
    let security = Security {
        throttle: Limits {
            login_ip_burst: 6,
            login_ip_every: Duration::from_secs(3600),
            account_burst: 2,
            account_every: Duration::from_secs(3600),
            lockout: Duration::from_secs(2),
            bearer_ip_burst: 3,
            bearer_every: Duration::from_secs(3600),
        },
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
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t.to_owned());
        }
        r.send()
    };
    let login = |user: &str, pw: &str, code: String| {
        post(
            "/v1/sessions",
            None,
            json!({"username": user, "password": pw, "totp": code}),
        )
    };

    let created: Value = post(
        "/v1/admins",
        Some(&root),
        json!({"username": "alice", "password": PASSWORD, "scopes": ["keyward:admin"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let uri = created["totp_uri"].as_str().unwrap();
    let secret = TotpSecret::from_base32(
        uri.split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap(),
    );
    let code = || secret.code_at(chrono::Utc::now().timestamp() as u64);

    // Account lockout: the failures that run the account dry lock it, for the right
    // password too.
    for _ in 0..3 {
        let a = login("alice", "wrong password!!", code()).await.unwrap();
        assert_eq!(a.status(), 401);
    }
    let a = login("alice", PASSWORD, code()).await.unwrap();
    assert_eq!(a.status(), 429);
    let retry: u64 = a.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let problem: Value = a.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    // ...for a while.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let a = login("alice", PASSWORD, code()).await.unwrap();
    assert_eq!(a.status(), 201);

    // One address failing for many accounts: throttled too (3 failures so far).
    for user in ["u1", "u2", "u3", "u4"] {
        let a = login(user, PASSWORD, "123456".into()).await.unwrap();
        assert_eq!(a.status(), 401, "{user}");
    }
    let a = login("u5", PASSWORD, "123456".into()).await.unwrap();
    assert_eq!(a.status(), 429);
    assert!(a.headers().contains_key("retry-after"));

    // Unknown bearer credentials from one address: 401, then 429.
    let bad = "kw_thisisnotakeyofoursbutitlooksalittlelikeone0";
    for _ in 0..3 {
        let a = http
            .get(format!("{base}/v1/keys"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 401);
    }
    let a = http
        .get(format!("{base}/v1/keys"))
        .bearer_auth(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 429);
    // A verifier with a valid credential, from the same address, is not slowed; and a
    // verified key that does not exist is an answer, not a bad credential.
    for _ in 0..20 {
        let a = post("/v1/verify", Some(&root), json!({"key": bad}))
            .await
            .unwrap();
        assert_eq!(a.status(), 200);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn guessing_is_throttled_sqlite() {
    throttled(false).await;
}

#[tokio::test]
async fn guessing_is_throttled_postgres() {
    throttled(true).await;
}
