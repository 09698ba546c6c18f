//! The outcome codes of a verification, in the order the checks run.

use serde::{Deserialize, Serialize};

/// Exactly one code answers each verification. The declaration order is the order in
/// which the checks run (contract): the first failing check decides the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    Malformed,
    NotFound,
    Revoked,
    Expired,
    Disabled,
    IpNotAllowed,
    InsufficientScope,
    RateLimited,
    UsageExceeded,
}

impl VerifyCode {
    pub const ALL: [VerifyCode; 10] = [
        VerifyCode::Valid,
        VerifyCode::Malformed,
        VerifyCode::NotFound,
        VerifyCode::Revoked,
        VerifyCode::Expired,
        VerifyCode::Disabled,
        VerifyCode::IpNotAllowed,
        VerifyCode::InsufficientScope,
        VerifyCode::RateLimited,
        VerifyCode::UsageExceeded,
    ];

    /// The wire spelling, e.g. `IP_NOT_ALLOWED`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Disabled => "DISABLED",
            VerifyCode::IpNotAllowed => "IP_NOT_ALLOWED",
            VerifyCode::InsufficientScope => "INSUFFICIENT_SCOPE",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::UsageExceeded => "USAGE_EXCEEDED",
        }
    }
}
