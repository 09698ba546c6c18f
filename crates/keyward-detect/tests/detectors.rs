//! Each detector on a crafted stream: the anomaly it must raise, exactly once, and the
//! benign variants that must raise nothing.

use std::net::IpAddr;

use chrono::DateTime;
use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};
use keyward_core::code::VerifyCode;
use keyward_core::usage::UsageEvent;
use keyward_detect::{DetectSettings, Detectors};
use uuid::Uuid;

/// 2026-01-05T00:00:00Z, a Monday.
const T0: i64 = 1_767_571_200;
const MIN: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn ev(
    at: i64,
    key: Option<(Uuid, Uuid)>,
    code: VerifyCode,
    ip: &str,
    scopes: &[&str],
) -> UsageEvent {
    UsageEvent {
        at: DateTime::from_timestamp(T0 + at, 0).unwrap(),
        key_id: key.map(|k| k.0),
        identity_id: key.map(|k| k.1),
        code,
        ip: Some(ip.parse::<IpAddr>().unwrap()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        latency_us: 0,
        tags: None,
    }
}

struct Run {
    d: Detectors,
    found: Vec<Anomaly>,
}

impl Run {
    fn new() -> Run {
        Run {
            d: Detectors::new(DetectSettings::default()),
            found: Vec::new(),
        }
    }

    fn feed(&mut self, e: UsageEvent) {
        self.d.observe(&e, &mut self.found);
    }

    fn finish(mut self) -> Vec<Anomaly> {
        self.d.finish(&mut self.found);
        self.found
    }

    /// A key used every 30 s around the clock from two hosts of 10.1.1.0/24, for `days`.
    fn steady(&mut self, key: (Uuid, Uuid), from: i64, days: i64) {
        let mut t = from;
        while t < from + days * DAY {
            let ip = if (t / 30) % 2 == 0 {
                "10.1.1.5"
            } else {
                "10.1.1.6"
            };
            self.feed(ev(t, Some(key), VerifyCode::Valid, ip, &["orders:read"]));
            t += 30;
        }
    }
}

fn key() -> (Uuid, Uuid) {
    (Uuid::now_v7(), Uuid::now_v7())
}

fn kinds(found: &[Anomaly]) -> Vec<AnomalyKind> {
    found.iter().map(|a| a.kind).collect()
}

#[test]
fn detectors_are_send() {
    fn send<T: Send>() {}
    send::<Detectors>();
}

#[test]
fn steady_use_raises_nothing() {
    let mut r = Run::new();
    r.steady(key(), 0, 5);
    assert_eq!(kinds(&r.finish()), vec![]);
}

#[test]
fn a_sudden_spike_is_one_traffic_spike() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 4);
    let t = 4 * DAY;
    for i in 0..600 {
        r.feed(ev(
            t + i / 5,
            Some(k),
            VerifyCode::Valid,
            "10.1.1.5",
            &["orders:read"],
        ));
    }
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::TrafficSpike]);
    let a = &found[0];
    assert!(
        a.detail.contains("requests in the last minute"),
        "{}",
        a.detail
    );
    assert!(a.evidence["observed"].as_f64().unwrap() > a.evidence["baseline"].as_f64().unwrap());
}

#[test]
fn a_new_network_alongside_the_usual_one_is_one_new_network() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 4);
    let t = 4 * DAY;
    for i in 0..20 {
        r.feed(ev(
            t + i * 30,
            Some(k),
            VerifyCode::Valid,
            "10.1.1.5",
            &["orders:read"],
        ));
        r.feed(ev(
            t + i * 30 + 10,
            Some(k),
            VerifyCode::Valid,
            "198.51.100.7",
            &["orders:read"],
        ));
    }
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::NewNetwork]);
    assert_eq!(found[0].severity, Severity::High, "two places at once");
    assert!(
        found[0].detail.contains("198.51.100.7"),
        "{}",
        found[0].detail
    );
    assert_eq!(found[0].evidence["network"], "198.51.100.0/24");
}

