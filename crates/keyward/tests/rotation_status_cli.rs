//! `keyward key rotation-status ID` through the real binary against a real
//! `keyward serve` (embedded store): the table, `--json`, and exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

struct Server {
    child: Child,
    url: String,
    root: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("KEYWARD_MASTER_KEY")
            .env_remove("KEYWARD_MASTER_KEY_FILE")
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
        let root = rx.recv_timeout(Duration::from_secs(60)).expect("root key");
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{}/healthz", s.url)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn api(&self, token: &str, path: &str, body: Value) -> Value {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status();
        let v = resp.json::<Value>().unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// `keyward key rotation-status ARGS...`: (exit code, stdout).
    fn status(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(BIN)
            .args(["key", "rotation-status"])
            .args(args)
            .env("KEYWARD_URL", &self.url)
            .env("KEYWARD_TOKEN", &self.root)
            .env_remove("KEYWARD_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rotation_status_table_json_and_exit_codes() {
    let s = Server::start();
    let root = s.root.clone();
    let ident = s.api(
        &root,
        "/v1/identities",
        json!({"name": "cli", "owner": "t"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = s.api(&root, "/v1/keys", json!({"identity_id": ident}));
    let (old_key, old_id) = (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    );
    let rotated = s.api(
        &root,
        &format!("/v1/keys/{old_id}/rotate"),
        json!({"grace_seconds": 3600}),
    );
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        s.api(
            &root,
            "/v1/verify",
            json!({"key": old_key, "ip": "10.9.0.1"}),
        );
    }

    // Usage is written in batches: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (code, out) = s.status(&[&old_id, "--json"]);
        assert_eq!(code, 0, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["previous"][0]["sources"][0]["count"] == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "no sources: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["current"]["id"], new_id);
    assert_eq!(status["previous"][0]["id"], old_id);
    assert_eq!(status["previous"][0]["sources"][0]["ip"], "10.9.0.1");

    let (code, table) = s.status(&[&new_id]);
    assert_eq!(code, 0);
    assert!(table.contains(&format!("current key: {new_id}")), "{table}");
    assert!(
        table.contains(&old_id) && table.contains("10.9.0.1"),
        "{table}"
    );
    assert!(!table.contains(&old_key), "no key material");

    let (code, _) = s.status(&[&uuid::Uuid::new_v4().to_string()]);
    assert_eq!(code, 1, "an unknown key is refused");
    let (code, _) = s.status(&["not-a-uuid"]);
    assert_eq!(code, 2, "a usage error");
}
