//! The secrets vault and rotation policies over HTTP, on both stores: versions, bad
//! input, scopes on secret paths, no value in the audit log or the database file,
//! master key rotation under concurrent reads, and scheduled rotation end to end.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, TestServer};
use keyward_core::envelope::{Keyring, MasterKey};
use keyward_server::vault::{VALUE_MAX_BYTES, Vault};
use serde_json::{Value, json};

/// A key with `scopes`; returns the key.
async fn key_with(s: &TestServer, scopes: Value) -> String {
    let id = s.identity(&format!("vault-{}", uuid::Uuid::now_v7())).await;
    s.key(&id, json!({ "scopes": scopes })).await.0
}

store_test!(secrets_have_versions);
async fn secrets_have_versions(s: TestServer) {
    let r = &s.root;
    let a = s
        .put("/v1/secrets/payments/db", r, json!({"value": "pw-1"}))
        .await;
    let b = a.ok(201);
    assert_eq!(b["path"], "payments/db");
    assert_eq!(b["version"], 1);
    assert!(b.get("value").is_none());
    let a = s
        .put(
            "/v1/secrets/payments/db",
            r,
            json!({"value": "pw-2", "meta": {"by": "ci"}}),
        )
        .await;
    assert_eq!(a.ok(200)["version"], 2);

    let got = s.get("/v1/secrets/payments/db", r).await;
    let got = got.ok(200);
    assert_eq!(got["value"], "pw-2");
    assert_eq!(got["version"], 2);
    assert_eq!(got["meta"]["by"], "ci");
    let v1 = s.get("/v1/secrets/payments/db?version=1", r).await;
    assert_eq!(v1.ok(200)["value"], "pw-1");
    s.get("/v1/secrets/payments/db?version=3", r)
        .await
        .problem(404);
    s.get("/v1/secrets/payments/other", r).await.problem(404);

    s.put("/v1/secrets/payments/eu/api", r, json!({"value": "x"}))
        .await
        .ok(201);
    s.put("/v1/secrets/billing/api", r, json!({"value": "y"}))
        .await
        .ok(201);
    let list = s.get("/v1/secrets?prefix=payments/", r).await;
    let items = list.ok(200)["items"].as_array().unwrap().clone();
    let paths: Vec<_> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["payments/db", "payments/eu/api"]);
    assert_eq!(items[0]["version"], 2);
    assert!(items[0].get("value").is_none());
    let all = s.get("/v1/secrets", r).await;
    assert_eq!(all.ok(200)["items"].as_array().unwrap().len(), 3);

    s.delete("/v1/secrets/payments/db", r).await.ok(204);
    s.get("/v1/secrets/payments/db", r).await.problem(404);
    s.get("/v1/secrets/payments/db?version=1", r)
        .await
        .problem(404);
    s.delete("/v1/secrets/payments/db", r).await.problem(404);
    // A new write after a delete starts again.
    let again = s
        .put("/v1/secrets/payments/db", r, json!({"value": "pw-3"}))
        .await;
    assert_eq!(again.ok(201)["version"], 1);
}

store_test!(bad_input_is_refused_and_changes_nothing);
async fn bad_input_is_refused_and_changes_nothing(s: TestServer) {
    let r = &s.root;
    for bad in ["a//b", "a/", "a%20b", "a/b%2F", "%C3%A9", "a*b"] {
        let a = s
            .put(&format!("/v1/secrets/{bad}"), r, json!({"value": "v"}))
            .await;
        assert_eq!(a.problem(400)["field"], "path", "{bad}");
        let a = s.get(&format!("/v1/secrets/{bad}"), r).await;
        assert_eq!(a.problem(400)["field"], "path", "{bad}");
    }
    let too_big = "x".repeat(VALUE_MAX_BYTES + 1);
    let a = s.put("/v1/secrets/big", r, json!({"value": too_big})).await;
    assert_eq!(a.problem(400)["field"], "value");
    s.get("/v1/secrets/big", r).await.problem(404);
    let just_fits = "x".repeat(VALUE_MAX_BYTES);
    s.put("/v1/secrets/big", r, json!({"value": just_fits}))
        .await
        .ok(201);

    let a = s.put("/v1/secrets/x", r, json!({"value": 5})).await;
    assert_eq!(a.problem(400)["field"], "value");
    let a = s
        .put("/v1/secrets/x", r, json!({"value": "v", "colour": 1}))
        .await;
    a.problem(400);
    let a = s
        .put("/v1/secrets/x", r, json!({"value": "v", "meta": [1]}))
        .await;
    assert_eq!(a.problem(400)["field"], "meta");
    s.get("/v1/secrets/x", r).await.problem(404);
    let a = s.get("/v1/secrets/big?version=0", r).await;
    assert_eq!(a.problem(400)["field"], "version");
    let a = s.get("/v1/secrets/big?version=one", r).await;
    assert_eq!(a.problem(400)["field"], "version");
    let a = s.get("/v1/secrets?prefix=/a", r).await;
    assert_eq!(a.problem(400)["field"], "prefix");
}

