//! `keyward webhook ...` against a real `keyward serve`, with a tiny HTTP receiver on
//! 127.0.0.1 that answers 200 to every POST; webhook settings come from flags.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::ServeProcess;
use serde_json::Value;

/// Accepts connections, reads each request (headers and body), answers 200. Counts them.
fn receiver() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().map_while(Result::ok) {
            let mut r = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            c.fetch_add(1, Ordering::SeqCst);
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, count)
}

fn run(srv: &ServeProcess, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .args(["--url", &srv.base, "--token", token])
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn webhook_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = ServeProcess::spawn([
        "--data-dir",
        data.to_str().unwrap(),
        "--webhook-timeout",
        "5s",
        "--webhook-backoff",
        "1s",
        "--webhook-deny-private",
        "false",
    ]);
    let start = Instant::now();
    let root = loop {
        if let Some(k) = srv.root_key() {
            break k;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
    };
    let (url, count) = receiver();

    let created = json(&run(
        &srv,
        &root,
        &[
            "webhook",
            "create",
            &url,
            "--event",
            "key.created",
            "--json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    // A table by default, with the secret shown once.
    let human = run(
        &srv,
        &root,
        &["webhook", "create", &url, "--event", "leak.detected"],
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success() && text.contains("whsec_") && text.contains("shown only once"));

    let listed = json(&run(&srv, &root, &["webhook", "list", "--json"]));
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&secret));
    let table = run(&srv, &root, &["webhook", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&id));

    // An event, delivered, in the delivery log.
    let ident = json(&run(
        &srv,
        &root,
        &[
            "identity", "create", "--name", "hooks", "--owner", "ops", "--json",
        ],
    ));
    let ident = ident["id"].as_str().unwrap();
    json(&run(
        &srv,
        &root,
        &["key", "create", "--identity", ident, "--json"],
    ));
    let start = Instant::now();
    while count.load(Ordering::SeqCst) < 1 {
        assert!(start.elapsed() < Duration::from_secs(15), "no delivery");
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    loop {
        let log = json(&run(&srv, &root, &["webhook", "deliveries", &id, "--json"]));
        if log["items"][0]["state"] == "delivered" {
            assert_eq!(log["items"][0]["event_type"], "key.created");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = run(&srv, &root, &["webhook", "deliveries", &id]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("delivered"));

    // Refused by the server: exit 1. Bad usage: exit 2.
    let bad = run(
        &srv,
        &root,
        &["webhook", "create", &url, "--event", "key.nope"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("events[0]"));
    let usage = run(&srv, &root, &["webhook", "create", &url]);
    assert_eq!(usage.status.code(), Some(2));

    let deleted = run(&srv, &root, &["webhook", "delete", &id]);
    assert!(deleted.status.success());
    let again = run(&srv, &root, &["webhook", "show", &id]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn bad_webhook_settings_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--webhook-max-attempts", "0"])
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook-max-attempts"));
}
