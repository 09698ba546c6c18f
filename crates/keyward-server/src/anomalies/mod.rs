//! Online anomaly detection (issue 6): the jobs leader tails the usage events every node
//! stored, feeds them to the detectors (`keyward-detect`), records what they raise and
//! runs each identity's response (`respond.rs`).
//!
//! Why the leader and the stored events, rather than each node on its own events: a key
//! behind a load balancer is seen by every node, each with part of its traffic. A node
//! alone would call "new network" an address that another node sees every day, would
//! miss guessing spread over nodes, and every node would alert the same episode.
//! One detector over everything gives cluster-wide baselines and one alert. It costs
//! verify nothing (it reads what the usage writer already wrote) and a few seconds of
//! delay ([`AnomalySettings::lag`]).
//!
//! The tail is by event time: each round reads the events with
//! `cursor < at <= now - lag`. Events are written within about a second of their time
//! (`usage.rs`), so the lag covers them; an event written later than that (a node that
//! could not reach the store for a while) is not seen by the detectors.
//!
//! Restarts and a change of leader: the new detectors first replay the
//! [`AnomalySettings::replay`] before the stored cursor with their output discarded,
//! rebuilding baselines and the episodes in progress, so an ongoing episode is not
//! alerted again; and the store leaves out an anomaly of the same kind and subject as
//! one recorded within [`AnomalySettings::regroup`] (belt and braces for an episode older
//! than the replay). Anomalies are recorded with the cursor's move in one transaction
//! (compare-and-set), so two leaders overlapping briefly cannot both record.

mod respond;
mod rotations;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use keyward_core::anomaly::Anomaly;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use uuid::Uuid;

pub use respond::respond_pending;
pub use tail::spawn;

/// Anything that turns usage events (in time order) into anomalies: the real
/// [`keyward_detect::Detectors`], or a test's.
pub trait Detect: Send {
    /// Feeds one event and appends the anomalies it raises to `out`.
    fn observe(&mut self, event: &UsageEvent, out: &mut Vec<Anomaly>);

    /// Tells the detectors that `old` was rotated to `new` at `at` and stays valid until
    /// `grace_ends` (for `OLD_KEY_UNEXPECTED_SOURCE`). The tail reads rotations from the
    /// `key.rotate` audit records (`rotations.rs`).
    fn note_rotated(&mut self, old: Uuid, new: Uuid, at: Timestamp, grace_ends: Timestamp) {
        let _ = (old, new, at, grace_ends);
    }

    /// Time has reached `at` (every event up to it has been fed): judgements that wait
    /// for time to pass (a new network's confirmation window) are made.
    fn tick(&mut self, at: Timestamp, out: &mut Vec<Anomaly>) {
        let _ = (at, out);
    }
}

impl Detect for keyward_detect::Detectors {
    fn observe(&mut self, event: &UsageEvent, out: &mut Vec<Anomaly>) {
        keyward_detect::Detectors::observe(self, event, out);
    }

    fn note_rotated(&mut self, old: Uuid, new: Uuid, at: Timestamp, grace_ends: Timestamp) {
        keyward_detect::Detectors::note_rotated(self, old, new, at, grace_ends);
    }

    fn tick(&mut self, at: Timestamp, out: &mut Vec<Anomaly>) {
        keyward_detect::Detectors::tick(self, at, out);
    }
}

/// Makes fresh detectors (at start, and whenever this node becomes the leader).
pub type DetectorFactory = Arc<dyn Fn() -> Box<dyn Detect> + Send + Sync>;

/// The detectors the server runs: `keyward_detect`'s, with its default settings.
pub fn default_detectors() -> DetectorFactory {
    Arc::new(|| {
        Box::new(keyward_detect::Detectors::new(
            keyward_detect::DetectSettings::default(),
        ))
    })
}

/// Online detection settings.
#[derive(Clone)]
pub struct AnomalySettings {
    /// Off: no detection (verify is the same either way: detection reads stored events).
    pub enabled: bool,
    pub detectors: DetectorFactory,
    /// How far behind real time the tail reads, so events being written are complete.
    /// **Architecture Invariant:** longer than the usage writer's flush interval
    /// ([`crate::usage::FLUSH_EVERY`]) with room to spare, or the tail passes events
    /// before they are stored and never sees them (test: `tests::the_lag_covers_a_flush`).
    pub lag: Duration,
    /// How often the leader reads new events.
    pub poll: Duration,
    /// How much history new detectors replay (output discarded) to rebuild baselines and
    /// ongoing episodes; read in full before detection goes live, so keep it modest.
    pub replay: Duration,
    /// An anomaly of the same kind and subject as one recorded this recently is left out.
    pub regroup: Duration,
    /// When detection falls further behind than this, it skips ahead to this far behind
    /// and counts the events it skipped (`keyward_anomaly_events_skipped_total`).
    pub max_behind: Duration,
}

impl std::fmt::Debug for AnomalySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnomalySettings")
            .field("enabled", &self.enabled)
            .field("lag", &self.lag)
            .field("poll", &self.poll)
            .field("replay", &self.replay)
            .field("regroup", &self.regroup)
            .field("max_behind", &self.max_behind)
            .finish_non_exhaustive()
    }
}

impl Default for AnomalySettings {
    fn default() -> Self {
        AnomalySettings {
            enabled: true,
            detectors: default_detectors(),
            lag: Duration::from_secs(3),
            poll: Duration::from_secs(1),
            replay: Duration::from_secs(3600),
            regroup: Duration::from_secs(15 * 60),
            max_behind: Duration::from_secs(15 * 60),
        }
    }
}

/// What an anomaly is about, for grouping one episode's alerts: the key, else the
/// identity, else the address or network named in its evidence.
pub fn subject(a: &Anomaly) -> String {
    if let Some(k) = a.key_id {
        return k.to_string();
    }
    if let Some(i) = a.identity_id {
        return i.to_string();
    }
    ["network", "ip", "source"]
        .iter()
        .find_map(|f| a.evidence.get(f).and_then(|v| v.as_str()))
        .map(|s| format!("net:{s}"))
        .unwrap_or_default()
}

/// The retention job: anomalies are kept as long as the usage rollups (they are the
/// record of what happened; the raw events behind them go sooner).
pub async fn enforce_retention(
    store: &dyn keyward_store::Store,
    usage: &crate::usage::UsageSettings,
) {
    let before = usage.cutoffs(crate::now()).rollup_before;
    match store.prune_anomalies(before).await {
        Ok(n) if n > 0 => tracing::info!(anomalies = n, "anomaly retention: removed old anomalies"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "anomaly retention failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_covers_a_flush() {
        assert!(AnomalySettings::default().lag >= 2 * crate::usage::FLUSH_EVERY);
    }
}
