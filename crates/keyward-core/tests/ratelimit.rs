use std::time::{Duration, Instant};

use keyward_core::ratelimit::{self, KeyLimiter, MAX_LIMITS, MAX_WINDOW_SECONDS, RateLimitSpec};
use proptest::prelude::*;

fn spec(name: &str, limit: u32, window_seconds: u32) -> RateLimitSpec {
    RateLimitSpec {
        name: name.to_owned(),
        limit,
        window_seconds,
    }
}

/// How many calls `acquire` lets through at one instant.
fn burst(l: &mut KeyLimiter, now: Instant, cap: u32) -> u32 {
    let mut n = 0;
    while n < cap && l.acquire(now).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn no_limits_means_none() {
    let mut l = KeyLimiter::new(&[]);
    let now = Instant::now();
    assert_eq!(l.acquire(now), Ok(None));
    assert_eq!(l.peek(now), Ok(()));
    l.release(now);
}

#[test]
fn exactly_limit_calls_at_one_instant() {
    for (limit, window) in [
        (1, 1),
        (3, 1),
        (5, 60),
        (7, 1),
        (10, 3600),
        (1000, 1),
        (999_983, 7),
    ] {
        let mut l = KeyLimiter::new(&[spec("a", limit, window)]);
        let now = Instant::now();
        assert_eq!(burst(&mut l, now, limit + 10), limit, "{limit}/{window}s");
        let denied = l.acquire(now).unwrap_err();
        assert_eq!(
            (denied.name.as_str(), denied.limit, denied.window_seconds),
            ("a", limit, window)
        );
        assert!(denied.retry_after > Duration::ZERO);
    }
}

#[test]
fn refills_over_time() {
    let mut l = KeyLimiter::new(&[spec("a", 4, 60)]);
    let t0 = Instant::now();
    assert_eq!(burst(&mut l, t0, 10), 4);
    let denied = l.acquire(t0).unwrap_err();
    assert_eq!(denied.retry_after, Duration::from_secs(15));
    // Not yet.
    assert!(l.acquire(t0 + Duration::from_secs(14)).is_err());
    // One call comes back every 15 s.
    assert!(l.acquire(t0 + Duration::from_secs(15)).is_ok());
    assert!(l.acquire(t0 + Duration::from_secs(15)).is_err());
    // A full window later the whole burst is back.
    let t1 = t0 + Duration::from_secs(15 + 60);
    assert_eq!(burst(&mut l, t1, 10), 4);
}

#[test]
fn retry_after_for_one_per_minute() {
    let mut l = KeyLimiter::new(&[spec("m", 1, 60)]);
    let t0 = Instant::now();
    l.acquire(t0).unwrap();
    let d = l.acquire(t0 + Duration::from_secs(20)).unwrap_err();
    assert_eq!(d.retry_after, Duration::from_secs(40));
}

#[test]
fn all_or_nothing_across_limits() {
    // `slow` allows 2 per 100 s, `fast` 1 per second.
    let mut l = KeyLimiter::new(&[spec("slow", 2, 100), spec("fast", 1, 1)]);
    let t0 = Instant::now();
    assert!(l.acquire(t0).is_ok());
    // `fast` refuses; `slow` would have allowed and must not be charged.
    assert_eq!(l.acquire(t0).unwrap_err().name, "fast");
    assert_eq!(l.acquire(t0).unwrap_err().name, "fast");
    let t1 = t0 + Duration::from_secs(1);
    assert!(l.acquire(t1).is_ok(), "slow was charged by a refused call");
    let t2 = t0 + Duration::from_secs(2);
    assert_eq!(l.acquire(t2).unwrap_err().name, "slow");
}

#[test]
fn denial_names_the_first_refusing_limit() {
    let mut l = KeyLimiter::new(&[spec("a", 1, 10), spec("b", 1, 10)]);
    let now = Instant::now();
    l.acquire(now).unwrap();
    assert_eq!(l.acquire(now).unwrap_err().name, "a");
    assert_eq!(l.peek(now).unwrap_err().name, "a");
}

#[test]
fn peek_does_not_consume() {
    let mut l = KeyLimiter::new(&[spec("a", 3, 10), spec("b", 5, 10)]);
    let now = Instant::now();
    for _ in 0..100 {
        assert_eq!(l.peek(now), Ok(()));
    }
    assert_eq!(burst(&mut l, now, 10), 3);
    let peeked = l.peek(now).unwrap_err();
    assert_eq!(peeked, l.acquire(now).unwrap_err());
}

#[test]
fn release_gives_back() {
    let mut l = KeyLimiter::new(&[spec("a", 3, 10), spec("b", 5, 10)]);
    let now = Instant::now();
    assert_eq!(burst(&mut l, now, 10), 3);
    l.release(now);
    assert!(l.acquire(now).is_ok());
    assert!(l.acquire(now).is_err());
    // Released calls also come back to the other limits: b has used 4 of 5.
    let mut b_only = KeyLimiter::new(&[spec("b", 5, 10)]);
    for _ in 0..4 {
        b_only.acquire(now).unwrap();
    }
    b_only.release(now);
    assert_eq!(burst(&mut b_only, now, 10), 2);
}

#[test]
fn allowance_reports_the_most_constrained_limit() {
    let mut l = KeyLimiter::new(&[spec("wide", 100, 60), spec("narrow", 3, 60)]);
    let now = Instant::now();
    let a = l.acquire(now).unwrap().unwrap();
    assert_eq!(
        (l.specs()[a.index].name.as_str(), a.limit, a.remaining),
        ("narrow", 3, 2)
    );
    assert_eq!(a.reset_after, Duration::from_secs(20));
    let a = l.acquire(now).unwrap().unwrap();
    assert_eq!(
        (l.specs()[a.index].name.as_str(), a.remaining),
        ("narrow", 1)
    );
    let a = l.acquire(now).unwrap().unwrap();
    assert_eq!(
        (l.specs()[a.index].name.as_str(), a.remaining),
        ("narrow", 0)
    );
    assert_eq!(a.reset_after, Duration::from_secs(60));
}

#[test]
fn extreme_specs_do_not_panic() {
    let now = Instant::now();
    for s in [
        spec("zero", 0, 0),
        spec("huge", u32::MAX, 1),
        spec("long", u32::MAX, u32::MAX),
        spec("odd", 16_777_217, MAX_WINDOW_SECONDS),
    ] {
        let mut l = KeyLimiter::new(std::slice::from_ref(&s));
        for _ in 0..3 {
            let _ = l.peek(now);
            if let Ok(Some(a)) = l.acquire(now) {
                assert!(a.remaining <= s.limit.max(1));
            }
        }
        l.release(now);
    }
}

#[test]
fn validate_specs() {
    assert_eq!(ratelimit::validate(&[]), Ok(()));
    assert_eq!(
        ratelimit::validate(&[
            spec("per-minute", 60, 60),
            spec("per_day.v2", 1, MAX_WINDOW_SECONDS)
        ]),
        Ok(())
    );
    let bad: &[(RateLimitSpec, &str)] = &[
        (spec("", 1, 1), "name"),
        (spec(&"n".repeat(65), 1, 1), "name"),
        (spec("a b", 1, 1), "name"),
        (spec("é", 1, 1), "name"),
        (spec("a", 0, 1), "limit"),
        (spec("a", 1, 0), "window_seconds"),
        (spec("a", 1, MAX_WINDOW_SECONDS + 1), "window_seconds"),
    ];
    for (s, field) in bad {
        let e = ratelimit::validate(&[spec("ok", 1, 1), s.clone()]).unwrap_err();
        assert_eq!((e.index, e.field), (1, *field), "{s:?}");
    }
    let e = ratelimit::validate(&[spec("x", 1, 1), spec("y", 1, 1), spec("x", 2, 2)]).unwrap_err();
    assert_eq!((e.index, e.field, e.reason), (2, "name", "duplicate name"));
    assert_eq!(e.to_string(), "rate_limits[2].name: duplicate name");
    let many: Vec<_> = (0..=MAX_LIMITS)
        .map(|i| spec(&format!("l{i}"), 1, 1))
        .collect();
    assert!(ratelimit::validate(&many[..MAX_LIMITS]).is_ok());
    assert!(ratelimit::validate(&many).is_err());
}

proptest! {
    #[test]
    fn burst_is_exactly_the_limit(limit in 1u32..3000, window in 1u32..=MAX_WINDOW_SECONDS) {
        let mut l = KeyLimiter::new(&[spec("a", limit, window)]);
        let now = Instant::now();
        prop_assert_eq!(burst(&mut l, now, limit + 2), limit);
    }

    /// A refused `acquire` leaves the limiter exactly as it was.
    #[test]
    fn refusal_changes_nothing(
        limits in prop::collection::vec((1u32..5, 1u32..5), 1..4),
        steps in prop::collection::vec(0u64..1500, 1..30),
    ) {
        let specs: Vec<_> = limits.iter().enumerate()
            .map(|(i, &(n, w))| spec(&format!("l{i}"), n, w)).collect();
        let mut l = KeyLimiter::new(&specs);
        let mut now = Instant::now();
        for ms in steps {
            now += Duration::from_millis(ms);
            let before = l.clone();
            match l.acquire(now) {
                Ok(_) => {}
                Err(_) => {
                    // Same answers from the untouched clone and the refused limiter.
                    for probe in 0..3u64 {
                        let t = now + Duration::from_millis(probe * 700);
                        prop_assert_eq!(before.peek(t), l.peek(t));
                    }
                }
            }
        }
    }
}
