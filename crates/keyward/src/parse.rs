//! Parsers for flag values. Each returns `Err(message)`, which clap turns into a usage
//! error (exit 2).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use keyward_proto::{Meta, RateLimit};

/// A duration in seconds: a bare number of seconds (`3600`), or one or more
/// `<number><unit>` parts with unit `s`, `m`, `h`, `d` or `w` (`30d`, `1h30m`).
pub fn duration_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let bad = || format!("invalid duration {s:?}: use seconds or e.g. 30d, 12h, 15m, 1h30m");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    if !digits.is_empty() {
        // `1h30`: a trailing number without a unit.
        return Err(bad());
    }
    if total > i64::MAX as u64 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(total)
}

/// `--ttl`: a positive duration, in seconds.
pub fn ttl(s: &str) -> Result<i64, String> {
    match duration_secs(s)? {
        0 => Err("the ttl must be longer than 0 seconds".into()),
        n => Ok(n as i64),
    }
}

/// `--grace`: a duration (0 is allowed: the old key stops at once), in seconds.
pub fn grace(s: &str) -> Result<i64, String> {
    duration_secs(s).map(|n| n as i64)
}

/// `--rate-limit name:limit/window`: window in seconds or with a unit (`60`, `1m`).
pub fn rate_limit(s: &str) -> Result<RateLimit, String> {
    let bad = |why: &str| {
        format!(
            "invalid rate limit {s:?}: {why} (expected name:limit/window_seconds, e.g. default:100/60)"
        )
    };
    let (name, rest) = s.rsplit_once(':').ok_or_else(|| bad("missing ':'"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    let (limit, window) = rest.split_once('/').ok_or_else(|| bad("missing '/'"))?;
    let limit: u32 = limit
        .trim()
        .parse()
        .map_err(|_| bad("the limit is not a whole number"))?;
    if limit == 0 {
        return Err(bad("the limit must be at least 1"));
    }
    let window = duration_secs(window).map_err(|_| bad("the window is not a duration"))?;
    let window_seconds: u32 = window
        .try_into()
        .map_err(|_| bad("the window is too long"))?;
    if window_seconds == 0 {
        return Err(bad("the window must be at least 1 second"));
    }
    Ok(RateLimit {
        name: name.to_string(),
        limit,
        window_seconds,
    })
}

/// `--meta`: a JSON object.
pub fn meta(s: &str) -> Result<Meta, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("--meta must be a JSON object, e.g. '{\"team\":\"payments\"}'".into()),
        Err(e) => Err(format!("--meta is not valid JSON: {e}")),
    }
}

/// `--expires-at`: an RFC 3339 time.
pub fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("invalid RFC 3339 time {s:?}: {e} (e.g. 2030-01-31T12:00:00Z)"))
}

/// `--allow-ip`: an address or a CIDR, IPv4 or IPv6. Kept as written.
pub fn ip_entry(s: &str) -> Result<String, String> {
    let bad = || format!("invalid address or CIDR {s:?}");
    let s = s.trim();
    match s.split_once('/') {
        None => {
            s.parse::<IpAddr>().map_err(|_| bad())?;
        }
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u8 = len.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
        }
    }
    Ok(s.to_string())
}

/// `--ip` of `key verify`: one address.
pub fn ip_addr(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("invalid IP address {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_secs("3600"), Ok(3600));
        assert_eq!(duration_secs("0"), Ok(0));
        assert_eq!(duration_secs("3600s"), Ok(3600));
        assert_eq!(duration_secs("15m"), Ok(900));
        assert_eq!(duration_secs("1h"), Ok(3600));
        assert_eq!(duration_secs("30d"), Ok(30 * 86_400));
        assert_eq!(duration_secs("2w"), Ok(14 * 86_400));
        assert_eq!(duration_secs("1h30m"), Ok(5400));
        assert_eq!(duration_secs("1d2h3m4s"), Ok(93_784));
        for bad in [
            "",
            " ",
            "h",
            "1x",
            "-5",
            "1.5h",
            "1h30",
            "30 d",
            "1H",
            "99999999999999999999w",
        ] {
            assert!(duration_secs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_and_grace() {
        assert_eq!(ttl("30d"), Ok(2_592_000));
        assert!(ttl("0").is_err());
        assert!(ttl("0s").is_err());
        assert_eq!(grace("0"), Ok(0));
        assert_eq!(grace("1h"), Ok(3600));
        assert!(grace("soon").is_err());
    }

    #[test]
    fn rate_limits() {
        assert_eq!(
            rate_limit("default:100/60"),
            Ok(RateLimit {
                name: "default".into(),
                limit: 100,
                window_seconds: 60
            })
        );
        assert_eq!(rate_limit("burst:10/1m").unwrap().window_seconds, 60);
        assert_eq!(rate_limit("daily:5000/1d").unwrap().window_seconds, 86_400);
        // The name may itself hold colons; the last one separates.
        assert_eq!(rate_limit("api:orders:5/1").unwrap().name, "api:orders");
        for bad in [
            "",
            "default",
            "default:100",
            ":100/60",
            "d:0/60",
            "d:100/0",
            "d:x/60",
            "d:100/x",
            "d:-1/60",
            "d:100/60/2",
            "d:4294967296/60",
            "d:1/99999999999",
        ] {
            assert!(rate_limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meta_is_a_json_object() {
        assert_eq!(meta(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(meta("{}").unwrap().is_empty());
        assert!(meta("[1]").is_err());
        assert!(meta("\"x\"").is_err());
        assert!(meta("{").is_err());
    }

    #[test]
    fn times() {
        let t = rfc3339("2030-01-31T12:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2030-01-31T11:00:00+00:00");
        assert!(rfc3339("2030-01-31").is_err());
        assert!(rfc3339("tomorrow").is_err());
    }

    #[test]
    fn ip_entries() {
        for good in [
            "10.0.0.1",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "::1",
            "2001:db8::/32",
            "::/0",
        ] {
            assert_eq!(ip_entry(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "host",
            "1.2.3.4/-1",
        ] {
            assert!(ip_entry(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ip_addr("::1").as_deref(), Ok("::1"));
        assert!(ip_addr("10.0.0.0/8").is_err());
    }
}
