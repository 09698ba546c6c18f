//! Cluster-wide rate limits in Redis.
//!
//! Each limit of a key is a GCRA state (its "theoretical arrival time", TAT) in one Redis
//! string. One Lua script checks every limit of the key and, only if all allow the call,
//! advances them all: one round trip, all-or-nothing, atomic against every other node.
//! Time is Redis's own (`TIME`), so the nodes' clocks do not matter. Keys are
//! `kw:rl:{<key id>}:<name>:<limit>:<window>` (the braces keep a key's limits in one
//! Redis Cluster slot; changing a limit starts it afresh, like the per-node limiter) and
//! expire once their state is back to "full".
//!
//! When Redis cannot be reached (error or 250 ms without an answer) the call falls back
//! to the node's own limiter ([`RedisDown::Local`]; counted in
//! `keyward_redis_fallback_total`, logged once per outage) or is refused with 503
//! ([`RedisDown::Closed`]). During an outage Redis is tried again at most once a second,
//! so a dead Redis costs verify nothing; the first success ends the outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_core::ratelimit::{Allowance, Denied, RateLimitSpec};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::shared_limits::{Shared, SharedLimiter};

/// How long a Redis call may take before it counts as unreachable.
const TIMEOUT: Duration = Duration::from_millis(250);
/// During an outage, how often Redis is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What to do with rate-limited keys while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisDown {
    /// Enforce each key's limits per node (the default): a cluster of N nodes then
    /// lets up to N times the limit through.
    #[default]
    Local,
    /// Refuse verifications of keys that have rate limits, with 503.
    Closed,
}

impl std::str::FromStr for RedisDown {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(RedisDown::Local),
            "closed" => Ok(RedisDown::Closed),
            other => Err(format!("{other:?}: expected local or closed")),
        }
    }
}

/// GCRA over every limit of a key. KEYS: one per limit. ARGV: "acquire" or "release",
/// then for each limit its emission interval and window, in microseconds.
/// Acquire answers `{1, remaining_1, reset_1, ...}` (reset in µs) or
/// `{0, index, retry_after_us}` for the first limit that refuses; release gives one
/// call back to every limit.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local function put(key, tat)
  local ttl = math.ceil((tat - now) / 1000)
  if ttl > 0 then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
  else
    redis.call('DEL', key)
  end
end
if ARGV[1] == 'release' then
  for i = 1, n do
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat then put(KEYS[i], math.max(tat - tonumber(ARGV[2 * i]), now)) end
  end
  return {1}
end
local tats = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new = tat + interval
  if new - now > window then
    return {0, i, new - window - now}
  end
  tats[i] = new
end
local out = {1}
for i = 1, n do
  put(KEYS[i], tats[i])
  local interval = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  out[2 * i] = math.floor((window - (tats[i] - now)) / interval)
  out[2 * i + 1] = tats[i] - now
end
return out
"#;

/// Rate limits shared through one Redis.
pub struct RedisLimits {
    conn: ConnectionManager,
    script: redis::Script,
    on_down: RedisDown,
    /// Whether the last call reached Redis.
    up: AtomicBool,
    /// During an outage: when to try Redis again (µs since `epoch`).
    retry_at: AtomicU64,
    epoch: Instant,
}

