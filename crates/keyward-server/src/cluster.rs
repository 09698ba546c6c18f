//! Cluster mode: what a node does because other nodes share its store.
//!
//! **Cache invalidation across nodes.** The store's change feed
//! ([`keyward_store::Store::change_feed`]; on PostgreSQL, `LISTEN`/`NOTIFY` sent inside
//! each changing transaction) reports the digests of the keys every committed change
//! touched, on whichever node it was made. [`follow_changes`] makes this node's verify
//! cache forget them, so a revocation, patch, rotation or identity change made anywhere
//! is obeyed everywhere within the notification's delivery time (milliseconds). When
//! the feed's connection is lost, notifications sent meanwhile are lost too: once it is
//! back, the feed says `Flush` and the whole cache is dropped. The verifier's 5-minute
//! reload backstop (`POSITIVE_TTL`) still bounds the damage of anything else.
//!
//! None of this is on the verify path: the follower runs in its own task and only
//! removes cache entries.

use std::sync::Arc;

use keyward_store::{Change, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::verifier::Verifier;

/// Follows the store's change feed, if it has one, until `shutdown` turns true.
pub fn follow_changes(
    store: &dyn Store,
    verifier: Arc<Verifier>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let mut feed = store.change_feed()?;
    let keys = metrics::counter!("keyward_cluster_invalidations_total", "kind" => "keys");
    let flushes = metrics::counter!("keyward_cluster_invalidations_total", "kind" => "flush");
    Some(tokio::spawn(async move {
        let mut connected_once = false;
        loop {
            let change = tokio::select! {
                c = feed.next() => c,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match change {
                Change::Keys(digests) => {
                    keys.increment(digests.len() as u64);
                    verifier.forget_all(&digests);
                }
                Change::Flush => {
                    flushes.increment(1);
                    verifier.clear();
                    if connected_once {
                        tracing::info!("change feed back: verify cache flushed");
                    }
                    connected_once = true;
                }
            }
        }
    }))
}
