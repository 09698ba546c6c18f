//! `keyward detect --events FILE` end to end: anomalies as JSON lines (contract), stdin
//! with `-`, settings, and bad lines named by number with exit status 2.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn keyward(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("KEYWARD_TOKEN")
        .env_remove("KEYWARD_URL")
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// A NOT_FOUND flood from one address (key guessing), one usual key use, blank lines.
fn flood() -> String {
    let mut s = String::new();
    for i in 0..120 {
        s.push_str(&format!(
            r#"{{"at":"2026-01-05T10:{:02}:{:02}Z","key_id":null,"identity_id":null,"code":"NOT_FOUND","ip":"203.0.113.9","scopes":[]}}"#,
            i / 60,
            i % 60
        ));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(r#"{"at":"2026-01-05T10:05:00Z","key_id":"0190a1b2-0000-7000-8000-000000000001","identity_id":"0190a1b2-0000-7000-8000-000000000002","code":"VALID","ip":"10.0.0.1","scopes":["orders:read"]}"#);
    s.push('\n');
    s
}

#[test]
fn prints_one_json_line_per_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), flood()).unwrap();
    let out = keyward(dir.path(), &["detect", "--events", "events.jsonl"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let a = &lines[0];
    assert_eq!(a["kind"], "KEY_GUESSING");
    assert!(a["key_id"].is_null() && a["identity_id"].is_null());
    assert!(a["detail"].as_str().unwrap().contains("203.0.113.9"));
    let mut fields: Vec<&str> = a.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    fields.sort();
    assert_eq!(
        fields,
        ["at", "detail", "identity_id", "key_id", "kind", "severity"]
    );

    // The same from stdin, with evidence.
    let out = keyward(
        dir.path(),
        &["detect", "--events", "-", "--evidence"],
        Some(&flood()),
    );
    assert!(out.status.success());
    let a: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(a["evidence"]["network"], "203.0.113.0/24");

    // Settings change the verdict: a bar of 1,000 failures per address hides the flood.
    std::fs::write(
        dir.path().join("settings.json"),
        r#"{"guess_per_address": 1000, "guess_spread_failures": 1000}"#,
    )
    .unwrap();
    let out = keyward(
        dir.path(),
        &[
            "detect",
            "--events",
            "events.jsonl",
            "--settings",
            "settings.json",
        ],
        None,
    );
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_lines_and_settings_are_usage_errors_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = flood();
    text.push_str("{\"at\": \"yesterday\"}\n");
    std::fs::write(dir.path().join("bad.jsonl"), text).unwrap();
    let out = keyward(dir.path(), &["detect", "--events", "bad.jsonl"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 123"), "{stderr}");

    let out = keyward(dir.path(), &["detect", "--events", "missing.jsonl"], None);
    assert_eq!(out.status.code(), Some(2));

    std::fs::write(dir.path().join("s.json"), r#"{"ipv4_prefix": 99}"#).unwrap();
    std::fs::write(dir.path().join("e.jsonl"), flood()).unwrap();
    let out = keyward(
        dir.path(),
        &["detect", "--events", "e.jsonl", "--settings", "s.json"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ipv4_prefix"));
    std::fs::write(dir.path().join("s.json"), r#"{"no_such_setting": 1}"#).unwrap();
    let out = keyward(
        dir.path(),
        &["detect", "--events", "e.jsonl", "--settings", "s.json"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_setting"));
}
