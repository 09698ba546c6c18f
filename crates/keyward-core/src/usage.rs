//! Usage events: one per verification, the raw material of analytics, last-use times,
//! posture findings and (later) anomaly detection.
//!
//! The event's JSON form is the line format of `keyward detect --events FILE`
//! (contract): `{"at", "key_id", "identity_id", "code", "ip", "scopes"}`, plus
//! `latency_us` and `tags` when known. `scopes` holds, for an accepted call, the key's
//! granted scopes that the call exercised (what least-privilege advice needs), and for a
//! refused call the scopes it asked for (what probing for scopes looks like).
//!
//! The verify hot path must not allocate, so it records which granted scopes were
//! exercised as a bitmask over the key's scope list ([`exercised_scopes`]); the writer,
//! off the hot path, turns it back into names ([`scopes_in_mask`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::code::VerifyCode;
use crate::permission::Permission;
use crate::policy::VerifyRequest;
use crate::scope;
use crate::time::Timestamp;
use crate::validate::FieldError;

/// Free-form labels a verifier attaches to a verification (`{"route": "/orders"}`),
/// kept with its usage event. Bounded: see [`validate_tags`].
pub type UsageTags = BTreeMap<String, String>;

/// At most this many tags per verification.
pub const TAGS_MAX: usize = 8;
/// Longest tag name, in bytes (`[A-Za-z0-9_.:-]`).
pub const TAG_NAME_MAX: usize = 64;
/// Longest tag value, in characters.
pub const TAG_VALUE_MAX: usize = 256;
/// Only the first this-many granted scopes of a key are tracked in the exercised mask;
/// later ones are never reported unused (they are not observed).
pub const MASK_SCOPES: usize = 64;

/// One verification, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub at: Timestamp,
    /// `None` for a key that was not found (or not well-formed).
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    pub code: VerifyCode,
    /// The address the key was presented from, when the verifier said.
    pub ip: Option<IpAddr>,
    /// Accepted: the granted scopes exercised; refused: the scopes asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How long the verification took inside Keyward, in microseconds.
    #[serde(default)]
    pub latency_us: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<UsageTags>,
}

/// The granularity of usage rollups and of `GET /v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub const ALL: [Bucket; 3] = [Bucket::Minute, Bucket::Hour, Bucket::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// The bucket's length in microseconds (UTC days: Unix time has no leap seconds).
    pub fn micros(self) -> i64 {
        match self {
            Bucket::Minute => 60_000_000,
            Bucket::Hour => 3_600_000_000,
            Bucket::Day => 86_400_000_000,
        }
    }

    /// The start of the bucket holding `at`, in microseconds since the epoch.
    pub fn start_micros(self, at_micros: i64) -> i64 {
        at_micros - at_micros.rem_euclid(self.micros())
    }

    /// The start of the bucket holding `at`.
    pub fn start(self, at: Timestamp) -> Timestamp {
        let micros = self.start_micros(at.timestamp_micros());
        chrono::DateTime::from_timestamp_micros(micros).unwrap_or(at)
    }
}

/// Checks the tags a verifier sent; the error names the tag (`tags.<name>`).
pub fn validate_tags(tags: &UsageTags) -> Result<(), FieldError> {
    if tags.len() > TAGS_MAX {
        return Err(FieldError::new(
            "tags",
            format!("at most {TAGS_MAX} tags per verification"),
        ));
    }
    for (name, value) in tags {
        let name_ok = !name.is_empty()
            && name.len() <= TAG_NAME_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if !name_ok {
            return Err(FieldError::new(
                "tags",
                format!(
                    "tag names are 1-{TAG_NAME_MAX} characters of A-Z a-z 0-9 _ . : - \
                     (got {:?})",
                    name.chars().take(TAG_NAME_MAX + 1).collect::<String>()
                ),
            ));
        }
        if value.chars().count() > TAG_VALUE_MAX || value.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("tags.{name}"),
                format!("at most {TAG_VALUE_MAX} characters, no control characters"),
            ));
        }
    }
    Ok(())
}

/// Which of `granted` (by index, the first [`MASK_SCOPES`]) the request exercised: for
/// each required scope and each scope of the permission query that the key holds, the
/// first granted scope that grants it. Allocates nothing.
pub fn exercised_scopes<S: AsRef<str>>(granted: &[S], req: &VerifyRequest<'_>) -> u64 {
    let mut mask = 0u64;
    for r in req.scopes {
        mask |= granting(granted, r);
    }
    if let Some(p) = req.permission {
        mask |= exercised_by_query(granted, p);
    }
    mask
}

fn exercised_by_query<S: AsRef<str>>(granted: &[S], p: &Permission) -> u64 {
    match p {
        Permission::Scope(s) => granting(granted, s),
        // Every branch the key satisfies counts: an OR is exercised through whichever
        // alternative the key holds, which is what removing a scope would break.
        Permission::And(v) | Permission::Or(v) => {
            v.iter().fold(0, |m, c| m | exercised_by_query(granted, c))
        }
    }
}

