//! Conformance tests of [`UsageStore`](crate::UsageStore), run on every store
//! (`tests/usage.rs`). Like the rest of the suite they tolerate other tests' data (ids
//! are fresh per test, time ranges are per test).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Duration;
use uuid::Uuid;

use keyward_core::VerifyCode;
use keyward_core::time::Timestamp;
use keyward_core::usage::{Bucket, UsageEvent, UsageTags};

use super::{key, minimal_key, new_identity, new_key};
use crate::Store;
use crate::usage::{RetentionCutoffs, UsageSubject};

/// A fixed hour in the past, so rollup buckets are predictable: 2026-01-05T10:00Z.
fn base() -> Timestamp {
    "2026-01-05T10:00:00Z".parse().unwrap()
}

pub(crate) fn event(
    at: Timestamp,
    key: Option<(Uuid, Uuid)>,
    code: VerifyCode,
    ip: &str,
) -> UsageEvent {
    UsageEvent {
        at,
        key_id: key.map(|k| k.0),
        identity_id: key.map(|k| k.1),
        code,
        ip: Some(ip.parse().unwrap()),
        scopes: vec![],
        latency_us: 42,
        tags: None,
    }
}

fn totals(counts: &[crate::usage::UsageCount]) -> BTreeMap<VerifyCode, u64> {
    let mut t = BTreeMap::new();
    for c in counts {
        *t.entry(c.code).or_default() += c.count;
    }
    t
}

/// Counts per bucket and outcome add up to the events recorded, per key and per
/// identity, at every granularity, across several batches.
pub async fn usage_counts_match_events(store: &dyn Store) {
    let i = new_identity(store, "usage-counts").await;
    let a = new_key(store, minimal_key(i.id)).await;
    let b = new_key(store, minimal_key(i.id)).await;
    let (ka, kb) = (Some((a.id, i.id)), Some((b.id, i.id)));
    let t = base();
    let mut batch1 = vec![];
    // Key a: 5 VALID in minute 0, 3 VALID + 2 RATE_LIMITED in minute 1, 1 VALID in hour 1.
    for n in 0..5 {
        batch1.push(event(
            t + Duration::seconds(n),
            ka,
            VerifyCode::Valid,
            "10.0.0.1",
        ));
    }
    for n in 0..3 {
        batch1.push(event(
            t + Duration::seconds(60 + n),
            ka,
            VerifyCode::Valid,
            "10.0.0.2",
        ));
    }
    store.record_usage(&batch1).await.unwrap();
    let mut tags = UsageTags::new();
    tags.insert("route".into(), "/orders".into());
    let batch2 = vec![
        event(
            t + Duration::seconds(61),
            ka,
            VerifyCode::RateLimited,
            "10.0.0.2",
        ),
        event(
            t + Duration::seconds(62),
            ka,
            VerifyCode::RateLimited,
            "10.0.0.2",
        ),
        UsageEvent {
            tags: Some(tags),
            ..event(t + Duration::minutes(70), ka, VerifyCode::Valid, "10.0.0.1")
        },
        event(
            t + Duration::seconds(5),
            kb,
            VerifyCode::InsufficientScope,
            "10.0.0.9",
        ),
        // Unknown keys count nowhere but in the raw events.
        event(
            t + Duration::seconds(5),
            None,
            VerifyCode::NotFound,
            "10.6.6.6",
        ),
    ];
    store.record_usage(&batch2).await.unwrap();

    let to = t + Duration::days(1);
    let minutes = store
        .usage_counts(UsageSubject::Key(a.id), Bucket::Minute, t, to)
        .await
        .unwrap();
    let by_minute: Vec<(i64, VerifyCode, u64)> = minutes
        .iter()
        .map(|c| ((c.start - t).num_minutes(), c.code, c.count))
        .collect();
    let mut expected = vec![
        (0, VerifyCode::Valid, 5),
        (1, VerifyCode::Valid, 3),
        (1, VerifyCode::RateLimited, 2),
        (70, VerifyCode::Valid, 1),
    ];
    let mut got = by_minute.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);

    let hours = store
        .usage_counts(UsageSubject::Key(a.id), Bucket::Hour, t, to)
        .await
        .unwrap();
    assert_eq!(
        hours
            .iter()
            .filter(|c| c.start == t)
            .map(|c| c.count)
            .sum::<u64>(),
        10
    );
    assert_eq!(totals(&hours)[&VerifyCode::Valid], 9);

    let days = store
        .usage_counts(UsageSubject::Identity(i.id), Bucket::Day, t, to)
        .await
        .unwrap();
    assert_eq!(days.len(), 3, "{days:?}"); // VALID, RATE_LIMITED, INSUFFICIENT_SCOPE
    assert!(days.iter().all(|c| c.start == Bucket::Day.start(t)));
    let tot = totals(&days);
    assert_eq!(tot[&VerifyCode::Valid], 9);
    assert_eq!(tot[&VerifyCode::RateLimited], 2);
    assert_eq!(tot[&VerifyCode::InsufficientScope], 1);

    // `from` inside a bucket includes that bucket; `to` excludes buckets from it on.
    let window = store
        .usage_counts(
            UsageSubject::Key(a.id),
            Bucket::Minute,
            t + Duration::seconds(30),
            t + Duration::minutes(2),
        )
        .await
        .unwrap();
    assert_eq!(totals(&window).values().sum::<u64>(), 10);

    let sources = store
        .top_sources(Some(UsageSubject::Key(a.id)), t, to, 10)
        .await
        .unwrap();
    let sources: Vec<(String, u64)> = sources.into_iter().map(|s| (s.ip, s.count)).collect();
    assert_eq!(
        sources,
        vec![("10.0.0.1".to_string(), 6), ("10.0.0.2".to_string(), 5)]
    );
    let everyone = store.top_sources(None, t, to, 100).await.unwrap();
    assert!(everyone.iter().any(|s| s.ip == "10.6.6.6" && s.count == 1));

    let top = store.top_keys(Some(i.id), t, to, 10).await.unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!((top[0].key_id, top[0].count, top[0].valid), (a.id, 11, 9));
    assert_eq!((top[1].key_id, top[1].count, top[1].valid), (b.id, 1, 0));
}

