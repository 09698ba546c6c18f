//! The secrets vault and key rotation policies (contract, "Secrets vault and rotation
//! policies"). Types that hold a secret value redact it in `Debug`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Meta;

/// `PUT /v1/secrets/{path}`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The secret (UTF-8 text, at most 64 KiB by default).
    pub value: String,
    /// A JSON object stored with this version, not encrypted: never put secrets in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Meta>,
}

impl fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutSecret")
            .field("value", &"<redacted>")
            .field("meta", &self.meta)
            .finish()
    }
}

/// The answer to a write: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretWritten {
    pub path: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/secrets/{path}`: one version, with its value.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub path: String,
    pub version: i64,
    pub value: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub meta: Meta,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A secret in a listing: its latest version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretSummary {
    pub path: String,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/secrets`: the secrets the caller may read; `next_cursor` is absent on the
/// last page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `PUT /v1/keys/{id}/rotation-policy`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRotationPolicy {
    /// Rotate the key when it is this old (5 s to 10 years).
    pub max_age_seconds: i64,
    /// How long the old key keeps working after a rotation (at most `max_age_seconds`).
    pub grace_seconds: i64,
    /// A secret path that receives each new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_to: Option<String>,
}

/// A key's rotation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotationPolicy {
    pub key_id: Uuid,
    pub max_age_seconds: i64,
    pub grace_seconds: i64,
    pub deliver_to: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
