//! End-to-end tests of the `keyward` binary: a real `keyward serve` on a free port and a
//! temporary data folder, driven by the real client commands. The identity and key
//! command tests also run against a PostgreSQL database of their own (`*_postgres`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");
const STARTUP: Duration = Duration::from_secs(60);

const SETTING_VARS: [&str; 10] = [
    "KEYWARD_LISTEN",
    "KEYWARD_DATA_DIR",
    "KEYWARD_DATABASE_URL",
    "KEYWARD_REDIS_URL",
    "KEYWARD_REDIS_FALLBACK",
    "KEYWARD_URL",
    "KEYWARD_TOKEN",
    "KEYWARD_CONFIG",
    "KEYWARD_LOG",
    "RUST_LOG",
];

/// The binary with no `KEYWARD_*` settings from the test's own environment, run in `cwd`
/// so a default `./keyward-data` cannot land in the source tree.
fn keyward(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in SETTING_VARS {
        cmd.env_remove(var);
    }
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.1; the status, if there was an answer.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// A running `keyward serve`, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    url: String,
    root_key: Option<String>,
    data_dir: tempfile::TempDir,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Dropped after the server is killed (the `Drop` below runs first).
    _db: Option<keyward_store::testkit::TempDatabase>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Serves a new, empty store and reads the bootstrap root key from stderr.
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, true)
    }

    /// Serves a new, empty PostgreSQL database of its own.
    fn start_postgres() -> Server {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = rt.block_on(keyward_store::testkit::TempDatabase::create());
        Server::start_with(tempfile::tempdir().unwrap(), true, Some(db))
    }

    fn start_in(data_dir: tempfile::TempDir, expect_root_key: bool) -> Server {
        Server::start_with(data_dir, expect_root_key, None)
    }

    fn start_with(
        data_dir: tempfile::TempDir,
        expect_root_key: bool,
        db: Option<keyward_store::testkit::TempDatabase>,
    ) -> Server {
        let port = free_port();
        let mut cmd = keyward(data_dir.path());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir.path());
        if let Some(db) = &db {
            cmd.args(["--database-url", &db.url]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward serve");

        // Drain stderr for the whole life of the server, so logging never blocks it.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    stderr.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }

        let mut server = Server {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            root_key: None,
            data_dir,
            stderr,
            _db: db,
        };
        let deadline = Instant::now() + STARTUP;
        if expect_root_key {
            while server.root_key.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        if let Some(key) = line.strip_prefix("root key: ") {
                            server.root_key = Some(key.trim().to_string());
                        }
                    }
                    Err(_) => panic!(
                        "no `root key:` line on stderr; stderr so far:\n{}",
                        server.stderr_text()
                    ),
                }
            }
        }
        while http_status(port, "/healthz") != Some(200) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "keyward serve exited early ({status}); stderr:\n{}",
                    server.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered 200; stderr:\n{}",
                server.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn token(&self) -> &str {
        self.root_key.as_deref().expect("root key")
    }

    /// A client command against this server, as the root key.
    fn kw(&self, args: &[&str]) -> Run {
        self.kw_with(args, |_| {})
    }

    fn kw_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
        let mut cmd = keyward(self.data_dir.path());
        cmd.args(args)
            .env("KEYWARD_URL", &self.url)
            .env("KEYWARD_TOKEN", self.token());
        tweak(&mut cmd);
        Run::of(
            cmd.output().expect("run keyward"),
            args,
            self.root_key.as_deref(),
        )
    }

    /// `kw` with `--json`, expecting success: the parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.kw(&all).ok().json()
    }
}

