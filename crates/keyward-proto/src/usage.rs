//! Usage analytics and the posture report (`GET /v1/usage`, `GET /v1/usage/top`,
//! `GET /v1/reports/posture`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Verifications per outcome code (`{"VALID": 10, "RATE_LIMITED": 2}`); codes with no
/// verification are left out.
pub type CodeCounts = BTreeMap<String, u64>;

/// `GET /v1/usage`: counts per bucket and outcome. Only buckets with verifications are
/// listed, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    pub buckets: Vec<UsageBucket>,
    pub total: CodeCounts,
    /// `minute`, `hour` or `day`.
    #[serde(default)]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageBucket {
    pub start: DateTime<Utc>,
    pub counts: CodeCounts,
}

/// `GET /v1/usage/top`: where verifications came from and which keys had most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageTopResponse {
    /// Source addresses, most verifications first (raw events: within their retention).
    pub sources: Vec<TopSource>,
    /// Keys, most verifications first (hourly rollups); empty when asked for one key.
    pub keys: Vec<TopKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopSource {
    pub ip: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopKey {
    pub key_id: Uuid,
    pub identity_id: Uuid,
    /// Verifications of every outcome.
    pub count: u64,
    /// Of which accepted.
    pub valid: u64,
}

/// `GET /v1/reports/posture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostureReport {
    pub identities: Vec<PostureIdentity>,
    #[serde(default)]
    pub stale_days: u32,
    #[serde(default)]
    pub max_age_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostureIdentity {
    pub id: Uuid,
    pub name: String,
    pub owner: String,
    /// 100 minus the weights of the findings (ADMIN_KEY 25, NOT_ROTATED 15, STALE 15,
    /// NO_EXPIRY 10, UNUSED_SCOPES 10, NO_IP_RESTRICTION 5), at least 0.
    pub score: u32,
    pub findings: Vec<PostureFinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostureFinding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    pub kind: FindingKind,
    pub detail: String,
    /// UNUSED_SCOPES: the scopes granted but not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingKind {
    NoExpiry,
    NotRotated,
    Stale,
    UnusedScopes,
    NoIpRestriction,
    AdminKey,
}
