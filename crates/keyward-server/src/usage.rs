//! Usage recording: every verification becomes a usage event without slowing verify.
//!
//! The verifier pushes a fixed-size [`PendingEvent`] into a bounded lock-free ring
//! ([`crossbeam_queue::ArrayQueue`], allocated once): no lock, no await, and on an
//! accepted call no allocation (the key is an `Arc` already cached, the exercised scopes
//! a bitmask over the key's scope list). When the ring is full the event is dropped and
//! counted (`keyward_usage_events_dropped_total`): verify never waits for the store.
//!
//! [`write_usage`] drains the ring as soon as it holds a whole batch (`BATCH_MAX`
//! events, checked every [`POLL_EVERY`]) and everything in it every [`FLUSH_EVERY`],
//! resolves the events (ids, scope names) and writes them (`UsageStore::record_usage`:
//! one transaction per batch). It records the verify latency histogram from the
//! events, off the hot path. At shutdown it runs after the HTTP server has finished
//! every request, drains the ring to the end and writes it all: nothing queued is lost.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use keyward_core::VerifyCode;
use keyward_core::usage::{UsageEvent, UsageTags, scopes_in_mask_into};
use keyward_store::Store;
use keyward_store::usage::RetentionCutoffs;
use tokio::sync::watch;

use crate::usage_alerts::Alerts;
use crate::verifier::CachedKey;

/// The longest an event waits in the queue: the writer drains everything at least this
/// often. A part-filled batch has the same fixed cost as a whole one (a transaction,
/// handing the worker thread over for the blocking write): draining once a second
/// rather than every 200 ms made a one-core gateway 5% faster (BENCHMARKS.md,
/// "Gateway"). A process crash loses at most this much of usage; the queue (131,072
/// events) holds over two seconds of a core saturated with verify requests over HTTP.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often the writer looks for a whole batch in the queue. Under load a batch is
/// written as soon as it is there, not with the rest of the second's traffic: the queue's
/// slots written since the last drain stay few enough to be in the CPU's cache when the
/// writer reads them, and the blocking writes, spread over the second, do not hold the
/// node's core for tens of milliseconds at a time.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// Events per store transaction. Each is written on a blocking section of its own, and on
/// a node short of cores that section competes with the requests being served: 5,000
/// events (a few ms of work) put the p99 of verify over HTTP on one core at ~5 ms, 1,000
/// at ~3 ms, for the same CPU per event (`bench/load.sh`, BENCHMARKS.md).
const BATCH_MAX: usize = 1_000;
/// Events kept for a retry while the store is unreachable; older ones are dropped (and
/// counted) beyond this.
const UNWRITTEN_MAX: usize = 200_000;
/// Tries of the final write at shutdown.
const FINAL_TRIES: u32 = 5;

/// Usage settings of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSettings {
    /// Events the in-memory queue holds; more are dropped (and counted).
    pub queue_capacity: usize,
    /// Raw events and per-minute rollups are kept this many days.
    pub raw_retention_days: u32,
    /// Per-hour and per-day rollups are kept this many days.
    pub rollup_retention_days: u32,
    /// At most one `key.rate_limited` / `key.usage_exceeded` alert per key and kind in
    /// this long (`usage_alerts.rs`).
    pub alert_window: Duration,
    /// Whether verifications are recorded at all. Always on in service: off only to
    /// measure what recording costs (`bench/usage-cost.sh`).
    pub record: bool,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            queue_capacity: 128 * 1024,
            raw_retention_days: 7,
            rollup_retention_days: 400,
            alert_window: crate::usage_alerts::DEFAULT_ALERT_WINDOW,
            record: true,
        }
    }
}

impl UsageSettings {
    /// What the retention job removes at `now`.
    pub fn cutoffs(&self, now: keyward_core::time::Timestamp) -> RetentionCutoffs {
        let raw = now - chrono::TimeDelta::days(i64::from(self.raw_retention_days));
        RetentionCutoffs {
            raw_before: raw,
            minute_before: raw,
            rollup_before: now - chrono::TimeDelta::days(i64::from(self.rollup_retention_days)),
        }
    }
}

