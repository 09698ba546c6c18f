//! What every console page shares: the page chrome (navigation, who is signed in, the
//! CSRF token for the sign-out form), rendering, and errors as pages.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::assets;
use super::session::ConsoleUser;
use crate::auth::{self, Principal};
use crate::error::ApiError;

/// The frame around every signed-in page.
pub struct Chrome {
    /// Who is signed in (administrator session or key), for the top bar.
    pub signed_in_as: String,
    pub csrf: String,
    /// The navigation entry to mark as current.
    pub section: &'static str,
    pub assets: &'static str,
    /// What the credential may do, to show only the actions it can take (the handlers
    /// decide all the same).
    pub can: Can,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Can {
    pub write_identities: bool,
    pub write_keys: bool,
    pub read_audit: bool,
}

impl Can {
    pub fn of(who: &Principal) -> Can {
        Can {
            write_identities: who.require(auth::IDENTITIES_WRITE).is_ok(),
            write_keys: who.require(auth::KEYS_WRITE).is_ok(),
            read_audit: who.require(auth::AUDIT_READ).is_ok(),
        }
    }
}

impl Chrome {
    pub fn new(user: &ConsoleUser, section: &'static str) -> Chrome {
        let who = &user.who;
        let signed_in_as = if who.session {
            "administrator session".to_owned()
        } else {
            format!("key {}", who.key_id)
        };
        Chrome {
            signed_in_as,
            csrf: user.csrf.clone(),
            section,
            assets: assets::BASE,
            can: Can::of(who),
        }
    }

    /// The chrome of pages seen before signing in.
    pub fn anonymous() -> Chrome {
        Chrome {
            signed_in_as: String::new(),
            csrf: String::new(),
            section: "",
            assets: assets::BASE,
            can: Can::default(),
        }
    }

    /// `aria-current` for a navigation entry.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// Renders a page: never cached (it may show keys' settings or a new key).
pub fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be drawn",
            )
                .into_response()
        }
    }
}

pub fn ok(page: impl Template) -> Response {
    render(StatusCode::OK, page)
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    status: u16,
    title: &'a str,
    detail: &'a str,
}

/// A page that says what went wrong, with the status of the error.
pub fn error_page(status: StatusCode, detail: &str) -> Response {
    render(
        status,
        ErrorPage {
            chrome: Chrome::anonymous(),
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            detail,
        },
    )
}

/// An API error, as a page (the problem's status and detail).
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<keyward_store::StoreError> for PageError {
    fn from(e: keyward_store::StoreError) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(why) = &self.0 {
            tracing::error!(error = %why, "internal error");
        }
        let (status, detail) = self.0.status_and_detail();
        error_page(status, &detail)
    }
}

pub type PageResult = Result<Response, PageError>;

/// A short, readable time (UTC).
pub fn when(t: impl Val<DateTime<Utc>>) -> String {
    t.val().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time that may be absent (`never`).
pub fn when_opt(t: impl Val<Option<DateTime<Utc>>>) -> String {
    t.val().map(when).unwrap_or_else(|| "never".to_owned())
}

/// A value however many references deep templates hand it over.
pub trait Val<T> {
    fn val(&self) -> T;
}

macro_rules! val_of_itself {
    ($($t:ty),*) => {$(
        impl Val<$t> for $t {
            fn val(&self) -> $t {
                *self
            }
        }
    )*};
}
val_of_itself!(
    u32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    keyward_proto::FindingKind
);

impl<T, V: Val<T> + ?Sized> Val<T> for &V {
    fn val(&self) -> T {
        (**self).val()
    }
}

/// The CSS class of a posture score.
pub fn score_class(score: impl Val<u32>) -> &'static str {
    match score.val() {
        80.. => "good",
        50..80 => "fair",
        _ => "poor",
    }
}

/// A posture finding's kind as the API names it (`NO_IP_RESTRICTION`).
pub fn finding_kind(kind: impl Val<keyward_proto::FindingKind>) -> String {
    serde_json::to_value(kind.val())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
