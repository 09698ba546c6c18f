//! Named rate limits per key (`{name, limit, window_seconds}`), as GCRA states from the
//! `gcra` crate. A key may hold several; a call passes only if all pass, and a refused
//! call consumes none of them.

use std::time::{Duration, Instant};

use gcra::{GcraError, GcraState, RateLimit};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

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
/// Longest limit name.
pub const NAME_MAX: usize = 64;

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
    let err = |index, field, reason| {
        Err(InvalidRateLimit {
            index,
            field,
            reason,
        })
    };
    if specs.len() > MAX_LIMITS {
        return err(MAX_LIMITS, "name", "a key may have at most 16 rate limits");
    }
    for (i, spec) in specs.iter().enumerate() {
        if spec.name.is_empty() || spec.name.len() > NAME_MAX {
            return err(i, "name", "must be 1-64 characters");
        }
        if !spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return err(i, "name", "only A-Z, a-z, 0-9 and _ . - are allowed");
        }
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return err(i, "name", "duplicate name");
        }
        if spec.limit < 1 {
            return err(i, "limit", "must be at least 1");
        }
        if !(1..=MAX_WINDOW_SECONDS).contains(&spec.window_seconds) {
            return err(i, "window_seconds", "must be 1..=2678400 (31 days)");
        }
    }
    Ok(())
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
    /// The most constrained limit (fewest calls left), as an index into the key's specs:
    /// no name is copied, so an accepted call allocates nothing.
    pub index: usize,
    pub limit: u32,
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset_after: std::time::Duration,
}

/// The live state of every limit of one key.
///
/// What every call reads (each limit's GCRA parameters and state) is kept inline, for
/// up to [`INLINE_LIMITS`] limits: with a large key set a verification then finds its
/// limiter in one cache miss rather than one per vector. The names, read only to
/// explain a refusal, stay in `specs`.
#[derive(Debug, Clone)]
pub struct KeyLimiter {
    specs: Vec<RateLimitSpec>,
    /// Parallel to `specs`.
    live: SmallVec<[LiveLimit; INLINE_LIMITS]>,
}

/// Limits kept inline in a [`KeyLimiter`]; a key with more spills them to the heap.
pub const INLINE_LIMITS: usize = 2;

/// One limit as checked on every call.
#[derive(Debug, Clone)]
struct LiveLimit {
    gcra: RateLimit,
    state: GcraState,
}

/// The GCRA parameters of a spec.
///
/// `gcra` derives the emission interval as `window / limit`, truncated to whole
/// nanoseconds, but keeps the full window as the burst tolerance; for limits that do not
/// divide the window that lets `limit + 1` calls through at one instant. Shrinking the
/// window to `interval * limit` keeps the burst exactly `limit` (the rate differs by less
/// than `limit` nanoseconds per window). Out-of-range specs (which `validate` refuses) are
/// clamped rather than allowed to panic.
fn gcra_limit(spec: &RateLimitSpec) -> RateLimit {
    let limit = spec.limit.max(1);
    let window = Duration::from_secs(u64::from(spec.window_seconds.max(1)));
    let interval = (window / limit).max(Duration::from_nanos(1));
    RateLimit {
        resource_limit: limit,
        period: interval * limit,
        emission_interval: interval,
    }
}

impl KeyLimiter {
    pub fn new(specs: &[RateLimitSpec]) -> KeyLimiter {
        KeyLimiter {
            specs: specs.to_vec(),
            live: specs
                .iter()
                .map(|spec| LiveLimit {
                    gcra: gcra_limit(spec),
                    state: GcraState::default(),
                })
                .collect(),
        }
    }

    pub fn specs(&self) -> &[RateLimitSpec] {
        &self.specs
    }

    /// Whether a call at `now` would pass every limit, without consuming anything.
    pub fn peek(&self, now: Instant) -> Result<(), Denied> {
        for (i, live) in self.live.iter().enumerate() {
            // `GcraState` is `Copy`: the check runs on a copy and the live state is untouched.
            let mut state = live.state;
            if let Err(e) = state.check_and_modify_at(&live.gcra, now, 1) {
                return Err(self.denied(i, e, now));
            }
        }
        Ok(())
    }

    /// Consumes one call from every limit if all allow it; otherwise consumes nothing and
    /// names the first limit that refused. `Ok(None)` when the key has no limits.
    pub fn acquire(&mut self, now: Instant) -> Result<Option<Allowance>, Denied> {
        if self.live.is_empty() {
            return Ok(None);
        }
        // Check on copies first; the check is a pure function of (state, limit, now), so the
        // commit below repeats exactly what succeeded here, and nothing is consumed unless
        // every limit agrees.
        self.peek(now)?;
        for LiveLimit { gcra, state } in &mut self.live {
            let committed = state.check_and_modify_at(gcra, now, 1);
            debug_assert!(committed.is_ok(), "peek passed, so the commit must");
        }
        Ok(Some(self.allowance(now)))
    }

    /// Gives back one call taken by `acquire` (used when a later check refuses the call).
    pub fn release(&mut self, now: Instant) {
        for LiveLimit { gcra, state } in &mut self.live {
            // `revert_at` only fails for a cost the limit can never allow; ours is 1.
            let _ = state.revert_at(gcra, now, 1);
        }
    }

    /// The limit with the fewest calls left at `now` (on a tie, the one that takes longest
    /// to refill).
    fn allowance(&self, now: Instant) -> Allowance {
        let (i, remaining, reset_after) = self
            .live
            .iter()
            .enumerate()
            .map(|(i, live)| {
                let (remaining, reset_after) = remaining_at(&live.gcra, &live.state, now);
                (i, remaining, reset_after)
            })
            .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .expect("at least one limit");
        Allowance {
            index: i,
            // The GCRA limit is the spec's (clamped to at least 1, which `validate`
            // requires anyway): no need to touch the specs on an accepted call.
            limit: self.live[i].gcra.resource_limit,
            remaining,
            reset_after,
        }
    }

    fn denied(&self, i: usize, e: GcraError, now: Instant) -> Denied {
        let spec = &self.specs[i];
        let retry_after = match e {
            GcraError::DeniedUntil { next_allowed_at } => {
                next_allowed_at.saturating_duration_since(now)
            }
            // Unreachable for a cost of 1; a full window is the honest upper bound.
            GcraError::DeniedIndefinitely { rate_limit, .. } => rate_limit.period,
        };
        Denied {
            name: spec.name.clone(),
            limit: spec.limit,
            window_seconds: spec.window_seconds,
            retry_after,
        }
    }
}

/// Calls left and time until the bucket is full, from the GCRA state.
///
/// Computed here in integers rather than with `GcraState::remaining_resources`, whose `f32`
/// arithmetic can round the consumed count above the limit for large limits and then
/// underflow.
fn remaining_at(limit: &RateLimit, state: &GcraState, now: Instant) -> (u32, Duration) {
    let until_full = state
        .tat
        .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
    let period = limit.period.as_nanos().max(1);
    let consumed = (until_full.as_nanos() * u128::from(limit.resource_limit)).div_ceil(period);
    let remaining = u128::from(limit.resource_limit).saturating_sub(consumed);
    (remaining as u32, until_full)
}