fn granting<S: AsRef<str>>(granted: &[S], required: &str) -> u64 {
    granted
        .iter()
        .take(MASK_SCOPES)
        .position(|g| scope::grants(g.as_ref(), required))
        .map_or(0, |i| 1u64 << i)
}

/// The names of the granted scopes set in `mask`.
pub fn scopes_in_mask<S: AsRef<str>>(granted: &[S], mask: u64) -> Vec<String> {
    let mut out = Vec::new();
    scopes_in_mask_into(granted, mask, &mut out);
    out
}

/// [`scopes_in_mask`], written over `out`: its strings are reused (no allocation when
/// they are long enough), so a writer that recycles its events allocates nothing.
pub fn scopes_in_mask_into<S: AsRef<str>>(granted: &[S], mask: u64, out: &mut Vec<String>) {
    let mut n = 0;
    for (i, s) in granted.iter().take(MASK_SCOPES).enumerate() {
        if mask & (1u64 << i) == 0 {
            continue;
        }
        match out.get_mut(n) {
            Some(slot) => {
                slot.clear();
                slot.push_str(s.as_ref());
            }
            None => out.push(s.as_ref().to_owned()),
        }
        n += 1;
    }
    out.truncate(n);
}

/// The scopes a refused request asked for: the required ones, then those the
/// permission query names, without repeats.
pub fn requested_scopes(req: &VerifyRequest<'_>) -> Vec<String> {
    let mut out: Vec<String> = req.scopes.to_vec();
    if let Some(p) = req.permission {
        for s in p.scopes() {
            if !out.iter().any(|o| o == s) {
                out.push(s.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn mask_names_the_granting_scopes() {
        let granted = s(&["orders:*", "billing:read", "admin:x"]);
        let required = s(&["orders:read"]);
        let p = Permission::parse("billing:read OR billing:admin").unwrap();
        let req = VerifyRequest {
            scopes: &required,
            permission: Some(&p),
            ip: None,
        };
        let mask = exercised_scopes(&granted, &req);
        assert_eq!(mask, 0b011);
        assert_eq!(
            scopes_in_mask(&granted, mask),
            s(&["orders:*", "billing:read"])
        );
        assert_eq!(
            requested_scopes(&req),
            s(&["orders:read", "billing:read", "billing:admin"])
        );
    }

    #[test]
    fn buckets_truncate_in_utc() {
        let t: Timestamp = "2026-03-04T05:06:07.123456Z".parse().unwrap();
        assert_eq!(
            Bucket::Minute.start(t).to_rfc3339(),
            "2026-03-04T05:06:00+00:00"
        );
        assert_eq!(
            Bucket::Hour.start(t).to_rfc3339(),
            "2026-03-04T05:00:00+00:00"
        );
        assert_eq!(
            Bucket::Day.start(t).to_rfc3339(),
            "2026-03-04T00:00:00+00:00"
        );
        let before_epoch: Timestamp = "1969-12-31T23:59:30Z".parse().unwrap();
        assert_eq!(
            Bucket::Minute.start(before_epoch).to_rfc3339(),
            "1969-12-31T23:59:00+00:00"
        );
    }

    #[test]
    fn tags_are_bounded_and_named() {
        let mut t = UsageTags::new();
        t.insert("route".into(), "/orders".into());
        assert!(validate_tags(&t).is_ok());
        t.insert("bad name".into(), "x".into());
        assert_eq!(validate_tags(&t).unwrap_err().field, "tags");
        let mut t = UsageTags::new();
        t.insert("route".into(), "x".repeat(TAG_VALUE_MAX + 1));
        assert_eq!(validate_tags(&t).unwrap_err().field, "tags.route");
        let t: UsageTags = (0..=TAGS_MAX)
            .map(|i| (format!("t{i}"), String::new()))
            .collect();
        assert!(validate_tags(&t).is_err());
    }

    #[test]
    fn event_json_is_the_detect_line_format() {
        let e = UsageEvent {
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            key_id: None,
            identity_id: None,
            code: VerifyCode::NotFound,
            ip: Some("10.0.0.1".parse().unwrap()),
            scopes: vec![],
            latency_us: 12,
            tags: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["code"], "NOT_FOUND");
        assert_eq!(v["ip"], "10.0.0.1");
        assert!(v["key_id"].is_null());
        let line = r#"{"at":"2026-01-01T00:00:00Z","key_id":null,"identity_id":null,"code":"VALID","ip":null,"scopes":["a"]}"#;
        let back: UsageEvent = serde_json::from_str(line).unwrap();
        assert_eq!(back.code, VerifyCode::Valid);
    }
}
