//! Keyward's wire types: the JSON bodies of the HTTP API (contract, "HTTP API"), shared
//! by the server and the client so the two cannot drift apart.
//!
//! **Architecture Invariant:** this crate holds data shapes only: no logic, no IO, and no
//! dependency on other Keyward crates. `keyward-client` depends on it alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub type Meta = serde_json::Map<String, serde_json::Value>;

mod vault;
pub use vault::*;
pub mod anomalies;
pub mod usage;
pub use anomalies::{Anomaly, AnomalyList, AnomalyPolicy, PutAnomalyPolicy};
pub use usage::*;

/// Deserialises a field that may be absent, `null` or a value into
/// `None`, `Some(None)` or `Some(Some(v))`, so PATCH can tell "leave" from "clear".
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }

    pub fn serialize<T, S>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize,
        S: Serializer,
    {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }
}

// ---------------------------------------------------------------- identities

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    pub name: String,
    /// The accountable human or team.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub id: Uuid,
    pub name: String,
    pub owner: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub meta: Meta,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of a listing; `next_cursor` is absent on the last page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- keys

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: String,
    pub limit: u32,
    pub window_seconds: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub identity_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default `kw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<RateLimit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// PATCH body. For `expires_at` and `remaining`, `null` clears the field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<RateLimit>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>)]
    pub remaining: Option<Option<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Meta>,
}

/// A key's fields. Never holds the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub name: String,
    pub prefix: String,
    /// The prefix and first characters of the key, to recognise it by.
    pub start: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key stopped (or, for a rotated key in its grace period, will stop) working.
    pub revoked_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub ip_allowlist: Vec<String>,
    pub rate_limits: Vec<RateLimit>,
    pub remaining: Option<i64>,
    pub last_used_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub meta: Meta,
    pub rotated_from: Option<Uuid>,
    pub rotated_to: Option<Uuid>,
}

/// The answer that creates or rotates a key: the only one that holds `key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key. Shown once; Keyward keeps only a digest.
    pub key: String,
    #[serde(flatten)]
    pub fields: Key,
    /// After a rotation: the replaced key and when it stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreviousKey {
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working; 0 revokes it at once.
    #[serde(default)]
    pub grace_seconds: i64,
}

// ---------------------------------------------------------------- verify

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub key: String,
    /// All of these are required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// A query over scopes with AND, OR and parentheses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// The address the key was presented from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Labels kept with this verification's usage event (at most 8; names of
    /// `[A-Za-z0-9_.:-]`, up to 64 bytes; values up to 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub code: VerifyCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Verifications left after this one, for keys with a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Most verifications in one `POST /v1/verify/batch`. A batch is answered in one go on
/// one worker: 100 keep it to ~0.2 ms, short enough not to hold up the node's other
/// requests.
pub const VERIFY_BATCH_MAX: usize = 100;

/// `POST /v1/verify/batch`: verifications answered in one HTTP exchange, as if each were
/// its own `POST /v1/verify` (each counts against its key's limits and quota, and each
/// is a usage event).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBatchRequest {
    /// 1 to 100 verify requests.
    pub requests: Vec<VerifyRequest>,
}

/// The answers to a `VerifyBatchRequest`, in the order of its requests.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyBatchResponse {
    pub results: Vec<VerifyResponse>,
}

/// The most constrained rate limit after this call; on `RATE_LIMITED`, the one that refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitStatus {
    pub name: String,
    pub limit: u32,
    pub remaining: u32,
    /// When the limit has room again (refused) or is full again (allowed).
    pub reset_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- leaks

/// `POST /v1/leaks`: a key found where it should not be.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    pub key: String,
    /// Where it was found (a path, a URL, `repo@commit:path:line`), for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl std::fmt::Debug for LeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakReport")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The answer to a leak report: whether a key of this server was revoked, and which.
/// Nothing else is revealed: a key that is not this server's gives `{revoked: false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeakResponse {
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The key id (or `system`) that made the change.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

// ---------------------------------------------------------------- errors and misc

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, for 400s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// `/readyz`: each dependency and its state (`store`: `ok`; `redis`: `ok`, or
    /// `unreachable: ...` saying what rate-limited keys get meanwhile; `jobs`: `leader`
    /// on the node that runs the background jobs, else `standby`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InitOutput {
    pub root_key: String,
}

mod webhooks;
pub use webhooks::*;
mod audit_chain;
pub use audit_chain::AuditVerification;

mod admins;
pub use admins::{Admin, AdminList, CreateAdmin, CreateSession, CreatedAdmin, Session};
pub mod tokens;
pub use tokens::{
    CreateToken, IntrospectToken, Jwk, Jwks, TokenClaims, TokenCreated, TokenIntrospection,
};
mod rotation_status;
pub use rotation_status::{LineageKey, OldKeySource, OldKeyStatus, RotationStatus};
