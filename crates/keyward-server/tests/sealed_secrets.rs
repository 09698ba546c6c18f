//! Secrets Keyward must recover are sealed at rest, on both stores: a webhook's signing
//! secret is not in the SQLite file or the PostgreSQL row, rows stored in the clear
//! before sealing are sealed at startup, a master key rotation rewraps them, and with
//! no master key a new webhook is refused (503). Token signing private keys and
//! administrator TOTP secrets likewise: sealed on write, sealed at startup when written
//! in the clear, usable after a restart, and failing closed under a wrong master key.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{Backend, TestServer};
use keyward_core::envelope::{Keyring, MasterKey};
use keyward_core::webhook::Webhook;
use keyward_server::sealed_secrets;
use keyward_server::vault::{VALUE_MAX_BYTES, Vault};
use keyward_server::webhooks::WebhookSettings;
use keyward_store::sealed_secrets::SealedKind;
use serde_json::{Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

async fn create_webhook(s: &TestServer) -> (Uuid, String) {
    let a = s
        .post(
            "/v1/webhooks",
            &s.root,
            json!({"url": "https://hooks.example.com/sealed", "events": ["key.created"]}),
        )
        .await;
    let b = a.ok(201);
    (
        b["id"].as_str().unwrap().parse().unwrap(),
        b["secret"].as_str().unwrap().to_owned(),
    )
}

/// The secret as the delivery worker opens it with `vault`.
fn opened(vault: &Vault, w: &Webhook) -> String {
    let sealed = w.sealed_secret.as_ref().expect("the secret is sealed");
    let plain =
        sealed_secrets::open(vault, SealedKind::WebhookSecret, &w.id.to_string(), sealed).unwrap();
    String::from_utf8(plain.to_vec()).unwrap()
}

/// No byte of `secret` in the database: the SQLite files, or the PostgreSQL row.
async fn assert_not_stored(s: &TestServer, id: Uuid, secret: &str) {
    match s.backend {
        Backend::Sqlite => {
            let mut files = 0;
            for e in std::fs::read_dir(s.data_dir()).unwrap() {
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                files += 1;
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the plaintext secret is in the database file"
                );
            }
            assert!(files >= 1);
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(s.database_url.as_deref().unwrap())
                .await
                .unwrap();
            let row: String =
                sqlx::query_scalar("SELECT row_to_json(w)::text FROM webhooks w WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert!(!row.contains(secret), "the plaintext secret is in the row");
            pool.close().await;
        }
    }
}

store_test!(webhook_secret_is_sealed_at_rest);
async fn webhook_secret_is_sealed_at_rest(s: TestServer) {
    let (id, secret) = create_webhook(&s).await;
    let stored = s.store.get_webhook(id).await.unwrap().unwrap();
    assert_eq!(stored.secret.as_str(), "", "no plaintext column value");
    assert_eq!(
        opened(&s.vault, &stored),
        secret,
        "it opens to the answered secret"
    );
    assert_not_stored(&s, id, &secret).await;
    let log = s.get("/v1/audit?limit=1000", &s.root).await;
    assert!(!log.ok(200).to_string().contains(&secret));
}

store_test!(plaintext_rows_are_sealed_at_startup);
async fn plaintext_rows_are_sealed_at_startup(mut s: TestServer) {
    // A row as written before sealing existed: the secret in the clear, nothing sealed.
    let secret = format!("whsec_{}", Uuid::now_v7().simple());
    let old = Webhook {
        id: Uuid::now_v7(),
        url: "https://hooks.example.com/old".into(),
        events: vec!["key.created".into()],
        secret: Zeroizing::new(secret.clone()),
        sealed_secret: None,
        created_at: chrono::Utc::now(),
        after_seq: 0,
    };
    let audit = keyward_core::model::AuditEntry {
        at: chrono::Utc::now(),
        actor: "test".into(),
        action: "webhook.create".into(),
        target: old.id.to_string(),
        request_id: None,
        source_ip: None,
        detail: json!({}),
    };
    s.store.create_webhook(&old, &audit).await.unwrap();
    assert_eq!(
        s.store
            .get_webhook(old.id)
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_str(),
        secret
    );
    s.restart(WebhookSettings::default()).await;
    let stored = s.store.get_webhook(old.id).await.unwrap().unwrap();
    assert_eq!(stored.secret.as_str(), "", "the plaintext is cleared");
    assert_eq!(opened(&s.vault, &stored), secret);
    assert!(
        s.store
            .plaintext_secrets(SealedKind::WebhookSecret, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Once only: a second start changes nothing.
    let before = stored.sealed_secret.clone();
    s.restart(WebhookSettings::default()).await;
    let again = s.store.get_webhook(old.id).await.unwrap().unwrap();
    assert_eq!(again.sealed_secret, before);
    let log = s.get("/v1/audit?limit=1000", &s.root).await;
    let body = log.ok(200);
    assert!(!body.to_string().contains(&secret));
    let upgrades = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "vault.seal_plaintext")
        .count();
    assert_eq!(upgrades, 1, "the upgrade is audit-logged once");
}

store_test!(master_key_rotation_rewraps_webhook_secrets);
async fn master_key_rotation_rewraps_webhook_secrets(mut s: TestServer) {
    let (id, secret) = create_webhook(&s).await;
    let old_ring = s.vault.ring().clone();
    let new = MasterKey::generate();
    s.vault = Arc::new(Vault::new(
        Keyring::new(new.clone(), vec![old_ring.current().clone()]),
        VALUE_MAX_BYTES,
    ));
    s.restart(WebhookSettings::default()).await;
    // Opens with the old key (still in the ring) before the rewrap.
    let before = s.store.get_webhook(id).await.unwrap().unwrap();
    assert_eq!(opened(&s.vault, &before), secret);
    while sealed_secrets::rewrap_some(&*s.store, &s.vault)
        .await
        .unwrap()
        > 0
    {}
    let after = s.store.get_webhook(id).await.unwrap().unwrap();
    assert_eq!(
        after.sealed_secret.as_ref().unwrap().master_key_id,
        new.id()
    );
    let only_new = Vault::new(Keyring::new(new, vec![]), VALUE_MAX_BYTES);
    assert_eq!(
        opened(&only_new, &after),
        secret,
        "the new key alone opens it"
    );
    let only_old = Vault::new(old_ring, VALUE_MAX_BYTES);
    let sealed = after.sealed_secret.as_ref().unwrap();
    assert!(
        sealed_secrets::open(
            &only_old,
            SealedKind::WebhookSecret,
            &id.to_string(),
            sealed
        )
        .is_err()
    );
    // A new webhook is sealed under the new key.
    let (id2, _) = create_webhook(&s).await;
    let w2 = s.store.get_webhook(id2).await.unwrap().unwrap();
    assert_eq!(
        w2.sealed_secret.unwrap().master_key_id,
        only_new.ring().current().id()
    );
}

/// Without a master key (PostgreSQL with none): no new webhook, 503 naming the key.
#[tokio::test]
async fn no_master_key_no_new_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn keyward_store::Store> = Arc::new(
        keyward_store::SqliteStore::open(&dir.path().join("d"))
            .await
            .unwrap(),
    );
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let server = keyward_server::start_on(store.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = reqwest::Client::new()
        .post(format!("http://{}/v1/webhooks", server.addr))
        .bearer_auth(root.as_str())
        .json(&json!({"url": "https://hooks.example.com/x", "events": ["key.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 503);
    let body: Value = a.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("master key"));
    assert!(store.list_webhooks(None, 10).await.unwrap().is_empty());
    server.stop().await.unwrap();
}

// ------------------------------------------- token signing keys and administrator TOTP

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_core::admin::TotpSecret;
use keyward_server::tokens::SigningKeys;
use reqwest::Method;

/// Raw access to the test server's database, beside the store.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

async fn raw(s: &TestServer) -> Raw {
    match s.backend {
        Backend::Sqlite => {
            let file = s.data_dir().join(keyward_store::sqlite::DB_FILE);
            Raw::Sqlite(
                sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
                    .await
                    .unwrap(),
            )
        }
        Backend::Postgres => Raw::Pg(
            sqlx::PgPool::connect(s.database_url.as_deref().unwrap())
                .await
                .unwrap(),
        ),
    }
}

type RawSigningKey = (String, Vec<u8>, Option<Vec<u8>>);

impl Raw {
    /// Every signing key row: (kid, private_key, private_key_ciphertext).
    async fn signing_keys(&self) -> Vec<RawSigningKey> {
        let sql = "SELECT kid, private_key, private_key_ciphertext FROM signing_keys ORDER BY kid";
        match self {
            Raw::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Raw::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        }
    }

    /// The administrator's row: (totp_secret, totp_secret_ciphertext).
    async fn admin_totp(&self, id: &str) -> (String, Option<Vec<u8>>) {
        match self {
            Raw::Sqlite(p) => sqlx::query_as(
                "SELECT totp_secret, totp_secret_ciphertext FROM admins WHERE id = ?",
            )
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap(),
            Raw::Pg(p) => sqlx::query_as(
                "SELECT totp_secret, totp_secret_ciphertext FROM admins WHERE id::text = $1",
            )
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap(),
        }
    }

    /// Puts the row back as written before sealing: the private key in the clear.
    async fn unseal_signing_key(&self, kid: &str, der: &[u8]) {
        let n = match self {
            Raw::Sqlite(p) => sqlx::query(
                "UPDATE signing_keys SET private_key = ?, private_key_ciphertext = NULL, \
                 private_key_wrapped_key = NULL, private_key_master_key_id = NULL WHERE kid = ?",
            )
            .bind(der)
            .bind(kid)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
            Raw::Pg(p) => sqlx::query(
                "UPDATE signing_keys SET private_key = $1, private_key_ciphertext = NULL, \
                 private_key_wrapped_key = NULL, private_key_master_key_id = NULL WHERE kid = $2",
            )
            .bind(der)
            .bind(kid)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
        };
        assert_eq!(n, 1);
    }

    /// Puts the row back as written before sealing: the TOTP secret in the clear.
    async fn unseal_admin(&self, id: &str, secret: &str) {
        let n = match self {
            Raw::Sqlite(p) => sqlx::query(
                "UPDATE admins SET totp_secret = ?, totp_secret_ciphertext = NULL, \
                 totp_secret_wrapped_key = NULL, totp_secret_master_key_id = NULL WHERE id = ?",
            )
            .bind(secret)
            .bind(id)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
            Raw::Pg(p) => sqlx::query(
                "UPDATE admins SET totp_secret = $1, totp_secret_ciphertext = NULL, \
                 totp_secret_wrapped_key = NULL, totp_secret_master_key_id = NULL \
                 WHERE id::text = $2",
            )
            .bind(secret)
            .bind(id)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
        };
        assert_eq!(n, 1);
    }

    async fn close(self) {
        match self {
            Raw::Sqlite(p) => p.close().await,
            Raw::Pg(p) => p.close().await,
        }
    }
}

/// On SQLite: no byte string `needle` in any database file.
fn assert_not_in_sqlite_files(s: &TestServer, needle: &[u8]) {
    if s.backend != Backend::Sqlite {
        return;
    }
    for e in std::fs::read_dir(s.data_dir()).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a plaintext secret is in the database file"
        );
    }
}

async fn token(s: &TestServer, key: &str) -> String {
    let b = s
        .post("/v1/tokens", key, json!({"scopes": ["orders:read"]}))
        .await;
    b.ok(201)["token"].as_str().unwrap().to_owned()
}

async fn jwks(s: &TestServer) -> JwkSet {
    let a = s
        .send(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    serde_json::from_value(a.ok(200).clone()).unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Verifies `token` with jsonwebtoken alone, against the published JWKS.
fn verify_offline(set: &JwkSet, token: &str) {
    let jwk = set.find(&kid(token)).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &v).expect("the token verifies");
}

/// The private key of `kid`, opened with the test server's vault.
async fn opened_private_key(s: &TestServer, kid: &str) -> Zeroizing<Vec<u8>> {
    let keys = s
        .store
        .signing_keys(keyward_server::now() - chrono::Duration::hours(2))
        .await
        .unwrap();
    let k = keys.iter().find(|k| k.kid == kid).unwrap();
    assert!(k.private_key.is_empty());
    let sealed = k.sealed_private_key.as_ref().expect("sealed");
    sealed_secrets::open(&s.vault, SealedKind::SigningKey, kid, sealed).unwrap()
}

fn assert_all_sealed(rows: &[RawSigningKey]) {
    assert!(!rows.is_empty());
    for (kid, plain, ciphertext) in rows {
        assert!(
            plain.is_empty(),
            "signing key {kid}: private_key is not empty"
        );
        assert!(ciphertext.is_some(), "signing key {kid}: not sealed");
    }
}

store_test!(signing_keys_are_sealed_at_rest_and_sign_after_restart);
async fn signing_keys_are_sealed_at_rest_and_sign_after_restart(mut s: TestServer) {
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    // The first token makes the first signing key; a rotation makes a second.
    let t1 = token(&s, &key).await;
    verify_offline(&jwks(&s).await, &t1);
    SigningKeys::new(s.store.clone(), Some(s.vault.clone()))
        .rotate(keyward_server::now())
        .await
        .unwrap();
    let db = raw(&s).await;
    let rows = db.signing_keys().await;
    assert_eq!(rows.len(), 2);
    assert_all_sealed(&rows);
    for (kid, _, _) in &rows {
        let der = opened_private_key(&s, kid).await;
        assert!(der.len() > 32, "a PKCS#8 key");
        assert_not_in_sqlite_files(&s, &der);
    }

    // After a restart: tokens sign with the rotated key and verify against the JWKS,
    // and the one signed before still verifies.
    s.restart(WebhookSettings::default()).await;
    let t2 = token(&s, &key).await;
    assert_ne!(kid(&t1), kid(&t2), "the rotated key signs");
    let set = jwks(&s).await;
    verify_offline(&set, &t1);
    verify_offline(&set, &t2);

    // The current key as written before sealing existed: in the clear, nothing sealed.
    let der = opened_private_key(&s, &kid(&t2)).await;
    db.unseal_signing_key(&kid(&t2), &der).await;
    let plain = s
        .store
        .plaintext_secrets(SealedKind::SigningKey, 10)
        .await
        .unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].id, kid(&t2));
    // Sealed at start; the same key keeps signing.
    s.restart(WebhookSettings::default()).await;
    assert_all_sealed(&db.signing_keys().await);
    assert_eq!(&opened_private_key(&s, &kid(&t2)).await[..], &der[..]);
    let t3 = token(&s, &key).await;
    assert_eq!(kid(&t3), kid(&t2));
    verify_offline(&jwks(&s).await, &t3);
    let log = s.get("/v1/audit?limit=1000", &s.root).await;
    assert!(
        log.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "vault.seal_plaintext" && e["target"] == "signing_key"),
        "the upgrade is audit-logged"
    );
    db.close().await;
}

const PASSWORD: &str = "correct horse battery staple";

/// Creates an administrator as root; returns (its id, its TOTP secret).
async fn enrol(s: &TestServer, username: &str) -> (String, TotpSecret) {
    let a = s
        .post(
            "/v1/admins",
            &s.root,
            json!({"username": username, "password": PASSWORD, "scopes": ["keyward:keys:read"]}),
        )
        .await;
    let body = a.ok(201);
    let uri = body["totp_uri"].as_str().unwrap();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        TotpSecret::from_base32(secret),
    )
}

