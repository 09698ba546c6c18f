//! Secrets Keyward must recover (a webhook's signing secret, a token signing private key,
//! an administrator's TOTP secret), kept sealed under the
//! vault's master key: the [`SealedSecretStore`] part of every [`Store`](crate::Store).
//!
//! The store never sees a master key: the server seals (keyward-core `envelope.rs`) and
//! hands the store [`Sealed`] blobs. This trait holds the two batch jobs over every
//! such column: the one-time upgrade of rows written in the clear before sealing
//! existed, and the rewrap of data keys after a master key rotation.

use async_trait::async_trait;
use zeroize::Zeroizing;

use keyward_core::envelope::Sealed;
use keyward_core::model::AuditEntry;

use crate::{Result, StoreError};

/// Which sealed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// `webhooks.secret`: sealed at path `keyward/webhook/<id>`, version 1.
    WebhookSecret,
    /// `signing_keys.private_key` (PKCS#8 DER): sealed at path
    /// `keyward/signing-key/<kid>`, version 1.
    SigningKey,
    /// `admins.totp_secret` (base32): sealed at path `keyward/admin-totp/<admin id>`,
    /// version 1.
    AdminTotp,
}

impl SealedKind {
    pub const ALL: [SealedKind; 3] = [
        SealedKind::WebhookSecret,
        SealedKind::SigningKey,
        SealedKind::AdminTotp,
    ];

    /// The envelope path binding the sealed blob to its kind and row.
    pub fn path(self, id: &str) -> String {
        match self {
            SealedKind::WebhookSecret => format!("keyward/webhook/{id}"),
            SealedKind::SigningKey => format!("keyward/signing-key/{id}"),
            SealedKind::AdminTotp => format!("keyward/admin-totp/{id}"),
        }
    }

    /// The envelope version (each row has one secret).
    pub fn version(self) -> i64 {
        1
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SealedKind::WebhookSecret => "webhook_secret",
            SealedKind::SigningKey => "signing_key",
            SealedKind::AdminTotp => "admin_totp",
        }
    }

    /// (table, plaintext column, column prefix of the sealed columns). Fixed names,
    /// never input: safe to put in SQL text.
    pub(crate) fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SealedKind::WebhookSecret => ("webhooks", "secret", "secret"),
            SealedKind::SigningKey => ("signing_keys", "private_key", "private_key"),
            SealedKind::AdminTotp => ("admins", "totp_secret", "totp_secret"),
        }
    }

    /// The row's key column (the id `path` binds). A fixed name, never input.
    pub(crate) fn id_column(self) -> &'static str {
        match self {
            SealedKind::SigningKey => "kid",
            SealedKind::WebhookSecret | SealedKind::AdminTotp => "id",
        }
    }

    /// Whether the plaintext column holds bytes (BLOB / bytea) rather than text: it is
    /// read as such, and cleared to an empty blob rather than `''`.
    pub(crate) fn plaintext_is_bytes(self) -> bool {
        matches!(self, SealedKind::SigningKey)
    }
}

/// A row whose secret is still in the clear (written before sealing existed).
pub struct PlaintextSecret {
    /// The row id, as text (a UUID, or a signing key's `kid`, in the form
    /// `SealedKind::path` expects).
    pub id: String,
    /// The secret's bytes (a text column's UTF-8), wiped when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PlaintextSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaintextSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A row's sealed secret.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub id: String,
    pub sealed: Sealed,
}

/// A data key rewrapped under another master key.
#[derive(Debug, Clone)]
pub struct SealedRewrap {
    pub id: String,
    /// The master key id the row had when read: the update applies only if it still
    /// has it (a concurrent rewrap or delete wins).
    pub old_master_key_id: String,
    pub wrapped_key: Vec<u8>,
    pub master_key_id: String,
}

#[async_trait]
pub trait SealedSecretStore: Send + Sync {
    /// Rows of `kind` whose secret is still in the clear (none sealed), at most `limit`.
    async fn plaintext_secrets(&self, kind: SealedKind, limit: u32)
    -> Result<Vec<PlaintextSecret>>;
    /// In one transaction: stores each sealed secret and clears its plaintext (only on
    /// rows still unsealed), and writes `audit` if any row changed. Returns how many.
    async fn seal_plaintext_secrets(
        &self,
        kind: SealedKind,
        sealed: &[SealedSecret],
        audit: &AuditEntry,
    ) -> Result<u64>;
    /// Sealed rows of `kind` whose data key is not under `current_key_id`, at most `limit`.
    async fn sealed_secrets_to_rewrap(
        &self,
        kind: SealedKind,
        current_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SealedSecret>>;
    /// In one transaction: applies the rewraps (each only if the row still has its old
    /// master key id), and writes `audit` if any row changed. Returns how many.
    async fn rewrap_sealed_secrets(
        &self,
        kind: SealedKind,
        rewraps: &[SealedRewrap],
        audit: &AuditEntry,
    ) -> Result<u64>;
}

/// The sealed secret from a row's three sealed columns: `None` if the row has none yet
/// (written in the clear), an error if only some are set. `what` names the columns.
pub(crate) fn sealed_from_row(
    ciphertext: Option<Vec<u8>>,
    wrapped_key: Option<Vec<u8>>,
    master_key_id: Option<String>,
    what: &str,
) -> Result<Option<Sealed>> {
    Ok(match (ciphertext, wrapped_key, master_key_id) {
        (Some(ciphertext), Some(wrapped_key), Some(master_key_id)) => Some(Sealed {
            ciphertext,
            wrapped_key,
            master_key_id,
        }),
        (None, None, None) => None,
        _ => return Err(StoreError::Corrupt(format!("{what}: partly sealed"))),
    })
}