/// A verification as the hot path records it: fixed size, nothing to allocate on an
/// accepted call.
#[derive(Debug)]
pub struct PendingEvent {
    pub at_micros: i64,
    pub key: Option<Arc<CachedKey>>,
    pub code: VerifyCode,
    pub ip: Option<IpAddr>,
    pub latency_us: u32,
    /// Accepted calls: the key's granted scopes exercised, by index.
    pub exercised: u64,
    /// Refused calls: the scopes asked for (allocated only off the accepted path).
    pub requested: Option<Box<[String]>>,
    pub tags: Option<Box<UsageTags>>,
}

impl PendingEvent {
    /// The usage event, written over `event` (one already written, whose scope strings
    /// are reused: see [`Writer::spare`]).
    fn resolve_into(self, event: &mut UsageEvent) {
        match (&self.key, self.code, self.requested) {
            (Some(k), VerifyCode::Valid, _) => {
                scopes_in_mask_into(&k.policy.scopes, self.exercised, &mut event.scopes)
            }
            (_, _, Some(r)) => event.scopes = r.into_vec(),
            _ => event.scopes.clear(),
        }
        event.at = chrono::DateTime::from_timestamp_micros(self.at_micros).unwrap_or_default();
        event.key_id = self.key.as_ref().map(|k| k.id);
        event.identity_id = self.key.as_ref().map(|k| k.identity_id);
        event.code = self.code;
        event.ip = self.ip;
        event.latency_us = self.latency_us;
        event.tags = self.tags.map(|t| *t);
    }
}

/// An event to write over (every field is set by [`PendingEvent::resolve_into`]).
fn blank_event() -> UsageEvent {
    UsageEvent {
        at: Default::default(),
        key_id: None,
        identity_id: None,
        code: VerifyCode::Valid,
        ip: None,
        scopes: Vec::new(),
        latency_us: 0,
        tags: None,
    }
}

/// How often a batch waiting for room in the queue looks again.
const BACKED_UP_RECHECK: Duration = Duration::from_millis(1);

