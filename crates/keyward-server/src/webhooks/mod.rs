//! Webhook delivery: a background worker that runs on the jobs leader only.
//!
//! Events come from the audit log, a durable outbox shared by every node: each round
//! the worker fans out the records past its persisted cursor into deliveries
//! ([`fanout`]), then each webhook's *lane* (a task of its own) claims its due
//! deliveries one at a time and sends them ([`send`]). A slow or dead receiver so
//! delays only its own lane; the request that caused an event never waits on any of
//! this, as it only wrote its audit record.
//!
//! Failed attempts are retried with exponential backoff and jitter up to
//! `max_attempts`; each claim leases the delivery for the timeout and a margin, so a
//! node that dies mid-attempt leaves it due again. Delivery is at least once: receivers
//! deduplicate by the event `id`, which every attempt repeats.
//!
//! The same worker runs the `key.expiring` job: a `key.expiring` audit record per key
//! and expiry time, `expiring_before` ahead of the expiry (the store remembers what it
//! notified, so restarts and a second node do not repeat it).

pub mod fanout;
pub mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_core::webhook::{Attempt, Delivery, DeliveryState, Webhook, backoff, jitter};
use keyward_store::Store;
use keyward_store::sealed_secrets::SealedKind;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;
use zeroize::Zeroizing;

use self::send::Sender;
use crate::sealed_secrets;
use crate::vault::Vault;

/// What the webhook worker does; `keyward serve` flags set them.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Each attempt's time limit, connecting included.
    pub timeout: Duration,
    /// Attempts per delivery before it is marked failed.
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff_base: Duration,
    /// The longest wait between attempts.
    pub backoff_cap: Duration,
    /// Refuse loopback, private, link-local and other non-public destinations, on the
    /// address each name resolves to at delivery time. Off by default: local setups
    /// and tests post to loopback.
    pub deny_private: bool,
    /// How long before a key's expiry `key.expiring` fires.
    pub expiring_before: Duration,
    /// How long before an old key's grace ends `key.old_version_in_use` fires if the
    /// old key is still used (at most half the grace).
    pub old_version_before: Duration,
    /// How often the worker looks for new events and due retries.
    pub poll: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            deny_private: false,
            expiring_before: Duration::from_secs(7 * 24 * 3600),
            old_version_before: Duration::from_secs(3600),
            poll: Duration::from_millis(250),
        }
    }
}

/// How often the `key.expiring` job runs.
const EXPIRING_EVERY: Duration = Duration::from_secs(5);
/// Keys notified per run at most (the rest wait for the next run).
const EXPIRING_BATCH: u32 = 1000;
/// How often the list of webhooks (and so of lanes) is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Added to the timeout for a claim's lease.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// A webhook's lane: its task, and how to stop it.
struct Lane {
    webhook: Webhook,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs the worker until `shutdown`; it works only while `leader` is true (set by
/// `jobs.rs`). On shutdown, lanes finish the attempt they are making.
pub fn spawn(
    store: Arc<dyn Store>,
    leader: Arc<AtomicBool>,
    settings: WebhookSettings,
    vault: Option<Arc<Vault>>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let sender = match Sender::new(&settings) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are off");
                return;
            }
        };
        let wake = Arc::new(Notify::new());
        let mut lanes: HashMap<Uuid, Lane> = HashMap::new();
        let mut tick = tokio::time::interval(settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_refresh = Instant::now();
        let mut next_expiring = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            if !leader.load(Ordering::Relaxed) {
                stop_lanes(&mut lanes).await;
                continue;
            }
            if Instant::now() >= next_expiring {
                next_expiring = Instant::now() + EXPIRING_EVERY;
                expiring_job(&*store, &settings).await;
            }
            match fanout::fan_out(&*store).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(deliveries = n, "webhook events queued");
                    wake.notify_waiters();
                }
                Err(e) => tracing::warn!(error = %e, "webhook fan-out failed; will retry"),
            }
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + REFRESH_EVERY;
                match fanout::all_webhooks(&*store).await {
                    Ok(webhooks) => {
                        refresh_lanes(
                            &mut lanes, webhooks, &store, &sender, &vault, &settings, &wake,
                        )
                        .await
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list webhooks; will retry"),
                }
            }
        }
        stop_lanes(&mut lanes).await;
    })
}

async fn expiring_job(store: &dyn Store, settings: &WebhookSettings) {
    let lead =
        chrono::Duration::from_std(settings.expiring_before).unwrap_or(chrono::Duration::days(7));
    match store
        .notify_expiring_keys(crate::now(), lead, EXPIRING_BATCH)
        .await
    {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(keys = ids.len(), "recorded keys about to expire");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "expiring-keys job failed; will retry"),
    }
}

