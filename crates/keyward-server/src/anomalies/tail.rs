//! The leader's tail over the stored usage events (see the module's documentation).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::anyhow;
use keyward_core::anomaly::Anomaly;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use keyward_store::Store;
use keyward_store::anomalies::{CursorMove, NewAnomaly};
use keyward_store::slice::Slice;
use tokio::sync::watch;
use uuid::Uuid;

use super::{AnomalySettings, Detect, subject};
use crate::background::Background;
use crate::verifier::Verifier;

/// Events read per page (and recorded per transaction with their anomalies).
const PAGE: u32 = 5_000;
/// How long detection runs at a stretch before it pauses (`background::pause`): every
/// request that wants the core meanwhile waits for it. A thousand events at a stretch
/// (~0.4 ms) showed in the p99 of verify.
const OBSERVE_SLICE: std::time::Duration = std::time::Duration::from_micros(200);
/// Events observed between two looks at the clock (a look costs ~30 ns).
const OBSERVE_CLOCK_EVERY: u32 = 64;
/// Pages per round at most, so responses and leadership checks are not starved.
const PAGES_PER_ROUND: usize = 40;

/// Runs detection on whichever node leads, until `shutdown` turns true, on a background
/// thread (`background.rs`). `None` when detection is off.
pub fn spawn(
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    leader: Arc<AtomicBool>,
    settings: AnomalySettings,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Background<()>> {
    if !settings.enabled {
        return None;
    }
    Some(crate::background::spawn("keyward-detect", async move {
        let mut tail: Option<Tail> = None;
        let mut tick = tokio::time::interval(settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            if !leader.load(Ordering::Relaxed) {
                // Another node leads: its detectors have the baselines now.
                tail = None;
                continue;
            }
            if tail.is_none() {
                match Tail::start(&*store, &settings).await {
                    Ok(t) => tail = Some(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "anomaly detection could not start; will retry");
                        continue;
                    }
                }
            }
            if let Some(t) = tail.as_mut()
                && let Err(e) = t.round(&*store, &settings).await
            {
                // Start again from the stored cursor: the detectors may have seen events
                // whose anomalies were not recorded.
                tracing::warn!(error = %e, "anomaly detection restarts from its cursor");
                tail = None;
            }
            super::respond_pending(&*store, &verifier).await;
        }
    }))
}

/// The detectors and where they are in the event stream.
struct Tail {
    detectors: Box<dyn Detect>,
    /// The stored cursor (`None`: none stored yet).
    cursor: Option<Timestamp>,
    /// Events up to here have been fed: the stored cursor, or later when there were no
    /// events since (an empty stretch is passed without a write).
    position: Timestamp,
    raised: Vec<Anomaly>,
    /// The page of events being fed, kept between pages: a fresh one per page cost more
    /// in page faults than decoding its events did.
    page: Vec<UsageEvent>,
    rotations: super::rotations::Rotations,
    observed: metrics::Counter,
    skipped: metrics::Counter,
    detected: metrics::Counter,
    behind: metrics::Gauge,
}

fn delta(d: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::days(366))
}

impl Tail {
    /// Fresh detectors, fed the replay window before the cursor with their output
    /// discarded: baselines and ongoing episodes are rebuilt, nothing is alerted twice.
    async fn start(store: &dyn Store, s: &AnomalySettings) -> anyhow::Result<Tail> {
        let cursor = store.detect_cursor().await?;
        let position = cursor.unwrap_or_else(|| crate::now() - delta(s.lag));
        let mut tail = Tail {
            detectors: (s.detectors)(),
            cursor,
            position,
            raised: Vec::new(),
            page: Vec::new(),
            rotations: super::rotations::Rotations::default(),
            observed: metrics::counter!("keyward_anomaly_events_observed_total"),
            skipped: metrics::counter!("keyward_anomaly_events_skipped_total"),
            detected: metrics::counter!("keyward_anomalies_detected_total"),
            behind: metrics::gauge!("keyward_anomaly_detection_behind_seconds"),
        };
        let mut from = position - delta(s.replay);
        let mut replayed = 0u64;
        loop {
            let events = &mut tail.page;
            store
                .usage_events_after(from, position, PAGE, events)
                .await?;
            let Some(last) = events.last() else { break };
            from = last.at;
            for e in events.iter() {
                tail.detectors.observe(e, &mut tail.raised);
            }
            tail.raised.clear();
            replayed += events.len() as u64;
            if events.len() < PAGE as usize {
                break;
            }
        }
        // Rotations still in their grace period, now that the old keys' baselines exist.
        tail.rotations
            .feed(store, &mut *tail.detectors, Some(position))
            .await?;
        tracing::info!(replayed, "anomaly detection started on this node");
        Ok(tail)
    }

