//! Storage of human administrators (`keyward_core::admin` holds their rules).
//!
//! An administrator has an identity of its own; a login opens a session, which is a
//! short-lived key of that identity (only its digest stored, like every key), so the
//! ordinary bearer authentication accepts it and everything that ends keys ends it.

use async_trait::async_trait;
use uuid::Uuid;

use keyward_core::envelope::Sealed;
use keyward_core::model::{AuditEntry, Identity, KeyRecord};
use keyward_core::time::Timestamp;

use crate::Result;

/// An administrator as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminRecord {
    pub id: Uuid,
    pub username: String,
    pub identity_id: Uuid,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret, if kept in the clear; empty once sealed.
    pub totp_secret: String,
    /// The TOTP secret sealed under the vault's master key (`SealedKind::AdminTotp`),
    /// when the server has one; a row written in the clear has none until a server with
    /// a master key starts.
    pub sealed_totp_secret: Option<Sealed>,
    /// The `keyward:` scopes its sessions carry.
    pub scopes: Vec<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
    /// The last TOTP time step accepted (a code of this step or earlier is a replay).
    pub last_totp_step: Option<i64>,
}

impl std::fmt::Debug for AdminRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("identity_id", &self.identity_id)
            .field("password_hash", &"[redacted]")
            .field("totp_secret", &"[redacted]")
            .field("sealed_totp_secret", &self.sealed_totp_secret.is_some())
            .field("scopes", &self.scopes)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .field("last_totp_step", &self.last_totp_step)
            .finish()
    }
}

/// What proved the second factor of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactor {
    /// A TOTP code of this time step.
    Totp { step: i64 },
    /// A recovery code with this hash.
    Recovery { code_hash: String },
}

#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Creates the administrator, its identity and its recovery code hashes in one
    /// transaction. A sealed TOTP secret is stored sealed only (`totp_secret` empty). `Conflict` if the username (or the identity's name) is taken.
    async fn create_admin(
        &self,
        admin: &AdminRecord,
        identity: &Identity,
        recovery_code_hashes: &[String],
        audit: &AuditEntry,
    ) -> Result<()>;

    async fn admin_by_username(&self, username: &str) -> Result<Option<AdminRecord>>;

    /// Every administrator, by username.
    async fn list_admins(&self) -> Result<Vec<AdminRecord>>;

    /// Sets `enabled` on the administrator (its identity is changed by the caller, with
    /// `Store::update_identity`, which ends its sessions). `None` if there is no such
    /// administrator.
    async fn set_admin_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        audit: &AuditEntry,
    ) -> Result<Option<AdminRecord>>;

    /// Opens a session: consumes the second factor (the TOTP step must be later than
    /// the last one used; the recovery code must be unused) and stores the session key,
    /// in one transaction. Returns false, writing nothing, if the factor was used
    /// already (a replay) or the administrator is disabled.
    async fn open_session(
        &self,
        admin_id: Uuid,
        factor: &SecondFactor,
        session: &KeyRecord,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool>;

    /// Uses a TOTP step for a step-up check: true (and audit-logged) if it is later than
    /// the last step used by this enabled administrator; false, writing nothing, if not.
    async fn use_totp_step(&self, admin_id: Uuid, step: i64, audit: &AuditEntry) -> Result<bool>;
}
