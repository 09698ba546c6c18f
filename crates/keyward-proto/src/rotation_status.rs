//! `GET /v1/keys/{id}/rotation-status`: which sources still use the older keys of a
//! rotation lineage during their grace (issue 7, item 5).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A key of the lineage, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineageKey {
    pub id: Uuid,
}

/// A source that used an old key since it was rotated: its address and the verifier's
/// tags (when the verifications carried them), how often and when last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OldKeySource {
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<serde_json::Value>,
    pub last_seen: DateTime<Utc>,
    pub count: u64,
}

/// An older key of the lineage: when it stops working (`expires_at`: the end of its
/// grace, or its own expiry if sooner), when it was last used, and by whom since it was
/// rotated, the most recently seen first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OldKeyStatus {
    pub id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub sources: Vec<OldKeySource>,
}

/// The answer of `GET /v1/keys/{id}/rotation-status`: the newest key of the lineage and
/// the older ones, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RotationStatus {
    pub current: LineageKey,
    pub previous: Vec<OldKeyStatus>,
}
