//! Secrets Keyward must recover are sealed at rest, on both stores: a webhook's signing
//! secret is not in the SQLite file or the PostgreSQL row, rows stored in the clear
//! before sealing are sealed at startup, a master key rotation rewraps them, and with
//! no master key a new webhook is refused (503).

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
