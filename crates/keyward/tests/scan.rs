//! `keyward scan` end to end: exit codes, output formats, stdin, git, the hook.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use keyward_core::key::{KeyPrefix, mint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn keyward(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("KEYWARD_TOKEN")
        .env_remove("KEYWARD_URL")
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn key() -> String {
    mint(&KeyPrefix::default()).plaintext.to_string()
}

#[test]
fn exit_codes_and_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("clean.txt"), "nothing to see\n").unwrap();
    let out = keyward(d, &["scan", "clean.txt"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let k = key();
    std::fs::write(d.join("leak.env"), format!("A=1\nKEYWARD_TOKEN={k}\n")).unwrap();
    let out = keyward(d, &["scan", ".", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(&k));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["path"], "./leak.env");
    assert_eq!(f["line"], 2);
    assert_eq!(f["column"], 15);
    assert_eq!(f["rule"], "keyward-key");
    assert_eq!(f["keyward"], true);
    assert!(f["redacted"].as_str().unwrap().starts_with(&k[..7]));
    assert_eq!(f["fingerprint"].as_str().unwrap().len(), 32);
    assert!(f.get("commit").is_none());

    // SARIF and human.
    let out = keyward(d, &["scan", "leak.env", "--format", "sarif"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let out = keyward(d, &["scan", "leak.env"]);
    let human = String::from_utf8(out.stdout).unwrap();
    assert!(human.starts_with("leak.env:2:15  keyward-key  "), "{human}");
    assert!(!human.contains(&k));

    // The baseline accepts it; errors exit 2.
    let json = keyward(d, &["scan", "leak.env", "--format", "json"]).stdout;
    std::fs::write(d.join("baseline.json"), json).unwrap();
    let out = keyward(d, &["scan", "leak.env", "--baseline", "baseline.json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = keyward(d, &["scan", ".", "--baseline", "missing.json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = keyward(d, &["scan", ".", "--git"]);
    assert_eq!(out.status.code(), Some(2), "not a repository");
    let out = keyward(d, &["scan", ".", "--exclude", "a{"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stdin_with_dash() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["scan", "-", "--json"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let k = key();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("x\ny\n  {k}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["path"], "-");
    assert_eq!(v["findings"][0]["line"], 3);
}

fn git(d: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(d)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(BIN).parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap()
}

#[test]
fn git_history_and_the_pre_commit_hook() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(git(d, &["init", "-q", "-b", "main"]).status.success());
    let k = key();
    std::fs::write(d.join("a.txt"), format!("{k}\n")).unwrap();
    assert!(git(d, &["add", "."]).status.success());
    assert!(git(d, &["commit", "-qm", "leak"]).status.success());
    let head = String::from_utf8(git(d, &["rev-parse", "HEAD"]).stdout).unwrap();
    std::fs::write(d.join("a.txt"), "gone\n").unwrap();
    assert!(git(d, &["commit", "-qam", "fix"]).status.success());

    let out = keyward(d, &["scan", "--git", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 1);
    assert_eq!(v["findings"][0]["commit"], head.trim());

    // The hook blocks a commit that adds a key, and lets a clean one through.
    let out = keyward(d, &["scan", "install-hook"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::write(d.join("b.txt"), format!("token: {}\n", key())).unwrap();
    assert!(git(d, &["add", "b.txt"]).status.success());
    let out = git(d, &["commit", "-qm", "another leak"]);
    assert!(!out.status.success(), "the hook let a key through");
    std::fs::write(d.join("b.txt"), "clean\n").unwrap();
    assert!(git(d, &["add", "b.txt"]).status.success());
    let out = git(d, &["commit", "-qm", "clean"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Someone else's hook is kept unless --force.
    std::fs::write(d.join(".git/hooks/pre-commit"), "#!/bin/sh\nexit 0\n").unwrap();
    assert_eq!(keyward(d, &["scan", "install-hook"]).status.code(), Some(2));
    assert_eq!(
        keyward(d, &["scan", "install-hook", "--force"])
            .status
            .code(),
        Some(0)
    );
}

/// `--revoke`: the Keyward keys found are reported; the server revokes its own.
#[test]
fn revoke_reports_found_keys_to_the_server() {
    use keyward_proto::{CreateIdentity, CreateKey, VerifyCode, VerifyRequest};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let cfg =
        keyward_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.path().join("data"));
    let (server, ours, reporter, root) = rt.block_on(async {
        let store = keyward_server::open_store(&cfg).await.unwrap();
        let root = keyward_server::bootstrap(&*store)
            .await
            .unwrap()
            .unwrap()
            .to_string();
        let server = keyward_server::start_on(store, cfg.listen).await.unwrap();
        let c = keyward_client::Client::new(&format!("http://{}", server.addr), Some(root.clone()))
            .unwrap();
        let ident = c
            .create_identity(&CreateIdentity {
                name: "svc".into(),
                owner: "team".into(),
                description: None,
                meta: None,
                enabled: None,
            })
            .await
            .unwrap();
        let mk = |scopes: Vec<String>| CreateKey {
            identity_id: ident.id,
            scopes: Some(scopes),
            ..CreateKey::default()
        };
        let ours = c.create_key(&mk(vec![])).await.unwrap().key;
        let reporter = c
            .create_key(&mk(vec!["keyward:leaks:report".into()]))
            .await
            .unwrap()
            .key;
        (server, ours, reporter, root)
    });
    let url = format!("http://{}", server.addr);

    let dir = tempfile::tempdir().unwrap();
    let foreign = key();
    std::fs::write(
        dir.path().join("leak.env"),
        format!("A={ours}\nB={foreign}\nC={ours}\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "scan", ".", "--revoke", "--json", "--url", &url, "--token", &reporter,
        ])
        .current_dir(dir.path())
        .env_remove("KEYWARD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(&ours) && !stdout.contains(&foreign));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 3);
    let revs = v["revocations"].as_array().unwrap();
    assert_eq!(
        revs.len(),
        2,
        "each distinct key is reported once: {revs:?}"
    );
    assert_eq!(revs.iter().filter(|r| r["revoked"] == true).count(), 1);

    rt.block_on(async {
        let c = keyward_client::Client::new(&url, Some(root)).unwrap();
        let v = c
            .verify(&VerifyRequest {
                key: ours.clone(),
                ..VerifyRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(v.code, VerifyCode::Revoked);
        server.stop().await.unwrap();
    });
}
