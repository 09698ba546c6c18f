//! The scorer: runs the detectors over a scenario and compares what they said with the
//! labels. An incident is detected when an anomaly of its kind names its key (key
//! guessing: its network) between its start and 30 minutes after its end; the delay is
//! the simulated time from the incident's start to the event at which the detectors
//! emitted that anomaly. An anomaly that matches no incident (of any kind) is a false
//! alert.

use std::collections::BTreeMap;

use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};

use super::{Incident, Item, Scenario};
use crate::{DetectSettings, Detectors};

const SLACK: i64 = 30 * 60 * 1_000_000;

#[derive(Debug, Clone, Default)]
pub struct KindScore {
    pub incidents: usize,
    pub detected: usize,
    /// Detection delays, in seconds of simulated time.
    pub delays: Vec<f64>,
    pub false_alerts: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Score {
    pub kinds: BTreeMap<AnomalyKind, KindScore>,
    pub events: usize,
    pub alerts: usize,
    pub false_alerts: usize,
    /// False alerts of medium or high severity.
    pub false_alerts_medium_up: usize,
    pub key_days: f64,
    /// Up to 20 false alerts, for inspection.
    pub false_examples: Vec<Anomaly>,
    /// Missed incidents, for inspection.
    pub missed: Vec<Incident>,
}

impl Score {
    pub fn incidents(&self) -> usize {
        self.kinds.values().map(|k| k.incidents).sum()
    }

    pub fn recall(&self) -> f64 {
        let n = self.incidents();
        if n == 0 {
            return 1.0;
        }
        self.kinds.values().map(|k| k.detected).sum::<usize>() as f64 / n as f64
    }

    pub fn false_per_1000_key_days(&self) -> f64 {
        self.false_alerts as f64 * 1000.0 / self.key_days.max(1.0)
    }

    pub fn delays(&self) -> Vec<f64> {
        let mut d: Vec<f64> = self.kinds.values().flat_map(|k| k.delays.clone()).collect();
        d.sort_by(f64::total_cmp);
        d
    }

    /// Median detection delay over all detected incidents, in seconds.
    pub fn median_delay(&self) -> f64 {
        median(&self.delays())
    }

    /// Adds another run's counts (for totals over seeds).
    pub fn merge(&mut self, other: &Score) {
        for (k, v) in &other.kinds {
            let e = self.kinds.entry(*k).or_default();
            e.incidents += v.incidents;
            e.detected += v.detected;
            e.delays.extend(&v.delays);
            e.false_alerts += v.false_alerts;
        }
        self.events += other.events;
        self.alerts += other.alerts;
        self.false_alerts += other.false_alerts;
        self.false_alerts_medium_up += other.false_alerts_medium_up;
        self.key_days += other.key_days;
        self.false_examples
            .extend(other.false_examples.iter().cloned());
        self.false_examples.truncate(20);
        self.missed.extend(other.missed.iter().cloned());
    }
}

pub fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let mut v = sorted.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn matches(a: &Anomaly, i: &Incident, emitted: i64) -> bool {
    let start = i.start.timestamp_micros();
    let end = i.end.timestamp_micros() + SLACK;
    if emitted < start || emitted > end {
        return false;
    }
    match i.key_id {
        Some(k) => a.key_id == Some(k),
        None => {
            a.kind == AnomalyKind::KeyGuessing
                && a.evidence.get("network").and_then(|n| n.as_str()) == i.network.as_deref()
        }
    }
}

/// Runs fresh detectors with `settings` over `scn` and scores them.
pub fn score(scn: &Scenario, settings: &DetectSettings) -> Score {
    let mut d = Detectors::new(settings.clone());
    let mut out = Vec::new();
    let mut alerts: Vec<(i64, Anomaly)> = Vec::new();
    let mut events = 0;
    let mut last = 0;
    for item in scn.items() {
        match item {
            Item::Event(e) => {
                events += 1;
                last = e.at.timestamp_micros();
                d.observe(&e, &mut out);
            }
            Item::Rotated {
                old,
                new,
                at,
                grace_until,
            } => d.note_rotated(old, new, at, grace_until),
        }
        alerts.extend(out.drain(..).map(|a| (last, a)));
    }
    d.finish(&mut out);
    alerts.extend(out.drain(..).map(|a| (last, a)));

    let mut s = Score {
        events,
        alerts: alerts.len(),
        key_days: scn.key_days,
        ..Score::default()
    };
    let mut matched = vec![false; alerts.len()];
    for inc in &scn.incidents {
        let ks = s.kinds.entry(inc.kind).or_default();
        ks.incidents += 1;
        let mut first: Option<i64> = None;
        for (j, (emitted, a)) in alerts.iter().enumerate() {
            if matches(a, inc, *emitted) {
                matched[j] = true;
                if a.kind == inc.kind {
                    first = Some(first.map_or(*emitted, |f| f.min(*emitted)));
                }
            }
        }
        match first {
            Some(t) => {
                ks.detected += 1;
                ks.delays
                    .push((t - inc.start.timestamp_micros()) as f64 / 1_000_000.0);
            }
            None => s.missed.push(inc.clone()),
        }
    }
    for (j, (_, a)) in alerts.iter().enumerate() {
        if !matched[j] {
            s.false_alerts += 1;
            if a.severity >= Severity::Medium {
                s.false_alerts_medium_up += 1;
            }
            s.kinds.entry(a.kind).or_default().false_alerts += 1;
            if s.false_examples.len() < 20 {
                s.false_examples.push(a.clone());
            }
        }
    }
    s
}