async fn login(s: &TestServer, username: &str, code: &str) -> common::Answer {
    s.send(
        Method::POST,
        "/v1/sessions",
        None,
        Some(json!({"username": username, "password": PASSWORD, "totp": code})),
    )
    .await
}

/// Now, in Unix seconds, away from a TOTP step boundary.
async fn settled_now() -> u64 {
    loop {
        let t = chrono::Utc::now().timestamp() as u64;
        if (2..8).contains(&(t % 30)) {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

store_test!(admin_totp_secrets_are_sealed_at_rest_and_log_in_after_restart);
async fn admin_totp_secrets_are_sealed_at_rest_and_log_in_after_restart(mut s: TestServer) {
    let (id, secret) = enrol(&s, "sealed-alice").await;
    let db = raw(&s).await;
    let (plain, ciphertext) = db.admin_totp(&id).await;
    assert_eq!(plain, "", "no plaintext column value");
    assert!(ciphertext.is_some(), "sealed");
    assert_not_in_sqlite_files(&s, secret.base32().as_bytes());
    if let Raw::Pg(p) = &db {
        let row: String =
            sqlx::query_scalar("SELECT row_to_json(a)::text FROM admins a WHERE id::text = $1")
                .bind(&id)
                .fetch_one(p)
                .await
                .unwrap();
        assert!(!row.contains(secret.base32()), "the secret is in the row");
    }

    // After a restart, a TOTP login works.
    s.restart(WebhookSettings::default()).await;
    let t = settled_now().await;
    login(&s, "sealed-alice", &secret.code_at(t)).await.ok(201);

    // The row as written before sealing existed: the secret in the clear.
    db.unseal_admin(&id, secret.base32()).await;
    let plain = s
        .store
        .plaintext_secrets(SealedKind::AdminTotp, 10)
        .await
        .unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(&plain[0].plaintext[..], secret.base32().as_bytes());
    // Sealed at start, and logins still work (the next step: the last one is used).
    s.restart(WebhookSettings::default()).await;
    let (plain, ciphertext) = db.admin_totp(&id).await;
    assert_eq!(plain, "", "the plaintext is cleared");
    assert!(ciphertext.is_some());
    login(&s, "sealed-alice", &secret.code_at(t + 30))
        .await
        .ok(201);
    db.close().await;
}

store_test!(a_wrong_master_key_fails_closed);
async fn a_wrong_master_key_fails_closed(mut s: TestServer) {
    let (_, secret) = enrol(&s, "sealed-bob").await;
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    let t1 = token(&s, &key).await;
    // The first token and the jobs leader's first rotation check race to make the first
    // key; exactly one of them wins.
    assert_eq!(raw(&s).await.signing_keys().await.len(), 1);
    // Another master key, without the one everything was sealed under.
    s.vault = Arc::new(Vault::new(
        Keyring::new(MasterKey::generate(), vec![]),
        VALUE_MAX_BYTES,
    ));
    s.restart(WebhookSettings::default()).await;
    let t = settled_now().await;
    let a = login(&s, "sealed-bob", &secret.code_at(t)).await;
    assert_eq!(
        a.status, 500,
        "no login with a secret that cannot be opened"
    );
    assert!(!a.body.to_string().contains(secret.base32()));
    let a = s
        .post("/v1/tokens", &key, json!({"scopes": ["orders:read"]}))
        .await;
    assert_eq!(a.status, 500, "no token signed with another key");
    // Verification needs no private key: the published keys still verify.
    verify_offline(&jwks(&s).await, &t1);
    // Nothing was changed: the rows are still sealed under the old key.
    let db = raw(&s).await;
    assert_all_sealed(&db.signing_keys().await);
    assert_eq!(db.signing_keys().await.len(), 1, "no new key in its place");
    db.close().await;
}

store_test!(master_key_rotation_rewraps_signing_keys_and_totp_secrets);
async fn master_key_rotation_rewraps_signing_keys_and_totp_secrets(mut s: TestServer) {
    let (_, secret) = enrol(&s, "sealed-carol").await;
    let ident = s.identity("svc").await;
    let (key, _) = s.key(&ident, json!({"scopes": ["orders:read"]})).await;
    let t1 = token(&s, &key).await;
    let old_ring = s.vault.ring().clone();
    let new = MasterKey::generate();
    s.vault = Arc::new(Vault::new(
        Keyring::new(new.clone(), vec![old_ring.current().clone()]),
        VALUE_MAX_BYTES,
    ));
    s.restart(WebhookSettings::default()).await;
    while sealed_secrets::rewrap_some(&*s.store, &s.vault)
        .await
        .unwrap()
        > 0
    {}
    for kind in [SealedKind::SigningKey, SealedKind::AdminTotp] {
        assert!(
            s.store
                .sealed_secrets_to_rewrap(kind, new.id(), 10)
                .await
                .unwrap()
                .is_empty(),
            "{kind:?} rewrapped"
        );
    }
    // The new key alone opens them: tokens sign with the same key, logins work.
    s.vault = Arc::new(Vault::new(Keyring::new(new, vec![]), VALUE_MAX_BYTES));
    s.restart(WebhookSettings::default()).await;
    let t2 = token(&s, &key).await;
    assert_eq!(kid(&t2), kid(&t1));
    verify_offline(&jwks(&s).await, &t2);
    let t = settled_now().await;
    login(&s, "sealed-carol", &secret.code_at(t)).await.ok(201);
}
