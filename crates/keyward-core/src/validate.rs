//! Validation of user-supplied fields. Each error names the field at fault, so the API
//! can answer a 400 problem+json that says which field and why.

use std::collections::HashSet;

use crate::scope;
use crate::time::{self, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The JSON field name (or path, e.g. `scopes[2]`).
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub const NAME_MAX: usize = 128;
pub const OWNER_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 2048;
/// Largest `meta` object, as compact JSON.
pub const META_MAX_BYTES: usize = 16 * 1024;
pub const SCOPES_MAX: usize = 256;
/// Longest accepted TTL: 10 years.
pub const TTL_MAX_SECONDS: i64 = 10 * 366 * 24 * 3600;

/// A name or owner: 1..=max characters after trimming, no control characters
/// (Unicode letters welcome).
pub fn text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(is_forbidden) {
        return Err(FieldError::new(
            field,
            "must not contain control or bidirectional-override characters",
        ));
    }
    Ok(())
}

/// Control characters, and the bidirectional overrides and isolates that can make a name
/// display as something other than what it is ("Trojan Source").
fn is_forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A description: may be empty; at most `DESCRIPTION_MAX` characters; no control
/// characters other than newline and tab.
pub fn description(value: &str) -> Result<(), FieldError> {
    if value.chars().count() > DESCRIPTION_MAX {
        return Err(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c != '\n' && c != '\t' && is_forbidden(c))
    {
        return Err(FieldError::new(
            "description",
            "must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// `meta`: a JSON object of at most `META_MAX_BYTES` when serialised.
pub fn meta(value: &serde_json::Map<String, serde_json::Value>) -> Result<(), FieldError> {
    // Count the bytes instead of building the string, and stop at the limit, so an
    // oversized object costs no more than the limit to refuse.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > META_MAX_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    if serde_json::to_writer(&mut counter, value).is_err() || counter.0 > META_MAX_BYTES {
        return Err(FieldError::new(
            "meta",
            format!("must be at most {META_MAX_BYTES} bytes as JSON"),
        ));
    }
    Ok(())
}

/// A list of scopes: at most `SCOPES_MAX`, each valid (`scope::validate`); duplicates
/// removed, order kept. The error names `scopes[i]`.
pub fn scopes(values: &[String]) -> Result<Vec<String>, FieldError> {
    if values.len() > SCOPES_MAX {
        return Err(FieldError::new(
            "scopes",
            format!("at most {SCOPES_MAX} scopes"),
        ));
    }
    let mut seen = HashSet::with_capacity(values.len());
    let mut out = Vec::with_capacity(values.len());
    for (i, s) in values.iter().enumerate() {
        scope::validate(s).map_err(|e| FieldError::new(format!("scopes[{i}]"), e.reason))?;
        if seen.insert(s.as_str()) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// The expiry of a new key from `expires_at` or `ttl_seconds` (not both): must lie in the
/// future; a TTL must be in 1..=TTL_MAX_SECONDS.
pub fn expiry(
    expires_at: Option<Timestamp>,
    ttl_seconds: Option<i64>,
    now: Timestamp,
) -> Result<Option<Timestamp>, FieldError> {
    let at = match (expires_at, ttl_seconds) {
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                "ttl_seconds",
                "give either expires_at or ttl_seconds, not both",
            ));
        }
        (None, None) => return Ok(None),
        (Some(at), None) => at,
        (None, Some(ttl)) => {
            if !(1..=TTL_MAX_SECONDS).contains(&ttl) {
                return Err(FieldError::new(
                    "ttl_seconds",
                    format!("must be 1..={TTL_MAX_SECONDS} (10 years)"),
                ));
            }
            now.checked_add_signed(chrono::TimeDelta::seconds(ttl))
                .ok_or_else(|| FieldError::new("ttl_seconds", "too far in the future"))?
        }
    };
    // Truncated before the comparison, so the value stored is the value checked.
    let at = time::truncate(at);
    if at <= now {
        return Err(FieldError::new("expires_at", "must lie in the future"));
    }
    Ok(Some(at))
}

/// `remaining`: >= 0.
pub fn remaining(value: Option<i64>) -> Result<(), FieldError> {
    match value {
        Some(n) if n < 0 => Err(FieldError::new("remaining", "must be at least 0")),
        _ => Ok(()),
    }
}
