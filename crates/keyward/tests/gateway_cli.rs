//! The real `keyward gateway` binary in front of a real upstream: settings from flags
//! and `KEYWARD_*` variables, the API on `--api-listen`, keys checked, identity
//! forwarded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::free_port;
use serde_json::{Value, json};

/// An HTTP/1.1 upstream on a thread: answers every request with its request head as
/// the body (one request per connection).
fn echo_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}",
                head.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[tokio::test]
async fn the_gateway_binary_checks_keys_in_front_of_an_upstream() {
    let upstream = echo_upstream();
    let dir = tempfile::tempdir().unwrap();
    let (port, api_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .args(["--upstream", &format!("http://127.0.0.1:{upstream}")])
        .args([
            "--route",
            "POST /orders=orders:write",
            "--require-scope",
            "svc",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("KEYWARD_KEY_HEADER", "X-Api-Key")
        .env("KEYWARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let root = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("root key: ").map(str::to_owned))
        .expect("the root key on stderr");
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{api_port}");
    let gw = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if http.get(format!("{api}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the gateway's API answers");
    let post = |path: &str, body: Value| {
        http.post(format!("{api}{path}"))
            .bearer_auth(&root)
            .json(&body)
            .send()
    };
    let ident: Value = post("/v1/identities", json!({"name": "svc", "owner": "t"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ident = ident["id"].as_str().unwrap();
    let key: Value = post(
        "/v1/keys",
        json!({"identity_id": ident, "scopes": ["svc", "orders:read"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = key["key"].as_str().unwrap();

    let r = http
        .get(format!("{gw}/orders/1?x=y"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = r.text().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /orders/1?x=y http/1.1"), "{head}");
    assert!(
        head.contains(&format!("keyward-identity: {ident}")),
        "{head}"
    );
    assert!(
        !head.contains(&key.to_ascii_lowercase()),
        "credential stripped"
    );
    let r = http
        .post(format!("{gw}/orders"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = http.get(format!("{gw}/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The API is not on the gateway's listener: that path is the upstream's.
    let r = http
        .get(format!("{gw}/healthz"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().starts_with("GET /healthz"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn gateway_settings_errors_are_usage_errors() {
    for args in [
        vec!["gateway"],
        vec!["gateway", "--upstream", "ftp://x"],
        vec![
            "gateway",
            "--upstream",
            "http://127.0.0.1:1",
            "--route",
            "GET /a",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(&args)
            .env_remove("KEYWARD_UPSTREAM")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--upstream") || err.contains("--route"),
            "{err}"
        );
    }
}
