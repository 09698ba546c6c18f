//! `keyward anomalies` and `keyward identity anomaly-policy` through the real binary,
//! against an in-process server (embedded store) whose detectors are a test's: every
//! verification tagged `anomaly=<severity>` raises one.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};
use keyward_core::usage::UsageEvent;
use keyward_server::anomalies::{AnomalySettings, Detect};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

struct EveryTagged;

impl Detect for EveryTagged {
    fn observe(&mut self, e: &UsageEvent, out: &mut Vec<Anomaly>) {
        if let Some(sev) = e.tags.as_ref().and_then(|t| t.get("anomaly")) {
            out.push(Anomaly {
                at: e.at,
                key_id: e.key_id,
                identity_id: e.identity_id,
                kind: AnomalyKind::ScopeProbing,
                severity: Severity::parse(sev).unwrap_or(Severity::Low),
                detail: "asked for scopes it was never granted".into(),
                evidence: json!({"ip": e.ip, "scopes": e.scopes}),
            });
        }
    }
}

/// `keyward ARGS...` against `url` as `token`: (exit code, stdout).
fn keyward(url: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("KEYWARD_URL", url)
        .env("KEYWARD_TOKEN", token)
        .env_remove("KEYWARD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_table_json_filters_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn keyward_store::Store> = Arc::new(
        keyward_store::SqliteStore::open(&dir.path().join("data"))
            .await
            .unwrap(),
    );
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let parts = keyward_server::Parts {
        anomalies: AnomalySettings {
            detectors: Arc::new(|| Box::new(EveryTagged)),
            lag: keyward_server::usage::FLUSH_EVERY + Duration::from_millis(500),
            poll: Duration::from_millis(100),
            ..AnomalySettings::default()
        },
        ..Default::default()
    };
    let server = keyward_server::start_with_parts(store, parts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let post = async |path: &str, body: Value| -> Value {
        let r = http
            .post(format!("{url}{path}"))
            .bearer_auth(root.as_str())
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    };
    let ident = post("/v1/identities", json!({"name": "svc", "owner": "ops"})).await;
    let ident = ident["id"].as_str().unwrap().to_owned();
    let key = post("/v1/keys", json!({"identity_id": ident})).await;
    let (key, key_id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let v = post(
        "/v1/verify",
        json!({"key": key, "scopes": ["admin:all"], "ip": "198.51.100.4",
               "tags": {"anomaly": "high"}}),
    )
    .await;
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE");

    let root = root.as_str().to_owned();
    let (url2, root2, key_id2) = (url.clone(), root.clone(), key_id.to_owned());
    let json_out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, out) = keyward(
                &url2,
                &root2,
                &["anomalies", "--key", &key_id2, "--format", "json"],
            );
            assert_eq!(code, 0, "{out}");
            let v: Value = serde_json::from_str(&out).unwrap();
            if v["items"][0]["action_taken"].is_string() {
                return v;
            }
            assert!(Instant::now() < deadline, "no anomaly: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(json_out["items"][0]["kind"], "SCOPE_PROBING");
    assert_eq!(
        json_out["items"][0]["evidence"]["scopes"],
        json!(["admin:all"])
    );

    let (url, ident) = (url.clone(), ident.clone());
    let key_id = key_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let (code, table) = keyward(&url, &root, &["anomalies", "--identity", &ident]);
        assert_eq!(code, 0);
        for want in [
            "SCOPE_PROBING",
            "high",
            "notified",
            &key_id,
            "asked for scopes",
        ] {
            assert!(table.contains(want), "{want} missing from:\n{table}");
        }
        let (code, out) = keyward(&url, &root, &["--json", "anomalies", "--severity", "high"]);
        assert_eq!(code, 0);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["items"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let (code, out) = keyward(
            &url,
            &root,
            &["anomalies", "--since", "2999-01-01T00:00:00Z"],
        );
        assert_eq!((code, out.trim()), (0, "no anomalies"));
        // Bad usage: exit 2; a refused call: exit 1.
        assert_eq!(
            keyward(&url, &root, &["anomalies", "--severity", "urgent"]).0,
            2
        );
        assert_eq!(
            keyward(&url, &root, &["anomalies", "--since", "yesterday"]).0,
            2
        );
        assert_eq!(
            keyward(&url, &root, &["anomalies", "--kind", "STOLEN"]).0,
            1
        );

        let (code, out) = keyward(&url, &root, &["identity", "anomaly-policy", &ident]);
        assert_eq!(code, 0);
        assert!(out.contains("notify"), "{out}");
        let (code, out) = keyward(
            &url,
            &root,
            &[
                "--json",
                "identity",
                "anomaly-policy",
                &ident,
                "--action",
                "disable_key",
                "--min-severity",
                "medium",
            ],
        );
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["action"].as_str(), v["min_severity"].as_str()),
            (Some("disable_key"), Some("medium"))
        );
        let (_, out) = keyward(&url, &root, &["identity", "anomaly-policy", &ident]);
        assert!(
            out.contains("disable_key") && out.contains("medium"),
            "{out}"
        );
    })
    .await
    .unwrap();
    server.stop().await.unwrap();
}
