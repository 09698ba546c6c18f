//! Human administrators: `POST /v1/admins`, `GET /v1/admins`,
//! `POST /v1/admins/{id}/disable`, and logins, `POST /v1/sessions`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use keyward_core::admin::{
    self, PASSWORD_MAX, PASSWORD_MIN, TotpSecret, hash_password, recovery_code_hash,
    recovery_codes, verify_password,
};
use keyward_core::key::{self, KeyPrefix};
use keyward_core::model::{AuditEntry, Identity, IdentityPatch, KeyRecord};
use keyward_core::validate;
use keyward_proto as proto;
use keyward_store::admins::{AdminRecord, SecondFactor};
use serde_json::json;
use uuid::Uuid;

use crate::auth::{ADMIN, NAMESPACE, Principal, require_step_up};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, IdPath};
use crate::routes::audit_entry;
use crate::sessions::{SESSION_PREFIX, SESSION_TTL};
use crate::state::AppState;

/// The issuer shown by authenticator apps.
const ISSUER: &str = "Keyward";

fn valid_username(u: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "username",
            "1-64 characters among a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

fn to_wire(a: AdminRecord) -> proto::Admin {
    proto::Admin {
        id: a.id,
        username: a.username,
        identity_id: a.identity_id,
        scopes: a.scopes,
        enabled: a.enabled,
        created_at: a.created_at,
    }
}

#[utoipa::path(post, path = "/v1/admins", tag = "admins", request_body = proto::CreateAdmin,
    responses((status = 201, body = proto::CreatedAdmin), (status = 400, body = proto::Problem),
              (status = 409, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<proto::CreateAdmin>,
) -> ApiResult<(StatusCode, Json<proto::CreatedAdmin>)> {
    who.require(ADMIN)?;
    valid_username(&body.username)?;
    let password = admin::Redacted::new(body.password);
    let len = password.expose().chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
        return Err(ApiError::field(
            "password",
            format!("{PASSWORD_MIN}-{PASSWORD_MAX} characters"),
        ));
    }
    let scopes = validate::scopes(&body.scopes)?;
    if scopes.is_empty() {
        return Err(ApiError::field("scopes", "at least one keyward: scope"));
    }
    if let Some(i) = scopes.iter().position(|s| !s.starts_with(NAMESPACE)) {
        return Err(ApiError::field(
            format!("scopes[{i}]"),
            "administrators hold keyward: scopes only",
        ));
    }
    require_step_up(&who, &headers, &st).await?;

    let now = crate::now();
    let secret = TotpSecret::generate();
    let codes = recovery_codes();
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let pw = password.clone();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(pw.expose()))
        .await
        .map_err(|_| ApiError::Internal("password hashing failed".into()))?;
    let identity = Identity {
        id: Uuid::now_v7(),
        name: format!("admin:{}", body.username),
        owner: body.username.clone(),
        description: "A human administrator; its keys are its sessions.".into(),
        meta: Default::default(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    let admin_id = Uuid::now_v7();
    // Sealed under the master key when there is one (only the sealed form stored).
    let (totp_secret, sealed_totp_secret) =
        crate::sessions::store_totp_secret(st.vault.as_deref(), admin_id, &secret);
    let record = AdminRecord {
        id: admin_id,
        username: body.username.clone(),
        identity_id: identity.id,
        password_hash,
        totp_secret,
        sealed_totp_secret,
        scopes: scopes.clone(),
        enabled: true,
        created_at: now,
        last_totp_step: None,
    };
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| recovery_code_hash(c.expose()))
        .collect();
    let audit = audit_entry(
        &who,
        "admin.create",
        record.id,
        json!({"username": record.username, "scopes": scopes, "identity_id": identity.id}),
    );
    st.store
        .create_admin(&record, &identity, &hashes, &audit)
        .await
        .map_err(|e| match e {
            keyward_store::StoreError::Conflict(_) => {
                ApiError::Conflict("an administrator with this username exists".into())
            }
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(proto::CreatedAdmin {
            id: record.id,
            username: record.username,
            totp_uri: secret
                .otpauth_uri(ISSUER, &body.username)
                .expose()
                .to_owned(),
            recovery_codes: codes.iter().map(|c| c.expose().to_owned()).collect(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/admins", tag = "admins",
    responses((status = 200, body = proto::AdminList)),
    security(("bearer" = [])))]
pub async fn list(State(st): State<AppState>, who: Principal) -> ApiResult<Json<proto::AdminList>> {
    who.require(ADMIN)?;
    let items = st
        .store
        .list_admins()
        .await?
        .into_iter()
        .map(to_wire)
        .collect();
    Ok(Json(proto::AdminList { items }))
}

#[utoipa::path(post, path = "/v1/admins/{id}/disable", tag = "admins",
    params(("id" = Uuid, Path, description = "the administrator's id")),
    responses((status = 200, body = proto::Admin), (status = 404, body = proto::Problem)),
    security(("bearer" = [])))]
pub async fn disable(
    State(st): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<proto::Admin>> {
    who.require(ADMIN)?;
    let audit = audit_entry(&who, "admin.disable", id, json!({}));
    let admin = st
        .store
        .set_admin_enabled(id, false, &audit)
        .await?
        .ok_or_else(|| ApiError::NotFound("no administrator with this id".into()))?;
    // Its identity too: that ends every session it holds, on every node.
    let patch = IdentityPatch {
        enabled: Some(false),
        ..Default::default()
    };
    let audit = audit_entry(
        &who,
        "identity.update",
        admin.identity_id,
        json!({"changed": ["enabled"]}),
    );
    st.store
        .update_identity(admin.identity_id, &patch, crate::now(), &audit)
        .await?;
    let digests = st.store.key_digests_of_identity(admin.identity_id).await?;
    st.verifier.forget_all(&digests);
    Ok(Json(to_wire(admin)))
}

#[utoipa::path(post, path = "/v1/sessions", tag = "admins", request_body = proto::CreateSession,
    responses((status = 201, body = proto::Session), (status = 401, body = proto::Problem)))]
pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<proto::CreateSession>,
) -> ApiResult<(StatusCode, Json<proto::Session>)> {
    let password = admin::Redacted::new(body.password);
    let code = admin::Redacted::new(body.totp);
    st.throttle.before_login(peer.ip(), &body.username)?;
    let refused = || {
        st.throttle.login_failed(peer.ip(), &body.username);
        ApiError::Unauthorized("wrong username, password or code".into())
    };
    let found = st.store.admin_by_username(&body.username).await?;
    // Unknown users cost the same argon2 work, so timing does not reveal usernames.
    let phc = found
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| admin::dummy_password_hash().to_owned());
    let pw = password.clone();
    let password_ok = tokio::task::spawn_blocking(move || verify_password(pw.expose(), &phc))
        .await
        .map_err(|_| ApiError::Internal("password check failed".into()))?;
    let Some(admin) = found.filter(|a| password_ok && a.enabled) else {
        tracing::warn!(username = %body.username, source_ip = %peer.ip(), "login refused");
        return Err(refused());
    };
    let now = crate::now();
    // Fails closed (500) if the sealed secret cannot be opened: no code is accepted.
    let secret = crate::sessions::totp_secret(st.vault.as_deref(), &admin)?;
    let factor = match secret.check(code.expose().trim(), now.timestamp().max(0) as u64) {
        Some(step) => SecondFactor::Totp { step },
        // Not a current TOTP code: perhaps a recovery code (never a 6-digit one).
        None if code.expose().trim().len() > 6 => SecondFactor::Recovery {
            code_hash: recovery_code_hash(code.expose()),
        },
        None => {
            tracing::warn!(username = %admin.username, source_ip = %peer.ip(), "login refused: wrong code");
            return Err(refused());
        }
    };
    let minted = key::mint(&KeyPrefix::parse(SESSION_PREFIX).expect("a valid prefix"));
    let expires_at = now + SESSION_TTL;
    let session = KeyRecord {
        id: Uuid::now_v7(),
        identity_id: admin.identity_id,
        name: "session".into(),
        prefix: SESSION_PREFIX.into(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes: admin.scopes.clone(),
        created_at: now,
        updated_at: now,
        expires_at: Some(expires_at),
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec![],
        rate_limits: vec![],
        remaining: None,
        last_used_at: None,
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    };
    let recovery = matches!(factor, SecondFactor::Recovery { .. });
    let audit = AuditEntry {
        at: now,
        actor: format!("admin:{}", admin.id),
        action: "session.create".into(),
        target: session.id.to_string(),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        source_ip: Some(peer.ip().to_string()),
        detail: json!({"username": admin.username, "identity_id": admin.identity_id,
                       "expires_at": expires_at, "recovery_code": recovery}),
    };
    if !st
        .store
        .open_session(admin.id, &factor, &session, now, &audit)
        .await?
    {
        tracing::warn!(username = %admin.username, source_ip = %peer.ip(), "login refused: code already used");
        return Err(refused());
    }
    Ok((
        StatusCode::CREATED,
        Json(proto::Session {
            token: minted.plaintext.to_string(),
            expires_at,
        }),
    ))
}