store_test!(secret_scopes_are_globs);
async fn secret_scopes_are_globs(s: TestServer) {
    let r = &s.root;
    for p in ["payments/db", "payments/eu/db", "billing/db"] {
        s.put(&format!("/v1/secrets/{p}"), r, json!({"value": p}))
            .await
            .ok(201);
    }
    let reader = key_with(&s, json!(["secrets:read:payments/*"])).await;
    assert_eq!(
        s.get("/v1/secrets/payments/db", &reader).await.ok(200)["value"],
        "payments/db"
    );
    s.get("/v1/secrets/payments/eu/db", &reader)
        .await
        .problem(403);
    s.get("/v1/secrets/billing/db", &reader).await.problem(403);
    // Unknown paths inside the glob are 404, outside it 403 (no probing).
    s.get("/v1/secrets/payments/none", &reader)
        .await
        .problem(404);
    s.get("/v1/secrets/billing/none", &reader)
        .await
        .problem(403);
    s.put("/v1/secrets/payments/db", &reader, json!({"value": "x"}))
        .await
        .problem(403);
    s.delete("/v1/secrets/payments/db", &reader)
        .await
        .problem(403);
    let list = s.get("/v1/secrets", &reader).await;
    let items = list.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["path"], "payments/db");

    let writer = key_with(&s, json!(["secrets:write:payments/**"])).await;
    s.put(
        "/v1/secrets/payments/eu/db",
        &writer,
        json!({"value": "new"}),
    )
    .await
    .ok(200);
    s.put(
        "/v1/secrets/payments/a/b/c",
        &writer,
        json!({"value": "new"}),
    )
    .await
    .ok(201);
    s.put("/v1/secrets/billing/db", &writer, json!({"value": "x"}))
        .await
        .problem(403);
    s.get("/v1/secrets/payments/eu/db", &writer)
        .await
        .problem(403);
    assert!(
        s.get("/v1/secrets", &writer).await.ok(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let wide = key_with(&s, json!(["secrets:*"])).await;
    s.get("/v1/secrets/billing/db", &wide).await.ok(200);
    let none = key_with(&s, json!(["orders:read"])).await;
    s.get("/v1/secrets/billing/db", &none).await.problem(403);

    // Glob scopes are validated when a key is made.
    let id = s.identity("glob-check").await;
    for bad in [
        "secrets:read:a**",
        "secrets:read:a//b",
        "secrets:read:../x",
        "secrets:write:",
    ] {
        let a = s
            .post("/v1/keys", r, json!({"identity_id": id, "scopes": [bad]}))
            .await;
        a.problem(400);
    }
}

store_test!(no_value_in_the_audit_log_or_database_file);
async fn no_value_in_the_audit_log_or_database_file(s: TestServer) {
    let r = &s.root;
    let value = format!("sekrit-{}", uuid::Uuid::now_v7().simple());
    s.put("/v1/secrets/app/token", r, json!({"value": value}))
        .await
        .ok(201);
    s.get("/v1/secrets/app/token", r).await.ok(200);
    s.get("/v1/secrets/app/token?version=1", r).await.ok(200);
    let log = s.get("/v1/audit?limit=1000", r).await;
    let text = log.ok(200).to_string();
    assert!(!text.contains(&value));
    let items = log.body["items"].as_array().unwrap();
    let secret_entries: Vec<_> = items
        .iter()
        .filter(|e| e["target"] == "app/token")
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["detail"]["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        secret_entries,
        [("secret.write", 1), ("secret.read", 1), ("secret.read", 1)]
    );
    if s.backend == Backend::Sqlite {
        let data = s.data_dir();
        let mut files = 0;
        for e in std::fs::read_dir(&data).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            files += 1;
            assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()));
        }
        assert!(files >= 1);
    }
}

