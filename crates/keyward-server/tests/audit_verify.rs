//! `GET /v1/audit/verify` over HTTP, on both stores, with a checkpoint key: an intact log
//! verifies, a tampered one names its first bad record, the route needs its scope, and
//! a server signs the head of the log when it stops.

use std::sync::Arc;

use keyward_core::audit_chain::CheckpointSigner;
use keyward_server::{Security, ServerConfig, audit_signing};
use keyward_store::Store;
use keyward_store::testkit::TempDatabase;
use serde_json::{Value, json};

struct Node {
    base: String,
    root: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    signer: Arc<CheckpointSigner>,
    raw_url: String,
    server: keyward_server::RunningServer,
    _dir: tempfile::TempDir,
    _db: Option<TempDatabase>,
}

async fn start(postgres: bool) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let db = if postgres {
        Some(TempDatabase::create().await)
    } else {
        None
    };
    let data = dir.path().join("data");
    let cfg = ServerConfig {
        database_url: db.as_ref().map(|d| d.url.clone()),
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.clone())
    };
    let store = keyward_server::open_store(&cfg).await.unwrap();
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    // The embedded store's default key file, created on first use.
    let signer = Arc::new(audit_signing::load_or_create(&dir.path().join("audit.key")).unwrap());
    let security = Security {
        audit_signer: Some(signer.clone()),
        ..Security::default()
    };
    let server = keyward_server::start_with_parts(
        store.clone(),
        keyward_server::Parts {
            security,
            ..Default::default()
        },
        cfg.listen,
    )
    .await
    .unwrap();
    let raw_url = match &db {
        Some(db) => db.url.clone(),
        None => format!(
            "sqlite://{}",
            data.join(keyward_store::sqlite::DB_FILE).display()
        ),
    };
    Node {
        base: format!("http://{}", server.addr),
        root: root.as_str().to_owned(),
        http: reqwest::Client::new(),
        store,
        signer,
        raw_url,
        server,
        _dir: dir,
        _db: db,
    }
}

impl Node {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let a = r.send().await.unwrap();
        let status = a.status().as_u16();
        (status, a.json().await.unwrap_or(Value::Null))
    }

    async fn verify(&self, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, "/v1/audit/verify", token, None)
            .await
    }

    async fn tamper(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.raw_url.starts_with("sqlite:") {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.raw_url)
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        } else {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.raw_url)
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }

    /// A key of a new identity with these scopes.
    async fn key(&self, scopes: Value) -> String {
        let (st, ident) = self
            .call(
                reqwest::Method::POST,
                "/v1/identities",
                &self.root,
                Some(json!({"name": uuid::Uuid::now_v7().to_string(), "owner": "ops"})),
            )
            .await;
        assert_eq!(st, 201, "{ident}");
        let (st, key) = self
            .call(
                reqwest::Method::POST,
                "/v1/keys",
                &self.root,
                Some(json!({"identity_id": ident["id"], "scopes": scopes})),
            )
            .await;
        assert_eq!(st, 201, "{key}");
        key["key"].as_str().unwrap().to_owned()
    }
}

async fn verifies_and_names_the_first_bad_record(postgres: bool) {
    let n = start(postgres).await;
    let reader = n.key(json!(["keyward:audit:read"])).await;
    let other = n.key(json!(["keyward:keys:read"])).await;

    let (st, body) = n.verify(&reader).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["signatures_checked"], true);
    assert!(body["checked"].as_u64().unwrap() >= 5, "{body}");
    assert!(body.get("first_bad_seq").is_none());

    let (st, body) = n.verify(&other).await;
    assert_eq!(st, 403, "{body}");

    // A checkpoint pins the tail: cutting it off is caught.
    audit_signing::sign_once(&*n.store, &n.signer).await;
    let (_, body) = n.verify(&n.root).await;
    assert_eq!(
        (body["ok"].as_bool(), body["checkpoints"].as_u64()),
        (Some(true), Some(1)),
        "{body}"
    );
    let last = n
        .store
        .list_audit(None, 1000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    n.tamper(&format!("DELETE FROM audit_log WHERE seq = {last}"))
        .await;
    let (st, body) = n.verify(&n.root).await;
    assert_eq!(st, 200);
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["first_bad_seq"], last, "{body}");
    assert!(body["reason"].is_string());

    // An edited record further back is the first bad one.
    n.tamper("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        .await;
    let (_, body) = n.verify(&n.root).await;
    assert_eq!(body["first_bad_seq"], 2, "{body}");
    n.server.stop().await.unwrap();
}

#[tokio::test]
async fn verifies_and_names_the_first_bad_record_sqlite() {
    verifies_and_names_the_first_bad_record(false).await;
}

#[tokio::test]
async fn verifies_and_names_the_first_bad_record_postgres() {
    verifies_and_names_the_first_bad_record(true).await;
}

/// A stopping server signs the head of the log, so a tail cut after it is caught.
#[tokio::test]
async fn a_stopping_server_signs_the_head() {
    let n = start(false).await;
    n.key(json!(["orders:read"])).await;
    let store = n.store.clone();
    let signer = n.signer.clone();
    n.server.stop().await.unwrap();
    let cp = store
        .last_audit_checkpoint()
        .await
        .unwrap()
        .expect("a checkpoint");
    let head = store
        .list_audit(None, 1000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    assert_eq!(cp.seq, head);
    assert_eq!(cp.key_id, signer.key_id());
}

/// `--audit-log-file`: every record, once, in order, as JSON lines; a restarted server
/// carries on where the file ends.
#[tokio::test]
async fn the_log_streams_to_a_json_lines_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    let store = keyward_server::open_store(&cfg).await.unwrap();
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let http = reqwest::Client::new();
    for round in 0..2 {
        let security = Security {
            audit_log_file: Some(file.clone()),
            ..Security::default()
        };
        let server = keyward_server::start_with_parts(
            store.clone(),
            keyward_server::Parts {
                security,
                ..Default::default()
            },
            cfg.listen,
        )
        .await
        .unwrap();
        let a = http
            .post(format!("http://{}/v1/identities", server.addr))
            .bearer_auth(root.as_str())
            .json(&json!({"name": format!("svc-{round}"), "owner": "ops"}))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 201);
        server.stop().await.unwrap();
    }
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stored = store.list_audit(None, 1000).await.unwrap();
    assert_eq!(lines.len(), stored.len());
    for (line, r) in lines.iter().zip(&stored) {
        assert_eq!(line["seq"], r.seq);
        assert_eq!(line["action"], r.entry.action.as_str());
    }
}
