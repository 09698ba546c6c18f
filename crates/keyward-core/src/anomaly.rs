//! Anomalies: what the detectors (crate `keyward-detect`) say about usage, and what the
//! server stores, serves at `GET /v1/anomalies`, alerts as `anomaly.detected` and may act
//! on. The JSON form of [`Anomaly`] (without `evidence`) is the line format that
//! `keyward detect --events FILE` prints (contract):
//! `{"at", "key_id", "identity_id", "kind", "severity", "detail"}`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// What kind of behaviour gave a key (or an address) away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnomalyKind {
    /// Traffic far above the key's learned baseline, sudden or sustained.
    TrafficSpike,
    /// A key used from a network it has never used (and its identity has not moved).
    NewNetwork,
    /// A key used at an hour (of its weekly rhythm) where it has never been active.
    UnusualHour,
    /// A burst of `INSUFFICIENT_SCOPE` refusals: probing for privileges the key lacks.
    ScopeProbing,
    /// A key used again after a long silence.
    DormantKeyUsed,
    /// `NOT_FOUND`/`MALFORMED` floods from one address or spread over a network.
    KeyGuessing,
    /// A rotated-out key, still in its grace period, used from an unexpected place.
    OldKeyUnexpectedSource,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::TrafficSpike,
        AnomalyKind::NewNetwork,
        AnomalyKind::UnusualHour,
        AnomalyKind::ScopeProbing,
        AnomalyKind::DormantKeyUsed,
        AnomalyKind::KeyGuessing,
        AnomalyKind::OldKeyUnexpectedSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::TrafficSpike => "TRAFFIC_SPIKE",
            AnomalyKind::NewNetwork => "NEW_NETWORK",
            AnomalyKind::UnusualHour => "UNUSUAL_HOUR",
            AnomalyKind::ScopeProbing => "SCOPE_PROBING",
            AnomalyKind::DormantKeyUsed => "DORMANT_KEY_USED",
            AnomalyKind::KeyGuessing => "KEY_GUESSING",
            AnomalyKind::OldKeyUnexpectedSource => "OLD_KEY_UNEXPECTED_SOURCE",
        }
    }

    pub fn parse(s: &str) -> Option<AnomalyKind> {
        AnomalyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much an anomaly matters. Ordered: `Low < Medium < High`, so a response policy
/// can say "disable the key at `High`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Low, Severity::Medium, Severity::High]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One anomaly: the start of an episode (detectors group an ongoing episode into one
/// anomaly rather than repeating it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The time of the event that raised it.
    pub at: Timestamp,
    /// `None` when no key is concerned (key guessing with unknown keys).
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    pub kind: AnomalyKind,
    pub severity: Severity,
    /// One sentence a person can act on, naming the evidence (addresses, counts,
    /// baseline against observed, scopes).
    pub detail: String,
    /// The same evidence, structured (`{"ip": ..., "observed": ..., "baseline": ...}`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub evidence: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_severities_round_trip_through_their_names() {
        for kind in AnomalyKind::ALL {
            assert_eq!(AnomalyKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for sev in [Severity::Low, Severity::Medium, Severity::High] {
            assert_eq!(Severity::parse(sev.as_str()), Some(sev));
        }
        assert!(Severity::Low < Severity::Medium && Severity::Medium < Severity::High);
    }
}
