//! The generator and scorer on a small fixed fleet: the detectors must meet the issue's
//! targets (recall >= 90%, <= 2 false alerts per 1,000 key-days, median delay <= 5
//! minutes of simulated time). Deterministic: simulated time only, nothing is timed.
//! The full figures (more keys, tuning and hold-out seeds) are in BENCHMARKS.md.

use keyward_core::anomaly::AnomalyKind;
use keyward_detect::DetectSettings;
use keyward_detect::sim::{Scenario, SimConfig, score};

#[test]
fn a_small_fleet_meets_the_targets() {
    let cfg = SimConfig {
        seed: 7,
        keys: 80,
        days: 14,
        incidents_per_kind: 2,
    };
    let scn = Scenario::generate(&cfg);
    // Every kind is labelled.
    for kind in AnomalyKind::ALL {
        assert!(
            scn.incidents.iter().any(|i| i.kind == kind),
            "no {kind} incident generated"
        );
    }
    let s = score(&scn, &DetectSettings::default());
    assert!(
        s.recall() >= 0.9,
        "recall {:.3}, missed {:?}",
        s.recall(),
        s.missed
    );
    assert!(
        s.false_per_1000_key_days() <= 2.0,
        "{} false alerts over {:.0} key-days: {:#?}",
        s.false_alerts,
        s.key_days,
        s.false_examples
    );
    assert!(
        s.median_delay() <= 300.0,
        "median delay {} s",
        s.median_delay()
    );
    // And the same stream gives the same verdicts (no hidden clock or randomness).
    let again = score(&Scenario::generate(&cfg), &DetectSettings::default());
    assert_eq!(again.alerts, s.alerts);
    assert_eq!(again.false_alerts, s.false_alerts);
}
