//! What online anomaly detection costs verify: the warm verify path with usage recording
//! on (queue drained by the real writer into SQLite) in both runs, with the detection
//! tail (`anomalies::spawn`, the server's own detectors, this process as the jobs leader)
//! running in one and not the other. Detection reads the stored events off the verify
//! path, so the only cost verify can see is competition for the CPU.
//!
//! `cargo bench -p keyward-server --bench anomaly_detection`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::policy::VerifyRequest;
use keyward_core::{KeyPrefix, VerifyCode, key};
use keyward_server::anomalies::AnomalySettings;
use keyward_server::verifier::Verifier;
use keyward_store::{SqliteStore, Store};
use tokio::runtime::Runtime;

fn audit() -> AuditEntry {
    AuditEntry {
        at: keyward_server::now(),
        actor: "bench".into(),
        action: "bench".into(),
        target: "bench".into(),
        request_id: None,
        source_ip: None,
        detail: serde_json::Value::Null,
    }
}

async fn populate(store: &dyn Store, n: usize) -> Vec<String> {
    let now = keyward_server::now();
    let identity = Identity {
        id: uuid::Uuid::now_v7(),
        name: "bench".into(),
        owner: "bench".into(),
        description: String::new(),
        meta: Default::default(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    store.create_identity(&identity, &audit()).await.unwrap();
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let minted = key::mint(&KeyPrefix::default());
        let rec = KeyRecord {
            id: uuid::Uuid::now_v7(),
            identity_id: identity.id,
            name: "bench".into(),
            prefix: "kw".into(),
            start: minted.start.clone(),
            digest: minted.digest,
            scopes: vec!["orders:*".into()],
            created_at: now,
            updated_at: now,
            expires_at: None,
            revoked_at: None,
            enabled: true,
            ip_allowlist: vec![],
            rate_limits: vec![],
            remaining: None,
            last_used_at: None,
            meta: Default::default(),
            rotated_from: None,
            rotated_to: None,
        };
        store.create_key(&rec, &audit()).await.unwrap();
        keys.push(minted.plaintext.as_str().to_owned());
    }
    keys
}

fn detection(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scopes = vec!["orders:read".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: Some("192.0.2.1".parse().unwrap()),
    };
    let n = 1_000;
    let (store, keys) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let keys = populate(&*store, n).await;
        (store, keys)
    });
    for detecting in [false, true] {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (verifier, _last_used) = Verifier::new(store.clone(), 2 * n);
        let now = keyward_server::now();
        rt.block_on(async {
            for k in &keys {
                assert_eq!(
                    verifier.verify(k, &req, now).await.unwrap().code,
                    VerifyCode::Valid
                );
            }
        });
        let writer = rt.spawn(keyward_server::usage::write_usage(
            verifier.usage().clone(),
            store.clone(),
            stopped.clone(),
        ));
        let tail = rt.block_on(async {
            detecting.then(|| {
                keyward_server::anomalies::spawn(
                    store.clone(),
                    verifier.clone(),
                    Arc::new(AtomicBool::new(true)),
                    AnomalySettings {
                        lag: Duration::from_millis(500),
                        poll: Duration::from_millis(200),
                        ..AnomalySettings::default()
                    },
                    stopped.clone(),
                )
            })
        });
        let name = if detecting {
            format!("verify/anomaly detection on (usage recorded), {n} keys")
        } else {
            format!("verify/anomaly detection off (usage recorded), {n} keys")
        };
        let mut i = 0usize;
        c.bench_function(&name, |b| {
            b.iter(|| {
                i = (i + 7919) % keys.len();
                verifier
                    .try_verify_warm(black_box(&keys[i]), &req, now)
                    .unwrap()
            })
        });
        let cursor = rt.block_on(store.detect_cursor()).unwrap();
        eprintln!(
            "usage queue depth after the run: {}; detection cursor {} behind",
            verifier.usage().depth(),
            cursor
                .map(|c| format!("{} ms", (keyward_server::now() - c).num_milliseconds()))
                .unwrap_or_else(|| "-".into()),
        );
        let _ = stop.send(true);
        rt.block_on(async {
            writer.await.unwrap();
            if let Some(Some(t)) = tail {
                t.await.unwrap();
            }
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = detection
}
criterion_main!(benches);
