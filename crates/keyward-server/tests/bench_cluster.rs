//! Figures for BENCHMARKS.md (ignored by default; run in release):
//!
//! ```sh
//! cargo test --release -p keyward-server --test bench_cluster -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Warm-cache verify through the verifier, in process, over each store: a warm
//! verification touches no store, so cluster mode (PostgreSQL) should match the
//! embedded store. Also a key with a `remaining` quota, which reaches the store on
//! every call.

use std::sync::Arc;
use std::time::Instant;

use keyward_core::key::{KeyPrefix, mint};
use keyward_core::policy::VerifyRequest;
use keyward_core::{VerifyCode, time};
use keyward_server::verifier::Verifier;
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::{PgStore, SqliteStore, Store};

async fn run(name: &str, store: Arc<dyn Store>) {
    let ident = testkit::identity("bench");
    store
        .create_identity(&ident, &testkit::audit("identity.create", ident.id))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for remaining in [None, Some(1_000_000_000)] {
        let minted = mint(&KeyPrefix::default());
        let mut rec = testkit::minimal_key(ident.id);
        rec.prefix = "kw".into();
        rec.digest = minted.digest;
        rec.start = minted.start.clone();
        rec.remaining = remaining;
        rec.scopes = vec!["orders:read".into()];
        store
            .create_key(&rec, &testkit::audit("key.create", rec.id))
            .await
            .unwrap();
        keys.push(minted.plaintext);
    }
    let (verifier, _last_used) = Verifier::new(store, 1000);
    let scopes = vec!["orders:read".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: None,
    };
    for (what, key, n) in [("warm", &keys[0], 200_000u32), ("quota", &keys[1], 5_000)] {
        let now = time::truncate(chrono::Utc::now());
        assert_eq!(
            verifier.verify(key, &req, now).await.unwrap().code,
            VerifyCode::Valid
        );
        let mut lat = Vec::with_capacity(n as usize);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let o = verifier.verify(key, &req, now).await.unwrap();
            lat.push(t.elapsed());
            debug_assert_eq!(o.code, VerifyCode::Valid);
        }
        let total = start.elapsed();
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:8} {what:5}: {:>8.0} verifications/s on one task, p50 {:?}, p99 {:?}",
            f64::from(n) / total.as_secs_f64(),
            p(0.5),
            p(0.99)
        );
    }
}

#[tokio::test]
#[ignore = "benchmark: run in release with --ignored"]
async fn warm_verify_on_each_store() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    run("sqlite", Arc::new(sqlite)).await;
    let db = TempDatabase::create().await;
    let pg = PgStore::open(&db.url).await.unwrap();
    run("postgres", Arc::new(pg.clone())).await;
    pg.close().await;
}
