//! Who is signed in to the console, and the checks every form submission passes.
//!
//! The session cookie carries the credential itself: an administrator's session token
//! (`POST /v1/sessions`, 15 minutes) or a key with `keyward:` scopes. It is HttpOnly,
//! SameSite=Strict, `Path=/console`, and Secure when the request came over TLS. Each
//! request turns it into a [`Principal`] through `auth::authenticate`, the very check
//! of the API's bearer header, so the console can do exactly what the credential may.
//!
//! CSRF: a synchroniser token derived from the credential (HMAC-SHA256 keyed by it, so
//! only who holds the cookie's value can know it, and it needs no server state shared
//! between nodes), in a hidden field of every form; the sign-in form, which has no
//! credential yet, uses a random double-submit cookie instead. [`guard`] checks every
//! non-GET request under `/console` before any handler runs: the token (constant time),
//! and that the browser does not call it cross-site (`Sec-Fetch-Site`, `Origin`).

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::auth::{self, Principal};
use crate::state::AppState;
use crate::tls::TlsPeer;

/// The cookie that holds the signed-in credential.
pub const SESSION_COOKIE: &str = "keyward_console";
/// The double-submit cookie of the sign-in form.
pub const LOGIN_COOKIE: &str = "keyward_console_login";
/// The hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// How long a key sign-in lasts in the browser (an administrator's session ends sooner,
/// when its token expires).
pub const KEY_SIGN_IN_SECONDS: i64 = 8 * 3600;
/// Largest form body the console reads.
const FORM_LIMIT: usize = 64 * 1024;

/// The signed-in console user: the credential's principal and the page's CSRF token.
pub struct ConsoleUser {
    pub who: Principal,
    pub csrf: String,
}

/// The CSRF token of a credential: hex HMAC-SHA256 keyed by it.
pub fn csrf_token(credential: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(credential.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"keyward-console-csrf-v1");
    hex::encode(mac.finalize().into_bytes())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<Zeroizing<String>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| Zeroizing::new(c.value().to_owned()))
}

/// Whether the browser reached us over HTTPS (Keyward's own TLS, or a proxy that says
/// so): cookies are then marked Secure.
pub fn is_https(parts_headers: &HeaderMap, extensions: &axum::http::Extensions) -> bool {
    extensions.get::<ConnectInfo<TlsPeer>>().is_some()
        || parts_headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// A `Set-Cookie` value for the console.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_secs: i64, secure: bool) -> String {
    Cookie::build((name, value))
        .path(path.to_owned())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_secs.max(0)))
        .build()
        .to_string()
}

/// Where a request without a valid session goes.
pub fn to_sign_in() -> Response {
    Redirect::to("/console/login").into_response()
}

impl FromRequestParts<AppState> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        let Some(credential) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in());
        };
        let (source_ip, request_id) = auth::peer_and_request_id(parts);
        match auth::authenticate(st, &credential, source_ip, request_id).await {
            Ok(who) => Ok(ConsoleUser {
                who,
                csrf: csrf_token(&credential),
            }),
            // Expired, revoked or unknown: sign in again (and forget the stale cookie).
            Err(_) => {
                let secure = is_https(&parts.headers, &parts.extensions);
                let mut res = to_sign_in();
                if let Ok(v) = set_cookie(SESSION_COOKIE, "", "/console", 0, secure).parse() {
                    res.headers_mut().insert(header::SET_COOKIE, v);
                }
                Err(res)
            }
        }
    }
}

fn refused(why: &str) -> Response {
    tracing::warn!(reason = why, "console form refused");
    super::pages::error_page(
        StatusCode::FORBIDDEN,
        &format!("This form was refused ({why}). Reload the page and try again."),
    )
}

/// Whether the browser says the request comes from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(fetch_site, "cross-site" | "same-site") {
        return true;
    }
    // Origin, when sent, must be this very host (scheme aside: a proxy may end TLS).
    // "null" is what a browser sends when it hides the origin (a privacy setting, a
    // redirect across origins); the browser then also says where the request came from
    // in Sec-Fetch-Site, checked above, and the CSRF token still has to match.
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some("null"), _) => fetch_site.is_empty(),
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            origin_host != Some(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The CSRF check of every state-changing request under `/console` (a middleware on the
/// console's router, so no handler can forget it).
pub async fn guard(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    if cross_site(req.headers()) {
        return refused("cross-site request");
    }
    // Nested at /console, the router sees "/login"; the original URI is the full path.
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map(|u| u.0.path().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let expected = if path == "/console/login" {
        cookie_value(req.headers(), LOGIN_COOKIE)
    } else {
        cookie_value(req.headers(), SESSION_COOKIE).map(|c| Zeroizing::new(csrf_token(&c)))
    };
    let Some(expected) = expected else {
        return refused("no session");
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return refused("the form is too large");
    };
    let given = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| Zeroizing::new(v.into_owned()));
    let ok = given.is_some_and(|g| {
        !expected.is_empty() && bool::from(g.as_bytes().ct_eq(expected.as_bytes()))
    });
    if !ok {
        return refused("missing or wrong CSRF token");
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}
