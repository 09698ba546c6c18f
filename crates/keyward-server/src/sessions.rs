//! Human sessions and step-up.
//!
//! A session is a short-lived key (prefix [`SESSION_PREFIX`]) of the administrator's
//! identity, with the administrator's scopes, minted by `POST /v1/sessions`. The most
//! sensitive calls ask a session for more: [`require_step_up`].

use axum::http::HeaderMap;
use chrono::Duration;
use keyward_core::admin::TotpSecret;
use serde_json::json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::audit_entry;
use crate::state::AppState;

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
    if let Some(expires_at) = who.key.expires_at
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
    let secret = TotpSecret::from_base32(&admin.totp_secret);
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