/// The outcome of one run of the binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Run {
    fn of(out: Output, args: &[&str], secret: Option<&str>) -> Run {
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            what: args.join(" "),
        };
        if let Some(secret) = secret {
            assert!(
                !run.stderr.contains(secret),
                "`{}` printed the credential to stderr",
                run.what
            );
        }
        run
    }

    #[track_caller]
    fn code(self, expected: i32) -> Run {
        assert_eq!(
            self.code,
            Some(expected),
            "`{}` exited {:?}, expected {expected}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn ok(self) -> Run {
        self.code(0)
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not JSON ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn identity_commands() {
    identity_commands_on(Server::start());
}

#[test]
fn identity_commands_postgres() {
    identity_commands_on(Server::start_postgres());
}

fn identity_commands_on(srv: Server) {
    let created = srv.json(&[
        "identity",
        "create",
        "--name",
        "billing-worker",
        "--owner",
        "team-billing",
        "--description",
        "nightly invoices",
        "--meta",
        r#"{"env":"test"}"#,
    ]);
    let id = s(&created["id"]).to_string();
    assert_eq!(created["name"], "billing-worker");
    assert_eq!(created["owner"], "team-billing");
    assert_eq!(created["description"], "nightly invoices");
    assert_eq!(created["meta"]["env"], "test");
    assert!(created["created_at"].is_string());

    // Human output: a table that names it.
    let human = srv
        .kw(&["identity", "create", "--name", "second", "--owner", "ops"])
        .ok();
    assert!(human.stdout.contains("second"), "{}", human.stdout);

    let list = srv.json(&["identity", "list"]);
    let items = list["items"].as_array().expect("items");
    assert!(items.iter().any(|i| i["id"] == id.as_str()));
    assert!(list.get("next_cursor").is_some());

    // Paging: one at a time, then everything.
    let page = srv.json(&["identity", "list", "--limit", "1"]);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    if let Some(cursor) = page["next_cursor"].as_str() {
        let next = srv.json(&["identity", "list", "--limit", "1", "--cursor", cursor]);
        assert_eq!(next["items"].as_array().unwrap().len(), 1);
        assert_ne!(next["items"][0]["id"], page["items"][0]["id"]);
    }
    let all = srv.json(&["identity", "list", "--all", "--limit", "1"]);
    assert!(all["items"].as_array().unwrap().len() >= 2);
    assert!(all["next_cursor"].is_null());

    let table = srv.kw(&["identity", "list"]).ok();
    assert!(table.stdout.contains("billing-worker"));
    assert!(table.stdout.contains("team-billing"));

    let shown = srv.json(&["identity", "show", &id]);
    assert_eq!(shown["id"], id.as_str());
    assert!(
        srv.kw(&["identity", "show", &id])
            .ok()
            .stdout
            .contains("nightly invoices")
    );

    let updated = srv.json(&[
        "identity",
        "update",
        &id,
        "--description",
        "hourly invoices",
        "--owner",
        "team-finance",
    ]);
    assert_eq!(updated["description"], "hourly invoices");
    assert_eq!(updated["owner"], "team-finance");
    assert_eq!(updated["name"], "billing-worker");

    // Bad usage: nothing to change, a bad id, a bad --meta, a missing flag.
    srv.kw(&["identity", "update", &id]).code(2);
    srv.kw(&["identity", "show", "not-a-uuid"]).code(2);
    srv.kw(&[
        "identity", "create", "--name", "x", "--owner", "y", "--meta", "[1]",
    ])
    .code(2);
    srv.kw(&["identity", "create", "--name", "x"]).code(2);

    // Refused by the server: unknown id (404), invalid field (400), no credential (401).
    let missing = srv
        .kw(&["identity", "show", "0190f5a0-0000-7000-8000-000000000001"])
        .code(1);
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
    let invalid = srv
        .kw(&["identity", "create", "--name", "", "--owner", "y"])
        .code(1);
    assert!(invalid.stderr.contains("400"), "{}", invalid.stderr);
    let anonymous = srv
        .kw_with(&["identity", "list"], |c| {
            c.env_remove("KEYWARD_TOKEN");
        })
        .code(1);
    assert!(anonymous.stderr.contains("401"), "{}", anonymous.stderr);

    let deleted = srv.kw(&["identity", "delete", &id]).ok();
    assert!(deleted.stdout.contains(&id), "{}", deleted.stdout);
    srv.kw(&["identity", "delete", "0190f5a0-0000-7000-8000-000000000001"])
        .code(1);
}

#[test]
fn key_commands() {
    key_commands_on(Server::start());
}

#[test]
fn key_commands_postgres() {
    key_commands_on(Server::start_postgres());
}

fn key_commands_on(srv: Server) {
    let identity = srv.json(&["identity", "create", "--name", "svc", "--owner", "me"]);
    let identity_id = s(&identity["id"]).to_string();

    // create, --json: the only answer with the key.
    let created = srv.json(&[
        "key",
        "create",
        "--identity",
        &identity_id,
        "--name",
        "ci",
        "--scope",
        "orders:read",
        "--scope",
        "billing:*",
        "--ttl",
        "30d",
        "--rate-limit",
        "default:100/60",
        "--allow-ip",
        "10.0.0.0/8",
        "--allow-ip",
        "::1",
        "--meta",
        r#"{"team":"payments"}"#,
    ]);
    let key = s(&created["key"]).to_string();
    let key_id = s(&created["id"]).to_string();
    assert!(key.starts_with("kw_"), "{key}");
    assert_eq!(created["identity_id"], identity_id.as_str());
    assert_eq!(created["name"], "ci");
    assert_eq!(
        created["scopes"],
        serde_json::json!(["orders:read", "billing:*"])
    );
    assert!(created["expires_at"].is_string());
    assert_eq!(created["rate_limits"][0]["limit"], 100);
    assert_eq!(created["rate_limits"][0]["window_seconds"], 60);
    assert_eq!(created["ip_allowlist"].as_array().unwrap().len(), 2);
    assert!(key.starts_with(s(&created["start"])));

    // create, human: the key, prominently, and the warning.
    let human = srv
        .kw(&[
            "key",
            "create",
            "--identity",
            &identity_id,
            "--prefix",
            "kw_test",
        ])
        .ok();
    assert!(human.stdout.contains("shown only once"), "{}", human.stdout);
    let human_key = human
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kw_test_"))
        .expect("the key on a line of its own")
        .to_string();

    // list and show never hold the key.
    let list = srv.json(&["key", "list", "--identity", &identity_id]);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|k| k.get("key").is_none()));
    assert!(!list.to_string().contains(&key));
    let all = srv.json(&["key", "list", "--all", "--limit", "1"]);
    assert!(all["items"].as_array().unwrap().len() >= 3); // + the root key
    let shown = srv.json(&["key", "show", &key_id]);
    assert_eq!(shown["id"], key_id.as_str());
    assert!(shown.get("key").is_none());
    let table = srv.kw(&["key", "show", &key_id]).ok();
    assert!(!table.stdout.contains(&key));
    assert!(table.stdout.contains("orders:read"));
    let table = srv.kw(&["key", "list"]).ok();
    assert!(table.stdout.contains(&key_id) && !table.stdout.contains(&key));

    // verify: valid (argv and stdin), and each refusal exits 1.
    let ok = srv.json(&[
        "key",
        "verify",
        &key,
        "--ip",
        "10.1.2.3",
        "--scope",
        "orders:read",
    ]);
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["code"], "VALID");
    assert_eq!(ok["key_id"], key_id.as_str());
    // `-`: the key from stdin, so it is not in argv.
    let mut child = keyward(srv.data_dir.path())
        .args(["key", "verify", "-", "--ip", "::1", "--json"])
        .env("KEYWARD_URL", &srv.url)
        .env("KEYWARD_TOKEN", srv.token())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = Run::of(
        child.wait_with_output().unwrap(),
        &["verify -"],
        Some(srv.token()),
    )
    .ok();
    assert_eq!(out.json()["code"], "VALID");
    srv.kw(&[
        "key",
        "verify",
        &key,
        "--ip",
        "10.9.9.9",
        "--permission",
        "orders:read AND (billing:read OR x:y)",
    ])
    .ok();

    let denied = srv
        .kw(&[
            "key",
            "verify",
            &key,
            "--ip",
            "10.1.2.3",
            "--scope",
            "admin:all",
            "--json",
        ])
        .code(1);
    assert_eq!(denied.json()["valid"], false);
    assert_eq!(denied.json()["code"], "INSUFFICIENT_SCOPE");
    let outside = srv
        .kw(&["key", "verify", &key, "--ip", "192.0.2.1", "--json"])
        .code(1);
    assert_eq!(outside.json()["code"], "IP_NOT_ALLOWED");
    let malformed = srv.kw(&["key", "verify", "kw_nope"]).code(1);
    assert!(
        malformed.stdout.contains("MALFORMED"),
        "{}",
        malformed.stdout
    );
    srv.kw(&["key", "verify", "x", "--ip", "not-an-ip"]).code(2);

    // update: quota, expiry, scopes, enabled.
    let upd = srv.json(&[
        "key",
        "update",
        &key_id,
        "--remaining",
        "5",
        "--name",
        "ci-2",
    ]);
    assert_eq!(upd["remaining"], 5);
    assert_eq!(upd["name"], "ci-2");
    let upd = srv.json(&[
        "key",
        "update",
        &key_id,
        "--clear-remaining",
        "--clear-expiry",
    ]);
    assert!(upd["remaining"].is_null());
    assert!(upd["expires_at"].is_null());
    let upd = srv.json(&["key", "update", &key_id, "--ttl", "1h"]);
    assert!(upd["expires_at"].is_string());
    let upd = srv.json(&["key", "update", &key_id, "--scope", "orders:write"]);
    assert_eq!(upd["scopes"], serde_json::json!(["orders:write"]));
    let upd = srv.json(&["key", "update", &key_id, "--clear-allow-ips"]);
    assert_eq!(upd["ip_allowlist"], serde_json::json!([]));
    srv.json(&["key", "update", &key_id, "--disable"]);
    let disabled = srv.kw(&["key", "verify", &key, "--json"]).code(1);
    assert_eq!(disabled.json()["code"], "DISABLED");
    let upd = srv.json(&["key", "update", &key_id, "--enable"]);
    assert_eq!(upd["enabled"], true);
    srv.kw(&["key", "verify", &key]).ok();
    srv.kw(&["key", "update", &key_id]).code(2);
    srv.kw(&[
        "key",
        "update",
        &key_id,
        "--remaining",
        "1",
        "--clear-remaining",
    ])
    .code(2);
    srv.kw(&["key", "update", &key_id, "--rate-limit", "nolimit"])
        .code(2);

    // rotate with grace: the new key works, and the old one until the grace ends.
    let rotated = srv.json(&["key", "rotate", &key_id, "--grace", "1h"]);
    let new_key = s(&rotated["key"]).to_string();
    let new_id = s(&rotated["id"]).to_string();
    assert_ne!(new_key, key);
    assert_eq!(rotated["previous"]["id"], key_id.as_str());
    assert!(rotated["previous"]["expires_at"].is_string());
    srv.kw(&["key", "verify", &new_key]).ok();
    srv.kw(&["key", "verify", &key]).ok();
    let human = srv.kw(&["key", "rotate", &new_id]).ok();
    assert!(human.stdout.contains("shown only once"), "{}", human.stdout);
    // Rotated without grace: the previous key stops at once.
    let stopped = srv.kw(&["key", "verify", &new_key, "--json"]).code(1);
    assert_eq!(stopped.json()["code"], "REVOKED");

    // revoke
    let human_id = list_key_id(&srv, &identity_id, "kw_test");
    let revoked = srv.json(&["key", "revoke", &human_id]);
    assert!(revoked["revoked_at"].is_string());
    let refused = srv.kw(&["key", "verify", &human_key, "--json"]).code(1);
    assert_eq!(refused.json()["code"], "REVOKED");

    // create refused by the server: unknown identity.
    srv.kw(&[
        "key",
        "create",
        "--identity",
        "0190f5a0-0000-7000-8000-000000000001",
    ])
    .code(1);
    // bad values are usage errors
    srv.kw(&[
        "key",
        "create",
        "--identity",
        &identity_id,
        "--ttl",
        "tomorrow",
    ])
    .code(2);
    srv.kw(&[
        "key",
        "create",
        "--identity",
        &identity_id,
        "--rate-limit",
        "a:1",
    ])
    .code(2);
    srv.kw(&["key", "rotate", &key_id, "--grace", "-1"]).code(2);

    // Deleting the identity revokes the rest of its keys.
    let fresh = srv.json(&["key", "create", "--identity", &identity_id]);
    srv.kw(&["key", "verify", s(&fresh["key"])]).ok();
    srv.kw(&["identity", "delete", &identity_id]).ok();
    srv.kw(&["key", "verify", s(&fresh["key"])]).code(1);

    // The audit log saw all of it.
    let audit = srv.json(&["audit", "list"]);
    assert!(!audit["items"].as_array().unwrap().is_empty());
    let first = &audit["items"][0];
    assert!(first["seq"].is_i64() && first["action"].is_string());
    let everything = srv.json(&["audit", "list", "--all"]);
    assert!(
        everything["items"].as_array().unwrap().len() >= audit["items"].as_array().unwrap().len()
    );
    srv.kw(&["audit", "list"]).ok();
    assert!(!srv.kw(&["audit", "list", "--json"]).stdout.contains(&key));
}

