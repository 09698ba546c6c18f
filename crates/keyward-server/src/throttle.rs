//! Throttled guessing: failed logins and unknown bearer credentials, per source address
//! and per account (GCRA limiters from `governor`), and account lockout.
//!
//! * **Logins** (`POST /v1/sessions`) are checked *before* the password is: a blocked
//!   address or a locked account gets 429 with `Retry-After` without any argon2 work.
//!   Each failure takes a cell from its address's and its account's limiter; when one
//!   runs dry the address is blocked until a cell comes back, and the account is
//!   locked for [`LOCKOUT`].
//! * **Bearer credentials**: a credential that is no known key takes a cell from its
//!   address's limiter; once dry, that address's unknown credentials get 429 instead
//!   of 401. A valid credential is never throttled, so verifiers sharing an address
//!   with a guesser are not slowed (and the verify path only reads one atomic while no
//!   address is blocked).
//!
//! State is per node (a guesser spread over nodes gets each node's allowance).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

use crate::error::ApiError;

/// How long an account stays locked after its failures ran its allowance dry.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Failures one key may have: `burst` at once, then one per `every`.
struct Guard<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
    any_blocked: AtomicBool,
    /// Fixed block after the allowance ran dry (`None`: until a cell is back).
    block_for: Option<Duration>,
}

impl<K: Hash + Eq + Clone> Guard<K> {
    fn new(burst: u32, every: Duration, block_for: Option<Duration>) -> Self {
        let quota = Quota::with_period(every)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(burst).expect("a non-zero burst"));
        Guard {
            limiter: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
            any_blocked: AtomicBool::new(false),
            block_for,
        }
    }

    /// How long `k` stays blocked, if it is.
    fn blocked(&self, k: &K) -> Option<Duration> {
        if !self.any_blocked.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        let mut map = self.blocked.lock();
        match map.get(k) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                map.remove(k);
                if map.is_empty() {
                    self.any_blocked.store(false, Ordering::Relaxed);
                }
                None
            }
            None => None,
        }
    }

    /// Records a failure of `k`; returns how long it is blocked now, if it is.
    fn failed(&self, k: &K) -> Option<Duration> {
        let wait = match self.limiter.check_key(k) {
            Ok(()) => return None,
            Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
        };
        let wait = self.block_for.unwrap_or(wait).max(Duration::from_secs(1));
        let mut map = self.blocked.lock();
        // Forget what has expired, so the map stays as small as the attack.
        let now = Instant::now();
        map.retain(|_, until| *until > now);
        map.insert(k.clone(), now + wait);
        self.any_blocked.store(true, Ordering::Relaxed);
        Some(wait)
    }
}

/// The node's throttles.
pub struct Throttle {
    login_by_ip: Guard<IpAddr>,
    login_by_account: Guard<String>,
    bearer_by_ip: Guard<IpAddr>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Limits::default())
    }
}

/// The allowances (tests make them small).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failed logins from one address: this many, then one per `login_ip_every`.
    pub login_ip_burst: u32,
    pub login_ip_every: Duration,
    /// Failed logins of one account before it locks for [`LOCKOUT`]; one more per
    /// `account_every`.
    pub account_burst: u32,
    pub account_every: Duration,
    pub lockout: Duration,
    /// Unknown bearer credentials from one address: this many, then one per `bearer_every`.
    pub bearer_ip_burst: u32,
    pub bearer_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            login_ip_burst: 20,
            login_ip_every: Duration::from_secs(6),
            account_burst: 5,
            account_every: Duration::from_secs(3 * 60),
            lockout: LOCKOUT,
            bearer_ip_burst: 50,
            bearer_every: Duration::from_secs(1),
        }
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: wait.as_secs().max(1),
    }
}

impl Throttle {
    pub fn new(l: Limits) -> Throttle {
        Throttle {
            login_by_ip: Guard::new(l.login_ip_burst, l.login_ip_every, None),
            login_by_account: Guard::new(l.account_burst, l.account_every, Some(l.lockout)),
            bearer_by_ip: Guard::new(l.bearer_ip_burst, l.bearer_every, None),
        }
    }

    /// Before a login is looked at: 429 if its address is blocked or its account locked.
    pub fn before_login(&self, ip: IpAddr, username: &str) -> Result<(), ApiError> {
        if let Some(wait) = self.login_by_ip.blocked(&ip) {
            tracing::warn!(source_ip = %ip, "login throttled: too many failures from this address");
            return Err(too_many(wait));
        }
        if let Some(wait) = self.login_by_account.blocked(&username.to_owned()) {
            tracing::warn!(username, source_ip = %ip, "login refused: the account is locked");
            return Err(too_many(wait));
        }
        Ok(())
    }

    /// After a failed login.
    pub fn login_failed(&self, ip: IpAddr, username: &str) {
        if let Some(wait) = self.login_by_ip.failed(&ip) {
            tracing::warn!(source_ip = %ip, secs = wait.as_secs(), "too many failed logins from this address: blocked");
        }
        if let Some(wait) = self.login_by_account.failed(&username.to_owned()) {
            tracing::warn!(
                username,
                secs = wait.as_secs(),
                "too many failed logins: account locked"
            );
        }
    }

    /// After a bearer credential that is no known key: the error to answer with (401,
    /// or 429 once the address has run out of allowance).
    pub fn unknown_bearer(&self, ip: Option<IpAddr>, unauthorized: ApiError) -> ApiError {
        let Some(ip) = ip else {
            return unauthorized;
        };
        if let Some(wait) = self.bearer_by_ip.blocked(&ip) {
            return too_many(wait);
        }
        match self.bearer_by_ip.failed(&ip) {
            Some(wait) => {
                tracing::warn!(source_ip = %ip, secs = wait.as_secs(), "too many unknown credentials from this address: throttled");
                too_many(wait)
            }
            None => unauthorized,
        }
    }
}