impl RedisLimits {
    /// Prepares the connection (`redis://...`); it is made on first use and remade
    /// after failures, so Redis may be down when this is called.
    pub fn new(url: &str, on_down: RedisDown) -> anyhow::Result<Arc<RedisLimits>> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Arc::new(RedisLimits {
            conn,
            script: redis::Script::new(SCRIPT),
            on_down,
            up: AtomicBool::new(true),
            retry_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }

    /// Whether Redis answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let pong: Result<String, _> =
            tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn))
                .await
                .unwrap_or_else(|_| Err(timeout_error()));
        pong.is_ok()
    }

    /// Whether rate-limited keys are refused while Redis is unreachable.
    pub fn fails_closed(&self) -> bool {
        self.on_down == RedisDown::Closed
    }

    /// Whether the last call reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn elapsed_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// During an outage, only one call a second tries Redis.
    fn should_try(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.elapsed_us();
        let at = self.retry_at.load(Ordering::Relaxed);
        now >= at
            && self
                .retry_at
                .compare_exchange(
                    at,
                    now + RETRY_EVERY.as_micros() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn went_down(&self, e: &redis::RedisError) {
        self.retry_at.store(
            self.elapsed_us() + RETRY_EVERY.as_micros() as u64,
            Ordering::Relaxed,
        );
        if self.up.swap(false, Ordering::Relaxed) {
            match self.on_down {
                RedisDown::Local => tracing::warn!(
                    error = %e,
                    "Redis unreachable: rate limits fall back to per-node limits until it is back"
                ),
                RedisDown::Closed => tracing::warn!(
                    error = %e,
                    "Redis unreachable: refusing rate-limited keys (fail closed) until it is back"
                ),
            }
        }
    }

    fn came_back(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis reachable again: cluster-wide rate limits resumed");
        }
    }

    fn unreachable(&self) -> Shared {
        match self.on_down {
            RedisDown::Local => {
                // Looked up on each use, not kept from `new`: the binary opens Redis
                // before it installs the metrics recorder.
                metrics::counter!("keyward_redis_fallback_total").increment(1);
                Shared::Fallback
            }
            RedisDown::Closed => Shared::Unavailable,
        }
    }

    async fn invoke(
        &self,
        op: &str,
        key: Uuid,
        specs: &[RateLimitSpec],
    ) -> Result<Vec<i64>, redis::RedisError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg(op);
        for s in specs {
            let window = u64::from(s.window_seconds.max(1)) * 1_000_000;
            let interval = (window / u64::from(s.limit.max(1))).max(1);
            inv.key(format!(
                "kw:rl:{{{key}}}:{}:{}:{}",
                s.name, s.limit, s.window_seconds
            ))
            .arg(interval)
            .arg(window);
        }
        let mut conn = self.conn.clone();
        tokio::time::timeout(TIMEOUT, inv.invoke_async::<Vec<i64>>(&mut conn))
            .await
            .unwrap_or_else(|_| Err(timeout_error()))
    }
}

fn timeout_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

fn us(v: i64) -> Duration {
    Duration::from_micros(v.max(0) as u64)
}

#[async_trait::async_trait]
impl SharedLimiter for RedisLimits {
    async fn acquire(&self, key: Uuid, specs: &[RateLimitSpec]) -> Shared {
        if !self.should_try() {
            return self.unreachable();
        }
        let out = match self.invoke("acquire", key, specs).await {
            Ok(out) => out,
            Err(e) => {
                self.went_down(&e);
                return self.unreachable();
            }
        };
        self.came_back();
        match out.as_slice() {
            [0, index, retry_after] => {
                let s = &specs[(*index as usize).saturating_sub(1).min(specs.len() - 1)];
                Shared::Denied(Denied {
                    name: s.name.clone(),
                    limit: s.limit,
                    window_seconds: s.window_seconds,
                    retry_after: us(*retry_after),
                })
            }
            [1, rest @ ..] if rest.len() == 2 * specs.len() => {
                // Report the tightest limit, as the per-node limiter does.
                let (i, remaining, reset) = rest
                    .chunks(2)
                    .enumerate()
                    .map(|(i, c)| (i, c[0], c[1]))
                    .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
                    .expect("at least one limit");
                Shared::Allowed(Allowance {
                    index: i,
                    limit: specs[i].limit,
                    remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                    reset_after: us(reset),
                })
            }
            other => {
                tracing::error!(answer = ?other, "unexpected answer from the rate limit script");
                self.unreachable()
            }
        }
    }

    async fn release(&self, key: Uuid, specs: &[RateLimitSpec]) {
        if let Err(e) = self.invoke("release", key, specs).await {
            // The call was refused anyway; at worst it used up one slot.
            tracing::debug!(error = %e, "could not give a rate limit slot back");
        }
    }
}
