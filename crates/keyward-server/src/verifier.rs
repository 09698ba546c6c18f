//! The verify hot path: parse, digest, cache lookup, policy, rate limits, quota.
//!
//! **Architecture Invariant:** a verification on a warm cache touches no database and no
//! network and holds no lock across an await. Only keys with a `remaining` quota reach
//! the store on every call (their count must be strict across restarts), and last-use
//! times are written behind in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_core::ip::IpAllowlist;
use keyward_core::model::KeyWithIdentity;
use keyward_core::policy::{KeyPolicy, VerifyRequest};
use keyward_core::ratelimit::{Allowance, Denied, KeyLimiter, RateLimitSpec};
use keyward_core::time::Timestamp;
use keyward_core::{KeyDigest, VerifyCode, key};
use keyward_store::{Consumed, Store, StoreError};
use parking_lot::Mutex;
use quick_cache::sync::Cache;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::shared_limits::{Shared, SharedLimiter};

/// How long a `NOT_FOUND` is remembered. Short, because a key created on another node
/// would otherwise be refused for this long; creation here forgets it at once.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Backstop on how long a cached record is trusted without a reload, in case an
/// invalidation was ever missed.
const POSITIVE_TTL: Duration = Duration::from_secs(300);

/// A key as verify needs it, prepared once per cache fill.
#[derive(Debug)]
pub struct CachedKey {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub policy: KeyPolicy,
    pub rate_limits: Vec<RateLimitSpec>,
    pub expires_at: Option<Timestamp>,
    pub has_quota: bool,
    /// Set once the store said the quota is used up, so later calls skip the store.
    /// Any change to the key replaces this entry.
    quota_exhausted: AtomicBool,
    loaded_at: Instant,
}

#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<CachedKey>),
    NotFound { until: Instant },
}

/// What a verification decided.
#[derive(Debug)]
pub struct Outcome {
    pub code: VerifyCode,
    /// The key, when one was found (for any code after `NOT_FOUND`).
    pub key: Option<Arc<CachedKey>>,
    /// Verifications left, for keys with a quota.
    pub remaining: Option<i64>,
    pub allowance: Option<Allowance>,
    pub denied: Option<Denied>,
}

impl Outcome {
    fn code(code: VerifyCode, key: Option<Arc<CachedKey>>) -> Self {
        Outcome {
            code,
            key,
            remaining: None,
            allowance: None,
            denied: None,
        }
    }
}

/// Counters kept as handles so the hot path does no registry lookups.
struct VerifyMetrics {
    by_code: Vec<metrics::Counter>,
    cache_hit: metrics::Counter,
    cache_miss: metrics::Counter,
    last_used_dropped: metrics::Counter,
}

impl VerifyMetrics {
    fn new() -> Self {
        VerifyMetrics {
            by_code: VerifyCode::ALL
                .iter()
                .map(|c| metrics::counter!("keyward_verify_total", "code" => c.as_str()))
                .collect(),
            cache_hit: metrics::counter!("keyward_verify_cache_total", "result" => "hit"),
            cache_miss: metrics::counter!("keyward_verify_cache_total", "result" => "miss"),
            last_used_dropped: metrics::counter!("keyward_last_used_dropped_total"),
        }
    }
}

pub struct Verifier {
    store: Arc<dyn Store>,
    cache: Cache<KeyDigest, Entry>,
    limiters: Cache<Uuid, Arc<Mutex<KeyLimiter>>>,
    /// Bumped by every invalidation, so a cache fill that raced with one is not kept.
    generation: AtomicU64,
    last_used: mpsc::Sender<(Uuid, Timestamp)>,
    metrics: VerifyMetrics,
    shared: Option<Arc<dyn SharedLimiter>>,
}

/// The receiving end of last-use times, drained by [`flush_last_used`].
pub type LastUsedQueue = mpsc::Receiver<(Uuid, Timestamp)>;

impl Verifier {
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> (Arc<Verifier>, LastUsedQueue) {
        Self::with_shared_limiter(store, capacity, None)
    }

    /// A verifier whose rate limits go through `shared` (cluster mode, Redis).
    pub fn with_shared_limiter(
        store: Arc<dyn Store>,
        capacity: usize,
        shared: Option<Arc<dyn SharedLimiter>>,
    ) -> (Arc<Verifier>, LastUsedQueue) {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let v = Verifier {
            store,
            cache: Cache::new(capacity),
            limiters: Cache::new(capacity),
            generation: AtomicU64::new(0),
            last_used: tx,
            metrics: VerifyMetrics::new(),
            shared,
        };
        (Arc::new(v), rx)
    }

