//! Keyward's persistence: one [`Store`] trait and its implementations: the embedded
//! SQLite store, and PostgreSQL for clusters of nodes sharing one database.
//!
//! **Architecture Invariant:** every change and its audit entry are written in one
//! transaction: each mutating method takes the `AuditEntry` that describes it. A change
//! without its audit record, or an audit record without its change, cannot be stored.
//!
//! **Architecture Invariant:** the store never sees a key, only its `KeyDigest`.

use async_trait::async_trait;
use uuid::Uuid;

use keyward_core::KeyDigest;
use keyward_core::model::{
    AuditEntry, AuditRecord, Identity, IdentityPatch, KeyPatch, KeyRecord, KeyWithIdentity,
};
use keyward_core::time::Timestamp;

pub mod admins;
pub mod alerts;
pub mod anomalies;
pub mod audit_chain;
pub mod console;
pub mod postgres;
pub mod sealed_secrets;
pub mod slice;
pub mod sqlite;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tokens;
pub mod usage;
pub mod vault;
pub mod webhooks;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tokens::{SigningKeyRecord, TokenStore};
pub use usage::UsageStore;
pub use vault::VaultStore;
pub use webhooks::WebhookStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. an identity name already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (corruption or a bug): never the client's fault.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Outcome of consuming one verification from a key's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// One was taken; this many are left.
    Taken { left: i64 },
    /// The quota was already at 0: nothing taken.
    Exhausted,
    /// The key has no quota (unlimited).
    Unlimited,
    /// No such key.
    Missing,
}

/// A change made by any node of a cluster, as a [`ChangeFeed`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These keys changed (or their identity did): what verify decides may differ.
    Keys(Vec<KeyDigest>),
    /// Anything may have changed: changes were possibly missed (the feed was
    /// disconnected) or a flush was asked for.
    Flush,
}

/// The stream of changes committed by any node on a shared store.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits for the next change; reconnects by itself, and yields [`Change::Flush`]
    /// after every (re)connection, as changes made meanwhile are unknown.
    async fn next(&mut self) -> Change;
}

/// The bootstrap root identity and key, created once on an empty store.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub identity: Identity,
    pub key: KeyRecord,
    pub audit: AuditEntry,
}

