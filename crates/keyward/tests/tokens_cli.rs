//! `keyward token create` and `keyward token introspect`, the real binary against a real
//! server (in this process, on SQLite and on PostgreSQL).

use std::process::Command;

use keyward_client::Client;
use keyward_proto::{CreateIdentity, CreateKey};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn kw(url: &str, credential: &str, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env("KEYWARD_URL", url)
        .env("KEYWARD_TOKEN", credential)
        .env_remove("KEYWARD_CONFIG")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn token_commands(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        keyward_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("d"));
    cfg.database_url = database_url;
    let store = keyward_server::open_store(&cfg).await.unwrap();
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let server = keyward_server::start_on(store, cfg.listen).await.unwrap();
    let url = format!("http://{}", server.addr);

    let admin = Client::new(&url, Some(root.as_str().to_owned())).unwrap();
    let ident = admin
        .create_identity(&CreateIdentity {
            name: "svc".into(),
            owner: "me".into(),
            description: None,
            meta: None,
            enabled: None,
        })
        .await
        .unwrap();
    let key = |scopes: &[&str]| CreateKey {
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        identity_id: ident.id,
        ..CreateKey::default()
    };
    let svc = admin
        .create_key(&key(&["orders:read", "orders:write"]))
        .await
        .unwrap();
    let verifier = admin.create_key(&key(&["keyward:verify"])).await.unwrap();

    let url2 = url.clone();
    let (created, table, widened, introspected, bad_ttl, junk) =
        tokio::task::spawn_blocking(move || {
            let url = url2;
            let table = kw(&url, &svc.key, &["token", "create"]);
            let created = kw(
                &url,
                &svc.key,
                &[
                    "token",
                    "create",
                    "--scope",
                    "orders:read",
                    "--audience",
                    "orders",
                    "--ttl",
                    "60",
                    "--json",
                ],
            );
            let widened = kw(
                &url,
                &svc.key,
                &["token", "create", "--scope", "billing:read"],
            );
            let token: Value = serde_json::from_str(&created.stdout).unwrap_or(Value::Null);
            let token = token["token"].as_str().unwrap_or_default().to_owned();
            let introspected = kw(&url, &verifier.key, &["token", "introspect", &token]);
            let bad_ttl = kw(&url, &svc.key, &["token", "create", "--ttl", "3601"]);
            let junk = kw(&url, &verifier.key, &["token", "introspect", "not-a-token"]);
            (created, table, widened, introspected, bad_ttl, junk)
        })
        .await
        .unwrap();

    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let body: Value = serde_json::from_str(&created.stdout).unwrap();
    assert!(body["token"].as_str().unwrap().split('.').count() == 3);
    assert!(body["expires_at"].is_string());
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.contains("expires at"), "{}", table.stdout);
    assert_eq!(widened.code, Some(1));
    assert!(
        widened.stderr.contains("billing:read"),
        "{}",
        widened.stderr
    );
    assert_eq!(introspected.code, Some(0), "{}", introspected.stderr);
    assert!(
        introspected.stdout.starts_with("active"),
        "{}",
        introspected.stdout
    );
    assert!(introspected.stdout.contains("orders:read"));
    assert_eq!(bad_ttl.code, Some(2), "{}", bad_ttl.stderr);
    assert_eq!(junk.code, Some(1));
    assert!(junk.stdout.contains("not active"), "{}", junk.stdout);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_sqlite() {
    token_commands(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_postgres() {
    let db = keyward_store::testkit::TempDatabase::create().await;
    token_commands(Some(db.url.clone())).await;
}

#[test]
fn token_key_rotation_setting_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, env) in [(Some("5"), None), (None, Some("abc")), (Some("-1"), None)] {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("KEYWARD_CONFIG")
            .env_remove("KEYWARD_DATABASE_URL");
        if let Some(f) = flag {
            cmd.arg(format!("--token-key-rotation={f}"));
        }
        if let Some(e) = env {
            cmd.env("KEYWARD_TOKEN_KEY_ROTATION", e);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag:?} {env:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--token-key-rotation"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
