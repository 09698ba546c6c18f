//! The posture report's rules: what is wrong with a key, and a score per identity.
//! Pure functions over the key records and what usage says of them; the store gathers
//! the data, the server answers `GET /v1/reports/posture`.
//!
//! Only live keys are judged: revoked keys, and rotated keys in their grace period
//! (both have `revoked_at` set), are on their way out already.
//!
//! Score: an identity starts at 100 and loses, for each finding of its keys,
//! [`FindingKind::weight`] points (ADMIN_KEY 25, NOT_ROTATED 15, STALE 15, NO_EXPIRY 10,
//! UNUSED_SCOPES 10, NO_IP_RESTRICTION 5), never going below 0. 100 means nothing to
//! fix; an identity with one unexpiring, unrestricted, unrotated admin key lands at 45.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::KeyRecord;
use crate::time::Timestamp;

/// Keyward's own scope namespace (`keyward:admin`, `keyward:keys:write`, ...).
const KEYWARD_NAMESPACE: &str = "keyward:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingKind {
    NoExpiry,
    NotRotated,
    Stale,
    UnusedScopes,
    NoIpRestriction,
    AdminKey,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::NoExpiry => "NO_EXPIRY",
            FindingKind::NotRotated => "NOT_ROTATED",
            FindingKind::Stale => "STALE",
            FindingKind::UnusedScopes => "UNUSED_SCOPES",
            FindingKind::NoIpRestriction => "NO_IP_RESTRICTION",
            FindingKind::AdminKey => "ADMIN_KEY",
        }
    }

    /// Points an identity's score loses for one finding of this kind.
    pub fn weight(self) -> u32 {
        match self {
            FindingKind::AdminKey => 25,
            FindingKind::NotRotated | FindingKind::Stale => 15,
            FindingKind::NoExpiry | FindingKind::UnusedScopes => 10,
            FindingKind::NoIpRestriction => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key_id: Option<Uuid>,
    pub kind: FindingKind,
    /// A sentence naming the evidence (ages, days, scopes). Never a key or secret.
    pub detail: String,
    /// For UNUSED_SCOPES: the scopes to consider removing.
    pub scopes: Vec<String>,
}

/// The thresholds of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostureSettings {
    /// A key unused this long is STALE; a scope unexercised this long is unused.
    pub stale_days: u32,
    /// A key older than this (and so never rotated since) is NOT_ROTATED.
    pub max_age_days: u32,
}

impl Default for PostureSettings {
    fn default() -> Self {
        PostureSettings {
            stale_days: 90,
            max_age_days: 90,
        }
    }
}

/// What usage says of one key over the last `stale_days`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key's granted scopes that some accepted verification exercised since then.
    pub exercised: HashSet<String>,
}

/// Whether a key is judged at all: not revoked, not rotated away.
pub fn is_live(key: &KeyRecord, now: Timestamp) -> bool {
    key.revoked_at.is_none() && key.expires_at.is_none_or(|t| t > now)
}

/// Whether a scope is in, or a wildcard over, Keyward's own namespace.
pub fn is_keyward_scope(s: &str) -> bool {
    match s.strip_suffix('*') {
        Some(stem) => KEYWARD_NAMESPACE.starts_with(stem) || stem.starts_with(KEYWARD_NAMESPACE),
        None => s.starts_with(KEYWARD_NAMESPACE),
    }
}

fn days(d: chrono::TimeDelta) -> i64 {
    d.num_days()
}

/// The findings for one live key, in the contract's kind order.
pub fn key_findings(
    key: &KeyRecord,
    usage: &KeyUsage,
    settings: PostureSettings,
    now: Timestamp,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |kind, detail: String, scopes: Vec<String>| {
        out.push(Finding {
            key_id: Some(key.id),
            kind,
            detail,
            scopes,
        })
    };
    let age = now - key.created_at;
    let stale = chrono::TimeDelta::days(i64::from(settings.stale_days));
    let observed_long_enough = age >= stale;

    if key.expires_at.is_none() {
        push(
            FindingKind::NoExpiry,
            "the key never expires; set expires_at or a ttl".into(),
            vec![],
        );
    }
    if age > chrono::TimeDelta::days(i64::from(settings.max_age_days)) {
        push(
            FindingKind::NotRotated,
            format!(
                "created {} days ago and never rotated (maximum age {} days)",
                days(age),
                settings.max_age_days
            ),
            vec![],
        );
    }
    let last_use = key.last_used_at;
    let is_stale = observed_long_enough && last_use.is_none_or(|t| now - t >= stale);
    if is_stale {
        let detail = match last_use {
            Some(t) => format!(
                "last used {} days ago (stale after {} days)",
                days(now - t),
                settings.stale_days
            ),
            None => format!("never used in the {} days since it was created", days(age)),
        };
        push(FindingKind::Stale, detail, vec![]);
    } else if observed_long_enough {
        // Keyward's own scopes are exercised through the management API, not verify.
        let unused: Vec<String> = key
            .scopes
            .iter()
            .take(crate::usage::MASK_SCOPES)
            .filter(|s| !is_keyward_scope(s) && !usage.exercised.contains(*s))
            .cloned()
            .collect();
        if !unused.is_empty() {
            push(
                FindingKind::UnusedScopes,
                format!(
                    "granted but not used in {} days: {}; consider removing them",
                    settings.stale_days,
                    unused.join(", ")
                ),
                unused,
            );
        }
    }
    if key.ip_allowlist.is_empty() {
        push(
            FindingKind::NoIpRestriction,
            "usable from any address; set an ip_allowlist".into(),
            vec![],
        );
    }
    let admin: Vec<&str> = key
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| is_keyward_scope(s))
        .collect();
    if !admin.is_empty() {
        push(
            FindingKind::AdminKey,
            format!("holds Keyward's own scopes: {}", admin.join(", ")),
            vec![],
        );
    }
    out
}

