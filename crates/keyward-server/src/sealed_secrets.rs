//! Secrets Keyward must recover (webhook signing secrets, token signing private keys,
//! administrator TOTP secrets), sealed under the vault's
//! master keys: sealing a new one, opening one where it is needed, the one-time upgrade
//! of rows written in the clear before sealing existed, and their part of the master
//! key rewrap (`vault_jobs.rs` calls [`rewrap_some`]).
//!
//! Without a vault (PostgreSQL with no master key) no new webhook secret is stored: a new
//! webhook answers 503 ([`vault_for_new_secret`]). Token signing keys and administrator
//! TOTP secrets, which Keyward cannot work without, are then stored in the clear (with
//! a warning) and sealed when a server with a master key starts; rows from before the
//! upgrade likewise keep working in the clear until then.

use std::sync::atomic::{AtomicBool, Ordering};

use keyward_core::envelope::{self, Sealed, VaultError};
use keyward_core::model::AuditEntry;
use keyward_store::sealed_secrets::{SealedKind, SealedRewrap, SealedSecret};
use keyward_store::{Store, StoreError};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::vault::Vault;

/// Rows sealed or rewrapped per transaction.
const BATCH: u32 = 200;

/// The vault, or 503 naming the missing master key: a secret Keyward must recover is
/// never stored in the clear. Logs the refusal once per process.
pub fn vault_for_new_secret<'a>(vault: Option<&'a Vault>, what: &str) -> ApiResult<&'a Vault> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    vault.ok_or_else(|| {
        if !LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "refusing to store a new {what}: it must be sealed, and the server has no master \
                 key (KEYWARD_MASTER_KEY or --master-key-file)"
            );
        }
        ApiError::Unavailable(format!(
            "cannot store a new {what}: the server has no master key to seal it with \
             (KEYWARD_MASTER_KEY or --master-key-file)"
        ))
    })
}

/// Seals `plaintext` for row `id` of `kind` under the current master key.
pub fn seal(vault: &Vault, kind: SealedKind, id: &str, plaintext: &[u8]) -> Sealed {
    envelope::seal(vault.ring(), &kind.path(id), kind.version(), plaintext)
}

/// Opens the sealed secret of row `id` of `kind`; the plaintext is wiped when dropped.
pub fn open(
    vault: &Vault,
    kind: SealedKind,
    id: &str,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    envelope::open(vault.ring(), &kind.path(id), kind.version(), sealed)
}

fn system_audit(action: &str, kind: SealedKind, count: usize, master_key_id: &str) -> AuditEntry {
    AuditEntry {
        at: crate::now(),
        actor: "system".into(),
        action: action.into(),
        target: kind.as_str().into(),
        request_id: None,
        source_ip: None,
        detail: json!({"kind": kind.as_str(), "count": count, "master_key_id": master_key_id}),
    }
}

/// The one-time upgrade: seals every secret still in the clear and clears its
/// plaintext column. Run at startup when the vault is on. Returns how many rows.
pub async fn seal_plaintext(store: &dyn Store, vault: &Vault) -> Result<u64, StoreError> {
    let current = vault.ring().current().id().to_owned();
    let mut total = 0;
    for kind in SealedKind::ALL {
        loop {
            let rows = store.plaintext_secrets(kind, BATCH).await?;
            if rows.is_empty() {
                break;
            }
            let sealed: Vec<SealedSecret> = rows
                .iter()
                .map(|r| SealedSecret {
                    id: r.id.clone(),
                    sealed: seal(vault, kind, &r.id, &r.plaintext),
                })
                .collect();
            let audit = system_audit("vault.seal_plaintext", kind, sealed.len(), &current);
            let n = store.seal_plaintext_secrets(kind, &sealed, &audit).await?;
            total += n;
            if n == 0 {
                // Another node sealed them meanwhile; what is left is its to finish.
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            rows = total,
            "sealed secrets stored in the clear before sealing existed"
        );
    }
    Ok(total)
}

/// One batch per kind of the master key rewrap: data keys not under the current master
/// key are rewrapped under it. Returns how many rows changed.
pub async fn rewrap_some(store: &dyn Store, vault: &Vault) -> Result<u64, StoreError> {
    let ring = vault.ring();
    let current = ring.current().id().to_owned();
    let mut total = 0;
    for kind in SealedKind::ALL {
        let rows = store
            .sealed_secrets_to_rewrap(kind, &current, BATCH)
            .await?;
        let mut rewraps = Vec::with_capacity(rows.len());
        for r in &rows {
            match envelope::rewrap(ring, &kind.path(&r.id), kind.version(), &r.sealed) {
                Ok((wrapped_key, master_key_id)) => rewraps.push(SealedRewrap {
                    id: r.id.clone(),
                    old_master_key_id: r.sealed.master_key_id.clone(),
                    wrapped_key,
                    master_key_id,
                }),
                Err(e) => tracing::warn!(kind = kind.as_str(), id = %r.id, error = %e,
                    "cannot rewrap a sealed secret's data key"),
            }
        }
        if rewraps.is_empty() {
            continue;
        }
        let audit = system_audit("vault.rewrap", kind, rewraps.len(), &current);
        total += store.rewrap_sealed_secrets(kind, &rewraps, &audit).await?;
    }
    if total > 0 {
        tracing::info!(rows = total, master_key_id = %current,
            "rewrapped sealed secrets under the current master key");
    }
    Ok(total)
}
