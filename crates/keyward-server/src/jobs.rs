//! Background jobs, run by one node of a cluster at a time.
//!
//! Every [`TICK`], each node asks the store's [`Leadership`](keyward_store::Leadership)
//! (on PostgreSQL, a session-level advisory lock) whether it leads; only the leader
//! runs the jobs that are due. A single node on the embedded store always leads. When
//! the leader dies its database session ends, the lock is freed, and another node takes
//! over at its next tick. Jobs are idempotent (the expiry sweep locks its progress
//! mark), so the brief overlap of a leader cut off from PostgreSQL is harmless.
//!
//! Jobs: the expiry sweep (`Store::sweep_expired`, every [`SWEEP_EVERY`]), which records
//! `key.expire` in the audit log when a key's expiry passes; token signing-key rotation
//! (`SigningKeys::rotate_if_due`, checked every [`SWEEP_EVERY`]); usage retention
//! (`usage::enforce_retention`, every [`RETENTION_EVERY`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_store::Store;

use crate::usage::UsageSettings;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often leadership is checked (and so how soon a dead leader is replaced).
pub const TICK: Duration = Duration::from_secs(1);
/// How often the expiry sweep runs on the leader.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How often usage older than its retention is removed (and once at start).
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Keys recorded per sweep at most (the rest wait for the next one).
const SWEEP_BATCH: u32 = 1000;
/// How long asking for the lead may take before it counts as "not leading".
const LEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the job loop until `shutdown` turns true. `leader` tells the rest of the node
/// (readyz) whether it leads.
pub fn spawn(
    store: Arc<dyn Store>,
    leader: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
    usage: UsageSettings,
    (signing_keys, rotate_every): (Arc<crate::tokens::SigningKeys>, Duration),
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let gauge = metrics::gauge!("keyward_jobs_leader");
        let mut leadership = store.leadership();
        let mut next_sweep = Instant::now();
        let mut next_retention = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let leads = match leadership.as_mut() {
                None => true,
                Some(l) => match tokio::time::timeout(LEAD_TIMEOUT, l.lead()).await {
                    Ok(leads) => leads,
                    Err(_) => {
                        // Its connection is in an unknown state: start afresh (dropping
                        // it ends the session, and the lock with it).
                        leadership = store.leadership();
                        false
                    }
                },
            };
            if leader.swap(leads, Ordering::Relaxed) != leads {
                if leads {
                    tracing::info!("this node now runs the background jobs");
                } else {
                    tracing::info!("this node no longer runs the background jobs");
                }
            }
            gauge.set(if leads { 1.0 } else { 0.0 });
            if leads && Instant::now() >= next_sweep {
                next_sweep = Instant::now() + SWEEP_EVERY;
                match store.sweep_expired(crate::now(), SWEEP_BATCH).await {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::info!(keys = ids.len(), "expiry sweep: recorded expired keys");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed; will retry"),
                }
                if let Err(e) = signing_keys.rotate_if_due(crate::now(), rotate_every).await {
                    tracing::warn!(error = %e, "token signing key rotation failed; will retry");
                }
            }
            if leads && Instant::now() >= next_retention {
                next_retention = Instant::now() + RETENTION_EVERY;
                crate::usage::enforce_retention(&*store, &usage).await;
                crate::anomalies::enforce_retention(&*store, &usage).await;
            }
        }
        leader.store(false, Ordering::Relaxed);
    })
}
