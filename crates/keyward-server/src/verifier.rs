//! The verify hot path: digest, cache lookup (a key the cache does not hold is parsed
//! before the store is asked), policy, rate limits, quota.
//!
//! **Architecture Invariant:** a verification on a warm cache touches no database and no
//! network and holds no lock across an await. Only keys with a `remaining` quota reach
//! the store on every call (their count must be strict across restarts), and last-use
//! times are written behind in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_core::ip::IpAllowlist;
use keyward_core::model::KeyWithIdentity;
use keyward_core::policy::{KeyPolicy, VerifyRequest};
use keyward_core::ratelimit::{Allowance, Denied, KeyLimiter, RateLimitSpec};
use keyward_core::time::Timestamp;
use keyward_core::usage::{UsageTags, exercised_scopes, requested_scopes};
use keyward_core::{KeyDigest, VerifyCode, key};
use keyward_store::{Consumed, Store, StoreError};
use parking_lot::Mutex;
use quick_cache::sync::Cache;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::shared_limits::{Shared, SharedLimiter};
use crate::usage::{PendingEvent, UsageRecorder, UsageSettings};

/// How long a `NOT_FOUND` is remembered. Short, because a key created on another node
/// would otherwise be refused for this long; creation here forgets it at once.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Backstop on how long a cached record is trusted without a reload, in case an
/// invalidation was ever missed.
const POSITIVE_TTL: Duration = Duration::from_secs(300);
/// How stale a stored `last_used_at` may get before it is rewritten (plus one flush
/// period): a key verified thousands of times a second costs one write every 30 s, and
/// `last_used_at` is never more than 35 s behind. A first use is written at the next
/// flush. What the time serves (stale keys, unused previous keys in a rotation) is
/// judged in hours and days; with 20,000 busy keys, a resolution of 4 s meant 5,000
/// row writes a second on the node serving them (~0.5 µs per verification).
const LAST_USED_RESOLUTION_MICROS: i64 = 30_000_000;
/// How often queued last-use times are written: each write dirties pages of the
/// last-use table wherever its keys fall, so fewer, larger batches write fewer pages
/// through the WAL.
const LAST_USED_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// A key as verify needs it, prepared once per cache fill.
///
/// `repr(C)` keeps the declared order: the fields every warm verification reads come
/// first, next to the `Arc`'s counts, so that with a large key set (where each entry is
/// a cache miss) they lie within the first 128 bytes, and the ids the answer reads
/// within the first 192, rather than across the whole struct. With its counts the key is
/// 192 bytes, an allocation class whose blocks start on a cache line: a warm
/// verification reads three lines of it, never four.
#[derive(Debug)]
#[repr(C)]
pub struct CachedKey {
    // Read on every verification.
    pub policy: KeyPolicy,
    /// The key's live rate-limit state, shared with later fills of the same key so a
    /// reload does not hand out a fresh burst.
    limiter: Option<Arc<Mutex<KeyLimiter>>>,
    /// The last accepted verification, in microseconds since the epoch; written behind.
    last_used_micros: AtomicI64,
    /// The last-use time the store holds (as far as this node knows): a use is queued
    /// only once the stored time is `LAST_USED_RESOLUTION` old.
    last_written_micros: AtomicI64,
    /// When the key was read from the store, in whole seconds of the verifier's clock
    /// (`Verifier::seconds`): only compared with `POSITIVE_TTL`, and 4 bytes where an
    /// `Instant` takes 16.
    loaded_at_secs: u32,
    pub has_quota: bool,
    /// Whether this key waits in the last-use queue already, so a busy key is queued once
    /// per flush rather than once per call.
    last_used_queued: AtomicBool,
    /// Set once the store said the quota is used up, so later calls skip the store.
    /// Any change to the key replaces this entry.
    quota_exhausted: AtomicBool,
    // Read when answering, recording usage, or metering elsewhere.
    pub id: Uuid,
    pub identity_id: Uuid,
    pub rate_limits: Vec<RateLimitSpec>,
    /// What a gateway tells its upstream about this key (`Keyward-Identity`,
    /// `Keyward-Key-Id`, `Keyward-Scopes`), built on its first request through a gateway
    /// rather than three strings per request. It goes with the entry: a changed key is
    /// a new entry, with its own. Boxed: every node caches keys, few are gateways, and
    /// inline the three values would add ~120 bytes to each cached key.
    pub upstream_headers: std::sync::OnceLock<Box<[Option<http::HeaderValue>; 3]>>,
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

/// How far a verification got without the store.
enum Step {
    Decided(Outcome),
    /// The digest is not cached: read the store.
    Load(KeyDigest),
    /// Every check passed but the quota, which lives in the store.
    Quota(Arc<CachedKey>),
    /// Every check passed but the rate limits, which are shared by the cluster (Redis).
    SharedLimits(Arc<CachedKey>),
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
    /// Invalidation counters, so a cache fill that raced with an invalidation of its
    /// key is not kept: see [`Generations`].
    generations: Generations,
    /// The origin of the verifier's clock in whole seconds (`CachedKey::loaded_at_secs`).
    started: Instant,
    last_used: mpsc::Sender<Arc<CachedKey>>,
    metrics: VerifyMetrics,
    shared: Option<Arc<dyn SharedLimiter>>,
    /// Every verification's usage event goes here (`usage.rs`).
    usage: Arc<UsageRecorder>,
    /// False only for a verifier built to measure verify without usage recording.
    record_usage: bool,
}

/// The receiving end of keys used since the last flush, drained by [`flush_last_used`].
pub type LastUsedQueue = mpsc::Receiver<Arc<CachedKey>>;

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
        Self::build(store, capacity, shared, true)
    }

    /// A verifier for a server: rate limits through `shared` when given, usage events
    /// recorded unless `record_usage` is false (only to measure what recording costs).
    pub fn for_server(
        store: Arc<dyn Store>,
        capacity: usize,
        shared: Option<Arc<dyn SharedLimiter>>,
        record_usage: bool,
    ) -> (Arc<Verifier>, LastUsedQueue) {
        Self::build(store, capacity, shared, record_usage)
    }

    /// A verifier that records no usage events: only to measure what recording costs
    /// (the verify bench). A server always records.
    pub fn without_usage_recording(
        store: Arc<dyn Store>,
        capacity: usize,
    ) -> (Arc<Verifier>, LastUsedQueue) {
        Self::build(store, capacity, None, false)
    }

    fn build(
        store: Arc<dyn Store>,
        capacity: usize,
        shared: Option<Arc<dyn SharedLimiter>>,
        record_usage: bool,
    ) -> (Arc<Verifier>, LastUsedQueue) {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let v = Verifier {
            store,
            cache: Cache::new(capacity),
            limiters: Cache::new(capacity),
            generations: Generations::new(),
            started: Instant::now(),
            last_used: tx,
            metrics: VerifyMetrics::new(),
            shared,
            usage: Arc::new(UsageRecorder::new(UsageSettings::default().queue_capacity)),
            record_usage,
        };
        (Arc::new(v), rx)
    }

    /// The queue of usage events, drained by `usage::write_usage`.
    pub fn usage(&self) -> &Arc<UsageRecorder> {
        &self.usage
    }

    /// `at` in whole seconds since the verifier started (for 136 years).
    fn seconds(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.started).as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether a cached key is recent enough to trust at `at` without a reload.
    fn fresh(&self, k: &CachedKey, at: Instant) -> bool {
        u64::from(self.seconds(at).saturating_sub(k.loaded_at_secs)) < POSITIVE_TTL.as_secs()
    }

    /// Forgets a key so the next verification reloads it from the store.
    pub fn forget(&self, digest: &KeyDigest) {
        self.generations.bump(digest);
        self.cache.remove(digest);
    }

    pub fn forget_all(&self, digests: &[KeyDigest]) {
        for d in digests {
            self.forget(d);
        }
    }

    /// Forgets every cached key (cluster mode: changes made elsewhere may have been
    /// missed); rate-limit states are kept. Fills racing with it are not kept, as with
    /// [`Verifier::forget`].
    pub fn clear(&self) {
        self.generations.bump_all();
        self.cache.clear();
    }

    /// Keys currently cached (found and not found).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Verifies `key` for `req`, running every check in the contract's order, and
    /// consumes rate limit and quota only if the call is accepted.
    pub async fn verify(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        self.verify_tagged(key, req, now, None).await
    }

    /// [`Verifier::verify`], with the verifier's tags kept in the usage event.
    pub async fn verify_tagged(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
        tags: Option<Box<UsageTags>>,
    ) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let outcome = match self.step(key, req, now, started, true) {
            Step::Decided(o) => o,
            // Boxed: see `Verifier::finish`.
            step => Box::pin(self.finish(step, req, now, true)).await?,
        };
        self.account(&outcome, req, now, started, tags);
        Ok(outcome)
    }

    /// The warm path alone: decides without any IO when the key is cached (or cached as
    /// unknown) and has no quota, and returns `None` when the store must be asked. Never
    /// awaits, never allocates on an accepted call.
    pub fn try_verify_warm(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
    ) -> Option<Outcome> {
        let started = Instant::now();
        match self.step(key, req, now, started, true) {
            Step::Decided(o) => {
                self.account(&o, req, now, started, None);
                Some(o)
            }
            _ => None,
        }
    }

    /// Checks a bearer credential of the management API: every check up to the scopes,
    /// without consuming rate limits or quota (those meter verifications, not admin work).
    pub async fn authenticate(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        match self.step(key, req, now, Instant::now(), false) {
            Step::Decided(o) => Ok(o),
            // Boxed: see `Verifier::finish`.
            step => Box::pin(self.finish(step, req, now, false)).await,
        }
    }

    /// Metrics, the usage event and the last-use time of an answered verification.
    fn account(
        &self,
        outcome: &Outcome,
        req: &VerifyRequest<'_>,
        now: Timestamp,
        started: Instant,
        tags: Option<Box<UsageTags>>,
    ) {
        self.metrics.by_code[outcome.code as usize].increment(1);
        let valid = outcome.code == VerifyCode::Valid;
        if self.record_usage {
            self.usage.record(PendingEvent {
                at_micros: now.timestamp_micros(),
                key: outcome.key.clone(),
                code: outcome.code,
                ip: req.ip,
                latency_us: u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX),
                exercised: match &outcome.key {
                    Some(k) if valid => exercised_scopes(&k.policy.scopes, req),
                    _ => 0,
                },
                // Only refused calls pay for naming what they asked for.
                requested: if valid {
                    None
                } else {
                    Some(requested_scopes(req))
                        .filter(|r| !r.is_empty())
                        .map(Vec::into_boxed_slice)
                },
                tags,
            });
        }
        if valid && let Some(k) = &outcome.key {
            let micros = now.timestamp_micros();
            k.last_used_micros.store(micros, Ordering::Relaxed);
            if micros - k.last_written_micros.load(Ordering::Relaxed) >= LAST_USED_RESOLUTION_MICROS
                && !k.last_used_queued.load(Ordering::Relaxed)
                && !k.last_used_queued.swap(true, Ordering::AcqRel)
                && self.last_used.try_send(k.clone()).is_err()
            {
                k.last_used_queued.store(false, Ordering::Release);
                self.metrics.last_used_dropped.increment(1);
            }
        }
    }

    /// Everything that can be decided from memory.
    ///
    /// `at` is the monotonic time of the call, read once by the caller (each clock read
    /// is ~30 ns, a noticeable share of a warm verification).
    fn step(
        &self,
        key: &str,
        req: &VerifyRequest<'_>,
        now: Timestamp,
        at: Instant,
        metered: bool,
    ) -> Step {
        // The cache is asked before the key is parsed: it only ever holds digests of
        // well-formed keys (a key is parsed before its first store lookup, and keys are
        // only minted well-formed), so a hit proves the format and checksum by SHA-256's
        // collision resistance, and the warm path skips ~700 instructions of parsing
        // per key. A miss is parsed as before, so `MALFORMED` is still decided without
        // any store lookup; the length bound comes first, so hostile input is not hashed
        // at any length.
        if key.len() > key::MAX_KEY_LEN {
            return Step::Decided(Outcome::code(VerifyCode::Malformed, None));
        }
        let digest = KeyDigest::of(key);
        let cached = self.cache.get(&digest);
        if cached.is_none() && key::parse(key).is_err() {
            return Step::Decided(Outcome::code(VerifyCode::Malformed, None));
        }
        match cached {
            Some(Entry::Found(k)) if self.fresh(&k, at) => {
                self.metrics.cache_hit.increment(1);
                self.evaluate(k, req, now, at, metered)
            }
            Some(Entry::NotFound { until }) if at < until => {
                self.metrics.cache_hit.increment(1);
                Step::Decided(Outcome::code(VerifyCode::NotFound, None))
            }
            _ => Step::Load(digest),
        }
    }

    /// The policy checks in contract order, then the rate limits (in memory); a key with
    /// a quota continues in the store.
    fn evaluate(
        &self,
        k: Arc<CachedKey>,
        req: &VerifyRequest<'_>,
        now: Timestamp,
        at: Instant,
        metered: bool,
    ) -> Step {
        let code = k.policy.evaluate(req, now);
        if code != VerifyCode::Valid || !metered {
            return Step::Decided(Outcome::code(code, Some(k)));
        }
        if self.shared.is_some() && !k.rate_limits.is_empty() {
            return Step::SharedLimits(k);
        }
        if k.has_quota {
            return Step::Quota(k);
        }
        Step::Decided(Self::acquire_local(k, at))
    }

    /// This node's rate limiters, for a key without a quota.
    fn acquire_local(k: Arc<CachedKey>, at: Instant) -> Outcome {
        let acquired = match &k.limiter {
            None => Ok(None),
            Some(l) => l.lock().acquire(at),
        };
        match acquired {
            Ok(allowance) => Outcome {
                allowance,
                ..Outcome::code(VerifyCode::Valid, Some(k))
            },
            Err(denied) => Outcome {
                denied: Some(denied),
                ..Outcome::code(VerifyCode::RateLimited, Some(k))
            },
        }
    }

    /// The part that needs the store: a cache fill, or a quota.
    ///
    /// Its callers await it boxed. Inline, its state (the store's and Redis's futures,
    /// ~900 bytes) made every future that awaits a verification as large, the HTTP
    /// handler's included (1,632 bytes), and a future is copied whole as it is created
    /// and moved. Boxed, a warm verification carries a pointer's worth of it; only the
    /// calls that go to the store or to Redis, a round trip of tens of µs, pay an
    /// allocation. (No throughput change showed beyond this VM's noise: BENCHMARKS.md,
    /// "The cold path boxed".)
    async fn finish(
        &self,
        step: Step,
        req: &VerifyRequest<'_>,
        now: Timestamp,
        metered: bool,
    ) -> Result<Outcome, StoreError> {
        let step = match step {
            Step::Load(digest) => match self.load(&digest).await? {
                None => return Ok(Outcome::code(VerifyCode::NotFound, None)),
                Some(k) => self.evaluate(k, req, now, Instant::now(), metered),
            },
            other => other,
        };
        match step {
            Step::Decided(o) => Ok(o),
            Step::Quota(k) => self.meter_quota(k).await,
            Step::SharedLimits(k) => self.meter_shared(k).await,
            Step::Load(_) => unreachable!("a loaded key is evaluated"),
        }
    }

    /// Cluster-wide rate limits (Redis), then the quota. When Redis is unreachable and
    /// the setting allows it, this node's limiters stand in.
    async fn meter_shared(&self, cached: Arc<CachedKey>) -> Result<Outcome, StoreError> {
        let shared = self
            .shared
            .as_ref()
            .expect("only stepped to with a shared limiter");
        match shared.acquire(cached.id, &cached.rate_limits).await {
            Shared::Allowed(a) => self.meter_quota_after_shared(cached, a).await,
            Shared::Denied(denied) => Ok(Outcome {
                denied: Some(denied),
                ..Outcome::code(VerifyCode::RateLimited, Some(cached))
            }),
            Shared::Unavailable => Err(StoreError::Unavailable(
                "the rate limit store (Redis) is unreachable".into(),
            )),
            Shared::Fallback if cached.has_quota => self.meter_quota(cached).await,
            Shared::Fallback => Ok(Self::acquire_local(cached, Instant::now())),
        }
    }

    /// Rate limits, then the quota in the store; a refused call consumes neither.
    async fn meter_quota(&self, cached: Arc<CachedKey>) -> Result<Outcome, StoreError> {
        let peeked = cached
            .limiter
            .as_ref()
            .map(|l| l.lock().peek(Instant::now()));
        if let Some(Err(denied)) = peeked {
            return Ok(Outcome {
                denied: Some(denied),
                ..Outcome::code(VerifyCode::RateLimited, Some(cached))
            });
        }
        if cached.quota_exhausted.load(Ordering::Relaxed) {
            return Ok(Outcome {
                remaining: Some(0),
                ..Outcome::code(VerifyCode::UsageExceeded, Some(cached))
            });
        }
        let left = match self.store.consume_remaining(cached.id).await? {
            Consumed::Taken { left } => Some(left),
            Consumed::Exhausted => {
                cached.quota_exhausted.store(true, Ordering::Relaxed);
                return Ok(Outcome {
                    remaining: Some(0),
                    ..Outcome::code(VerifyCode::UsageExceeded, Some(cached))
                });
            }
            Consumed::Unlimited => None,
            Consumed::Missing => return Ok(Outcome::code(VerifyCode::NotFound, None)),
        };
        let mut allowance = None;
        // Another call may have used the last slot since the peek.
        let acquired = cached
            .limiter
            .as_ref()
            .map(|l| l.lock().acquire(Instant::now()));
        if let Some(acquired) = acquired {
            match acquired {
                Ok(a) => allowance = a,
                Err(denied) => {
                    if left.is_some() {
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
            remaining: left,
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

    /// The live limiter of a key, kept across cache fills; started afresh when the key's
    /// limits changed.
    fn limiter_for(&self, id: Uuid, specs: &[RateLimitSpec]) -> Option<Arc<Mutex<KeyLimiter>>> {
        if specs.is_empty() {
            return None;
        }
        let make = || Arc::new(Mutex::new(KeyLimiter::new(specs)));
        if let Some(l) = self.limiters.get(&id)
            && l.lock().specs() == specs
        {
            return Some(l);
        }
        let fresh = make();
        self.limiters.insert(id, fresh.clone());
        Some(fresh)
    }

    /// The key with this digest as the cache holds it (read from the store on a miss),
    /// for checks that know a key's digest but not the key: token introspection.
    pub async fn cached_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Result<Option<Arc<CachedKey>>, StoreError> {
        self.load(digest).await
    }

    /// Reads the key for `digest` from the store and caches it (or its absence).
    /// Concurrent misses on one digest share a single store read.
    async fn load(&self, digest: &KeyDigest) -> Result<Option<Arc<CachedKey>>, StoreError> {
        let guard = loop {
            match self.cache.get_value_or_guard_async(digest).await {
                Ok(Entry::Found(k)) if self.fresh(&k, Instant::now()) => {
                    return Ok(Some(k));
                }
                Ok(Entry::NotFound { until }) if Instant::now() < until => return Ok(None),
                // Stale: drop it and load afresh.
                Ok(_) => {
                    self.cache.remove(digest);
                }
                Err(guard) => break guard,
            }
        };
        self.metrics.cache_miss.increment(1);
        let generation = self.generations.of(digest);
        let found = match self.store.get_key_by_digest_now(digest) {
            Some(found) => found?,
            None => self.store.get_key_by_digest(digest).await?,
        };
        let entry = match found {
            Some(k) => Entry::Found(Arc::new(self.prepare(k)?)),
            None => Entry::NotFound {
                until: Instant::now() + NEGATIVE_TTL,
            },
        };
        // A change that landed while we read may not be in what we read: use the value
        // for this call (it raced with the change) but do not keep it.
        if self.generations.of(digest) == generation {
            let _ = guard.insert(entry.clone());
        }
        Ok(match entry {
            Entry::Found(k) => Some(k),
            Entry::NotFound { .. } => None,
        })
    }

    /// Turns a stored key into its verify form: the allowlist is parsed once here.
    fn prepare(&self, k: KeyWithIdentity) -> Result<CachedKey, StoreError> {
        let KeyWithIdentity {
            key,
            identity_enabled,
        } = k;
        let stored_last_use = key.last_used_at.map_or(0, |t| t.timestamp_micros());
        let ip_allowlist = IpAllowlist::parse(&key.ip_allowlist)
            .map_err(|e| StoreError::Corrupt(format!("key {}: {e}", key.id)))?;
        Ok(CachedKey {
            id: key.id,
            identity_id: key.identity_id,
            limiter: self.limiter_for(key.id, &key.rate_limits),
            policy: KeyPolicy {
                revoked_at: key.revoked_at,
                expires_at: key.expires_at,
                enabled: key.enabled,
                identity_enabled,
                ip_allowlist,
                scopes: keyward_core::policy::scope_list(&key.scopes),
            },
            rate_limits: key.rate_limits,
            has_quota: key.remaining.is_some(),
            quota_exhausted: AtomicBool::new(false),
            last_used_micros: AtomicI64::new(0),
            last_used_queued: AtomicBool::new(false),
            last_written_micros: AtomicI64::new(stored_last_use),
            loaded_at_secs: self.seconds(Instant::now()),
            upstream_headers: std::sync::OnceLock::new(),
        })
    }
}

/// Drains the keys used since the last flush and writes their last-use times in one
/// batch, every `LAST_USED_FLUSH_EVERY`, and a last time when `shutdown` turns true.
pub async fn flush_last_used(
    store: Arc<dyn Store>,
    mut rx: LastUsedQueue,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut queued: HashMap<Uuid, Arc<CachedKey>> = HashMap::new();
    // Times whose write failed, retried with the next batch.
    let mut unwritten: HashMap<Uuid, Timestamp> = HashMap::new();
    let mut tick = tokio::time::interval(LAST_USED_FLUSH_EVERY);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(k) => { queued.insert(k.id, k); }
                None => break,
            },
            _ = tick.tick() => write_batch(&*store, &mut queued, &mut unwritten).await,
            // The only change ever sent is the one that asks to stop.
            _ = shutdown.changed() => break,
        }
    }
    while let Ok(k) = rx.try_recv() {
        queued.insert(k.id, k);
    }
    write_batch(&*store, &mut queued, &mut unwritten).await;
}

async fn write_batch(
    store: &dyn Store,
    queued: &mut HashMap<Uuid, Arc<CachedKey>>,
    unwritten: &mut HashMap<Uuid, Timestamp>,
) {
    for (id, k) in queued.drain() {
        // Unqueue before reading the time: a use racing with this either queues the key
        // again or is already visible in the time read below.
        k.last_used_queued.store(false, Ordering::Release);
        let micros = k.last_used_micros.load(Ordering::Relaxed);
        k.last_written_micros.store(micros, Ordering::Relaxed);
        if let Some(at) = chrono::DateTime::from_timestamp_micros(micros) {
            let e = unwritten.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
    }
    if unwritten.is_empty() {
        return;
    }
    let batch: Vec<_> = unwritten.iter().map(|(id, at)| (*id, *at)).collect();
    match store.record_last_used(&batch).await {
        Ok(()) => unwritten.clear(),
        Err(e) => {
            tracing::warn!(error = %e, keys = batch.len(), "could not record last use; will retry")
        }
    }
}

/// Invalidation counters: one for "everything" (a cache flush) and one per stripe of
/// digests. A fill reads the counters of its key before reading the store and keeps
/// what it read only if they did not move meanwhile. Per stripe rather than one global
/// counter: in a cluster every key created or changed anywhere invalidates its digest
/// here, and with a single counter that steady stream would discard nearly every fill
/// (and leave every key cold). A stripe shared by two digests only costs a rare extra
/// discard.
struct Generations {
    all: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl Generations {
    const STRIPES: usize = 4096;

    fn new() -> Generations {
        Generations {
            all: AtomicU64::new(0),
            stripes: (0..Self::STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, digest: &KeyDigest) -> &AtomicU64 {
        // Digests are SHA-256: any two bytes are uniform.
        let b = digest.as_bytes();
        &self.stripes[usize::from(u16::from_le_bytes([b[0], b[1]])) % Self::STRIPES]
    }

    /// The counters a fill of `digest` must see unchanged to keep what it read.
    fn of(&self, digest: &KeyDigest) -> (u64, u64) {
        (
            self.all.load(Ordering::SeqCst),
            self.stripe(digest).load(Ordering::SeqCst),
        )
    }

    fn bump(&self, digest: &KeyDigest) {
        self.stripe(digest).fetch_add(1, Ordering::SeqCst);
    }

    fn bump_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod generation_tests {
    use super::*;

    #[test]
    fn a_fill_is_discarded_only_by_invalidations_that_can_concern_it() {
        let g = Generations::new();
        let mine = KeyDigest::of("kw_mine");
        // Another digest in another stripe.
        let other = (0..)
            .map(|i| KeyDigest::of(&format!("kw_other{i}")))
            .find(|d| !std::ptr::eq(g.stripe(d), g.stripe(&mine)))
            .unwrap();
        let before = g.of(&mine);
        g.bump(&other);
        assert_eq!(g.of(&mine), before, "another key's change keeps my fill");
        g.bump(&mine);
        assert_ne!(g.of(&mine), before, "my key's change discards it");
        let before = g.of(&mine);
        g.bump_all();
        assert_ne!(g.of(&mine), before, "a flush discards every fill");
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// What a warm verification reads of a cached key, with the `Arc`'s two counts in
    /// front (16 bytes), lies within the first 128 bytes (two cache lines' worth), and
    /// with the ids its answer reads, within 192.
    #[test]
    fn the_hot_fields_of_a_cached_key_span_two_cache_lines() {
        let hot_end = std::mem::offset_of!(CachedKey, quota_exhausted) + 1;
        assert!(
            16 + hot_end <= 128,
            "hot fields end at byte {}",
            16 + hot_end
        );
        let answered_end = std::mem::offset_of!(CachedKey, identity_id) + 16;
        assert!(
            16 + answered_end <= 192,
            "the answer's ids end at byte {}",
            16 + answered_end
        );
    }

    /// With its counts a cached key fills a 192-byte allocation: mimalloc's blocks of
    /// that class start on a cache line (192 is three), so the key's first three lines
    /// are its own. One byte more and it would take a larger class, whose blocks start
    /// mid-line every other time (seen for 200 to 224 bytes): the hot fields and ids
    /// would then span four lines for half the keys.
    #[test]
    fn a_cached_key_with_its_counts_is_three_cache_lines() {
        assert_eq!(16 + std::mem::size_of::<CachedKey>(), 192);
    }
}
