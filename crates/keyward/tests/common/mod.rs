//! A real `keyward serve` process for tests that need one of their own (durability,
//! cluster, outages): a free port, the `root key:` line read off its stderr, killed when
//! dropped; and clusters of them over one PostgreSQL.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub use keyward_store::testkit::free_port;
use serde_json::Value;

pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    root_key: Receiver<String>,
}

impl ServeProcess {
    /// Starts `keyward serve --listen 127.0.0.1:<free port>` with `args` after it.
    pub fn spawn<I, S>(args: I) -> ServeProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("KEYWARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("root key: ") {
                    let _ = tx.send(k.trim().to_owned());
                }
            }
        });
        ServeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            root_key: rx,
        }
    }

    /// The root key, if this process bootstrapped the store (call once it answers).
    pub fn root_key(&self) -> Option<String> {
        self.root_key.recv_timeout(Duration::from_millis(200)).ok()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node of a cluster.
pub type Node = ServeProcess;

/// The machine's Redis (`KEYWARD_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn machine_redis() -> String {
    std::env::var("KEYWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Starts a node over `database_url` (and `redis_url`), with `extra` flags, and waits
/// until it is ready; returns it and, for the node that bootstrapped the database, the
/// root key.
pub async fn serve_node(
    database_url: &str,
    redis_url: Option<&str>,
    extra: &[&str],
) -> (Node, Option<String>) {
    let dir = std::env::temp_dir(); // unused by the PostgreSQL store
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("--database-url"),
        OsStr::new(database_url),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ];
    if let Some(r) = redis_url {
        args.extend([OsStr::new("--redis-url"), OsStr::new(r)]);
    }
    args.extend(extra.iter().map(OsStr::new));
    let node = Node::spawn(args);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http
            .get(format!("{}/readyz", node.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            let root = node.root_key();
            return (node, root);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node did not come up");
}

/// Three nodes over one fresh database; the root key the first one printed.
pub async fn cluster(
    database_url: &str,
    redis_url: Option<&str>,
    extra: &[&str],
) -> (Vec<Node>, String) {
    let (first, root) = serve_node(database_url, redis_url, extra).await;
    let root = root.expect("the first node bootstraps and prints the root key");
    let mut nodes = vec![first];
    for _ in 0..2 {
        let (n, again) = serve_node(database_url, redis_url, extra).await;
        assert!(again.is_none(), "the root key is printed once per cluster");
        nodes.push(n);
    }
    (nodes, root)
}

pub async fn post(
    http: &reqwest::Client,
    node: &Node,
    path: &str,
    token: &str,
    body: Value,
) -> Value {
    http.post(format!("{}{path}", node.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `/readyz` answer (`Null` when it is not JSON).
pub async fn readyz(http: &reqwest::Client, node: &Node) -> Value {
    http.get(format!("{}/readyz", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// A new identity named `name` and a key of it with `keyward:verify`: (identity id,
/// verifier key).
pub async fn identity_and_verifier(
    http: &reqwest::Client,
    node: &Node,
    root: &str,
    name: &str,
) -> (String, String) {
    let ident = post(
        http,
        node,
        "/v1/identities",
        root,
        serde_json::json!({"name": name, "owner": "o"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let verifier = post(
        http,
        node,
        "/v1/keys",
        root,
        serde_json::json!({"identity_id": ident, "scopes": ["keyward:verify"]}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    (ident, verifier)
}

/// Revokes key `id` (`key`) on `nodes[0]` and waits until every other node answers
/// REVOKED for it, at most `limit`; returns how long that took.
pub async fn revoke_until_everywhere(
    http: &reqwest::Client,
    nodes: &[Node],
    root: &str,
    verifier: &str,
    (id, key): (&str, &str),
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    post(
        http,
        &nodes[0],
        &format!("/v1/keys/{id}/revoke"),
        root,
        serde_json::json!({}),
    )
    .await;
    for n in &nodes[1..] {
        while post(
            http,
            n,
            "/v1/verify",
            verifier,
            serde_json::json!({"key": key}),
        )
        .await["code"]
            != "REVOKED"
        {
            assert!(
                start.elapsed() < limit,
                "revocation not propagated in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    start.elapsed()
}