#[async_trait]
pub trait Store:
    Send
    + Sync
    + 'static
    + UsageStore
    + WebhookStore
    + VaultStore
    + audit_chain::AuditChainStore
    + admins::AdminStore
    + TokenStore
    + sealed_secrets::SealedSecretStore
    + alerts::AlertStore
    + console::ConsoleStore
    + anomalies::AnomalyStore
{
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Creates the root identity and key if the store has never been bootstrapped, in one
    /// transaction. Returns false (and writes nothing) if it already was.
    async fn bootstrap(&self, b: &Bootstrap) -> Result<bool>;

    // ------------------------------------------------------------ identities

    /// `Conflict` if a live identity already has that name.
    async fn create_identity(&self, identity: &Identity, audit: &AuditEntry) -> Result<()>;
    /// Live (not deleted) identities only.
    async fn get_identity(&self, id: Uuid) -> Result<Option<Identity>>;
    /// Live identities ordered by id, those with id > `after`, at most `limit`.
    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Identity>>;
    /// Applies the patch (and sets `updated_at = now`); `None` if no live identity has
    /// that id. `Conflict` on a name clash.
    async fn update_identity(
        &self,
        id: Uuid,
        patch: &IdentityPatch,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<Identity>>;
    /// Marks the identity deleted (it disappears from get/list, its name is free again)
    /// and revokes every key of it not yet revoked (`revoked_at = now`, or earlier if a
    /// rotation had already set an earlier time), keeping their records. Returns the
    /// digests of the keys it touched, so caches can forget them; `None` if no live
    /// identity has that id.
    async fn delete_identity(
        &self,
        id: Uuid,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyDigest>>>;
    /// Digests of every key of the identity (for cache invalidation on identity changes).
    async fn key_digests_of_identity(&self, identity_id: Uuid) -> Result<Vec<KeyDigest>>;

    // ------------------------------------------------------------ keys

    /// Stores a new key. The identity must exist and be live (`Conflict` otherwise).
    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()>;
    async fn get_key(&self, id: Uuid) -> Result<Option<KeyRecord>>;
    /// The verify lookup: the key with that digest, with its identity's enabled flag
    /// (false if the identity is deleted).
    async fn get_key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyWithIdentity>>;
    /// The same lookup answered on the calling thread without awaiting, for a store
    /// that can do it in microseconds (the embedded store: a point read from the page
    /// cache). `None`: not now (unsupported, or busy); use [`Store::get_key_by_digest`].
    fn get_key_by_digest_now(
        &self,
        _digest: &KeyDigest,
    ) -> Option<Result<Option<KeyWithIdentity>>> {
        None
    }
    /// Keys ordered by id, optionally of one identity, with id > `after`, at most `limit`.
    async fn list_keys(
        &self,
        identity_id: Option<Uuid>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>>;
    /// Applies the patch (and `updated_at = now`); `None` if no such key.
    async fn update_key(
        &self,
        id: Uuid,
        patch: &KeyPatch,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>>;
    /// Sets `revoked_at = now` unless it is already set to an earlier time; `None` if no
    /// such key.
    async fn revoke_key(
        &self,
        id: Uuid,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>>;
    /// In one transaction: stores `new` (with `rotated_from = old_id`), sets the old
    /// key's `rotated_to = new.id` and `revoked_at = min(existing, old_revoked_at)`.
    /// Returns the old key as updated; `None` if no such key. `Conflict` if the old key
    /// is already revoked or already rotated.
    async fn rotate_key(
        &self,
        old_id: Uuid,
        new: &KeyRecord,
        old_revoked_at: Timestamp,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>>;

    /// Atomically takes one from the key's `remaining`, durably, never below 0.
    async fn consume_remaining(&self, id: Uuid) -> Result<Consumed>;
    /// Gives back one taken by `consume_remaining` for a call refused afterwards.
    async fn refund_remaining(&self, id: Uuid) -> Result<()>;
    /// Write-behind of last use times: sets `last_used_at` to the later of the stored
    /// and the given time, for a batch of keys at once.
    async fn record_last_used(&self, uses: &[(Uuid, Timestamp)]) -> Result<()>;

    // ------------------------------------------------------------ audit

    /// Records with `seq > after`, in order, at most `limit`.
    async fn list_audit(&self, after: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>>;

    // ------------------------------------------------------------ background jobs

    /// The expiry sweep: records in the audit log each key whose `expires_at` has passed
    /// by `now`, that was not revoked before then, and that no earlier sweep recorded
    /// (action `key.expire`, actor `system`, target the key id, detail
    /// `{identity_id, expires_at}`); at most `limit` keys, oldest expiry first, in one
    /// transaction. Returns their ids. Each expiry is recorded once, even if two sweeps
    /// run at once (the progress mark is locked).
    async fn sweep_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<Uuid>>;

    // ------------------------------------------------------------ cluster

    /// For a store several processes change at once (PostgreSQL): a feed of the changes
    /// committed by any of them, so each can keep its caches true. `None` (the default)
    /// for a store only this process changes.
    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        None
    }

    /// For a store several processes share: the election of the one process that runs
    /// background jobs. `None` (the default): this process is the only one, and leads.
    fn leadership(&self) -> Option<Box<dyn Leadership>> {
        None
    }
}

/// Leadership of background jobs among the processes sharing a store.
#[async_trait]
pub trait Leadership: Send {
    /// Whether this process leads now: keeps the lead if it had it and still holds it,
    /// or takes it if nobody holds it. Call it before each round of jobs. A leader that
    /// dies loses the lead at once (its session ends); one cut off from the store loses
    /// it when the store notices, so jobs must tolerate a brief overlap.
    async fn lead(&mut self) -> bool;
}

/// The expiry sweep's progress mark in the `settings` table: the `(expires_at, id)` of
/// the last key it recorded, as `<microseconds>/<uuid>`.
pub(crate) const EXPIRY_MARK: &str = "expiry_swept_to";

pub(crate) fn parse_expiry_mark(v: Option<&str>) -> (i64, Uuid) {
    v.and_then(|v| v.split_once('/'))
        .and_then(|(t, id)| Some((t.parse().ok()?, Uuid::parse_str(id).ok()?)))
        .unwrap_or((i64::MIN, Uuid::nil()))
}

pub(crate) fn expiry_audit(
    now: Timestamp,
    id: Uuid,
    identity_id: Uuid,
    expires_at: Timestamp,
) -> AuditEntry {
    AuditEntry {
        at: now,
        actor: "system".into(),
        action: "key.expire".into(),
        target: id.to_string(),
        request_id: None,
        source_ip: None,
        detail: serde_json::json!({"identity_id": identity_id, "expires_at": expires_at}),
    }
}