    /// Feeds the events stored since the last round and records what they raise.
    async fn round(&mut self, store: &dyn Store, s: &AnomalySettings) -> anyhow::Result<()> {
        let now = crate::now();
        let until = now - delta(s.lag);
        let oldest_kept = now - delta(s.max_behind);
        if self.position < oldest_kept {
            // Too far behind to catch up in useful time: skip, and say how much.
            let n = store
                .count_usage_events_after(self.position, oldest_kept)
                .await?;
            self.advance(store, s, oldest_kept, Vec::new()).await?;
            if n > 0 {
                self.skipped.increment(n);
                tracing::warn!(
                    events = n,
                    "anomaly detection fell behind and skipped events"
                );
            }
        }
        self.rotations
            .feed(store, &mut *self.detectors, None)
            .await?;
        for _ in 0..PAGES_PER_ROUND {
            if until <= self.position {
                break;
            }
            let mut events = std::mem::take(&mut self.page);
            store
                .usage_events_after(self.position, until, PAGE, &mut events)
                .await?;
            let full = events.len() == PAGE as usize;
            let to = match events.last().map(|e| e.at) {
                Some(last) if full => {
                    // Events of the page's last instant may continue on the next page:
                    // leave them all to it (unless the whole page is that instant).
                    let cut = events.partition_point(|e| e.at < last);
                    if cut > 0 {
                        events.truncate(cut);
                        events[cut - 1].at
                    } else {
                        last
                    }
                }
                _ => until,
            };
            let mut slice = Slice::new(OBSERVE_SLICE, OBSERVE_CLOCK_EVERY);
            for e in &events {
                if slice.step() {
                    crate::background::pause().await;
                }
                self.detectors.observe(e, &mut self.raised);
            }
            self.observed.increment(events.len() as u64);
            let none = events.is_empty();
            self.page = events;
            // Every event up to `to` is in: judgements waiting for time are due.
            self.detectors.tick(to, &mut self.raised);
            if none && self.raised.is_empty() {
                // Nothing new: move on without a write (an idle server would otherwise
                // commit, and fsync, once a round). The stored cursor stays behind; a
                // restart re-reads the empty stretch.
                self.position = to;
                break;
            }
            let items: Vec<NewAnomaly> = self
                .raised
                .drain(..)
                .map(|a| NewAnomaly {
                    id: Uuid::now_v7(),
                    subject: subject(&a),
                    anomaly: a,
                })
                .collect();
            self.advance(store, s, to, items).await?;
            if !full {
                break;
            }
        }
        self.behind
            .set((now - self.position).num_milliseconds() as f64 / 1e3);
        Ok(())
    }

    /// Moves the stored cursor to `to`, recording `items` with it.
    async fn advance(
        &mut self,
        store: &dyn Store,
        s: &AnomalySettings,
        to: Timestamp,
        items: Vec<NewAnomaly>,
    ) -> anyhow::Result<()> {
        let mv = CursorMove {
            from: self.cursor,
            to,
        };
        let written = store
            .record_anomalies(mv, &items, delta(s.regroup))
            .await?
            .ok_or_else(|| anyhow!("another node moved the detection cursor"))?;
        self.detected.increment(written.len() as u64);
        self.cursor = Some(to);
        self.position = to;
        Ok(())
    }
}
