//! Rate limits shared by the nodes of a cluster: the small interface through which the
//! verifier reaches them (`verifier.rs`), implemented over Redis in `redis_limits.rs`.
//! Without one configured, the verifier uses its per-node limiters only.

use keyward_core::ratelimit::{Allowance, Denied, RateLimitSpec};
use uuid::Uuid;

/// Rate limits shared by the nodes of a cluster (Redis, `redis_limits.rs`), when one
/// is configured. Only keys with rate limits reach it; without one, the per-node
/// limiters below are used and the verify path is unchanged.
#[async_trait::async_trait]
pub trait SharedLimiter: Send + Sync + 'static {
    /// Takes one call from every limit of the key, all or nothing.
    async fn acquire(&self, key: Uuid, specs: &[RateLimitSpec]) -> Shared;
    /// Gives back what `acquire` took, for a call refused afterwards (quota).
    async fn release(&self, key: Uuid, specs: &[RateLimitSpec]);
}

/// What a [`SharedLimiter`] decided.
#[derive(Debug)]
pub enum Shared {
    Allowed(Allowance),
    Denied(Denied),
    /// Unreachable: use this node's own limiter.
    Fallback,
    /// Unreachable, and configured to fail closed: 503.
    Unavailable,
}
