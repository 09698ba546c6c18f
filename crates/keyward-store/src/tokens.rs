//! Storage for short-lived tokens: the Ed25519 key pairs that sign them, shared by every
//! node of a cluster so all sign with the same current key, and the audit record of
//! each token issued.

use async_trait::async_trait;
use keyward_core::envelope::Sealed;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use zeroize::Zeroizing;

use crate::Result;

/// One token signing key pair.
///
/// The private key is PKCS#8 DER, sealed under the vault's master key when the server has
/// one (`sealed_private_key`, `SealedKind::SigningKey`); `private_key` is then empty.
/// Only rows written without a master key (or before sealing existed) keep it in the
/// clear, and a server with a master key seals those at startup.
#[derive(Clone)]
pub struct SigningKeyRecord {
    /// The JWT `kid`: unique, never reused.
    pub kid: String,
    /// The raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The Ed25519 private key, PKCS#8 DER, if kept in the clear; empty once sealed.
    pub private_key: Zeroizing<Vec<u8>>,
    /// The private key sealed under the master key (a row written in the clear has
    /// none until a server with a master key starts).
    pub sealed_private_key: Option<Sealed>,
    pub created_at: Timestamp,
    /// When a newer key replaced it: it signs nothing after this, but stays published
    /// until the last token it signed has expired.
    pub retired_at: Option<Timestamp>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("sealed", &self.sealed_private_key.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Signing keys not retired, or retired after `retired_after`, newest first. The
    /// first one not retired is the current signing key.
    async fn signing_keys(&self, retired_after: Timestamp) -> Result<Vec<SigningKeyRecord>>;

    /// Compare-and-set, in one transaction: if the current key (the one not retired) is
    /// `replacing` (`None`: there is no current key), retires it (`retired_at = now`) and
    /// stores `new` as the current one, with the audit entry, and returns `true`. If the
    /// current key is another (a node rotated first), changes nothing and returns
    /// `false`. A sealed private key is stored sealed only (the plaintext column left
    /// empty).
    ///
    /// **Invariant:** at most one key is current, even when nodes race to make the first
    /// one (a unique index backs this on both stores).
    async fn rotate_signing_key(
        &self,
        new: &SigningKeyRecord,
        replacing: Option<&str>,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool>;

    /// Records the issue of a token (action `token.issue`); the token itself is never
    /// stored.
    async fn record_token_issue(&self, audit: &AuditEntry) -> Result<()>;
}
