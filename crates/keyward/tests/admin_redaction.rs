//! The real binary, logging at the most verbose level (`trace`), through a workload
//! with every kind of secret: the root key, minted keys, an administrator's password,
//! TOTP secret and codes, recovery codes and session token. None of them may appear in
//! the server's output. Also covers `keyward admin create|list|disable`.

mod common;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyward_core::admin::TotpSecret;
use serde_json::{Value, json};

const PASSWORD: &str = "a very long and secret password 42";

fn keyward(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .envs(env.iter().copied())
        .env("KEYWARD_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_secret_reaches_the_logs_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (out_path, err_path) = (dir.path().join("out.log"), dir.path().join("err.log"));
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", data.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .env_remove("KEYWARD_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = std::fs::read_to_string(&err_path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("root key: ").map(str::to_owned))
        .expect("the root key line");
    let mut secrets: Vec<String> = vec![PASSWORD.into()];

    // An administrator, through the CLI.
    let (code, out, _) = keyward(
        &[
            "admin",
            "create",
            "alice",
            "--scope",
            "keyward:admin",
            "--url",
            &base,
            "--token",
            &root,
        ],
        &[("KEYWARD_ADMIN_PASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("otpauth://totp/Keyward:alice?secret="),
        "{out}"
    );
    assert!(out.contains('█') || out.contains('▀'), "no QR code: {out}");
    let uri = out.lines().find(|l| l.starts_with("otpauth://")).unwrap();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let totp = TotpSecret::from_base32(secret);
    secrets.push(secret.into());
    let recovery: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("  ").map(str::to_owned))
        .filter(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .collect();
    assert_eq!(recovery.len(), 10, "{out}");
    secrets.extend(recovery.iter().cloned());

    let (code, out, _) = keyward(
        &["admin", "list", "--json", "--url", &base, "--token", &root],
        &[],
    );
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    let admin_id = list["items"][0]["id"].as_str().unwrap().to_owned();
    // Bad input is refused (exit 1), and the password it carried is not logged either.
    let (code, _, _) = keyward(
        &[
            "admin",
            "create",
            "bob",
            "--scope",
            "keyward:admin",
            "--url",
            &base,
            "--token",
            &root,
        ],
        &[("KEYWARD_ADMIN_PASSWORD", "shortpw9")],
    );
    assert_eq!(code, 1);
    secrets.push("shortpw9".into());

    // Logins: a good one, a replayed one, a recovery code, and failures.
    let now = chrono::Utc::now().timestamp() as u64;
    let code_now = totp.code_at(now);
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    let session: Value = post(
        "/v1/sessions",
        None,
        json!({"username": "alice", "password": PASSWORD, "totp": code_now}),
    )
    .json()
    .unwrap();
    let token = session["token"].as_str().expect("a session").to_owned();
    secrets.push(token.clone());
    let replay = post(
        "/v1/sessions",
        None,
        json!({"username": "alice", "password": PASSWORD, "totp": code_now}),
    );
    assert_eq!(replay.status().as_u16(), 401);
    let wrong = post(
        "/v1/sessions",
        None,
        json!({"username": "alice", "password": "not the password", "totp": "123456"}),
    );
    assert_eq!(wrong.status().as_u16(), 401);
    secrets.push("not the password".into());
    let r = post(
        "/v1/sessions",
        None,
        json!({"username": "alice", "password": PASSWORD, "totp": recovery[0]}),
    );
    let second: Value = r.json().unwrap();
    secrets.push(second["token"].as_str().unwrap().to_owned());

    // The session at work: an identity and keys, with the minted keys' plaintexts.
    let ident: Value = post(
        "/v1/identities",
        Some(&token),
        json!({"name": "svc", "owner": "ops"}),
    )
    .json()
    .unwrap();
    for scopes in [json!(["orders:read"]), json!(["keyward:admin"])] {
        let k: Value = post(
            "/v1/keys",
            Some(&token),
            json!({"identity_id": ident["id"], "scopes": scopes}),
        )
        .json()
        .unwrap();
        let key = k["key"].as_str().unwrap().to_owned();
        let v: Value = post("/v1/verify", Some(&root), json!({"key": key}))
            .json()
            .unwrap();
        assert_eq!(v["valid"], true);
        secrets.push(key);
    }
    // A bearer credential that is no key, and one that is a near miss.
    let bad = http
        .get(format!("{base}/v1/keys"))
        .bearer_auth("kw_definitelynotavalidkeybutlooksalittlelikeone")
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let (code, _, _) = keyward(
        &[
            "admin", "disable", &admin_id, "--url", &base, "--token", &root,
        ],
        &[],
    );
    assert_eq!(code, 0);
    secrets.push(root.clone());

    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    // The one deliberate exception: the bootstrap root key line, printed once.
    let stderr: String = stderr
        .lines()
        .filter(|l| !l.starts_with("root key: "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        stderr.lines().count() > 20,
        "trace logging produced too little to judge:\n{stderr}"
    );
    for s in &secrets {
        assert!(!stdout.contains(s.as_str()), "a secret in stdout");
        assert!(
            !stderr.contains(s.as_str()),
            "a secret in the log: {}...",
            &s[..4]
        );
    }
    // Nor the TOTP code that was used, in any line mentioning a login.
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("session") && l.contains(&code_now))
    );
}
