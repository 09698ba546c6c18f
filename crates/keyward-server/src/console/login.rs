//! Signing in (an administrator's username, password and TOTP code through the same
//! handler as `POST /v1/sessions`, or a key with `keyward:` scopes) and out.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_proto as proto;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::forms::Form;
use super::pages::{self, Chrome};
use super::session::{
    self, ConsoleUser, KEY_SIGN_IN_SECONDS, LOGIN_COOKIE, SESSION_COOKIE, set_cookie,
};
use crate::auth::{self, NAMESPACE};
use crate::extract::ApiJson;
use crate::routes::{admins, audit_entry};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf: String,
    error: Option<String>,
}

fn with_cookie(mut res: Response, cookie: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The sign-in page, with a fresh double-submit token for its forms.
fn login_page(status: StatusCode, secure: bool, error: Option<String>) -> Response {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source works");
    let csrf = hex::encode(bytes);
    let page = LoginPage {
        chrome: Chrome::anonymous(),
        csrf: csrf.clone(),
        error,
    };
    with_cookie(
        pages::render(status, page),
        set_cookie(LOGIN_COOKIE, &csrf, "/console/login", 3600, secure),
    )
}

pub async fn form(
    user: Result<ConsoleUser, Response>,
    headers: HeaderMap,
    req: axum::http::Extensions,
) -> Response {
    if user.is_ok() {
        return Redirect::to("/console").into_response();
    }
    login_page(StatusCode::OK, session::is_https(&headers, &req), None)
}

#[derive(Deserialize)]
pub struct SignIn {
    mode: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    totp: String,
    #[serde(default)]
    key: String,
}

pub async fn submit(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<SignIn>,
) -> Response {
    let secure = session::is_https(&headers, &ext);
    let refused = |status: StatusCode, why: String| login_page(status, secure, Some(why));
    let (credential, max_age) = match f.mode.as_str() {
        "admin" => {
            let body = proto::CreateSession {
                username: f.username,
                password: f.password,
                totp: f.totp,
            };
            match admins::login(
                State(st.clone()),
                ConnectInfo(peer),
                headers.clone(),
                ApiJson(body),
            )
            .await
            {
                Ok((_, axum::Json(s))) => {
                    let left = (s.expires_at - crate::now()).num_seconds();
                    (Zeroizing::new(s.token), left)
                }
                Err(e) => {
                    let (status, detail) = e.status_and_detail();
                    return refused(status, detail);
                }
            }
        }
        "key" => {
            let key = Zeroizing::new(f.key.trim().to_owned());
            match auth::authenticate(&st, &key, Some(peer.ip()), None).await {
                Ok(who) if who.scopes().iter().any(|s| s.starts_with(NAMESPACE)) => {
                    tracing::info!(key_id = %who.key_id, source_ip = %peer.ip(), "console sign-in with a key");
                    (key, KEY_SIGN_IN_SECONDS)
                }
                Ok(_) => {
                    return refused(
                        StatusCode::FORBIDDEN,
                        format!("this key holds no {NAMESPACE} scopes"),
                    );
                }
                Err(e) => {
                    let (status, detail) = e.status_and_detail();
                    return refused(status, detail);
                }
            }
        }
        _ => return refused(StatusCode::BAD_REQUEST, "mode: admin or key".into()),
    };
    let res = Redirect::to("/console").into_response();
    let res = with_cookie(
        res,
        set_cookie(SESSION_COOKIE, &credential, "/console", max_age, secure),
    );
    // The sign-in token has done its work.
    with_cookie(
        res,
        set_cookie(LOGIN_COOKIE, "", "/console/login", 0, secure),
    )
}

/// Signs out: forgets the cookie and, for an administrator's session, ends the session
/// itself (it is revoked, so the token is worthless even if it was copied).
pub async fn logout(
    State(st): State<AppState>,
    user: Result<ConsoleUser, Response>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
) -> Response {
    if let Ok(user) = user
        && user.who.session
    {
        let who = &user.who;
        let audit = audit_entry(who, "session.logout", who.key_id, json!({}));
        match st.store.revoke_key(who.key_id, crate::now(), &audit).await {
            Ok(Some(k)) => st.verifier.forget(&k.digest),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not end the session at sign-out"),
        }
    }
    let secure = session::is_https(&headers, &ext);
    with_cookie(
        Redirect::to("/console/login").into_response(),
        set_cookie(SESSION_COOKIE, "", "/console", 0, secure),
    )
}
