//! The `keyward detect --events` line format: one JSON object a line, either a usage
//! event (contract: `{"at", "key_id", "identity_id", "code", "ip", "scopes"}`) or, as an
//! extension, a rotation: `{"event": "key.rotated", "at", "key_id", "new_key_id",
//! "grace_until"}` (what `Detectors::note_rotated` is told online). Blank lines are
//! skipped.

use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Event(UsageEvent),
    Rotated {
        old: Uuid,
        new: Uuid,
        at: Timestamp,
        grace_until: Timestamp,
    },
    Blank,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationLine {
    event: String,
    at: Timestamp,
    key_id: Uuid,
    new_key_id: Uuid,
    grace_until: Timestamp,
}

/// Parses one line; the error says what is wrong (without a line number: the caller
/// knows it).
pub fn parse_line(line: &str) -> Result<Line, String> {
    if line.trim().is_empty() {
        return Ok(Line::Blank);
    }
    match serde_json::from_str::<UsageEvent>(line) {
        Ok(e) => Ok(Line::Event(e)),
        Err(e) => {
            if let Ok(r) = serde_json::from_str::<RotationLine>(line)
                && r.event == "key.rotated"
            {
                return Ok(Line::Rotated {
                    old: r.key_id,
                    new: r.new_key_id,
                    at: r.at,
                    grace_until: r.grace_until,
                });
            }
            // serde_json counts lines inside the string, always line 1 here.
            Err(e.to_string().replace(" at line 1 column", " at column"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_rotations_blanks_and_errors() {
        let ev = r#"{"at":"2026-01-01T00:00:00Z","key_id":null,"identity_id":null,"code":"NOT_FOUND","ip":"10.0.0.1","scopes":[]}"#;
        assert!(matches!(parse_line(ev), Ok(Line::Event(_))));
        let rot = r#"{"event":"key.rotated","at":"2026-01-01T00:00:00Z","key_id":"0190a1b2-0000-7000-8000-000000000001","new_key_id":"0190a1b2-0000-7000-8000-000000000002","grace_until":"2026-01-02T00:00:00Z"}"#;
        assert!(matches!(parse_line(rot), Ok(Line::Rotated { .. })));
        assert_eq!(parse_line("  "), Ok(Line::Blank));
        let err = parse_line(r#"{"at":"2026-01-01T00:00:00Z","code":"NOPE"}"#).unwrap_err();
        assert!(err.contains("NOPE") && err.contains("column"), "{err}");
        assert!(parse_line("{").is_err());
    }
}