#[test]
fn a_whole_identity_moving_raises_nothing() {
    let mut r = Run::new();
    let identity = Uuid::now_v7();
    let (a, b) = ((Uuid::now_v7(), identity), (Uuid::now_v7(), identity));
    let mut t = 0;
    while t < 6 * DAY {
        let moved = t >= 4 * DAY;
        let ip_a = if moved { "192.0.2.10" } else { "10.1.1.5" };
        let ip_b = if moved { "192.0.2.11" } else { "10.1.1.6" };
        r.feed(ev(t, Some(a), VerifyCode::Valid, ip_a, &["orders:read"]));
        // The sibling is quieter: once every ten minutes.
        if t % 600 == 0 {
            r.feed(ev(
                t + 1,
                Some(b),
                VerifyCode::Valid,
                ip_b,
                &["orders:read"],
            ));
        }
        t += 30;
    }
    assert_eq!(kinds(&r.finish()), vec![]);
}

/// An office-hours key: weekdays, 09:00-17:00 UTC, every minute, for two weeks.
fn office(r: &mut Run, k: (Uuid, Uuid)) {
    for day in 0..14 {
        if day % 7 >= 5 {
            continue;
        }
        let mut t = day * DAY + 9 * HOUR;
        while t < day * DAY + 17 * HOUR {
            r.feed(ev(
                t,
                Some(k),
                VerifyCode::Valid,
                "10.1.1.5",
                &["orders:read"],
            ));
            t += MIN;
        }
    }
}

#[test]
fn use_at_night_of_an_office_key_is_one_unusual_hour() {
    let mut r = Run::new();
    let k = key();
    office(&mut r, k);
    // Monday of the third week, 03:00-03:10.
    for i in 0..10 {
        r.feed(ev(
            14 * DAY + 3 * HOUR + i * MIN,
            Some(k),
            VerifyCode::Valid,
            "10.1.1.5",
            &["orders:read"],
        ));
    }
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::UnusualHour]);
    assert!(
        found[0].detail.contains("03h UTC") && found[0].detail.contains("09-16h"),
        "{}",
        found[0].detail
    );
}

#[test]
fn use_in_office_hours_raises_nothing() {
    let mut r = Run::new();
    let k = key();
    office(&mut r, k);
    for i in 0..10 {
        r.feed(ev(
            14 * DAY + 10 * HOUR + i * MIN,
            Some(k),
            VerifyCode::Valid,
            "10.1.1.5",
            &["orders:read"],
        ));
    }
    assert_eq!(kinds(&r.finish()), vec![]);
}

#[test]
fn refusals_for_many_new_scopes_are_one_scope_probing() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 4);
    let probes = [
        "users:write",
        "billing:write",
        "keyward:admin",
        "secrets:read",
        "orders:delete",
    ];
    for (i, p) in probes.iter().cycle().take(15).enumerate() {
        r.feed(ev(
            4 * DAY + i as i64 * 10,
            Some(k),
            VerifyCode::InsufficientScope,
            "10.1.1.5",
            &[p],
        ));
    }
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::ScopeProbing]);
    assert_eq!(found[0].severity, Severity::High, "asked for keyward:admin");
}

#[test]
fn a_client_always_refused_one_scope_raises_nothing() {
    let mut r = Run::new();
    let k = key();
    let mut t = 0;
    while t < 6 * DAY {
        let (code, scope) = if (t / 30) % 20 == 0 {
            (VerifyCode::InsufficientScope, "exports:write")
        } else {
            (VerifyCode::Valid, "orders:read")
        };
        r.feed(ev(t, Some(k), code, "10.1.1.5", &[scope]));
        t += 30;
    }
    assert_eq!(kinds(&r.finish()), vec![]);
}

#[test]
fn a_key_waking_after_ten_silent_days_is_one_dormant_key_used() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 4);
    r.feed(ev(
        14 * DAY,
        Some(k),
        VerifyCode::Valid,
        "10.1.1.5",
        &["orders:read"],
    ));
    r.feed(ev(
        14 * DAY + 5,
        Some(k),
        VerifyCode::Valid,
        "10.1.1.5",
        &["orders:read"],
    ));
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::DormantKeyUsed]);
    assert!(
        found[0].detail.contains("10.0 days of silence"),
        "{}",
        found[0].detail
    );
}

