//! Anomalies (`GET /v1/anomalies`) and each identity's automatic response
//! (`PUT|GET /v1/identities/{id}/anomaly-policy`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One anomaly: the start of an episode of suspicious behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Anomaly {
    pub id: Uuid,
    /// The time of the event that raised it.
    pub at: DateTime<Utc>,
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    /// `TRAFFIC_SPIKE`, `NEW_NETWORK`, `UNUSUAL_HOUR`, `SCOPE_PROBING`,
    /// `DORMANT_KEY_USED`, `KEY_GUESSING` or `OLD_KEY_UNEXPECTED_SOURCE`.
    pub kind: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// One sentence that explains it, naming the evidence.
    pub detail: String,
    /// What the response did: `notified`, `key_disabled`, `key_already_disabled`,
    /// `notified_admin_key_kept` (keys with `keyward:` scopes are never disabled
    /// automatically); `null` while the response is still pending.
    pub action_taken: Option<String>,
    /// The evidence, structured (addresses, counts, baseline against observed).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
}

/// `GET /v1/anomalies`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnomalyList {
    pub items: Vec<Anomaly>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `PUT /v1/identities/{id}/anomaly-policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAnomalyPolicy {
    /// `notify` (alert only) or `disable_key` (alert and disable the key).
    pub action: String,
    /// `disable_key` applies at this severity and above (`low`, `medium`, `high`;
    /// default `high`); below it, notify.
    #[serde(default)]
    pub min_severity: Option<String>,
}

/// An identity's anomaly policy (the default, `notify`, when none was set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnomalyPolicy {
    pub identity_id: Uuid,
    pub action: String,
    pub min_severity: String,
}