fn list_key_id(srv: &Server, identity_id: &str, prefix: &str) -> String {
    let list = srv.json(&["key", "list", "--identity", identity_id, "--all"]);
    let found = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix)
        .unwrap_or_else(|| panic!("no key with prefix {prefix}: {list}"));
    s(&found["id"]).to_string()
}

#[test]
fn settings_from_env_file_and_flags() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = keyward(dir.path());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::of(cmd.output().unwrap(), args, srv.root_key.as_deref())
    };

    // Environment only.
    run(
        &["identity", "list"],
        &[("KEYWARD_URL", &srv.url), ("KEYWARD_TOKEN", srv.token())],
    )
    .ok();

    // File only, by --config and by KEYWARD_CONFIG.
    let file = dir.path().join("keyward.toml");
    std::fs::write(
        &file,
        format!("url = \"{}\"\ntoken = \"{}\"\n", srv.url, srv.token()),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();
    run(&["identity", "list", "--config", file_s], &[]).ok();
    run(&["identity", "list"], &[("KEYWARD_CONFIG", file_s)]).ok();

    // Precedence: flag > env > file.
    run(
        &["identity", "list", "--config", file_s],
        &[("KEYWARD_URL", &dead)],
    )
    .code(1);
    run(
        &["identity", "list", "--config", file_s, "--url", &srv.url],
        &[("KEYWARD_URL", &dead)],
    )
    .ok();
    let unreachable = run(
        &["identity", "list", "--config", file_s, "--url", &dead],
        &[],
    )
    .code(1);
    assert!(
        unreachable.stderr.contains("cannot reach"),
        "{}",
        unreachable.stderr
    );
    run(
        &["identity", "list", "--config", file_s],
        &[("KEYWARD_TOKEN", "kw_wrong")],
    )
    .code(1);

    // A bad file, a missing file, a bad URL: bad usage.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "url = \"http://x\"\ncolour = \"red\"\n").unwrap();
    let e = run(
        &["identity", "list", "--config", bad.to_str().unwrap()],
        &[],
    )
    .code(2);
    assert!(e.stderr.contains("colour"), "{}", e.stderr);
    run(
        &["identity", "list"],
        &[(
            "KEYWARD_CONFIG",
            dir.path().join("nope.toml").to_str().unwrap(),
        )],
    )
    .code(2);
    run(&["identity", "list", "--url", "not a url"], &[]).code(2);

    // serve settings: a bad listen address is bad usage.
    // (Values that fail without a name lookup, so the test needs no resolver.)
    run(&["serve", "--listen", "nowhere"], &[]).code(2);
    run(&["serve"], &[("KEYWARD_LISTEN", "127.0.0.1:notaport")]).code(2);
    run(&["init", "--listen", "127.0.0.1:70000"], &[]).code(2);
}

