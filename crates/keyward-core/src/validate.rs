//! Validation of user-supplied fields. Each error names the field at fault, so the API
//! can answer a 400 problem+json that says which field and why.

use crate::time::Timestamp;

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
    todo!("{field}{value}{max}")
}

/// A description: may be empty; at most `DESCRIPTION_MAX` characters; no control
/// characters other than newline and tab.
pub fn description(value: &str) -> Result<(), FieldError> {
    todo!("{value}")
}

/// `meta`: a JSON object of at most `META_MAX_BYTES` when serialised.
pub fn meta(value: &serde_json::Map<String, serde_json::Value>) -> Result<(), FieldError> {
    todo!("{}", value.len())
}

/// A list of scopes: at most `SCOPES_MAX`, each valid (`scope::validate`); duplicates
/// removed, order kept. The error names `scopes[i]`.
pub fn scopes(values: &[String]) -> Result<Vec<String>, FieldError> {
    todo!("{}", values.len())
}

/// The expiry of a new key from `expires_at` or `ttl_seconds` (not both): must lie in the
/// future; a TTL must be in 1..=TTL_MAX_SECONDS.
pub fn expiry(
    expires_at: Option<Timestamp>,
    ttl_seconds: Option<i64>,
    now: Timestamp,
) -> Result<Option<Timestamp>, FieldError> {
    todo!("{expires_at:?}{ttl_seconds:?}{now}")
}

/// `remaining`: >= 0.
pub fn remaining(value: Option<i64>) -> Result<(), FieldError> {
    todo!("{value:?}")
}
