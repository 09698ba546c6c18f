//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use keyward_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::redis_limits::RedisLimits;
use crate::verifier::Verifier;

/// The handlers' state: one `Arc`, because axum clones the state (and the route
/// services holding it) several times per request; a clone is one atomic increment
/// instead of one per field (measured: ~5% of a verify over HTTP with the fields inline).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

pub struct SharedState {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub metrics: PrometheusHandle,
    /// Cluster-wide rate limits, when a Redis is configured.
    pub redis: Option<Arc<RedisLimits>>,
    /// Whether this node runs the background jobs now (`jobs.rs`).
    pub jobs_leader: Arc<AtomicBool>,
    /// The secrets vault; `None` when no master key is configured (it stays off).
    pub vault: Option<Arc<crate::vault::Vault>>,
    /// The public half of the audit checkpoint key, to verify checkpoints with.
    pub audit_key: Option<keyward_core::audit_chain::VerifyingKey>,
    /// Failed logins and unknown credentials (`throttle.rs`).
    pub throttle: Arc<crate::throttle::Throttle>,
    /// The keys that sign short-lived tokens.
    pub tokens: Arc<crate::tokens::SigningKeys>,
}
