//! Rotation policies: a key is rotated when it is `max_age_seconds` old; the old key
//! keeps working for `grace_seconds` after that; the new key is written to the vault at
//! `deliver_to`, if given.

use chrono::Duration;
use uuid::Uuid;

use crate::model::KeyRecord;
use crate::time::Timestamp;
use crate::validate::FieldError;

/// Shortest `max_age_seconds`: the scheduler checks every few seconds, so a shorter age
/// could not be kept (and would mint keys in a loop).
pub const MAX_AGE_MIN_SECONDS: i64 = 5;
/// Longest `max_age_seconds`: 10 years.
pub const MAX_AGE_MAX_SECONDS: i64 = 10 * 366 * 24 * 3600;

/// A key's rotation policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    pub key_id: Uuid,
    pub max_age_seconds: i64,
    pub grace_seconds: i64,
    /// A secret path that receives each new key.
    pub deliver_to: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Checks the numbers and path of a policy; errors name the field.
pub fn validate(
    max_age_seconds: i64,
    grace_seconds: i64,
    deliver_to: Option<&str>,
) -> Result<(), FieldError> {
    if !(MAX_AGE_MIN_SECONDS..=MAX_AGE_MAX_SECONDS).contains(&max_age_seconds) {
        return Err(FieldError::new(
            "max_age_seconds",
            format!("must be between {MAX_AGE_MIN_SECONDS} and {MAX_AGE_MAX_SECONDS}"),
        ));
    }
    if grace_seconds < 0 {
        return Err(FieldError::new("grace_seconds", "must not be negative"));
    }
    if grace_seconds > max_age_seconds {
        return Err(FieldError::new(
            "grace_seconds",
            "must not be longer than max_age_seconds (two old keys would be live at once)",
        ));
    }
    if let Some(path) = deliver_to {
        crate::secret::validate_path("deliver_to", path)?;
    }
    Ok(())
}

/// Whether `key` is due for rotation under `policy` at `now`: it is `max_age` old, not
/// revoked (a key in its grace period after a rotation is already replaced), and not
/// rotated yet.
pub fn is_due(policy: &RotationPolicy, key: &KeyRecord, now: Timestamp) -> bool {
    key.rotated_to.is_none()
        && key.revoked_at.is_none_or(|t| t > now)
        && now - key.created_at >= Duration::seconds(policy.max_age_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(validate(60, 0, None).is_ok());
        assert!(validate(60, 60, Some("a/b")).is_ok());
        assert_eq!(validate(60, 61, None).unwrap_err().field, "grace_seconds");
        assert_eq!(validate(60, -1, None).unwrap_err().field, "grace_seconds");
        assert_eq!(validate(4, 0, None).unwrap_err().field, "max_age_seconds");
        assert_eq!(
            validate(MAX_AGE_MAX_SECONDS + 1, 0, None)
                .unwrap_err()
                .field,
            "max_age_seconds"
        );
        assert_eq!(validate(60, 1, Some("/x")).unwrap_err().field, "deliver_to");
    }
}
