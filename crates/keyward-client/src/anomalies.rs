//! Anomalies: `GET /v1/anomalies`, and each identity's automatic response
//! (`GET|PUT /v1/identities/{id}/anomaly-policy`).

use chrono::{DateTime, Utc};
use keyward_proto::{AnomalyList, AnomalyPolicy, PutAnomalyPolicy};
use reqwest::Method;
use serde::Serialize;
use uuid::Uuid;

use crate::{Client, NO_BODY, NO_QUERY, Result};

/// Query of `GET /v1/anomalies`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnomalyParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// `NEW_NETWORK`, `TRAFFIC_SPIKE`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `low`, `medium` or `high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl Client {
    /// `GET /v1/anomalies`, newest first (scope `keyward:anomalies:read`,
    /// `keyward:usage:read` or `keyward:keys:read`).
    pub async fn anomalies(&self, params: &AnomalyParams) -> Result<AnomalyList> {
        self.call(Method::GET, &["v1", "anomalies"], Some(params), NO_BODY)
            .await
    }

    /// `GET /v1/identities/{id}/anomaly-policy`.
    pub async fn anomaly_policy(&self, identity_id: Uuid) -> Result<AnomalyPolicy> {
        let id = identity_id.to_string();
        self.call(
            Method::GET,
            &["v1", "identities", &id, "anomaly-policy"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `PUT /v1/identities/{id}/anomaly-policy`.
    pub async fn set_anomaly_policy(
        &self,
        identity_id: Uuid,
        policy: &PutAnomalyPolicy,
    ) -> Result<AnomalyPolicy> {
        let id = identity_id.to_string();
        self.call(
            Method::PUT,
            &["v1", "identities", &id, "anomaly-policy"],
            NO_QUERY,
            Some(policy),
        )
        .await
    }
}
