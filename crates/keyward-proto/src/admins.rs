//! Human administrators and their sessions (contract, "Human administrators").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/admins`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdmin {
    /// 1-64 of `a-z 0-9 . _ -`.
    pub username: String,
    /// 12-1024 characters; stored as an argon2id hash.
    pub password: String,
    /// The `keyward:` scopes its sessions carry.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for CreateAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateAdmin")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The answer to `POST /v1/admins`: the only time the TOTP secret and the recovery
/// codes are shown.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAdmin {
    pub id: Uuid,
    pub username: String,
    /// `otpauth://totp/...`: enrol it in an authenticator app.
    pub totp_uri: String,
    /// One-time codes usable instead of a TOTP code, once each.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for CreatedAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAdmin")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("totp_uri", &"[redacted]")
            .field("recovery_codes", &"[redacted]")
            .finish()
    }
}

/// An administrator as listed (no secret of any kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Admin {
    pub id: Uuid,
    pub username: String,
    pub identity_id: Uuid,
    pub scopes: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/admins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminList {
    pub items: Vec<Admin>,
}

/// `POST /v1/sessions`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub username: String,
    pub password: String,
    /// The current TOTP code, or one of the recovery codes.
    pub totp: String,
}

impl std::fmt::Debug for CreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSession")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("totp", &"[redacted]")
            .finish()
    }
}

/// A session: a bearer credential with the administrator's scopes, until `expires_at`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