    /// Forgets a key so the next verification reloads it from the store.
    pub fn forget(&self, digest: &KeyDigest) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.remove(digest);
    }

    pub fn forget_all(&self, digests: &[KeyDigest]) {
        for d in digests {
            self.forget(d);
        }
    }

    /// Forgets every cached key (cluster mode: changes made elsewhere may have been
    /// missed). Fills racing with it are not kept, as with [`Verifier::forget`].
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
    }

    /// Verifies `key` for `req`, running every check in the contract's order, and
    /// consumes rate limit and quota only if the call is accepted.
    pub async fn verify(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        let outcome = self.decide(key, req, now, true).await?;
        self.metrics.by_code[outcome.code as usize].increment(1);
        if outcome.code == VerifyCode::Valid
            && let Some(k) = &outcome.key
            && self.last_used.try_send((k.id, now)).is_err()
        {
            self.metrics.last_used_dropped.increment(1);
        }
        Ok(outcome)
    }

    /// Checks a bearer credential of the management API: every check up to the scopes,
    /// without consuming rate limits or quota (those meter verifications, not admin work).
    pub async fn authenticate(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        self.decide(key, req, now, false).await
    }

    async fn decide(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
        metered: bool,
    ) -> Result<Outcome, StoreError> {
        if key::parse(key).is_err() {
            return Ok(Outcome::code(VerifyCode::Malformed, None));
        }
        let digest = KeyDigest::of(key);
        let Some(cached) = self.lookup(&digest).await? else {
            return Ok(Outcome::code(VerifyCode::NotFound, None));
        };
        let code = cached.policy.evaluate(req, now);
        if code != VerifyCode::Valid || !metered {
            return Ok(Outcome::code(code, Some(cached)));
        }
        self.meter(cached).await
    }

    /// Rate limits, then quota; a refused call consumes neither.
    async fn meter(&self, cached: Arc<CachedKey>) -> Result<Outcome, StoreError> {
        if let Some(shared) = &self.shared
            && !cached.rate_limits.is_empty()
        {
            match shared.acquire(cached.id, &cached.rate_limits).await {
                Shared::Allowed(a) => return self.meter_quota_after_shared(cached, a).await,
                Shared::Denied(denied) => {
                    return Ok(Outcome {
                        denied: Some(denied),
                        ..Outcome::code(VerifyCode::RateLimited, Some(cached))
                    });
                }
                Shared::Unavailable => {
                    return Err(StoreError::Unavailable(
                        "the rate limit store (Redis) is unreachable".into(),
                    ));
                }
                Shared::Fallback => {} // this node's limiter, below
            }
        }
        let limiter = self.limiter_for(&cached);
        if let Some(l) = &limiter
            && let Err(denied) = l.lock().peek(Instant::now())
        {
            return Ok(Outcome {
                denied: Some(denied),
                ..Outcome::code(VerifyCode::RateLimited, Some(cached))
            });
        }
        let mut remaining = None;
        if cached.has_quota {
            if cached.quota_exhausted.load(Ordering::Relaxed) {
                return Ok(Outcome::code(VerifyCode::UsageExceeded, Some(cached)));
            }
            match self.store.consume_remaining(cached.id).await? {
                Consumed::Taken { left } => remaining = Some(left),
                Consumed::Exhausted => {
                    cached.quota_exhausted.store(true, Ordering::Relaxed);
                    return Ok(Outcome {
                        remaining: Some(0),
                        ..Outcome::code(VerifyCode::UsageExceeded, Some(cached))
                    });
                }
                Consumed::Unlimited => {}
                Consumed::Missing => return Ok(Outcome::code(VerifyCode::NotFound, None)),
            }
        }
        let mut allowance = None;
        if let Some(l) = &limiter {
            // Another call may have used the last slot since the peek.
            let acquired = l.lock().acquire(Instant::now());
            match acquired {
                Ok(a) => allowance = a,
                Err(denied) => {
                    if remaining.is_some() {
                        self.store.refund_remaining(cached.id).await?;
                    }
                    return Ok(Outcome {
                        denied: Some(denied),
                        ..Outcome::code(VerifyCode::RateLimited, Some(cached))
                    });
                }
            }
        }
        Ok(Outcome {
            remaining,
            allowance,
            ..Outcome::code(VerifyCode::Valid, Some(cached))
        })
    }

    /// The quota, once the shared limiter let the call through; gives the rate limit
    /// back if the quota refuses it.
    async fn meter_quota_after_shared(
        &self,
        cached: Arc<CachedKey>,
        allowance: Allowance,
    ) -> Result<Outcome, StoreError> {
        let shared = self.shared.as_ref().expect("called with a shared limiter");
        let mut remaining = None;
        if cached.has_quota {
            let consumed = if cached.quota_exhausted.load(Ordering::Relaxed) {
                Ok(Consumed::Exhausted)
            } else {
                self.store.consume_remaining(cached.id).await
            };
            let refused = match consumed {
                Ok(Consumed::Taken { left }) => {
                    remaining = Some(left);
                    None
                }
                Ok(Consumed::Unlimited) => None,
                Ok(Consumed::Exhausted) => {
                    cached.quota_exhausted.store(true, Ordering::Relaxed);
                    Some(Ok(Outcome {
                        remaining: Some(0),
                        ..Outcome::code(VerifyCode::UsageExceeded, Some(cached.clone()))
                    }))
                }
                Ok(Consumed::Missing) => Some(Ok(Outcome::code(VerifyCode::NotFound, None))),
                Err(e) => Some(Err(e)),
            };
            if let Some(answer) = refused {
                shared.release(cached.id, &cached.rate_limits).await;
                return answer;
            }
        }
        Ok(Outcome {
            remaining,
            allowance: Some(allowance),
            ..Outcome::code(VerifyCode::Valid, Some(cached))
        })
    }

    fn limiter_for(&self, cached: &CachedKey) -> Option<Arc<Mutex<KeyLimiter>>> {
        if cached.rate_limits.is_empty() {
            return None;
        }
        let make = || Arc::new(Mutex::new(KeyLimiter::new(&cached.rate_limits)));
        let limiter = self
            .limiters
            .get_or_insert_with(&cached.id, || Ok::<_, ()>(make()))
            .ok()?;
        if limiter.lock().specs() != cached.rate_limits.as_slice() {
            // The limits were changed: start them afresh.
            let fresh = make();
            self.limiters.insert(cached.id, fresh.clone());
            return Some(fresh);
        }
        Some(limiter)
    }

    /// The cached key for `digest`, loading it on a miss. Concurrent misses on one digest
    /// share a single store read.
    async fn lookup(&self, digest: &KeyDigest) -> Result<Option<Arc<CachedKey>>, StoreError> {
        let guard = match self.cache.get_value_or_guard_async(digest).await {
            Ok(Entry::Found(k)) if k.loaded_at.elapsed() < POSITIVE_TTL => {
                self.metrics.cache_hit.increment(1);
                return Ok(Some(k));
            }
            Ok(Entry::NotFound { until }) if Instant::now() < until => {
                self.metrics.cache_hit.increment(1);
                return Ok(None);
            }
            Ok(_) => {
                // Stale: drop it and load afresh.
                self.cache.remove(digest);
                return Box::pin(self.lookup(digest)).await;
            }
            Err(guard) => guard,
        };
        self.metrics.cache_miss.increment(1);
        let generation = self.generation.load(Ordering::SeqCst);
        let found = self.store.get_key_by_digest(digest).await?;
        let entry = match found {
            Some(k) => Entry::Found(Arc::new(prepare(k)?)),
            None => Entry::NotFound {
                until: Instant::now() + NEGATIVE_TTL,
            },
        };
        // A change that landed while we read may not be in what we read: use the value
        // for this call (it raced with the change) but do not keep it.
        if self.generation.load(Ordering::SeqCst) == generation {
            let _ = guard.insert(entry.clone());
        }
        Ok(match entry {
            Entry::Found(k) => Some(k),
            Entry::NotFound { .. } => None,
        })
    }
}