store_test!(rotation_policies_over_http);
async fn rotation_policies_over_http(s: TestServer) {
    let r = &s.root;
    let id = s.identity("rotated").await;
    let (_, key_id) = s.key(&id, json!({"scopes": ["orders:read"]})).await;
    let path = format!("/v1/keys/{key_id}/rotation-policy");
    s.get(&path, r).await.problem(404);
    let a = s
        .put(
            &path,
            r,
            json!({"max_age_seconds": 3600, "grace_seconds": 7200}),
        )
        .await;
    assert_eq!(a.problem(400)["field"], "grace_seconds");
    let a = s
        .put(
            &path,
            r,
            json!({"max_age_seconds": 3600, "grace_seconds": 60, "deliver_to": "a//b"}),
        )
        .await;
    assert_eq!(a.problem(400)["field"], "deliver_to");
    let a = s
        .put(&path, r, json!({"max_age_seconds": 1, "grace_seconds": 0}))
        .await;
    assert_eq!(a.problem(400)["field"], "max_age_seconds");
    s.get(&path, r).await.problem(404);
    let unknown = format!("/v1/keys/{}/rotation-policy", uuid::Uuid::now_v7());
    s.put(
        &unknown,
        r,
        json!({"max_age_seconds": 60, "grace_seconds": 0}),
    )
    .await
    .problem(404);

    let body = json!({"max_age_seconds": 3600, "grace_seconds": 60, "deliver_to": "svc/key"});
    let set = s.put(&path, r, body).await;
    assert_eq!(set.ok(200)["grace_seconds"], 60);
    let shown = s.get(&path, r).await;
    assert_eq!(shown.ok(200)["deliver_to"], "svc/key");
    assert_eq!(shown.body["key_id"], key_id.as_str());

    // keys:write alone may not point deliveries at secrets it cannot write.
    let writer = key_with(&s, json!(["keyward:keys:write", "keyward:keys:read"])).await;
    let a = s
        .put(
            &path,
            &writer,
            json!({"max_age_seconds": 60, "grace_seconds": 0, "deliver_to": "x/y"}),
        )
        .await;
    a.problem(403);
    let a = s
        .put(
            &path,
            &writer,
            json!({"max_age_seconds": 60, "grace_seconds": 0}),
        )
        .await;
    a.ok(200);

    s.delete(&path, r).await.ok(204);
    s.delete(&path, r).await.problem(404);
    s.get(&path, r).await.problem(404);
}

