//! Human sessions and step-up.
//!
//! A session is a short-lived key (prefix [`SESSION_PREFIX`]) of the administrator's
//! identity, with the administrator's scopes, minted by `POST /v1/sessions`. The most
//! sensitive calls ask a session for more: [`require_step_up`].

use axum::http::HeaderMap;
use chrono::Duration;
use keyward_core::admin::TotpSecret;
use keyward_store::admins::AdminRecord;
use keyward_store::sealed_secrets::SealedKind;
use serde_json::json;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::audit_entry;
use crate::sealed_secrets;
use crate::state::AppState;
use crate::vault::Vault;

/// The key prefix of session credentials.
pub const SESSION_PREFIX: &str = "kws";
/// What a session token starts with.
pub const SESSION_PREFIX_: &str = "kws_";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::minutes(15);
/// A session this young may do the most sensitive things without a fresh code.
pub const STEP_UP_WINDOW: Duration = Duration::minutes(5);
/// The header that carries a fresh TOTP code for step-up.
pub const STEP_UP_HEADER: &str = "keyward-totp";

/// For the most sensitive calls (minting `keyward:admin` keys, creating administrators,
/// reading secret values, rotating the master key): a human session must be younger than
/// [`STEP_UP_WINDOW`] or send a fresh TOTP code of its administrator in the
/// `Keyward-TOTP` header (used once, like a login's). Keys of non-human identities pass:
/// they hold no second factor, and their scopes already say what they may do.
///
/// Call it after the scope check: `who.require(ADMIN)?; require_step_up(&who, &headers, &st).await?;`
/// (take `headers: HeaderMap` as an extractor of the handler). 403 when refused.
pub async fn require_step_up(
    who: &Principal,
    headers: &HeaderMap,
    st: &AppState,
) -> Result<(), ApiError> {
    if !who.session {
        return Ok(());
    }
    let now = crate::now();
    // A session's expiry is its start plus SESSION_TTL, so its age is known from it.
    if let Some(expires_at) = who.key.policy.expires_at
        && expires_at - now > SESSION_TTL - STEP_UP_WINDOW
    {
        return Ok(());
    }
    let refused = || {
        ApiError::Forbidden(format!(
            "this call needs a session younger than {} minutes or a fresh code in the \
             Keyward-TOTP header",
            STEP_UP_WINDOW.num_minutes()
        ))
    };
    let Some(code) = headers.get(STEP_UP_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(refused());
    };
    let admin = st
        .store
        .list_admins()
        .await?
        .into_iter()
        .find(|a| a.identity_id == who.identity_id && a.enabled)
        .ok_or_else(refused)?;
    let secret = totp_secret(st.vault.as_deref(), &admin)?;
    let Some(step) = secret.check(code.trim(), now.timestamp().max(0) as u64) else {
        tracing::warn!(admin = %admin.username, "step-up refused: wrong TOTP code");
        return Err(refused());
    };
    let audit = audit_entry(
        who,
        "admin.step_up",
        admin.id,
        json!({"username": admin.username}),
    );
    if st.store.use_totp_step(admin.id, step, &audit).await? {
        Ok(())
    } else {
        tracing::warn!(admin = %admin.username, "step-up refused: TOTP code already used");
        Err(refused())
    }
}

/// A new administrator's TOTP secret as stored: `(plaintext column, sealed form)`. With
/// a master key only the sealed form (path `keyward/admin-totp/<admin id>`) is stored,
/// the plaintext column left empty; without one it is kept in the clear (with a
/// warning, once) and sealed when a server with a master key starts.
pub fn store_totp_secret(
    vault: Option<&Vault>,
    admin_id: Uuid,
    secret: &TotpSecret,
) -> (String, Option<keyward_core::envelope::Sealed>) {
    match vault {
        Some(v) => (
            String::new(),
            Some(sealed_secrets::seal(
                v,
                SealedKind::AdminTotp,
                &admin_id.to_string(),
                secret.base32().as_bytes(),
            )),
        ),
        None => {
            static LOGGED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "administrator TOTP secrets are stored in the clear: the server has no \
                     master key to seal them with (KEYWARD_MASTER_KEY or --master-key-file)"
                );
            }
            (secret.base32().to_owned(), None)
        }
    }
}

/// The administrator's TOTP secret: opened from its sealed form, or as stored on a row
/// written in the clear. Fails closed: a sealed secret that cannot be opened (no master
/// key, or not the one it was sealed under) is a 500 naming the administrator, never a
/// secret, and no code is accepted.
pub fn totp_secret(vault: Option<&Vault>, admin: &AdminRecord) -> Result<TotpSecret, ApiError> {
    let Some(sealed) = &admin.sealed_totp_secret else {
        if admin.totp_secret.is_empty() {
            return Err(ApiError::Internal(format!(
                "administrator {} has no TOTP secret",
                admin.username
            )));
        }
        return Ok(TotpSecret::from_base32(&admin.totp_secret));
    };
    let vault = vault.ok_or_else(|| {
        ApiError::Internal(format!(
            "the TOTP secret of administrator {} is sealed and this server has no master key \
             to open it",
            admin.username
        ))
    })?;
    // Wiped when dropped; `TotpSecret` keeps its own wiped copy.
    let plain = sealed_secrets::open(vault, SealedKind::AdminTotp, &admin.id.to_string(), sealed)
        .map_err(|e| {
        ApiError::Internal(format!(
            "cannot open the sealed TOTP secret of administrator {} (not the master key it \
                 was sealed under?): {e}",
            admin.username
        ))
    })?;
    let text = std::str::from_utf8(&plain).map_err(|_| {
        ApiError::Internal(format!(
            "the sealed TOTP secret of administrator {} is not text",
            admin.username
        ))
    })?;
    Ok(TotpSecret::from_base32(text))
}