#[test]
fn a_weekend_pause_is_not_dormancy() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 4);
    r.steady(k, 6 * DAY, 1);
    assert_eq!(kinds(&r.finish()), vec![]);
}

#[test]
fn a_not_found_flood_from_one_address_is_one_key_guessing() {
    let mut r = Run::new();
    for i in 0..300 {
        let code = if i % 5 == 0 {
            VerifyCode::Malformed
        } else {
            VerifyCode::NotFound
        };
        r.feed(ev(DAY + i / 2, None, code, "203.0.113.9", &[]));
    }
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::KeyGuessing]);
    assert_eq!(found[0].key_id, None);
    assert_eq!(found[0].evidence["ip"], "203.0.113.9");
}

#[test]
fn guessing_spread_over_a_network_is_one_key_guessing() {
    let mut r = Run::new();
    for i in 0..120 {
        let ip = format!("203.0.113.{}", 10 + i % 20);
        r.feed(ev(DAY + i * 3, None, VerifyCode::NotFound, &ip, &[]));
    }
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::KeyGuessing]);
    assert_eq!(found[0].evidence["network"], "203.0.113.0/24");
    assert!(found[0].evidence["distinct_addresses"].as_u64().unwrap() >= 8);
}

#[test]
fn a_stale_client_retrying_a_deleted_or_revoked_key_raises_nothing() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 4);
    let mut t = 4 * DAY;
    while t < 5 * DAY {
        r.feed(ev(t, None, VerifyCode::NotFound, "10.1.1.5", &[]));
        r.feed(ev(t + 1, Some(k), VerifyCode::Revoked, "10.1.1.6", &[]));
        t += MIN;
    }
    assert_eq!(kinds(&r.finish()), vec![]);
}

#[test]
fn an_old_key_used_from_elsewhere_during_its_grace_is_one_old_key_unexpected_source() {
    let mut r = Run::new();
    let old = key();
    let new = (Uuid::now_v7(), old.1);
    r.steady(old, 0, 4);
    let at = DateTime::from_timestamp(T0 + 4 * DAY, 0).unwrap();
    r.d.note_rotated(old.0, new.0, at, at + chrono::Duration::days(1));
    // The client moves to the new key; the old one is used once from its usual place
    // (normal), then from somewhere else.
    r.steady(new, 4 * DAY, 1);
    r.feed(ev(
        4 * DAY + HOUR,
        Some(old),
        VerifyCode::Valid,
        "10.1.1.5",
        &["orders:read"],
    ));
    r.feed(ev(
        4 * DAY + 2 * HOUR,
        Some(old),
        VerifyCode::Valid,
        "198.51.100.7",
        &["orders:read"],
    ));
    let found = r.finish();
    assert_eq!(kinds(&found), vec![AnomalyKind::OldKeyUnexpectedSource]);
    assert_eq!(found[0].key_id, Some(old.0));
    assert!(
        found[0].detail.contains("198.51.100.7"),
        "{}",
        found[0].detail
    );
}

#[test]
fn a_new_key_warms_up_before_alerting() {
    let mut r = Run::new();
    let k = key();
    r.steady(k, 0, 1);
    // Within its first day: a burst, a new network, odd scopes: nothing yet.
    for i in 0..600 {
        r.feed(ev(
            DAY + i / 5,
            Some(k),
            VerifyCode::Valid,
            "198.51.100.7",
            &["orders:read"],
        ));
    }
    for p in ["a:b", "c:d", "e:f", "g:h"] {
        r.feed(ev(
            DAY + 200,
            Some(k),
            VerifyCode::InsufficientScope,
            "10.1.1.5",
            &[p],
        ));
    }
    assert_eq!(kinds(&r.finish()), vec![]);
}