/// Turns a stored key into its verify form: the allowlist is parsed once here.
fn prepare(k: KeyWithIdentity) -> Result<CachedKey, StoreError> {
    let KeyWithIdentity {
        key,
        identity_enabled,
    } = k;
    let ip_allowlist = IpAllowlist::parse(&key.ip_allowlist)
        .map_err(|e| StoreError::Corrupt(format!("key {}: {e}", key.id)))?;
    Ok(CachedKey {
        id: key.id,
        identity_id: key.identity_id,
        policy: KeyPolicy {
            revoked_at: key.revoked_at,
            expires_at: key.expires_at,
            enabled: key.enabled,
            identity_enabled,
            ip_allowlist,
            scopes: key.scopes,
        },
        rate_limits: key.rate_limits,
        expires_at: key.expires_at,
        has_quota: key.remaining.is_some(),
        quota_exhausted: AtomicBool::new(false),
        loaded_at: Instant::now(),
    })
}

/// Drains last-use times and writes them in batches, once a second, and a last time when
/// `shutdown` turns true.
pub async fn flush_last_used(
    store: Arc<dyn Store>,
    mut rx: LastUsedQueue,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use std::collections::HashMap;
    let mut pending: HashMap<Uuid, Timestamp> = HashMap::new();
    let note = |pending: &mut HashMap<Uuid, Timestamp>, id, at| {
        let e = pending.entry(id).or_insert(at);
        if at > *e {
            *e = at;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((id, at)) => note(&mut pending, id, at),
                None => break,
            },
            _ = tick.tick() => write_batch(&*store, &mut pending).await,
            // The only change ever sent is the one that asks to stop.
            _ = shutdown.changed() => break,
        }
    }
    while let Ok((id, at)) = rx.try_recv() {
        note(&mut pending, id, at);
    }
    write_batch(&*store, &mut pending).await;
}

async fn write_batch(store: &dyn Store, pending: &mut std::collections::HashMap<Uuid, Timestamp>) {
    if pending.is_empty() {
        return;
    }
    let batch: Vec<_> = pending.drain().collect();
    if let Err(e) = store.record_last_used(&batch).await {
        tracing::warn!(error = %e, keys = batch.len(), "could not record last use; will retry");
        pending.extend(batch);
    }
}
