//! The vault through the real binary: `keyward secret ...`, `keyward run` with its
//! signals and exit codes, and scheduled rotation delivered to a consumer under
//! `keyward run --watch`. The server is a real `keyward serve` whose whole stderr (at
//! debug level) is kept, to check no secret value is ever logged.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
    root: String,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("KEYWARD_MASTER_KEY")
            .env_remove("KEYWARD_MASTER_KEY_FILE")
            .env("KEYWARD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("root key: ") {
                    let _ = tx.send(k.trim().to_owned());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let root = rx.recv_timeout(Duration::from_secs(60)).expect("root key");
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{}/healthz", s.url)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The binary as a client of this server, with `token`.
    fn cli(&self, token: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("KEYWARD_URL", &self.url)
            .env("KEYWARD_TOKEN", token)
            .env_remove("KEYWARD_CONFIG")
            .current_dir(self.dir.path());
        c
    }

    fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.root);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status();
        let v = resp.json::<Value>().unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    fn verify(&self, key: &str) -> String {
        self.api(
            reqwest::Method::POST,
            "/v1/verify",
            Some(json!({"key": key})),
        )["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

#[test]
fn secret_commands_and_no_value_anywhere() {
    let s = Server::start();
    // The embedded store made its own master key, loudly, with mode 0600.
    assert!(
        s.log
            .lock()
            .unwrap()
            .contains("WARNING: no master key was given")
    );
    let key_file = s.data_dir().join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let value = format!("pw-{}", uuid::Uuid::now_v7().simple());
    let mut put = s.cli(&s.root);
    put.args(["secret", "put", "app/db"]);
    let out = with_stdin(put, &format!("{value}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 1"));

    let file = s.dir.path().join("value.txt");
    std::fs::write(&file, format!("{value}-2\n")).unwrap();
    let out = s
        .cli(&s.root)
        .args(["secret", "put", "app/db", "--from-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());

    // From argv only when forced.
    let out = s
        .cli(&s.root)
        .args(["secret", "put", "app/x", "--value", "v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = s
        .cli(&s.root)
        .args([
            "secret",
            "put",
            "app/x",
            "--value",
            "argv-value",
            "--allow-argv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());

    let out = s
        .cli(&s.root)
        .args(["secret", "get", "app/db"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{value}-2\n"));
    let out = s
        .cli(&s.root)
        .args(["--json", "secret", "get", "app/db", "--version", "1"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["value"], value.as_str());
    assert_eq!(v["version"], 1);
    let out = s
        .cli(&s.root)
        .args(["secret", "get", "app/db", "--version", "9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = s
        .cli(&s.root)
        .args(["secret", "get", "a//b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("path"));

    let out = s
        .cli(&s.root)
        .args(["secret", "list", "--prefix", "app/"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("app/db") && table.contains("app/x"),
        "{table}"
    );
    assert!(!table.contains(&value));
    let out = s
        .cli(&s.root)
        .args(["secret", "delete", "app/x"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = s
        .cli(&s.root)
        .args(["secret", "delete", "app/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // Nowhere in the logs, the audit log, or the data folder.
    let audit = s
        .api(reqwest::Method::GET, "/v1/audit?limit=1000", None)
        .to_string();
    assert!(!audit.contains(&value) && audit.contains("secret.read"));
    assert!(!s.log.lock().unwrap().contains(&value));
    for e in std::fs::read_dir(s.data_dir()).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the value",
            path.display()
        );
    }
}

fn run_cmd(s: &Server, args: &[&str], script: &str) -> Command {
    let mut c = s.cli(&s.root);
    c.arg("run").args(args).args(["--", "sh", "-c", script]);
    c
}

#[test]
fn run_passes_secrets_exit_codes_and_signals() {
    let s = Server::start();
    s.api(
        reqwest::Method::PUT,
        "/v1/secrets/app/db",
        Some(json!({"value": "s3cret value"})),
    );
    // The variable is set for the child; the token is not passed on; exit code passes.
    let out = run_cmd(
        &s,
        &["--secret", "DB=app/db"],
        r#"test "$DB" = "s3cret value" && test -z "$KEYWARD_TOKEN" && exit 7; exit 1"#,
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cmd(&s, &["--secret", "DB=app/db"], "exit 0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // An unknown secret: nothing is started, exit 1.
    let out = run_cmd(&s, &["--secret", "DB=app/none"], "exit 0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Bad usage: exit 2.
    let out = run_cmd(&s, &["--secret", "1DB=app/db"], "exit 0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Signals reach the child; its way of ending decides the exit code.
    for (sig, script, expect) in [
        (
            libc::SIGTERM,
            "trap 'exit 42' TERM; touch ready; while :; do sleep 0.1; done",
            42,
        ),
        (
            libc::SIGHUP,
            "trap 'exit 43' HUP; touch ready; while :; do sleep 0.1; done",
            43,
        ),
        (
            libc::SIGINT,
            "trap 'exit 44' INT; touch ready; while :; do sleep 0.1; done",
            44,
        ),
        // Killed by the signal: 128 + 15.
        (libc::SIGTERM, "touch ready; exec sleep 60", 143),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = run_cmd(&s, &["--secret", "DB=app/db"], script);
        cmd.current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        wait_for("the child", Duration::from_secs(20), || {
            dir.path().join("ready").exists()
        });
        std::thread::sleep(Duration::from_millis(200));
        signal(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(expect), "signal {sig}: {script}");
    }
}

/// A key with a rotation policy delivering to `svc/api-key`; a consumer under
/// `keyward run --watch` that appends the key it was started with to a file. The
/// scheduler rotates the key, the consumer is restarted with the new one, and the old
/// one stops working after its grace.
#[test]
fn scheduled_rotation_reaches_a_watching_consumer() {
    let s = Server::start();
    let ident = s.api(
        reqwest::Method::POST,
        "/v1/identities",
        Some(json!({"name": "orders", "owner": "team"})),
    );
    let created = s.api(
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"identity_id": ident["id"], "scopes": ["orders:read"]})),
    );
    let old_key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    // The operator seeds the delivery path with the current key.
    s.api(
        reqwest::Method::PUT,
        "/v1/secrets/svc/api-key",
        Some(json!({"value": old_key})),
    );
    // A consumer with read access to its key only.
    let consumer = s.api(
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"identity_id": ident["id"], "scopes": ["secrets:read:svc/*"]})),
    );
    let consumer_token = consumer["key"].as_str().unwrap().to_owned();

    let work = tempfile::tempdir().unwrap();
    let seen = work.path().join("seen");
    let mut run = s.cli(&consumer_token);
    run.current_dir(work.path())
        .args(["run", "--watch", "--interval", "1", "--stop-timeout", "5"])
        .args(["--secret", "API_KEY=svc/api-key", "--"])
        .args([
            "sh",
            "-c",
            "echo \"$API_KEY\" >> seen; trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut consumer = run.spawn().unwrap();
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    wait_for("the consumer", Duration::from_secs(20), || {
        lines(&seen).len() == 1
    });
    assert_eq!(lines(&seen)[0], old_key);

    s.api(
        reqwest::Method::PUT,
        &format!("/v1/keys/{key_id}/rotation-policy"),
        Some(json!({"max_age_seconds": 5, "grace_seconds": 4, "deliver_to": "svc/api-key"})),
    );
    wait_for(
        "the restart with the new key",
        Duration::from_secs(40),
        || lines(&seen).len() >= 2,
    );
    let seen_lines = lines(&seen);
    let new_key = seen_lines[1].clone();
    assert_ne!(new_key, old_key);
    let v = s.api(
        reqwest::Method::POST,
        "/v1/verify",
        Some(json!({"key": new_key})),
    );
    assert_eq!(v["code"], "VALID");
    // The policy moved to the new key; drop it so the test sees one rotation only.
    let new_id = v["key_id"].as_str().unwrap();
    let shown = s.api(
        reqwest::Method::GET,
        &format!("/v1/keys/{new_id}/rotation-policy"),
        None,
    );
    assert_eq!(shown["deliver_to"], "svc/api-key");
    s.api(
        reqwest::Method::DELETE,
        &format!("/v1/keys/{new_id}/rotation-policy"),
        None,
    );
    wait_for(
        "the old key's grace to end",
        Duration::from_secs(20),
        || s.verify(&old_key) == "REVOKED",
    );
    assert_eq!(s.verify(&new_key), "VALID");
    // No restart without a change, nor for a new version with the same value
    // (compare before restart) ...
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines(&seen).len(), 2);
    s.api(
        reqwest::Method::PUT,
        "/v1/secrets/svc/api-key",
        Some(json!({"value": new_key})),
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lines(&seen).len(), 2);
    // ... but for a new value, once.
    s.api(
        reqwest::Method::PUT,
        "/v1/secrets/svc/api-key",
        Some(json!({"value": "changed by hand"})),
    );
    wait_for(
        "the restart with the changed value",
        Duration::from_secs(20),
        || lines(&seen).len() >= 3,
    );
    assert_eq!(lines(&seen)[2], "changed by hand");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(&seen).len(), 3);
    signal(&consumer, libc::SIGTERM);
    assert_eq!(consumer.wait().unwrap().code(), Some(0));
    // The new key is in no log.
    assert!(!s.log.lock().unwrap().contains(&new_key));
}
