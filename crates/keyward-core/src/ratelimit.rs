//! Named rate limits per key (`{name, limit, window_seconds}`), as GCRA states from the
//! `gcra` crate. A key may hold several; a call passes only if all pass, and a refused
//! call consumes none of them.

use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimitSpec {
    pub name: String,
    pub limit: u32,
    pub window_seconds: u32,
}

/// Most rate limits on one key.
pub const MAX_LIMITS: usize = 16;
/// Longest window: 31 days.
pub const MAX_WINDOW_SECONDS: u32 = 31 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate_limits[{index}].{field}: {reason}")]
pub struct InvalidRateLimit {
    pub index: usize,
    pub field: &'static str,
    pub reason: &'static str,
}

/// Checks names (1-64 of `[A-Za-z0-9_.-]`, unique), limits (>= 1) and windows
/// (1..=MAX_WINDOW_SECONDS), and the count (<= MAX_LIMITS).
pub fn validate(specs: &[RateLimitSpec]) -> Result<(), InvalidRateLimit> {
    todo!("{}", specs.len())
}

/// A limit that refused a call, and when it will next let one through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub name: String,
    pub limit: u32,
    pub window_seconds: u32,
    /// Time until one more call would be allowed.
    pub retry_after: std::time::Duration,
}

/// The state of one limit after a call was let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// The most constrained limit (fewest calls left).
    pub name: String,
    pub limit: u32,
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset_after: std::time::Duration,
}

/// The live state of every limit of one key.
#[derive(Debug, Clone)]
pub struct KeyLimiter {
    specs: Vec<RateLimitSpec>,
    // one gcra::RateLimit and gcra::GcraState per spec
}

impl KeyLimiter {
    pub fn new(specs: &[RateLimitSpec]) -> KeyLimiter {
        todo!("{}", specs.len())
    }

    pub fn specs(&self) -> &[RateLimitSpec] {
        &self.specs
    }

    /// Whether a call at `now` would pass every limit, without consuming anything.
    pub fn peek(&self, now: Instant) -> Result<(), Denied> {
        todo!("{now:?}")
    }

    /// Consumes one call from every limit if all allow it; otherwise consumes nothing and
    /// names the first limit that refused. `Ok(None)` when the key has no limits.
    pub fn acquire(&mut self, now: Instant) -> Result<Option<Allowance>, Denied> {
        todo!("{now:?}")
    }

    /// Gives back one call taken by `acquire` (used when a later check refuses the call).
    pub fn release(&mut self, now: Instant) {
        todo!("{now:?}")
    }
}
