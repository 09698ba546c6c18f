//! Anomalies as people read them: one sentence naming the evidence, and the same
//! evidence structured.

use std::net::IpAddr;

use chrono::DateTime;
use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use serde_json::json;
use uuid::Uuid;

use crate::clock::{DAY, HOUR};
use crate::guessing::Guessing;
use crate::key::{KeyState, PendingNet, Rotation};
use crate::net::Net;
use crate::rhythm::UnusualHour;
use crate::scopes::Probing;
use crate::traffic::Spike;

fn time(micros: i64) -> Timestamp {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "an unknown address".into(), |ip| ip.to_string())
}

fn base(e: &UsageEvent, kind: AnomalyKind, severity: Severity) -> Anomaly {
    Anomaly {
        at: e.at,
        key_id: e.key_id,
        identity_id: e.identity_id,
        kind,
        severity,
        detail: String::new(),
        evidence: serde_json::Value::Null,
    }
}

pub fn guessing(e: &UsageEvent, g: &Guessing) -> Anomaly {
    let severity = if g.net_count >= 300.0 || g.distinct_addresses >= 32 {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut a = base(e, AnomalyKind::KeyGuessing, severity);
    a.detail = if g.spread {
        format!(
            "{:.0} NOT_FOUND/MALFORMED answers in 5 minutes from {} addresses of {} \
             (usually {:.1}): keys are being guessed across a network",
            g.net_count, g.distinct_addresses, g.net, g.expected
        )
    } else {
        format!(
            "{:.0} NOT_FOUND/MALFORMED answers in 5 minutes to {} ({} in all from {}, \
             usually {:.1}): keys are being guessed",
            g.top_count, g.top_ip, g.net_count as u64, g.net, g.expected
        )
    };
    a.key_id = None;
    a.identity_id = None;
    a.evidence = json!({
        "ip": g.top_ip.to_string(),
        "network": g.net.to_string(),
        "observed": g.net_count.round(),
        "from_ip": g.top_count.round(),
        "distinct_addresses": g.distinct_addresses,
        "baseline": (g.expected * 10.0).round() / 10.0,
        "window_seconds": 300,
    });
    a
}

pub fn dormant(e: &UsageEvent, k: &KeyState, silence: i64, known_net: bool) -> Anomaly {
    let severity = if known_net {
        Severity::Medium
    } else {
        Severity::High
    };
    let mut a = base(e, AnomalyKind::DormantKeyUsed, severity);
    let days = silence as f64 / DAY as f64;
    let longest = k.longest_gap as f64 / DAY as f64;
    a.detail = format!(
        "used from {} after {:.1} days of silence (last use {}; its longest silence before \
         was {:.1} days){}",
        ip_text(e.ip),
        days,
        time(k.last_seen).to_rfc3339(),
        longest,
        if known_net {
            ""
        } else {
            ", from a network it never used"
        }
    );
    a.evidence = json!({
        "ip": e.ip.map(|i| i.to_string()),
        "last_used_at": time(k.last_seen),
        "observed": { "silence_days": (days * 10.0).round() / 10.0 },
        "baseline": { "longest_silence_days": (longest * 10.0).round() / 10.0 },
        "known_network": known_net,
    });
    a
}

pub fn unusual_hour(e: &UsageEvent, k: &KeyState, u: &UnusualHour) -> Anomaly {
    let severity = if u.other_class_usual {
        Severity::Low
    } else {
        Severity::Medium
    };
    let mut a = base(e, AnomalyKind::UnusualHour, severity);
    a.detail = format!(
        "used on {} at {:02}h UTC from {}, an hour it was never active in over {} days \
         (usually {}{})",
        u.weekday,
        u.hour,
        ip_text(e.ip),
        k.rhythm.days_lived(),
        u.usual_hours,
        if u.other_class_usual {
            "; usual on the other kind of day"
        } else {
            ""
        }
    );
    a.evidence = json!({
        "ip": e.ip.map(|i| i.to_string()),
        "observed": { "hour_utc": u.hour, "weekday": u.weekday },
        "baseline": { "usual_hours_utc": u.usual_hours, "days_observed": k.rhythm.days_lived() },
    });
    a
}

pub fn spike(e: &UsageEvent, s: &Spike) -> Anomaly {
    let ratio = s.observed / s.baseline.max(1.0);
    let severity = if ratio >= 10.0 {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut a = base(e, AnomalyKind::TrafficSpike, severity);
    let (window, what) = if s.sustained {
        (1800, "in the last 30 minutes, against a usual")
    } else {
        (60, "in the last minute, against a busiest minute of")
    };
    a.detail = format!(
        "{:.0} requests {} {:.0} ({:.1}x), latest from {}",
        s.observed,
        what,
        s.baseline,
        ratio,
        ip_text(e.ip)
    );
    a.evidence = json!({
        "ip": e.ip.map(|i| i.to_string()),
        "observed": s.observed.round(),
        "baseline": s.baseline.round(),
        "ratio": (ratio * 10.0).round() / 10.0,
        "window_seconds": window,
        "sustained": s.sustained,
    });
    a
}

pub fn probing(e: &UsageEvent, p: &Probing) -> Anomaly {
    let sensitive = e
        .scopes
        .iter()
        .any(|s| s.starts_with("keyward:") || s.contains("admin"));
    let severity = if sensitive || p.distinct_unknown >= 6 {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut a = base(e, AnomalyKind::ScopeProbing, severity);
    a.detail = format!(
        "{:.0} INSUFFICIENT_SCOPE refusals in 10 minutes (usually {:.1}), {} for scopes it \
         never used, latest asking for {} from {}",
        p.refusals,
        p.expected,
        p.distinct_unknown,
        if e.scopes.is_empty() {
            "no scope".into()
        } else {
            e.scopes.join(", ")
        },
        ip_text(e.ip)
    );
    a.evidence = json!({
        "ip": e.ip.map(|i| i.to_string()),
        "scopes": e.scopes,
        "observed": p.refusals.round(),
        "baseline": (p.expected * 10.0).round() / 10.0,
        "distinct_unknown_scopes": p.distinct_unknown,
        "window_seconds": 600,
    });
    a
}

pub fn old_key(e: &UsageEvent, k: &KeyState, r: &Rotation, net: Net, ip: IpAddr) -> Anomaly {
    let mut a = base(e, AnomalyKind::OldKeyUnexpectedSource, Severity::High);
    let hours_left = (r.grace_until - e.at.timestamp_micros()) as f64 / HOUR as f64;
    a.detail = format!(
        "rotated-out key used from {ip} ({net}), a network it never used, {:.1} hours \
         before its grace period ends; it was rotated to {} and used from {}",
        hours_left.max(0.0),
        r.new_key,
        k.nets.top(3).join(", ")
    );
    a.evidence = json!({
        "ip": ip.to_string(),
        "network": net.to_string(),
        "new_key_id": r.new_key,
        "grace_until": time(r.grace_until),
        "baseline": { "networks": k.nets.top(5) },
    });
    a
}

pub fn new_network(key_id: Uuid, k: &KeyState, p: &PendingNet) -> Anomaly {
    let severity = if p.concurrent > 0 {
        Severity::High
    } else {
        Severity::Medium
    };
    let usual = k
        .nets
        .top(4)
        .into_iter()
        .filter(|n| *n != p.net.to_string())
        .take(3)
        .collect::<Vec<_>>();
    let detail = format!(
        "used {} times from {} ({}), a network neither it nor its identity's other keys \
         used before (usually {}){}",
        p.count,
        p.ip,
        p.net,
        if usual.is_empty() {
            "none".into()
        } else {
            usual.join(", ")
        },
        if p.concurrent > 0 {
            format!(
                ", while {} uses came from its usual networks at the same time",
                p.concurrent
            )
        } else {
            String::new()
        }
    );
    Anomaly {
        at: time(p.last_at),
        key_id: Some(key_id),
        identity_id: k.identity,
        kind: AnomalyKind::NewNetwork,
        severity,
        detail,
        evidence: json!({
            "ip": p.ip.to_string(),
            "network": p.net.to_string(),
            "first_seen": time(p.first_at),
            "observed": p.count,
            "concurrent_usual_uses": p.concurrent,
            "baseline": { "networks": usual },
        }),
    }
}
