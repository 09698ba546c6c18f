//! An acknowledged change survives `kill -9` of the server: the embedded store commits
//! (WAL, synchronous=FULL) before the API answers.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::ServeProcess;

/// Starts `keyward serve`; returns the server and, on a fresh store, the root key.
fn serve(data_dir: &std::path::Path) -> (ServeProcess, Option<String>) {
    let server = ServeProcess::spawn([OsStr::new("--data-dir"), data_dir.as_os_str()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if client
            .get(format!("{}/healthz", server.base))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            let root = server.root_key();
            return (server, root);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not come up");
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root) = serve(dir.path());
    let root = root.expect("the first start prints the root key");
    let http = reqwest::blocking::Client::new();
    let ident: Value = http
        .post(format!("{}/v1/identities", server.base))
        .bearer_auth(&root)
        .json(&json!({"name": "durable", "owner": "ops"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ident_id = ident["id"].as_str().unwrap().to_owned();
    let mut keys = vec![];
    for i in 0..20 {
        let k: Value = http
            .post(format!("{}/v1/keys", server.base))
            .bearer_auth(&root)
            .json(&json!({"identity_id": ident_id, "name": format!("k{i}"), "remaining": 5}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        keys.push((
            k["key"].as_str().unwrap().to_owned(),
            k["id"].as_str().unwrap().to_owned(),
        ));
    }
    let (verifier, _) = {
        let k: Value = http
            .post(format!("{}/v1/keys", server.base))
            .bearer_auth(&root)
            .json(&json!({"identity_id": ident_id, "scopes": ["keyward:verify"]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        (k["key"].as_str().unwrap().to_owned(), ())
    };
    // Use up three of the first key's quota and revoke the second key.
    for _ in 0..3 {
        let r: Value = http
            .post(format!("{}/v1/verify", server.base))
            .bearer_auth(&verifier)
            .json(&json!({"key": keys[0].0}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(r["code"], "VALID");
    }
    let revoked = http
        .post(format!("{}/v1/keys/{}/revoke", server.base, keys[1].1))
        .bearer_auth(&root)
        .send()
        .unwrap();
    assert!(revoked.status().is_success());

    // No goodbye: SIGKILL.
    let pid = server.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(server);

    let (server, again) = serve(dir.path());
    assert!(again.is_none(), "the root key must never be printed twice");
    let list: Value = http
        .get(format!(
            "{}/v1/keys?identity_id={ident_id}&limit=1000",
            server.base
        ))
        .bearer_auth(&root)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 21);
    let verify = |key: &str| -> Value {
        http.post(format!("{}/v1/verify", server.base))
            .bearer_auth(&verifier)
            .json(&json!({"key": key}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // The quota kept its count: 2 left, then refused.
    assert_eq!(verify(&keys[0].0)["remaining"], 1);
    assert_eq!(verify(&keys[0].0)["remaining"], 0);
    assert_eq!(verify(&keys[0].0)["code"], "USAGE_EXCEEDED");
    assert_eq!(verify(&keys[1].0)["code"], "REVOKED");
    for (k, _) in &keys[2..] {
        assert_eq!(verify(k)["code"], "VALID");
    }
}
