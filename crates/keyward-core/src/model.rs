//! The records Keyward keeps: identities, keys, audit entries. Plain data; the stores
//! persist them and the server maps them to wire types.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::KeyDigest;
use crate::ratelimit::RateLimitSpec;
use crate::time::Timestamp;

/// A non-human identity: a service, job, device or agent that holds keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub id: Uuid,
    pub name: String,
    /// The accountable human or team. Every identity has one.
    pub owner: String,
    pub description: String,
    /// A JSON object, size-limited by `validate::meta`.
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Fields an identity update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityPatch {
    pub name: Option<String>,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    pub enabled: Option<bool>,
}

/// Everything Keyward knows of a key, except the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub name: String,
    pub prefix: String,
    /// Prefix and first body characters, for display.
    pub start: String,
    pub digest: KeyDigest,
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// When the key stops working with `REVOKED`. In the future for a rotated key still
    /// in its grace period.
    pub revoked_at: Option<Timestamp>,
    pub enabled: bool,
    /// CIDRs or single addresses, as given (normalised); empty means any address.
    pub ip_allowlist: Vec<String>,
    pub rate_limits: Vec<RateLimitSpec>,
    /// Verifications left; `None` is unlimited.
    pub remaining: Option<i64>,
    pub last_used_at: Option<Timestamp>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// Lineage: the key this one replaced, and the key that replaced it.
    pub rotated_from: Option<Uuid>,
    pub rotated_to: Option<Uuid>,
}

/// A key record joined with what verify needs of its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyWithIdentity {
    pub key: KeyRecord,
    pub identity_enabled: bool,
}

/// Fields a key update may change. For the nullable fields, `Some(None)` clears.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<Option<Timestamp>>,
    pub ip_allowlist: Option<Vec<String>>,
    pub rate_limits: Option<Vec<RateLimitSpec>>,
    pub remaining: Option<Option<i64>>,
    pub enabled: Option<bool>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One change, as the audit log records it. Written in the same transaction as the
/// change it describes.
///
/// **Architecture Invariant:** an audit entry never holds a key; `detail` carries ids,
/// names and changed field names only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// The key id (or `system`) that made the change.
    pub actor: String,
    /// `identity.create`, `key.rotate`, ...
    pub action: String,
    /// The id of what was changed.
    pub target: String,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub detail: serde_json::Value,
}

/// An audit entry as stored, with its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}
