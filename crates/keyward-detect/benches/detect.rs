//! Offline throughput of the detectors: a synthetic fleet (300 keys, 3 days, incidents
//! and benign changes) fed through `Detectors::observe`, and the same stream through
//! the `keyward detect` line parser. Also prints the memory held per key.
//!
//! `cargo bench -p keyward-detect --bench detect`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keyward_core::usage::UsageEvent;
use keyward_detect::events::{Line, parse_line};
use keyward_detect::sim::{Item, Scenario, SimConfig};
use keyward_detect::{DetectSettings, Detectors, KEY_STATE_BYTES};

fn benches(c: &mut Criterion) {
    let scn = Scenario::generate(&SimConfig {
        seed: 42,
        keys: 300,
        days: 7,
        incidents_per_kind: 4,
    });
    let events: Vec<UsageEvent> = scn
        .items()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e),
            Item::Rotated { .. } => None,
        })
        .collect();
    let mut lines = Vec::new();
    scn.write_events(&mut lines).unwrap();
    let lines = String::from_utf8(lines).unwrap();

    {
        let mut d = Detectors::new(DetectSettings::default());
        let mut out = Vec::new();
        for e in &events {
            d.observe(e, &mut out);
        }
        let mut per_key: Vec<usize> = events
            .iter()
            .filter_map(|e| e.key_id)
            .filter_map(|k| d.key_bytes(k))
            .collect();
        per_key.sort_unstable();
        eprintln!(
            "{} events, {} keys; state per key: fixed {} bytes, median {} bytes, max {} \
             bytes, bound {} bytes; {} anomalies",
            events.len(),
            d.keys_tracked(),
            KEY_STATE_BYTES,
            per_key[per_key.len() / 2],
            per_key.last().unwrap(),
            d.key_state_max_bytes(),
            out.len()
        );
    }

    let mut g = c.benchmark_group("detect");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("observe", |b| {
        b.iter(|| {
            let mut d = Detectors::new(DetectSettings::default());
            let mut out = Vec::new();
            for e in &events {
                d.observe(black_box(e), &mut out);
                out.clear();
            }
            d
        })
    });
    g.bench_function("parse_and_observe", |b| {
        b.iter(|| {
            let mut d = Detectors::new(DetectSettings::default());
            let mut out = Vec::new();
            for line in lines.lines() {
                match parse_line(black_box(line)) {
                    Ok(Line::Event(e)) => d.observe(&e, &mut out),
                    Ok(Line::Rotated {
                        old,
                        new,
                        at,
                        grace_until,
                    }) => d.note_rotated(old, new, at, grace_until),
                    _ => {}
                }
                out.clear();
            }
            d
        })
    });
    g.finish();
    fleet(c);
}

/// The shape of `bench/load.sh`: 20,000 keys of one identity, each verified in turn
/// from one address for one scope, so every event meets a key state last touched 20,000
/// events ago (out of cache), at 50,000 events a second. `fresh`: keys in their first
/// minute, as in the load test; `warm`: keys past warm-up (every detector judges), as on
/// a node that has run for days; `warm_any_order`: the same with the keys in a new
/// random order on every pass (the load test's fixed order lets the CPU prefetch the
/// next key's state; real traffic does not).
fn fleet(c: &mut Criterion) {
    const KEYS: usize = 20_000;
    const STEP_US: i64 = 20;
    let identity = Some(uuid::Uuid::from_u128(7));
    let keys: Vec<uuid::Uuid> = (0..KEYS as u128)
        .map(|i| uuid::Uuid::from_u128(0x9e37_79b9_7f4a_7c15 * (i + 1)))
        .collect();
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-07T09:00:00Z")
        .unwrap()
        .to_utc();
    let event = |i: usize, at: chrono::DateTime<chrono::Utc>| UsageEvent {
        at,
        key_id: Some(keys[i % KEYS]),
        identity_id: identity,
        code: keyward_core::code::VerifyCode::Valid,
        ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        scopes: vec!["orders:read".to_string()],
        latency_us: 3,
        tags: None,
    };
    // One pass over the fleet, starting at `from`.
    let pass = |from: chrono::DateTime<chrono::Utc>| -> Vec<UsageEvent> {
        (0..KEYS)
            .map(|i| event(i, from + chrono::Duration::microseconds(i as i64 * STEP_US)))
            .collect()
    };
    let mut warm = Detectors::new(DetectSettings::default());
    let mut out = Vec::new();
    // Warm-up: 60 uses per key spread over four days (every 96 minutes).
    for round in 0..60 {
        for e in pass(start + chrono::Duration::minutes(96 * round)) {
            warm.observe(&e, &mut out);
        }
    }
    let later = start + chrono::Duration::days(4) + chrono::Duration::minutes(5);
    let mut g = c.benchmark_group("detect/fleet_20k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(KEYS as u64 * 5));
    g.bench_function("fresh", |b| {
        let mut d = Detectors::new(DetectSettings::default());
        // The first pass creates the states; the measured ones update them.
        for e in pass(start) {
            d.observe(&e, &mut out);
        }
        let mut round = 0;
        b.iter_batched(
            || five_passes(&pass, start, &mut round),
            |events| {
                observe_all(&mut d, &events, &mut out);
                events // dropped outside the measurement
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("warm", |b| {
        let mut round = 0;
        b.iter_batched(
            || five_passes(&pass, later, &mut round),
            |events| {
                observe_all(&mut warm, &events, &mut out);
                events
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("warm_any_order", |b| {
        let mut round = 0;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        b.iter_batched(
            || {
                let mut events = five_passes(&pass, later + chrono::Duration::hours(1), &mut round);
                for one in events.chunks_mut(KEYS) {
                    shuffle_keys(one, &mut seed);
                }
                events
            },
            |events| {
                observe_all(&mut warm, &events, &mut out);
                events
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Deals the events' keys out again in a random order (times stay in order).
fn shuffle_keys(events: &mut [UsageEvent], seed: &mut u64) {
    for i in (1..events.len()).rev() {
        // xorshift64: any well-spread order will do.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let j = (*seed % (i as u64 + 1)) as usize;
        let (a, b) = (events[i].key_id, events[j].key_id);
        events[i].key_id = b;
        events[j].key_id = a;
    }
}

/// The next five passes, 400 ms apart (events are built outside the measurement).
fn five_passes(
    pass: &impl Fn(chrono::DateTime<chrono::Utc>) -> Vec<UsageEvent>,
    from: chrono::DateTime<chrono::Utc>,
    round: &mut i64,
) -> Vec<UsageEvent> {
    let mut v = Vec::new();
    for _ in 0..5 {
        *round += 1;
        v.extend(pass(from + chrono::Duration::milliseconds(400 * *round)));
    }
    v
}

fn observe_all(
    d: &mut Detectors,
    events: &[UsageEvent],
    out: &mut Vec<keyward_core::anomaly::Anomaly>,
) {
    for e in events {
        d.observe(black_box(e), out);
    }
    out.clear();
}

criterion_group!(detect, benches);
criterion_main!(detect);
