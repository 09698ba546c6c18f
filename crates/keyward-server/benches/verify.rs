//! The verify path in process: warm cache at 1k, 100k and 1M keys, and the cold path
//! (cache miss, SQLite read, cache fill). Also prints the resident memory per cached key.
//!
//! `cargo bench -p keyward-server --bench verify` (the 1M case takes a few minutes to
//! set up; `KEYWARD_BENCH_SIZES=1000,100000` picks sizes).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group};
use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::policy::VerifyRequest;
use keyward_core::ratelimit::RateLimitSpec;
use keyward_core::{KeyDigest, KeyPrefix, VerifyCode, key};
use keyward_server::verifier::Verifier;
use keyward_store::{SqliteStore, Store};
use tokio::runtime::Runtime;

// The allocator the `keyward` binary runs with, set up the same way (huge pages for the
// heap): where the cache's entries sit in memory is part of what is measured.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// A key as a typical service holds it: two scopes, an expiry, one rate limit.
fn record(identity: uuid::Uuid, digest: KeyDigest, start: String) -> KeyRecord {
    let now = keyward_server::now();
    KeyRecord {
        id: uuid::Uuid::now_v7(),
        identity_id: identity,
        name: "bench".into(),
        prefix: "kw".into(),
        start,
        digest,
        scopes: vec!["orders:*".into(), "billing:read".into()],
        created_at: now,
        updated_at: now,
        expires_at: Some(now + chrono::Duration::days(30)),
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec![],
        rate_limits: vec![RateLimitSpec {
            name: "burst".into(),
            limit: 1_000_000_000,
            window_seconds: 1,
        }],
        remaining: None,
        last_used_at: None,
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    }
}

