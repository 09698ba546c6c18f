//! A real Keyward server on a free port, over a real store (SQLite in a temporary
//! folder, or a PostgreSQL database of its own), and a small HTTP helper. Tests talk to
//! it over TCP like any client would.
//!
//! Every test runs on both stores: write it as `async fn name(s: TestServer)` preceded
//! by `store_test!(name);` (or `store_test!(multi_thread name);`), which makes the two
//! tests `name::sqlite` and `name::postgres`. PostgreSQL is found as
//! `KEYWARD_TEST_POSTGRES_URL` says (see `keyward_store::testkit::TempDatabase`).

#![allow(dead_code)]

use std::sync::Arc;

use keyward_server::redis_limits::RedisDown;
use keyward_server::{RunningServer, ServerConfig};
use keyward_store::testkit::TempDatabase;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Declares a test that runs once on each store: `store_test!(name)` (a current-thread
/// runtime) or `store_test!(multi_thread name)` (four workers), for an
/// `async fn name(s: TestServer)` in scope.
#[allow(unused_macros)] // not every test file uses it
macro_rules! store_test {
    ($name:ident) => {
        store_test!(@ $name, #[tokio::test]);
    };
    (multi_thread $name:ident) => {
        store_test!(@ $name, #[tokio::test(flavor = "multi_thread", worker_threads = 4)]);
    };
    (@ $name:ident, #[$test:meta]) => {
        mod $name {
            use crate::common::{Backend, TestServer};

            #[$test]
            async fn sqlite() {
                super::$name(TestServer::start_with(Backend::Sqlite).await).await;
            }

            #[$test]
            async fn postgres() {
                super::$name(TestServer::start_with(Backend::Postgres).await).await;
            }
        }
    };
}

/// The store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub base: String,
    pub root: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn keyward_store::Store>,
    pub backend: Backend,
    /// The PostgreSQL database, for `Backend::Postgres`.
    pub database_url: Option<String>,
    /// Redis for shared rate limits, and what to do when it is down.
    pub redis: Option<(String, RedisDown)>,
    /// The vault's master keys (every test server has the vault on).
    pub vault: Arc<keyward_server::vault::Vault>,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
    /// Dropped last: drops the database, with any connection left to it.
    _db: Option<TempDatabase>,
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Answer {
    /// Asserts an RFC 9457 problem with this status; returns its body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "not problem+json: {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].is_string() && self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
        &self.body
    }

    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        &self.body
    }
}

impl TestServer {
    /// A server on the embedded store.
    pub async fn start() -> TestServer {
        Self::start_with(Backend::Sqlite).await
    }

    pub async fn start_with(backend: Backend) -> TestServer {
        Self::start_full(backend, None).await
    }

    /// A server whose rate limits are shared through Redis at `redis.0`.
    pub async fn start_full(backend: Backend, redis: Option<(String, RedisDown)>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TempDatabase::create().await),
        };
        let cfg = ServerConfig {
            database_url: db.as_ref().map(|db| db.url.clone()),
            redis_url: redis.as_ref().map(|r| r.0.clone()),
            redis_down: redis.as_ref().map(|r| r.1).unwrap_or_default(),
            ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"))
        };
        let store = keyward_server::open_store(&cfg).await.unwrap();
        let root = keyward_server::bootstrap(&*store)
            .await
            .unwrap()
            .expect("fresh store");
        let limits = keyward_server::open_redis(&cfg).unwrap();
        let vault = Arc::new(keyward_server::vault::Vault::new(
            keyward_core::envelope::Keyring::new(
                keyward_core::envelope::MasterKey::generate(),
                vec![],
            ),
            keyward_server::vault::VALUE_MAX_BYTES,
        ));
        let parts = keyward_server::Parts {
            redis: limits,
            vault: Some(vault.clone()),
            ..Default::default()
        };
        let server = keyward_server::start_with_parts(store.clone(), parts, cfg.listen)
            .await
            .unwrap();
        TestServer {
            vault,
            base: format!("http://{}", server.addr),
            root: root.as_str().to_owned(),
            http: reqwest::Client::new(),
            store,
            backend,
            database_url: cfg.database_url,
            redis,
            server: Some(server),
            _dir: dir,
            _db: db,
        }
    }

    /// Another node of the same cluster: a second server, with a store of its own, on
    /// this one's PostgreSQL database (which stays owned by this one).
    pub async fn another_node(&self) -> TestServer {
        let url = self.database_url.clone().expect("a PostgreSQL test server");
        let store: Arc<dyn keyward_store::Store> =
            Arc::new(keyward_store::PgStore::open(&url).await.unwrap());
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), "unused".into());
        if let Some((url, down)) = &self.redis {
            cfg.redis_url = Some(url.clone());
            cfg.redis_down = *down;
        }
        let limits = keyward_server::open_redis(&cfg).unwrap();
        let parts = keyward_server::Parts {
            redis: limits,
            vault: Some(self.vault.clone()),
            ..Default::default()
        };
        let server = keyward_server::start_with_parts(store.clone(), parts, cfg.listen)
            .await
            .unwrap();
        TestServer {
            vault: self.vault.clone(),
            base: format!("http://{}", server.addr),
            root: self.root.clone(),
            http: reqwest::Client::new(),
            store,
            backend: Backend::Postgres,
            database_url: Some(url),
            redis: self.redis.clone(),
            server: Some(server),
            _dir: tempfile::tempdir().unwrap(),
            _db: None,
        }
    }

    /// A server with these webhook settings (for the webhook tests).
    pub async fn start_webhooks(
        backend: Backend,
        webhooks: keyward_server::webhooks::WebhookSettings,
    ) -> TestServer {
        let mut s = Self::start_with(backend).await;
        s.restart(webhooks).await;
        s
    }

    /// Stops the server and starts another on the same store, with these webhook
    /// settings: a restart.
    pub async fn restart(&mut self, webhooks: keyward_server::webhooks::WebhookSettings) {
        self.restart_with_parts(keyward_server::Parts {
            webhooks,
            ..Default::default()
        })
        .await;
    }

    /// Stops the server and starts another on the same store with these parts (the
    /// vault is kept): a restart with other settings.
    pub async fn restart_with_parts(&mut self, parts: keyward_server::Parts) {
        self.shutdown().await;
        let parts = keyward_server::Parts {
            vault: Some(self.vault.clone()),
            ..parts
        };
        let server = keyward_server::start_with_parts(
            self.store.clone(),
            parts,
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// The embedded store's data folder (`Backend::Sqlite`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Stops the server (as a node that goes away) but keeps its database.
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }

    /// The Prometheus exposition at `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Self::answer(resp).await
    }

    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::answer(req.send().await.unwrap()).await
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Creates an identity as root; returns its id.
    pub async fn identity(&self, name: &str) -> String {
        let a = self
            .post(
                "/v1/identities",
                &self.root,
                json!({"name": name, "owner": "team-a"}),
            )
            .await;
        a.ok(201)["id"].as_str().unwrap().to_owned()
    }

    /// Creates a key as root with extra fields; returns (key, id).
    pub async fn key(&self, identity: &str, extra: Value) -> (String, String) {
        let mut body = json!({"identity_id": identity});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let a = self.post("/v1/keys", &self.root, body).await;
        let b = a.ok(201);
        (
            b["key"].as_str().unwrap().to_owned(),
            b["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A verifier credential (`keyward:verify`).
    pub async fn verifier(&self) -> String {
        let id = self
            .identity(&format!("verifier-{}", uuid::Uuid::now_v7()))
            .await;
        self.key(&id, json!({"scopes": ["keyward:verify"]})).await.0
    }

    /// Verifies `key` with extra request fields; returns the answer body.
    pub async fn verify(&self, verifier: &str, key: &str, extra: Value) -> Value {
        let mut body = json!({"key": key});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.post("/v1/verify", verifier, body)
            .await
            .ok(200)
            .clone()
    }
}

/// Polls `path` until `done` holds for the answer (usage reaches the store within a
/// second or so).
pub async fn eventually(
    s: &TestServer,
    path: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..50 {
        last = s.get(path, token).await.ok(200).clone();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never reached the expected state; last answer: {last}");
}