/// The retention job removes raw events and rollups older than their cut-offs, and
/// nothing newer.
pub async fn prune_usage(store: &dyn Store) {
    let i = new_identity(store, "usage-prune").await;
    let k = new_key(store, minimal_key(i.id)).await;
    let kk = Some((k.id, i.id));
    let old = base() - Duration::days(400);
    let recent = base();
    store
        .record_usage(&[
            event(old, kk, VerifyCode::Valid, "10.1.0.1"),
            event(recent, kk, VerifyCode::Valid, "10.1.0.1"),
        ])
        .await
        .unwrap();
    let pruned = store
        .prune_usage(RetentionCutoffs {
            raw_before: base() - Duration::days(7),
            minute_before: base() - Duration::days(7),
            rollup_before: base() - Duration::days(365),
        })
        .await
        .unwrap();
    assert!(pruned.events >= 1, "{pruned:?}");
    assert!(pruned.rollups >= 3, "{pruned:?}");
    let far = base() - Duration::days(500);
    let to = base() + Duration::days(1);
    for b in Bucket::ALL {
        let left = store
            .usage_counts(UsageSubject::Key(k.id), b, far, to)
            .await
            .unwrap();
        assert_eq!(left.len(), 1, "{b:?}: {left:?}");
        assert_eq!(left[0].start, b.start(recent));
    }
    let sources = store
        .top_sources(Some(UsageSubject::Key(k.id)), far, to, 10)
        .await
        .unwrap();
    assert_eq!(sources[0].count, 1);
}

/// The posture inputs hold live identities with their unrevoked keys and, per key, the
/// scopes exercised since the given time only.
pub async fn posture_inputs(store: &dyn Store) {
    let i = new_identity(store, "posture").await;
    let mut k = key(i.id);
    k.scopes = vec![
        "orders:read".into(),
        "orders:write".into(),
        "billing:*".into(),
    ];
    let k = new_key(store, k).await;
    let revoked = new_key(store, minimal_key(i.id)).await;
    store
        .revoke_key(
            revoked.id,
            super::now(),
            &super::audit("key.revoke", revoked.id),
        )
        .await
        .unwrap();
    let kk = Some((k.id, i.id));
    let t = base();
    let with = |at, scopes: &[&str], code| UsageEvent {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..event(at, kk, code, "10.2.0.1")
    };
    store
        .record_usage(&[
            with(t - Duration::days(100), &["billing:*"], VerifyCode::Valid),
            with(t, &["orders:read"], VerifyCode::Valid),
            // Refused calls name what was asked, not what was exercised.
            with(t, &["orders:write"], VerifyCode::InsufficientScope),
        ])
        .await
        .unwrap();
    let inputs = store
        .posture_inputs(Some(i.id), t - Duration::days(90))
        .await
        .unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].identity.id, i.id);
    assert_eq!(inputs[0].keys.len(), 1, "revoked keys are left out");
    let (rec, usage) = &inputs[0].keys[0];
    assert_eq!(rec.id, k.id);
    assert_eq!(
        usage.exercised.iter().cloned().collect::<Vec<_>>(),
        vec!["orders:read".to_string()]
    );
    let all = store.posture_inputs(None, t).await.unwrap();
    assert!(all.iter().any(|p| p.identity.id == i.id));
}

/// Ingestion rate: `batches` batches of `per_batch` events over 100 keys, as the usage
/// writer sends them. Returns events per second.
pub async fn ingestion_rate(
    store: &dyn Store,
    batches: usize,
    per_batch: usize,
    key_count: usize,
) -> Ingestion {
    let i = new_identity(store, "usage-rate").await;
    let mut keys = vec![];
    for _ in 0..key_count {
        keys.push(new_key(store, minimal_key(i.id)).await.id);
    }
    let t = super::now();
    let make = |b: usize| -> Vec<UsageEvent> {
        (0..per_batch)
            .map(|n| {
                let k = keys[(b * per_batch + n) % keys.len()];
                UsageEvent {
                    scopes: vec!["orders:read".into()],
                    ..event(
                        t + Duration::microseconds((b * per_batch + n) as i64),
                        Some((k, i.id)),
                        VerifyCode::Valid,
                        "10.3.0.1",
                    )
                }
            })
            .collect()
    };
    let all: Vec<Vec<UsageEvent>> = (0..batches).map(make).collect();
    let (started, cpu_before) = (Instant::now(), process_cpu_seconds());
    for batch in &all {
        store.record_usage(batch).await.unwrap();
    }
    // Counts a store keeps behind the events are part of ingesting them.
    store.settle_usage(true).await.unwrap();
    let events = (batches * per_batch) as f64;
    Ingestion {
        events_per_second: events / started.elapsed().as_secs_f64(),
        cpu_us_per_event: (process_cpu_seconds() - cpu_before) * 1e6 / events,
    }
}

/// What [`ingestion_rate`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Ingestion {
    /// Wall clock: includes every commit's fsync.
    pub events_per_second: f64,
    /// CPU time of this process per event (user + system): what ingestion takes away
    /// from verification on a busy machine, unaffected by other load. For PostgreSQL it
    /// leaves out the server's own work.
    pub cpu_us_per_event: f64,
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux; 0
/// elsewhere).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, indices 11 and 12 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}
