//! Scores the detectors on synthetic fleets.
//!
//! ```sh
//! cargo run --release -p keyward-detect --example evaluate -- \
//!     --seeds 1,2,3 --holdout 1001,1002,1003 [--keys 300] [--days 14] [--incidents 8] \
//!     [--settings FILE.json] [--verbose] [--write-events FILE --seed N]
//! ```
//!
//! `--seeds` are the tuning seeds; `--holdout` seeds are scored separately and were
//! never looked at while tuning. `--write-events` writes the fleet of `--seed` as a
//! `keyward detect --events` file instead of scoring.

use std::time::Instant;

use keyward_core::anomaly::AnomalyKind;
use keyward_detect::DetectSettings;
use keyward_detect::sim::{Scenario, Score, SimConfig, score};

fn seeds(s: &str) -> Vec<u64> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.trim().parse().expect("seeds are integers"))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut tuning = vec![1];
    let mut holdout = Vec::new();
    let mut cfg = SimConfig::default();
    let mut settings = DetectSettings::default();
    let mut verbose = false;
    let mut write: Option<String> = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--seeds" => tuning = seeds(&val()),
            "--holdout" => holdout = seeds(&val()),
            "--seed" => cfg.seed = val().parse().expect("--seed"),
            "--keys" => cfg.keys = val().parse().expect("--keys"),
            "--days" => cfg.days = val().parse().expect("--days"),
            "--incidents" => cfg.incidents_per_kind = val().parse().expect("--incidents"),
            "--settings" => {
                let text = std::fs::read_to_string(val()).expect("read --settings");
                settings = serde_json::from_str(&text).expect("settings JSON");
            }
            "--write-events" => write = Some(val()),
            "--verbose" => verbose = true,
            other => panic!("unknown argument {other}"),
        }
    }
    if let Some(path) = write {
        let scn = Scenario::generate(&cfg);
        let file = std::fs::File::create(&path).expect("create events file");
        let mut w = std::io::BufWriter::new(file);
        scn.write_events(&mut w).expect("write events");
        eprintln!(
            "wrote {} records to {path}; {} labelled incidents",
            scn.len(),
            scn.incidents.len()
        );
        for i in &scn.incidents {
            println!(
                "{}",
                serde_json::json!({
                    "kind": i.kind, "key_id": i.key_id, "network": i.network,
                    "start": i.start, "end": i.end, "subtle": i.subtle,
                })
            );
        }
        return;
    }
    println!(
        "fleet: {} keys over {} days, {} incidents per kind per seed",
        cfg.keys, cfg.days, cfg.incidents_per_kind
    );
    run("tuning seeds", &tuning, &cfg, &settings, verbose);
    if !holdout.is_empty() {
        run("hold-out seeds", &holdout, &cfg, &settings, verbose);
    }
}

fn run(title: &str, seeds: &[u64], cfg: &SimConfig, settings: &DetectSettings, verbose: bool) {
    let mut total = Score::default();
    let mut detect_secs = 0.0;
    for &seed in seeds {
        let scn = Scenario::generate(&SimConfig {
            seed,
            ..cfg.clone()
        });
        let t = Instant::now();
        let s = score(&scn, settings);
        detect_secs += t.elapsed().as_secs_f64();
        println!(
            "  seed {seed}: {} events, recall {:.1}%, {} false alerts ({:.2} per 1,000 key-days), median delay {:.0} s",
            s.events,
            100.0 * s.recall(),
            s.false_alerts,
            s.false_per_1000_key_days(),
            s.median_delay()
        );
        if verbose {
            for a in &s.false_examples {
                let who = a.key_id.map_or_else(String::new, |k| scn.describe(k));
                println!(
                    "    false: {} {} {} {} [{who}]",
                    a.at, a.kind, a.severity, a.detail
                );
            }
            for m in &s.missed {
                let who = m.key_id.map_or_else(String::new, |k| scn.describe(k));
                println!(
                    "    missed: {} {:?} {} subtle={} [{who}]",
                    m.kind, m.network, m.start, m.subtle
                );
            }
        }
        total.merge(&s);
    }
    println!("\n{title} {seeds:?}:");
    println!(
        "  {:<26} {:>9} {:>8} {:>8} {:>13} {:>13}",
        "kind", "incidents", "detected", "recall", "median delay", "false alerts"
    );
    for kind in AnomalyKind::ALL {
        let k = total.kinds.get(&kind).cloned().unwrap_or_default();
        println!(
            "  {:<26} {:>9} {:>8} {:>7.1}% {:>11.0} s {:>13}",
            kind.as_str(),
            k.incidents,
            k.detected,
            if k.incidents == 0 {
                100.0
            } else {
                100.0 * k.detected as f64 / k.incidents as f64
            },
            keyward_detect::sim::median(&k.delays),
            k.false_alerts
        );
    }
    println!(
        "  overall: recall {:.1}% ({} of {}), {} false alerts = {:.2} per 1,000 key-days \
         ({} medium or high = {:.2}), median delay {:.0} s, {} events scored in {:.2} s ({:.0} events/s incl. conversion)",
        100.0 * total.recall(),
        total.kinds.values().map(|k| k.detected).sum::<usize>(),
        total.incidents(),
        total.false_alerts,
        total.false_per_1000_key_days(),
        total.false_alerts_medium_up,
        total.false_alerts_medium_up as f64 * 1000.0 / total.key_days.max(1.0),
        total.median_delay(),
        total.events,
        detect_secs,
        total.events as f64 / detect_secs.max(1e-9)
    );
}
