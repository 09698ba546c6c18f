//! The web console at `/console` (issue 11): server-rendered pages (askama templates in
//! `templates/console/`, htmx for the live parts, assets embedded in the binary) over
//! the very handlers of the HTTP API, called in-process with the signed-in credential's
//! [`Principal`](crate::auth::Principal): the console can do exactly what that
//! credential may through the API, and every change it makes is audit-logged the same
//! way.
//!
//! **Architecture Invariant:** the console holds no authorisation of its own: each page
//! calls the API handler (or, for the audit search, `Principal::require`) with the
//! signed-in principal, and every state-changing request passes `session::guard` (CSRF
//! token, not cross-site) before any handler runs (tests: `console_http.rs`).
//!
//! **Architecture Invariant:** a plaintext key appears only in the answer to the form
//! that created or rotated it (`Cache-Control: no-store`), never in a URL, a redirect,
//! a log or another page (test: `console_http::new_key_is_shown_once_and_never_again`).

mod alerts;
mod assets;
mod audit;
mod chart;
mod forms;
mod identities;
mod keys;
mod login;
mod overview;
pub mod pages;
pub mod session;
mod usage;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// The Content-Security-Policy of the console's pages: everything from Keyward itself,
/// nothing inline, nothing framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Whether a request path is the console's (its own security headers apply).
pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// `/console/` (a typed or bookmarked URL) goes to `/console`.
pub async fn to_console() -> axum::response::Redirect {
    axum::response::Redirect::permanent("/console")
}

/// The console's routes, to be nested at `/console`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::show))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route(
            "/identities",
            get(identities::list).post(identities::create),
        )
        .route("/identities/new", get(identities::new_form))
        .route(
            "/identities/{id}",
            get(identities::show).post(identities::update),
        )
        .route("/identities/{id}/edit", get(identities::edit_form))
        .route("/identities/{id}/enabled", post(identities::set_enabled))
        .route(
            "/identities/{id}/delete",
            get(identities::delete_confirm).post(identities::delete),
        )
        .route("/keys", post(keys::create))
        .route("/keys/new", get(keys::new_form))
        .route("/keys/{id}", get(keys::show))
        .route(
            "/keys/{id}/rotate",
            get(keys::rotate_form).post(keys::rotate),
        )
        .route(
            "/keys/{id}/revoke",
            get(keys::revoke_confirm).post(keys::revoke),
        )
        .route("/keys/{id}/enabled", post(keys::set_enabled))
        .route("/usage/chart", get(overview::chart))
        .route("/alerts", get(alerts::timeline))
        .route("/audit", get(audit::table))
        .route("/assets/{version}/{file}", get(assets::serve))
        .fallback(|| async {
            pages::error_page(axum::http::StatusCode::NOT_FOUND, "No such page.")
        })
        .layer(axum::middleware::from_fn(session::guard))
}