#[test]
fn init_then_serve() {
    let data = tempfile::tempdir().unwrap();
    let init = Run::of(
        keyward(data.path())
            .args(["init", "--json", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap(),
        &["init --json"],
        None,
    )
    .ok();
    let out = init.json();
    let root_key = s(&out["root_key"]).to_string();
    assert!(root_key.starts_with("kw_"), "{root_key}");
    assert_eq!(out.as_object().unwrap().len(), 1);

    // Again: refused, and the key is not shown again.
    let again = Run::of(
        keyward(data.path())
            .args(["init", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap(),
        &["init"],
        None,
    )
    .code(1);
    assert!(!again.stdout.contains(&root_key) && !again.stderr.contains(&root_key));
    assert!(again.stderr.contains("already"), "{}", again.stderr);

    // Human init on another store: `root key: <key>` on stdout.
    let other = tempfile::tempdir().unwrap();
    let human = Run::of(
        keyward(other.path()).args(["init"]).output().unwrap(),
        &["init (default data dir)"],
        None,
    )
    .ok();
    assert!(
        human.stdout.lines().any(|l| l.starts_with("root key: kw_")),
        "{}",
        human.stdout
    );
    assert!(other.path().join("keyward-data").exists());

    // Serving the initialised store prints no root key, and the init key works.
    let mut srv = Server::start_in(data, false);
    assert!(
        !srv.stderr_text().contains("root key:"),
        "{}",
        srv.stderr_text()
    );
    srv.root_key = Some(root_key);
    srv.kw(&["identity", "list"]).ok();
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut srv = Server::start();
    let pid = srv.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20s after SIGTERM; stderr:\n{}",
            srv.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}; stderr:\n{}",
        srv.stderr_text()
    );
    assert_eq!(http_status(srv.port, "/healthz"), None);
}

#[test]
fn usage_errors_and_unreachable_server_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Run::of(keyward(dir.path()).args(args).output().unwrap(), args, None);
    run(&[]).code(2);
    run(&["frobnicate"]).code(2);
    run(&["key", "create"]).code(2);
    run(&["key", "verify"]).code(2);
    run(&["key", "show", "nope"]).code(2);
    run(&["--help"]).ok();
    run(&["key", "create", "--help"]).ok();
    run(&["--version"]).ok();

    let dead = format!("http://127.0.0.1:{}", free_port());
    let e = run(&["identity", "list", "--url", &dead, "--token", "kw_secret"]).code(1);
    assert!(e.stderr.contains("cannot reach"), "{}", e.stderr);
    assert!(!e.stderr.contains("kw_secret"), "{}", e.stderr);

    // `key verify -` with nothing on stdin is bad usage.
    run(&["key", "verify", "-", "--url", &dead]).code(2);
}

/// `init` on PostgreSQL: the root key once, then refused; nodes serving it print none.
#[test]
fn init_then_serve_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(keyward_store::testkit::TempDatabase::create());
    let dir = tempfile::tempdir().unwrap();
    let init = |args: &[&str]| {
        Run::of(
            keyward(dir.path())
                .args(args)
                .args(["--database-url", &db.url])
                .output()
                .unwrap(),
            args,
            None,
        )
    };
    let out = init(&["init", "--json"]).ok().json();
    let root_key = s(&out["root_key"]).to_string();
    let again = init(&["init"]).code(1);
    assert!(!again.stdout.contains(&root_key) && !again.stderr.contains(&root_key));

    let mut srv = Server::start_with(tempfile::tempdir().unwrap(), false, Some(db));
    assert!(!srv.stderr_text().contains("root key:"));
    srv.root_key = Some(root_key);
    srv.kw(&["identity", "list"]).ok();
}

