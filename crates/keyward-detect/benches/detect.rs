//! Offline throughput of the detectors: a synthetic fleet (300 keys, 3 days, incidents
//! and benign changes) fed through `Detectors::observe`, and the same stream through
//! the `keyward detect` line parser. Also prints the memory held per key.
//!
//! `cargo bench -p keyward-detect --bench detect`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
}

criterion_group!(detect, benches);
criterion_main!(detect);
