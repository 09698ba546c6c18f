//! Usage analytics and the posture report: `GET /v1/usage`, `GET /v1/usage/top`,
//! `GET /v1/reports/posture`.

use chrono::{DateTime, Utc};
use keyward_proto::{PostureReport, UsageResponse, UsageTopResponse};
use reqwest::Method;
use serde::Serialize;
use uuid::Uuid;

use crate::{Client, NO_BODY, Result};

/// Query of `GET /v1/usage`: one of `key_id`, `identity_id`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// `minute`, `hour` or `day`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// Query of `GET /v1/usage/top`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Query of `GET /v1/reports/posture`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PostureParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
}

impl Client {
    /// `GET /v1/usage` (scope `keyward:usage:read` or `keyward:keys:read`).
    pub async fn usage(&self, params: &UsageParams) -> Result<UsageResponse> {
        self.call(Method::GET, &["v1", "usage"], Some(params), NO_BODY)
            .await
    }

    /// `GET /v1/usage/top`: top source addresses and keys.
    pub async fn usage_top(&self, params: &TopParams) -> Result<UsageTopResponse> {
        self.call(Method::GET, &["v1", "usage", "top"], Some(params), NO_BODY)
            .await
    }

    /// `GET /v1/reports/posture` (scopes `keyward:keys:read` and
    /// `keyward:identities:read`).
    pub async fn posture_report(&self, params: &PostureParams) -> Result<PostureReport> {
        self.call(
            Method::GET,
            &["v1", "reports", "posture"],
            Some(params),
            NO_BODY,
        )
        .await
    }
}