/// The queue between the verifier and the writer.
pub struct UsageRecorder {
    queue: ArrayQueue<PendingEvent>,
    dropped: metrics::Counter,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder")
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl UsageRecorder {
    pub fn new(capacity: usize) -> UsageRecorder {
        UsageRecorder {
            queue: ArrayQueue::new(capacity.max(1)),
            dropped: metrics::counter!("keyward_usage_events_dropped_total"),
        }
    }

    /// Queues an event, or drops and counts it when the queue is full. Never blocks.
    pub fn record(&self, event: PendingEvent) {
        if self.queue.push(event).is_err() {
            self.dropped.increment(1);
        }
    }

    /// Events waiting to be written.
    pub fn depth(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue is more than half full: the writer is falling behind.
    pub fn backed_up(&self) -> bool {
        self.queue.len() > self.queue.capacity() / 2
    }

    /// Waits, up to `most`, while the queue is more than half full.
    ///
    /// Why: batches verify hundreds of thousands of keys a second on one core, faster
    /// than their events can be written when the writer only gets a share of that core;
    /// the queue then filled and events were dropped (BENCHMARKS.md, "Background work on
    /// threads of its own"). A batch that waits leaves the core to the writer, so under
    /// that load batches slow down instead of going unrecorded. Bounded, so that a writer
    /// that cannot write at all (the store is down) costs each batch at most `most`.
    /// Single verifications do not wait: they cannot outrun the writer, and their path
    /// has no await on a warm cache.
    pub async fn wait_for_room(&self, most: Duration) {
        let until = tokio::time::Instant::now() + most;
        while self.backed_up() && tokio::time::Instant::now() < until {
            tokio::time::sleep(BACKED_UP_RECHECK).await;
        }
    }

    /// Moves queued events into `out` until it holds `max`, resolved over events taken
    /// from `spare` while it has some.
    fn drain_into(&self, out: &mut Vec<UsageEvent>, max: usize, spare: &mut Vec<UsageEvent>) {
        while out.len() < max {
            let Some(pending) = self.queue.pop() else {
                break;
            };
            let mut event = spare.pop().unwrap_or_else(blank_event);
            pending.resolve_into(&mut event);
            out.push(event);
        }
    }
}

/// Writes queued events every [`FLUSH_EVERY`] until `stop` turns true, then drains the
/// queue to the end. Start `stop` only once nothing verifies any more (after the HTTP
/// server has stopped), so that no event is queued after the final drain. Alerts use
/// the default window.
pub async fn write_usage(
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn Store>,
    stop: watch::Receiver<bool>,
) {
    let window = UsageSettings::default().alert_window;
    write_usage_alerting(recorder, store, stop, window).await;
}

/// [`write_usage`], raising `key.rate_limited` / `key.usage_exceeded` alerts at most
/// once per key and kind per `alert_window`.
pub async fn write_usage_alerting(
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
    alert_window: Duration,
) {
    let mut writer = Writer {
        recorder,
        store,
        alerts: Alerts::new(alert_window),
        unwritten: Vec::new(),
        spare: Vec::new(),
        latency: metrics::histogram!("keyward_verify_duration_seconds"),
        depth: metrics::gauge!("keyward_usage_queue_depth"),
        written: metrics::counter!("keyward_usage_events_written_total"),
        dropped: metrics::counter!("keyward_usage_events_dropped_total"),
    };
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drained_all = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if drained_all.elapsed() >= FLUSH_EVERY {
            drained_all = tokio::time::Instant::now();
            writer.flush(Drain::Everything).await;
            writer.settle(false).await;
        } else {
            writer.flush(Drain::WholeBatches).await;
        }
    }
    for attempt in 1..=FINAL_TRIES {
        writer.flush(Drain::Everything).await;
        if writer.unwritten.is_empty() && writer.recorder.depth() == 0 {
            writer.settle(true).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    tracing::error!(
        events = writer.unwritten.len() + writer.recorder.depth(),
        "could not write the last usage events before stopping"
    );
}

/// What a flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Everything queued.
    Everything,
    /// Whole batches only; the rest waits for more events or for [`FLUSH_EVERY`].
    WholeBatches,
}

struct Writer {
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn Store>,
    alerts: Alerts,
    /// Events drained but not written yet (the store failed): retried first.
    unwritten: Vec<UsageEvent>,
    /// Written events, kept to resolve the next ones over: their scope names are
    /// rewritten in place, so a busy writer allocates nothing per event, and the memory
    /// it writes is memory it wrote a batch ago, still in the CPU's cache. At most a
    /// batch of them.
    spare: Vec<UsageEvent>,
    latency: metrics::Histogram,
    depth: metrics::Gauge,
    written: metrics::Counter,
    dropped: metrics::Counter,
}

impl Writer {
    /// Lets the store write the counts it keeps behind the events (all of them on
    /// shutdown); a failure is retried on the next tick, and a crash loses nothing.
    async fn settle(&self, everything: bool) {
        if let Err(e) = self.store.settle_usage(everything).await {
            tracing::warn!(error = %e, "usage rollups not written yet; will retry");
        }
    }

    /// Writes what is queued, in batches, until the queue is empty (or holds less than a
    /// batch, for [`Drain::WholeBatches`]) or a write fails.
    async fn flush(&mut self, drain: Drain) {
        // Events left unwritten by a failed write are retried once per FLUSH_EVERY, not
        // at every poll: a store that is down is not asked fifty times a second.
        if drain == Drain::WholeBatches && !self.unwritten.is_empty() {
            return;
        }
        loop {
            if drain == Drain::WholeBatches
                && self.unwritten.len() + self.recorder.depth() < BATCH_MAX
            {
                return;
            }
            let before = self.unwritten.len();
            self.recorder
                .drain_into(&mut self.unwritten, BATCH_MAX, &mut self.spare);
            for e in &self.unwritten[before..] {
                self.latency.record(f64::from(e.latency_us) / 1e6);
            }
            self.depth.set(self.recorder.depth() as f64);
            if self.unwritten.is_empty() {
                return;
            }
            let batch = self.unwritten.len().min(BATCH_MAX);
            match self.store.record_usage(&self.unwritten[..batch]).await {
                Ok(()) => {
                    self.alerts
                        .raise(&*self.store, &self.unwritten[..batch], crate::now())
                        .await;
                    let room = BATCH_MAX.saturating_sub(self.spare.len());
                    self.spare.extend(self.unwritten.drain(..batch).take(room));
                    self.written.increment(batch as u64);
                }
                Err(e) => {
                    if self.unwritten.len() > UNWRITTEN_MAX {
                        let excess = self.unwritten.len() - UNWRITTEN_MAX;
                        self.unwritten.drain(..excess);
                        self.dropped.increment(excess as u64);
                    }
                    tracing::warn!(error = %e, events = self.unwritten.len(),
                        "could not write usage events; will retry");
                    return;
                }
            }
            if self.unwritten.is_empty() && self.recorder.depth() == 0 {
                return;
            }
            // A batch is ~1 ms of work: requests get the core before the next.
            crate::background::pause().await;
        }
    }
}

/// The retention job: removes usage older than the settings keep. Run by the jobs
/// leader (`jobs.rs`).
pub async fn enforce_retention(store: &dyn Store, settings: &UsageSettings) {
    match store.prune_usage(settings.cutoffs(crate::now())).await {
        Ok(p) if p.events + p.rollups > 0 => {
            tracing::info!(
                events = p.events,
                rollups = p.rollups,
                "usage retention: removed old usage"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "usage retention failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found() -> PendingEvent {
        PendingEvent {
            at_micros: 0,
            key: None,
            code: VerifyCode::NotFound,
            ip: None,
            latency_us: 1,
            exercised: 0,
            requested: None,
            tags: None,
        }
    }

    /// A bound far beyond any wait these tests expect: only a hang reaches it.
    const HANG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn with_room_in_the_queue_a_batch_does_not_wait() {
        let recorder = UsageRecorder::new(4);
        recorder.record(not_found());
        assert!(!recorder.backed_up());
        tokio::time::timeout(HANG, recorder.wait_for_room(Duration::from_secs(3600)))
            .await
            .expect("no wait with the queue half empty");
    }

    #[tokio::test]
    async fn a_batch_waits_while_the_writer_is_behind_and_goes_on_once_it_drains() {
        let recorder = Arc::new(UsageRecorder::new(4));
        for _ in 0..3 {
            recorder.record(not_found());
        }
        assert!(recorder.backed_up(), "three of four is more than half");
        let writer = recorder.clone();
        let drain = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (mut out, mut spare) = (Vec::new(), Vec::new());
            writer.drain_into(&mut out, 10, &mut spare);
            out.len()
        });
        tokio::time::timeout(HANG, recorder.wait_for_room(Duration::from_secs(3600)))
            .await
            .expect("the wait ends once the writer has drained the queue");
        assert!(!recorder.backed_up());
        assert_eq!(drain.await.unwrap(), 3, "nothing was dropped");
    }

    #[tokio::test]
    async fn a_writer_that_cannot_write_delays_a_batch_by_the_bound_at_most() {
        let recorder = UsageRecorder::new(4);
        for _ in 0..4 {
            recorder.record(not_found());
        }
        tokio::time::timeout(HANG, recorder.wait_for_room(Duration::from_millis(5)))
            .await
            .expect("the wait is bounded");
        assert!(
            recorder.backed_up(),
            "still behind: the batch went on anyway"
        );
    }
}