/// Starts a lane for each new (or changed) webhook and stops those of deleted ones.
async fn refresh_lanes(
    lanes: &mut HashMap<Uuid, Lane>,
    webhooks: Vec<Webhook>,
    store: &Arc<dyn Store>,
    sender: &Arc<Sender>,
    vault: &Option<Arc<Vault>>,
    settings: &WebhookSettings,
    wake: &Arc<Notify>,
) {
    let current: HashMap<Uuid, Webhook> = webhooks.into_iter().map(|w| (w.id, w)).collect();
    let gone: Vec<Uuid> = lanes
        .iter()
        .filter(|(id, lane)| current.get(id) != Some(&lane.webhook))
        .map(|(id, _)| *id)
        .collect();
    for id in gone {
        if let Some(lane) = lanes.remove(&id) {
            let _ = lane.stop.send(true);
            // Not awaited: a lane busy with a slow receiver must not hold up the others.
            drop(lane.task);
        }
    }
    for (id, webhook) in current {
        if lanes.contains_key(&id) {
            continue;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(lane(
            store.clone(),
            sender.clone(),
            vault.clone(),
            settings.clone(),
            webhook.clone(),
            wake.clone(),
            stopped,
        ));
        lanes.insert(
            id,
            Lane {
                webhook,
                stop,
                task,
            },
        );
    }
}

async fn stop_lanes(lanes: &mut HashMap<Uuid, Lane>) {
    for lane in lanes.values() {
        let _ = lane.stop.send(true);
    }
    for (_, lane) in lanes.drain() {
        let _ = lane.task.await;
    }
}

/// The plaintext signing secret (wiped when dropped): opened from its sealed form, or
/// as stored on a row from before sealing existed (sealed at the next start with a
/// master key).
fn signing_secret(vault: Option<&Vault>, w: &Webhook) -> Result<Zeroizing<Vec<u8>>, String> {
    let Some(sealed) = &w.sealed_secret else {
        return Ok(Zeroizing::new(w.secret.as_bytes().to_vec()));
    };
    let vault = vault.ok_or("the signing secret is sealed and this server has no master key")?;
    sealed_secrets::open(vault, SealedKind::WebhookSecret, &w.id.to_string(), sealed)
        .map_err(|e| format!("cannot open the signing secret: {e}"))
}

/// One webhook's deliveries, one at a time, oldest due first.
async fn lane(
    store: Arc<dyn Store>,
    sender: Arc<Sender>,
    vault: Option<Arc<Vault>>,
    settings: WebhookSettings,
    webhook: Webhook,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let lease = settings.timeout + LEASE_MARGIN;
    while !*stop.borrow() {
        // Registered before looking, so a fan-out in between is not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = crate::now();
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        match store
            .claim_webhook_delivery(webhook.id, now, lease_until)
            .await
        {
            Ok(Some(d)) => {
                attempt(&*store, &sender, vault.as_deref(), &settings, &webhook, d).await
            }
            Ok(None) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(settings.poll) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Err(e) => {
                tracing::warn!(webhook = %webhook.id, error = %e, "cannot claim a delivery; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(settings.poll) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        }
    }
}

async fn attempt(
    store: &dyn Store,
    sender: &Sender,
    vault: Option<&Vault>,
    settings: &WebhookSettings,
    webhook: &Webhook,
    d: Delivery,
) {
    let at = crate::now();
    let outcome = match signing_secret(vault, webhook) {
        Ok(secret) => sender.send(webhook, &secret, &d, at.timestamp()).await,
        // Counted as a failed attempt: retried with backoff, like a receiver that is down.
        Err(error) => send::Outcome::failed("no_secret", error),
    };
    metrics::counter!("keyward_webhook_deliveries_total", "result" => outcome.result).increment(1);
    let attempts = u32::try_from(d.attempts).unwrap_or(0) + 1;
    let (state, next_attempt_at) = if outcome.delivered() {
        (DeliveryState::Delivered, None)
    } else if attempts >= settings.max_attempts {
        (DeliveryState::Failed, None)
    } else {
        let wait = backoff(
            attempts,
            settings.backoff_base,
            settings.backoff_cap,
            jitter(),
        );
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
        (DeliveryState::Pending, Some(crate::now() + wait))
    };
    if !outcome.delivered() {
        tracing::info!(
            webhook = %webhook.id, delivery = %d.id, attempt = attempts,
            error = outcome.error.as_deref().unwrap_or(""),
            gave_up = state == DeliveryState::Failed,
            "webhook delivery failed"
        );
    }
    let record = Attempt {
        at,
        status: outcome.status.map(i32::from),
        error: outcome.error,
        duration_ms: i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX),
        state,
        next_attempt_at,
    };
    if let Err(e) = store.record_webhook_attempt(d.id, &record).await {
        // The lease runs out and the delivery is tried again: at least once.
        tracing::warn!(delivery = %d.id, error = %e, "cannot record a webhook attempt");
    }
}