/// A store holding `n` keys; returns their plaintexts.
async fn populate(store: Arc<dyn Store>, n: usize) -> Vec<String> {
    let now = keyward_server::now();
    let identity = Identity {
        id: uuid::Uuid::now_v7(),
        name: format!("bench-{}", uuid::Uuid::now_v7()),
        owner: "bench".into(),
        description: String::new(),
        meta: Default::default(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    store.create_identity(&identity, &audit()).await.unwrap();
    let mut keys = Vec::with_capacity(n);
    // Concurrent creations share commits (group commit).
    for chunk in (0..n).collect::<Vec<_>>().chunks(2048) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in chunk {
            let minted = key::mint(&KeyPrefix::default());
            let rec = record(identity.id, minted.digest, minted.start.clone());
            keys.push(minted.plaintext.as_str().to_owned());
            let store = store.clone();
            tasks.spawn(async move { store.create_key(&rec, &audit()).await.unwrap() });
        }
        tasks.join_all().await;
    }
    keys
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn sizes() -> Vec<usize> {
    std::env::var("KEYWARD_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000])
}

fn warm(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let scopes = vec!["orders:read".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: None,
    };
    for n in sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (verifier, keys) = rt.block_on(async {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
            let keys = populate(store.clone(), n).await;
            // Headroom: the cache is sharded, and a shard that fills up evicts.
            let (verifier, queue) = Verifier::new(store, 2 * n.max(1000));
            // Keep the last-use queue open; nothing drains it during the bench.
            std::mem::forget(queue);
            let before = rss_bytes();
            let now = keyward_server::now();
            for k in &keys {
                assert_eq!(
                    verifier.verify(k, &req, now).await.unwrap().code,
                    VerifyCode::Valid
                );
            }
            let after = rss_bytes();
            eprintln!(
                "{n} keys cached: resident memory grew {:.1} MiB, {} bytes per key",
                (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
                after.saturating_sub(before) / n as u64
            );
            (verifier, keys)
        });
        let now = keyward_server::now();
        let mut i = 0usize;
        c.bench_function(&format!("verify/warm, {n} keys"), |b| {
            b.iter_custom(|iters| {
                // A stride through the keys, so consecutive calls touch unrelated
                // entries. The keys are copied 64 at a time (4 KiB), untimed: a server
                // verifies a key it has just read from the request, in a buffer already
                // in the CPU cache, whereas `keys[i]` is a cold line of a large table
                // (about a fifth of the figure at 100k keys, measured).
                let mut timed = std::time::Duration::ZERO;
                let mut batch = Vec::with_capacity(64);
                let mut left = iters;
                while left > 0 {
                    batch.clear();
                    for _ in 0..left.min(64) {
                        i = (i + 7919) % keys.len();
                        batch.push(keys[i].clone());
                    }
                    left -= batch.len() as u64;
                    let started = std::time::Instant::now();
                    for key in &batch {
                        let o = verifier.try_verify_warm(black_box(key), &req, now).unwrap();
                        debug_assert_eq!(o.code, VerifyCode::Valid);
                        black_box(o);
                    }
                    timed += started.elapsed();
                }
                timed
            })
        });
        drop(verifier);
    }
}

fn cold(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scopes = vec!["orders:read".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: None,
    };
    let (verifier, keys) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let keys = populate(store.clone(), 10_000).await;
        let (verifier, queue) = Verifier::new(store, 100_000);
        std::mem::forget(queue);
        (verifier, keys)
    });
    let mut i = 0usize;
    c.bench_function(
        "verify/cold (miss, SQLite read, fill), 10000 keys on disk",
        |b| {
            b.iter_batched(
                || {
                    i = (i + 7919) % keys.len();
                    let k = &keys[i];
                    verifier.forget(&KeyDigest::of(k));
                    k
                },
                |k| {
                    let o = rt
                        .block_on(verifier.verify(k, &req, keyward_server::now()))
                        .unwrap();
                    assert_eq!(o.code, VerifyCode::Valid);
                },
                BatchSize::SmallInput,
            )
        },
    );
}

/// What usage recording costs a warm verification: the same warm path with every event
/// queued and drained by the real usage writer (into the SQLite store, as a server
/// does), and with recording off. `cargo bench -p keyward-server --bench verify --
/// verify/usage`.
fn usage_recording(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scopes = vec!["orders:read".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: None,
    };
    let n = 10_000;
    let (store, keys) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let keys = populate(store.clone(), n).await;
        (store, keys)
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for recording in [true, false] {
        let verifier = rt.block_on(async {
            let (verifier, queue) = if recording {
                Verifier::new(store.clone(), 2 * n)
            } else {
                Verifier::without_usage_recording(store.clone(), 2 * n)
            };
            std::mem::forget(queue);
            let now = keyward_server::now();
            for k in &keys {
                assert_eq!(
                    verifier.verify(k, &req, now).await.unwrap().code,
                    VerifyCode::Valid
                );
            }
            verifier
        });
        let writer = recording.then(|| {
            rt.spawn(keyward_server::usage::write_usage(
                verifier.usage().clone(),
                store.clone(),
                stopped.clone(),
            ))
        });
        let name = if recording {
            format!("verify/usage recording on (queue drained by the writer), {n} keys")
        } else {
            format!("verify/usage recording off, {n} keys")
        };
        let now = keyward_server::now();
        let mut i = 0usize;
        c.bench_function(&name, |b| {
            b.iter(|| {
                i = (i + 7919) % keys.len();
                verifier
                    .try_verify_warm(black_box(&keys[i]), &req, now)
                    .unwrap()
            })
        });
        if writer.is_some() {
            // Whether the writer kept up: a queue near capacity means events were dropped.
            eprintln!(
                "usage queue depth after the run: {}",
                verifier.usage().depth()
            );
        }
    }
    let _ = stop.send(true);
}

criterion_group!(verify, warm, cold, usage_recording);

fn main() {
    // As the `keyward` binary does. `KEYWARD_BENCH_HUGE_PAGES=off` measures with
    // mimalloc's defaults: neither huge pages nor freed memory kept (`allocator.rs`;
    // `MIMALLOC_PURGE_DELAY=-1` with it keeps the memory alone).
    if std::env::var("KEYWARD_BENCH_HUGE_PAGES").as_deref() != Ok("off") {
        keyward_server::allocator::configure();
    }
    verify();
    Criterion::default().configure_from_args().final_summary();
}