store_test!(multi_thread scheduled_rotation_delivers_the_new_key);
async fn scheduled_rotation_delivers_the_new_key(s: TestServer) {
    let r = &s.root;
    let verifier = s.verifier().await;
    let id = s.identity("scheduled").await;
    let (old_key, key_id) = s.key(&id, json!({"scopes": ["orders:read"]})).await;
    let path = format!("/v1/keys/{key_id}/rotation-policy");
    s.put(
        &path,
        r,
        json!({"max_age_seconds": 5, "grace_seconds": 3, "deliver_to": "svc/orders-key"}),
    )
    .await
    .ok(200);
    assert_eq!(
        s.verify(&verifier, &old_key, json!({})).await["code"],
        "VALID"
    );
    // Due after 5 s; checked every 2 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let a = s.get("/v1/secrets/svc/orders-key", r).await;
        if a.status == 200 {
            break a.body;
        }
        assert!(Instant::now() < deadline, "no key delivered: {}", a.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let new_key = delivered["value"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    let v = s.verify(&verifier, &new_key, json!({})).await;
    assert_eq!(v["code"], "VALID");
    assert_ne!(v["key_id"], key_id.as_str());
    // The old key works during its grace, then not.
    let old = s.get(&format!("/v1/keys/{key_id}"), r).await;
    assert_eq!(old.ok(200)["rotated_to"], v["key_id"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.verify(&verifier, &old_key, json!({})).await["code"],
        "REVOKED"
    );
    // The policy moved to the new key; audit says key.rotate by system.
    let new_id = v["key_id"].as_str().unwrap();
    s.get(&format!("/v1/keys/{new_id}/rotation-policy"), r)
        .await
        .ok(200);
    let log = s.get("/v1/audit?limit=1000", r).await;
    let text = log.ok(200).to_string();
    assert!(!text.contains(&new_key));
    assert!(
        log.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.rotate"
                && e["actor"] == "system"
                && e["target"] == key_id.as_str())
    );
}

/// Master key rotation: a second server with (new, old) rewraps every data key while
/// readers keep reading; afterwards the new key alone opens everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_rotation_under_concurrent_reads_sqlite() {
    master_key_rotation(TestServer::start_with(Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_rotation_under_concurrent_reads_postgres() {
    master_key_rotation(TestServer::start_with(Backend::Postgres).await).await;
}

async fn master_key_rotation(mut s: TestServer) {
    const N: usize = 450;
    let root = s.root.clone();
    for i in 0..N {
        s.put(
            &format!("/v1/secrets/rot/s{i}"),
            &root,
            json!({"value": format!("value-{i}")}),
        )
        .await
        .ok(201);
    }
    let old_ring = s.vault.ring().clone();
    s.shutdown().await;
    let new = MasterKey::generate();
    let new_id = new.id().to_owned();
    let both = Arc::new(Vault::new(
        Keyring::new(new.clone(), vec![old_ring.current().clone()]),
        VALUE_MAX_BYTES,
    ));
    let parts = keyward_server::Parts {
        vault: Some(both),
        ..Default::default()
    };
    let server =
        keyward_server::start_with_parts(s.store.clone(), parts, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = vec![];
    for t in 0..3 {
        let (http, base, root, done) = (http.clone(), base.clone(), root.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0usize;
            let mut i = t;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let a = http
                    .get(format!("{base}/v1/secrets/rot/s{}", i % N))
                    .bearer_auth(&root)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(a.status(), 200, "read failed during the rewrap");
                let b: Value = a.json().await.unwrap();
                assert_eq!(b["value"], format!("value-{}", i % N));
                reads += 1;
                i += 7;
            }
            reads
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = s.store.secrets_to_rewrap(&new_id, 1).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "rewrap did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    server.stop().await.unwrap();
    // The new key alone now opens every version; the old one alone opens none.
    let only_new = Vault::new(Keyring::new(new, vec![]), VALUE_MAX_BYTES);
    for i in 0..N {
        let v = s
            .store
            .get_secret_version(&format!("rot/s{i}"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &only_new.open(&v).unwrap()[..],
            format!("value-{i}").as_bytes()
        );
        assert!(keyward_core::envelope::open(&old_ring, &v.path, v.version, &v.sealed).is_err());
    }
}

/// Without a master key the vault is off: 503, and nothing else breaks.
#[tokio::test]
async fn vault_off_without_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn keyward_store::Store> = Arc::new(
        keyward_store::SqliteStore::open(&dir.path().join("d"))
            .await
            .unwrap(),
    );
    let root = keyward_server::bootstrap(&*store).await.unwrap().unwrap();
    let server = keyward_server::start_on(store, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let a = http
        .put(format!("http://{}/v1/secrets/a", server.addr))
        .bearer_auth(root.as_str())
        .json(&json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 503);
    let body: Value = a.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("master key"));
    server.stop().await.unwrap();
}

/// The master key on the embedded store: created once (0600) in the data folder when
/// none is given, reused after; bad keys are refused clearly; PostgreSQL with none: off.
#[test]
fn master_key_sources() {
    use keyward_server::vault::{VaultConfig, load};
    let dir = tempfile::tempdir().unwrap();
    let cfg = VaultConfig::default();
    let first = load(&cfg, Some(dir.path())).unwrap().unwrap();
    let file = dir.path().join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = load(&cfg, Some(dir.path())).unwrap().unwrap();
    assert_eq!(first.ring().current().id(), again.ring().current().id());
    assert!(load(&cfg, None).unwrap().is_none());

    let given = MasterKey::generate();
    let cfg = VaultConfig {
        master_key: Some(given.to_base64()),
        ..VaultConfig::default()
    };
    let v = load(&cfg, None).unwrap().unwrap();
    assert_eq!(v.ring().current().id(), given.id());
    let bad = VaultConfig {
        master_key: Some(zeroize::Zeroizing::new("c2VjcmV0LXRvby1zaG9ydA==".into())),
        ..VaultConfig::default()
    };
    let e = load(&bad, None).unwrap_err().to_string();
    assert!(
        e.contains("KEYWARD_MASTER_KEY") && e.contains("32 bytes"),
        "{e}"
    );
    assert!(!e.contains("c2VjcmV0LXRvby1zaG9ydA=="));
    let both = VaultConfig {
        master_key: Some(given.to_base64()),
        master_key_file: Some(file.clone()),
        ..VaultConfig::default()
    };
    assert!(load(&both, None).is_err());
    let from_file = VaultConfig {
        master_key_file: Some(file),
        ..VaultConfig::default()
    };
    let v = load(&from_file, None).unwrap().unwrap();
    assert_eq!(v.ring().current().id(), first.ring().current().id());
}

store_test!(multi_thread concurrent_writers_get_distinct_versions);
async fn concurrent_writers_get_distinct_versions(s: TestServer) {
    let s = Arc::new(s);
    let mut tasks = vec![];
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let a = s
                .put(
                    "/v1/secrets/busy/one",
                    &s.root,
                    json!({"value": format!("v{i}")}),
                )
                .await;
            assert!(a.status.is_success(), "{}", a.body);
            (a.body["version"].as_i64().unwrap(), format!("v{i}"))
        }));
    }
    let mut written = vec![];
    for t in tasks {
        written.push(t.await.unwrap());
    }
    let mut versions: Vec<_> = written.iter().map(|w| w.0).collect();
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    // Each version holds the value its writer sent.
    for (v, value) in written {
        let a = s
            .get(&format!("/v1/secrets/busy/one?version={v}"), &s.root)
            .await;
        assert_eq!(a.ok(200)["value"], value.as_str());
    }
}

/// Two nodes on one PostgreSQL: the key is rotated once, by the jobs leader, and
/// delivered once; the other node reads the delivered key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_rotates_once() {
    let a = TestServer::start_with(Backend::Postgres).await;
    let b = a.another_node().await;
    let r = &a.root;
    let id = a.identity("cluster-rotated").await;
    let (_, key_id) = a.key(&id, json!({"scopes": ["orders:read"]})).await;
    b.put(
        &format!("/v1/keys/{key_id}/rotation-policy"),
        r,
        json!({"max_age_seconds": 5, "grace_seconds": 0, "deliver_to": "svc/cluster-key"}),
    )
    .await
    .ok(200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let got = b.get("/v1/secrets/svc/cluster-key", r).await;
        if got.status == 200 {
            break got.body;
        }
        assert!(Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(delivered["version"], 1);
    let new_id = a
        .verify(
            &a.verifier().await,
            delivered["value"].as_str().unwrap(),
            json!({}),
        )
        .await;
    assert_eq!(new_id["code"], "VALID");
    // Stop the new key from rotating again, then check nothing else happened.
    let new_id = new_id["key_id"].as_str().unwrap().to_owned();
    a.delete(&format!("/v1/keys/{new_id}/rotation-policy"), r)
        .await
        .ok(204);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = a.get("/v1/audit?limit=1000", r).await;
    let rotations = log.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.rotate" && e["target"] == key_id.as_str())
        .count();
    assert_eq!(rotations, 1);
    let list = a.get("/v1/secrets?prefix=svc/cluster-key", r).await;
    assert_eq!(list.ok(200)["items"][0]["version"], 1);
}
