//! Anomaly detection over the usage event stream.
//!
//! [`Detectors`] is fed every usage event in time order and answers the anomalies that
//! event raises. The server runs it online over the events it records; `keyward detect
//! --events FILE` runs the very same code offline, so operators can back-test settings on
//! their own history.
//!
//! **Architecture Invariant:** no IO, no async, no clock: time comes from the events.
//! Memory is bounded per key.

use keyward_core::anomaly::Anomaly;
use keyward_core::usage::UsageEvent;
use serde::{Deserialize, Serialize};

/// The detectors' tunables. `Default` is what the server runs with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectSettings {}

/// Every detector, with the baselines it has learned so far.
#[derive(Debug, Default)]
pub struct Detectors {
    settings: DetectSettings,
}

impl Detectors {
    pub fn new(settings: DetectSettings) -> Detectors {
        Detectors { settings }
    }

    pub fn settings(&self) -> &DetectSettings {
        &self.settings
    }

    /// Feeds one event (events must come in time order) and appends the anomalies it
    /// raises to `out`.
    pub fn observe(&mut self, event: &UsageEvent, out: &mut Vec<Anomaly>) {
        let _ = (event, out);
    }
}