#[test]
fn usage_and_posture_commands() {
    let srv = Server::start();
    let identity = srv.json(&["identity", "create", "--name", "busy", "--owner", "me"]);
    let identity_id = s(&identity["id"]).to_string();
    let created = srv.json(&[
        "key",
        "create",
        "--identity",
        &identity_id,
        "--scope",
        "orders:read",
    ]);
    let (key, key_id) = (
        s(&created["key"]).to_string(),
        s(&created["id"]).to_string(),
    );
    for _ in 0..3 {
        srv.kw(&["key", "verify", &key, "--ip", "10.0.0.7"]).ok();
    }
    // The usage writer flushes every second.
    let mut usage = Value::Null;
    for _ in 0..50 {
        usage = srv.json(&["usage", "--key", &key_id, "--bucket", "minute", "--top"]);
        if usage["total"]["VALID"] == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(usage["total"]["VALID"], 3, "{usage}");
    assert_eq!(usage["top"]["sources"][0]["ip"], "10.0.0.7");
    let table = srv.kw(&["usage", "--identity", &identity_id, "--top"]).ok();
    assert!(table.stdout.contains("VALID"), "{}", table.stdout);
    assert!(table.stdout.contains('█'), "no chart:\n{}", table.stdout);
    assert!(table.stdout.contains("10.0.0.7"), "{}", table.stdout);
    // Neither or both of --key and --identity is bad usage.
    srv.kw(&["usage"]).code(2);

    let report = srv.json(&["report", "posture", "--identity", &identity_id]);
    let findings = &report["identities"][0]["findings"];
    let kinds: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(&f["kind"]))
        .collect();
    assert_eq!(kinds, ["NO_EXPIRY", "NO_IP_RESTRICTION"], "{report}");
    assert_eq!(report["identities"][0]["score"], 85);
    let table = srv.kw(&["report", "posture"]).ok();
    assert!(table.stdout.contains("ADMIN_KEY"), "{}", table.stdout); // the root key
    assert!(!table.stdout.contains(&key));

    // Retention settings are checked before serving.
    let dir = tempfile::tempdir().unwrap();
    let bad = keyward(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--usage-retention-days",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage-retention-days"));
}
