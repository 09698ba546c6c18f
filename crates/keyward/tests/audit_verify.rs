//! `keyward audit verify` on the real binary: it reads the store directly, finds the
//! checkpoint a stopping server signed with the data folder's key, exits 0 on an intact
//! log, 1 on a tampered one (naming the first bad record), 2 on bad usage.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ServeProcess;
use serde_json::{Value, json};

fn keyward(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KEYWARD_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Serves `data`, writes a few audit records, and stops the server gracefully.
fn serve_some_changes(data: &Path) {
    let mut server = ServeProcess::spawn(["--data-dir", data.to_str().unwrap()]);
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/healthz", server.base)).send().is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = server
        .root_key()
        .expect("a fresh store prints its root key");
    for name in ["a", "b"] {
        let r = http
            .post(format!("{}/v1/identities", server.base))
            .bearer_auth(&root)
            .json(&json!({"name": name, "owner": "ops"}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    // SIGTERM: a graceful stop, which signs the head of the log.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    assert!(server.child.wait().unwrap().success());
}

fn sqlite(data: &Path, sql: &str) {
    let url = format!("sqlite://{}", data.join("keyward.db").display());
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    });
}

#[test]
fn audit_verify_reads_the_store_and_exits_1_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    serve_some_changes(&data);
    assert!(data.join("audit-signing.key").is_file());
    let d = data.to_str().unwrap();

    let (code, out) = keyward(&["audit", "verify", "--data-dir", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact") && out.contains("signatures checked"),
        "{out}"
    );

    let (code, out) = keyward(&["audit", "verify", "--data-dir", d, "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["checkpoints"].as_u64()),
        (Some(true), Some(1)),
        "{v}"
    );
    let records = v["checked"].as_i64().unwrap();
    assert!(records >= 3, "{v}");

    // A checkpoint from another key is not ours: fail closed.
    let foreign = dir.path().join("foreign.key");
    std::fs::write(&foreign, format!("{}\n", "ab".repeat(32))).unwrap();
    let (code, out) = keyward(&[
        "audit",
        "verify",
        "--data-dir",
        d,
        "--audit-signing-key",
        foreign.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");

    // The tail cut off after the checkpoint.
    sqlite(
        &data,
        &format!("DELETE FROM audit_log WHERE seq = {records}"),
    );
    let (code, out) = keyward(&["audit", "verify", "--data-dir", d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("BROKEN at seq {records}")), "{out}");

    // Bad usage: no store there, or an unreadable key file.
    let (code, _) = keyward(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    let (code, _) = keyward(&[
        "audit",
        "verify",
        "--data-dir",
        d,
        "--audit-signing-key",
        "/nonexistent/k",
    ]);
    assert_eq!(code, 2);
}