/// An identity's score from its findings: 100 minus the weights, at least 0.
pub fn score(findings: &[Finding]) -> u32 {
    let lost: u32 = findings.iter().map(|f| f.kind.weight()).sum();
    100u32.saturating_sub(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::KeyDigest;

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    fn key(age_days: i64) -> KeyRecord {
        let created = now() - chrono::TimeDelta::days(age_days);
        KeyRecord {
            id: Uuid::nil(),
            identity_id: Uuid::nil(),
            name: "k".into(),
            prefix: "kw".into(),
            start: "kw_abc".into(),
            digest: KeyDigest::from_slice(&[0; 32]).unwrap(),
            scopes: vec!["orders:read".into(), "orders:write".into()],
            created_at: created,
            updated_at: created,
            expires_at: Some(now() + chrono::TimeDelta::days(30)),
            revoked_at: None,
            enabled: true,
            ip_allowlist: vec!["10.0.0.0/8".into()],
            rate_limits: vec![],
            remaining: None,
            last_used_at: Some(now() - chrono::TimeDelta::days(1)),
            meta: Default::default(),
            rotated_from: None,
            rotated_to: None,
        }
    }

    fn used(scopes: &[&str]) -> KeyUsage {
        KeyUsage {
            exercised: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn kinds(f: &[Finding]) -> Vec<FindingKind> {
        f.iter().map(|f| f.kind).collect()
    }

    const S: PostureSettings = PostureSettings {
        stale_days: 90,
        max_age_days: 180,
    };

    #[test]
    fn a_well_kept_key_has_no_findings() {
        let f = key_findings(&key(100), &used(&["orders:read", "orders:write"]), S, now());
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(score(&f), 100);
    }

    #[test]
    fn each_kind_is_found() {
        let mut k = key(200);
        k.expires_at = None;
        k.ip_allowlist.clear();
        k.scopes.push("keyward:admin".into());
        let f = key_findings(&k, &used(&["orders:read"]), S, now());
        assert_eq!(
            kinds(&f),
            vec![
                FindingKind::NoExpiry,
                FindingKind::NotRotated,
                FindingKind::UnusedScopes,
                FindingKind::NoIpRestriction,
                FindingKind::AdminKey
            ]
        );
        let unused = &f[2];
        assert_eq!(unused.scopes, vec!["orders:write".to_string()]);
        assert!(unused.detail.contains("orders:write"));
        assert_eq!(score(&f), 100 - 10 - 15 - 10 - 5 - 25);

        let mut k = key(100);
        k.last_used_at = Some(now() - chrono::TimeDelta::days(95));
        assert_eq!(
            kinds(&key_findings(&k, &used(&[]), S, now())),
            vec![FindingKind::Stale]
        );
        k.last_used_at = None;
        let f = key_findings(&k, &used(&[]), S, now());
        assert!(f[0].detail.contains("never used"));
    }

    #[test]
    fn young_keys_are_not_stale_yet() {
        let mut k = key(10);
        k.last_used_at = None;
        assert!(key_findings(&k, &used(&[]), S, now()).is_empty());
    }

    #[test]
    fn score_never_goes_below_zero() {
        let f: Vec<Finding> = (0..10)
            .map(|_| Finding {
                key_id: None,
                kind: FindingKind::AdminKey,
                detail: String::new(),
                scopes: vec![],
            })
            .collect();
        assert_eq!(score(&f), 0);
    }

    #[test]
    fn keyward_namespace_includes_wildcards_over_it() {
        assert!(is_keyward_scope("keyward:admin"));
        assert!(is_keyward_scope("keyward:*"));
        assert!(is_keyward_scope("*"));
        assert!(is_keyward_scope("key*"));
        assert!(!is_keyward_scope("orders:*"));
        assert!(!is_live(
            &KeyRecord {
                revoked_at: Some(now()),
                ..key(1)
            },
            now()
        ));
    }
}
