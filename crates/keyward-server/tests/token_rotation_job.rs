//! The jobs leader rotates the token signing key on schedule, and tokens signed before
//! and after the rotation both keep verifying (JWKS and introspection).

use std::time::{Duration, Instant};

use keyward_store::testkit::TempDatabase;
use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: String, bearer: &str, body: Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn scheduled_rotation(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        keyward_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("d"));
    cfg.database_url = database_url;
    let store = keyward_server::open_store(&cfg).await.unwrap();
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let server = keyward_server::start_with_parts(
        store,
        keyward_server::Parts {
            token_key_rotation: Duration::from_secs(1),
            ..Default::default()
        },
        cfg.listen,
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let ident = post(
        &http,
        format!("{base}/v1/identities"),
        root.as_str(),
        json!({"name": "svc", "owner": "me"}),
    )
    .await;
    let key = post(
        &http,
        format!("{base}/v1/keys"),
        root.as_str(),
        json!({"identity_id": ident["id"], "scopes": ["a", "keyward:verify"]}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let exchange = || post(&http, format!("{base}/v1/tokens"), &key, json!({}));
    let first = exchange().await["token"].as_str().unwrap().to_owned();

    // The leader checks every few seconds; with a 1 s period the key changes soon.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let t = exchange().await["token"].as_str().unwrap().to_owned();
        if kid(&t) != kid(&first) {
            break t;
        }
        assert!(Instant::now() < deadline, "the signing key never rotated");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let jwks: Value = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    for t in [&first, &second] {
        let jwk = set.find(&kid(t)).expect("published");
        let dk = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.validate_aud = false;
        jsonwebtoken::decode::<Value>(t, &dk, &v).unwrap();
        let i = post(
            &http,
            format!("{base}/v1/tokens/introspect"),
            &key,
            json!({"token": t}),
        )
        .await;
        assert_eq!(i["active"], true);
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_leader_rotates_on_schedule_sqlite() {
    scheduled_rotation(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_leader_rotates_on_schedule_postgres() {
    let db = TempDatabase::create().await;
    scheduled_rotation(Some(db.url.clone())).await;
}
