//! Storage of the secrets vault and of key rotation policies.
//!
//! The store sees only sealed values (`keyward_core::envelope::Sealed`): ciphertext,
//! the wrapped data key and the master key's id. Sealing and opening happen in the
//! server, which holds the master keys.
//!
//! Versions: a secret's versions are numbered from 1; a writer seals for the next
//! number (the AEAD's associated data binds it) and inserts with that number, and a
//! concurrent writer that took it first makes the insert fail with `Conflict` — the
//! caller re-seals for the number after (optimistic, no lock held while sealing).
//!
//! Delete is a hard delete of every version: rows (and so the wrapped data keys) are
//! gone. SQLite may keep freed pages' bytes in the file until they are reused, so the
//! SQLite store turns on `secure_delete` for its writer connection, which overwrites
//! them; older WAL frames are overwritten at the next checkpoint. Either way, what
//! could remain is ciphertext whose data key was deleted with it.

use async_trait::async_trait;
use uuid::Uuid;

use keyward_core::envelope::Sealed;
use keyward_core::model::{AuditEntry, KeyRecord};
use keyward_core::rotation::RotationPolicy;
use keyward_core::time::Timestamp;

use crate::Result;

/// One version of a secret, sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretVersion {
    pub path: String,
    pub version: i64,
    pub sealed: Sealed,
    /// A JSON object given with the value (not secret, not encrypted).
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub created_at: Timestamp,
}

/// A secret in a listing: its latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    pub path: String,
    pub version: i64,
    pub updated_at: Timestamp,
}

/// A data key rewrapped under another master key.
#[derive(Debug, Clone)]
pub struct Rewrap {
    pub path: String,
    pub version: i64,
    /// The master key id the row had when it was read: the update applies only if it
    /// still has it (a concurrent rewrap or delete wins).
    pub old_master_key_id: String,
    pub wrapped_key: Vec<u8>,
    pub master_key_id: String,
}

/// The scheduled rotation of one key, with everything it writes in one transaction.
#[derive(Debug, Clone)]
pub struct ScheduledRotation {
    pub old_id: Uuid,
    pub new: KeyRecord,
    /// When the old key stops working (now + grace).
    pub old_revoked_at: Timestamp,
    pub now: Timestamp,
    /// The new key, sealed, for the policy's `deliver_to`.
    pub delivery: Option<SecretVersion>,
    /// `key.rotate` (and `secret.write` when delivered).
    pub audit: Vec<AuditEntry>,
}

#[async_trait]
pub trait VaultStore: Send + Sync + 'static {
    // ------------------------------------------------------------ secrets

    /// The latest version number of `path`, `None` if it has none.
    async fn latest_secret_version(&self, path: &str) -> Result<Option<i64>>;
    /// Inserts a version and its audit entry. `Conflict` if that version exists.
    async fn put_secret_version(&self, v: &SecretVersion, audit: &AuditEntry) -> Result<()>;
    /// The given version, or the latest; `None` if there is none.
    async fn get_secret_version(
        &self,
        path: &str,
        version: Option<i64>,
    ) -> Result<Option<SecretVersion>>;
    /// Appends an audit entry for an access that changes nothing (a secret read).
    async fn record_secret_access(&self, audit: &AuditEntry) -> Result<()>;
    /// Secrets whose path starts with `prefix`, by path, after `after`, at most `limit`.
    async fn list_secrets(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SecretSummary>>;
    /// Deletes every version of `path` with its audit entry; returns how many were
    /// deleted (0: nothing existed, nothing written).
    async fn delete_secret(&self, path: &str, audit: &AuditEntry) -> Result<u64>;
    /// Versions whose data key is wrapped by a master key other than `current_key_id`,
    /// at most `limit`.
    async fn secrets_to_rewrap(
        &self,
        current_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SecretVersion>>;
    /// Applies rewraps (each only if the row still has its old master key id) and the
    /// audit entry, in one transaction; returns how many rows changed.
    async fn rewrap_secrets(&self, rewraps: &[Rewrap], audit: &AuditEntry) -> Result<u64>;

    // ------------------------------------------------------------ rotation policies

    /// Sets a key's policy; `false` (nothing written) if there is no such key.
    async fn put_rotation_policy(&self, p: &RotationPolicy, audit: &AuditEntry) -> Result<bool>;
    async fn get_rotation_policy(&self, key_id: Uuid) -> Result<Option<RotationPolicy>>;
    /// `false` (nothing written) if the key had no policy.
    async fn delete_rotation_policy(&self, key_id: Uuid, audit: &AuditEntry) -> Result<bool>;
    /// Keys with a policy that are due at `now` (not rotated, not revoked, at least
    /// `max_age` old), oldest first, at most `limit`.
    async fn due_rotations(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(RotationPolicy, KeyRecord)>>;
    /// In one transaction: the rotation as `Store::rotate_key` does it, the policy moved
    /// to the new key, the delivery written, the audit entries. `None` if the old key
    /// does not exist; `Conflict` if it is revoked or rotated already, or the delivery's
    /// version was taken meanwhile (then nothing is written: retry later).
    async fn rotate_on_schedule(&self, r: &ScheduledRotation) -> Result<Option<KeyRecord>>;
}
