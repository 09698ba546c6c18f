//! Keys: create (the key is shown once, on the answer to the form), a page per key
//! (settings, lineage, usage, top sources, alerts), rotate with a grace period, revoke
//! after a confirmation, disable and enable; each through the `/v1/keys` handlers.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect};
use keyward_proto as proto;
use serde::Deserialize;
use uuid::Uuid;

use super::alerts::{self, Entry};
use super::forms::{self, Form};
use super::pages::{self, Chrome, PageError, PageResult};
use super::session::ConsoleUser;
use super::usage::{self, ChartPart, Range, Subject};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, IdPath, OptionalJson};
use crate::routes::{identities as identities_api, keys as api};
use crate::sessions::STEP_UP_HEADER;
use crate::state::AppState;

/// Most steps of a key's lineage shown each way.
const LINEAGE_MAX: usize = 10;

#[derive(Template)]
#[template(path = "console/key_new.html")]
struct NewPage {
    chrome: Chrome,
    identity: proto::Identity,
    /// Whether the credential is an administrator's session (step-up may be needed).
    session: bool,
}

#[derive(Debug, Deserialize)]
pub struct NewQuery {
    identity_id: Uuid,
}

pub async fn new_form(
    State(st): State<AppState>,
    user: ConsoleUser,
    ApiQuery(q): ApiQuery<NewQuery>,
) -> PageResult {
    let axum::Json(identity) =
        identities_api::show(State(st), user.who.clone(), IdPath(q.identity_id)).await?;
    Ok(pages::ok(NewPage {
        session: user.who.session,
        chrome: Chrome::new(&user, "identities"),
        identity,
    }))
}

#[derive(Deserialize)]
pub struct KeyForm {
    identity_id: Uuid,
    #[serde(default)]
    name: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    ttl_days: String,
    #[serde(default)]
    ip_allowlist: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    rate_window_seconds: String,
    #[serde(default)]
    remaining: String,
    /// A fresh TOTP code, for an administrator's session minting a `keyward:admin` key.
    #[serde(default)]
    totp: String,
}

fn field(e: String) -> PageError {
    let (name, detail) = e.split_once(": ").unwrap_or(("body", &e));
    PageError(ApiError::field(name, detail))
}

impl KeyForm {
    fn into_request(self) -> Result<proto::CreateKey, PageError> {
        let ttl_days: Option<i64> = forms::number("ttl_days", &self.ttl_days).map_err(field)?;
        let limit: Option<u32> = forms::number("rate_limit", &self.rate_limit).map_err(field)?;
        let window: Option<u32> =
            forms::number("rate_window_seconds", &self.rate_window_seconds).map_err(field)?;
        let rate_limits = match (limit, window) {
            (Some(limit), Some(window_seconds)) => Some(vec![proto::RateLimit {
                name: "console".into(),
                limit,
                window_seconds,
            }]),
            (None, None) => None,
            _ => {
                return Err(field(
                    "rate_limit: give both the limit and its window".into(),
                ));
            }
        };
        Ok(proto::CreateKey {
            identity_id: self.identity_id,
            name: Some(self.name).filter(|n| !n.trim().is_empty()),
            prefix: Some(self.prefix.trim().to_owned()).filter(|p| !p.is_empty()),
            scopes: Some(forms::list(&self.scopes)),
            expires_at: None,
            ttl_seconds: ttl_days.map(|d| d.saturating_mul(86_400)),
            ip_allowlist: Some(forms::list(&self.ip_allowlist)),
            rate_limits,
            remaining: forms::number("remaining", &self.remaining).map_err(field)?,
            meta: None,
            enabled: None,
        })
    }
}

/// The page that shows a new key, the only one that ever does.
#[derive(Template)]
#[template(path = "console/key_created.html")]
struct CreatedPage {
    chrome: Chrome,
    key: String,
    fields: proto::Key,
    previous: Option<proto::PreviousKey>,
}

fn created(user: &ConsoleUser, c: proto::CreatedKey) -> axum::response::Response {
    pages::render(
        StatusCode::CREATED,
        CreatedPage {
            chrome: Chrome::new(user, "identities"),
            key: c.key,
            fields: c.fields,
            previous: c.previous,
        },
    )
}

fn step_up_headers(totp: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(totp.trim())
        && !totp.trim().is_empty()
    {
        h.insert(STEP_UP_HEADER, v);
    }
    h
}

pub async fn create(
    State(st): State<AppState>,
    user: ConsoleUser,
    Form(f): Form<KeyForm>,
) -> PageResult {
    let headers = step_up_headers(&f.totp);
    let body = f.into_request()?;
    let (_, axum::Json(c)) =
        api::create(State(st), user.who.clone(), headers, ApiJson(body)).await?;
    Ok(created(&user, c))
}

async fn key(st: &AppState, who: &Principal, id: Uuid) -> Result<proto::Key, PageError> {
    let axum::Json(k) = api::show(State(st.clone()), who.clone(), IdPath(id)).await?;
    Ok(k)
}

#[derive(Template)]
#[template(path = "console/key.html")]
struct ShowPage {
    chrome: Chrome,
    key: proto::Key,
    /// Older versions first, this key, then newer ones.
    lineage: Vec<proto::Key>,
    chart: Option<ChartPart>,
    sources: Vec<proto::TopSource>,
    alerts: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ShowQuery {
    #[serde(default)]
    range: Range,
}

pub async fn show(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> PageResult {
    let who = &user.who;
    let k = key(&st, who, id).await?;
    // The lineage: back through rotated_from, forward through rotated_to.
    let mut older = Vec::new();
    let mut at = k.rotated_from;
    while let Some(prev) = at.filter(|_| older.len() < LINEAGE_MAX) {
        let p = key(&st, who, prev).await?;
        at = p.rotated_from;
        older.push(p);
    }
    older.reverse();
    let mut lineage = older;
    lineage.push(k.clone());
    let mut at = k.rotated_to;
    let mut newer = 0;
    while let Some(next) = at.filter(|_| newer < LINEAGE_MAX) {
        let n = key(&st, who, next).await?;
        at = n.rotated_to;
        lineage.push(n);
        newer += 1;
    }
    let subject = Subject::Key(id);
    let (chart, sources) = usage::panel(&st, who, subject, q.range).await;
    let filter = alerts::Filter {
        key_id: Some(id),
        identity_id: None,
        limit: 20,
    };
    let alerts = alerts::gather(&st, who, &filter).await.ok();
    Ok(pages::ok(ShowPage {
        chrome: Chrome::new(&user, "identities"),
        key: k,
        lineage,
        chart,
        sources,
        alerts,
    }))
}

#[derive(Template)]
#[template(path = "console/key_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    key: proto::Key,
    /// `rotate` or `revoke`.
    action: &'static str,
}

async fn confirm(st: AppState, user: ConsoleUser, id: Uuid, action: &'static str) -> PageResult {
    let k = key(&st, &user.who, id).await?;
    Ok(pages::ok(ConfirmPage {
        chrome: Chrome::new(&user, "identities"),
        key: k,
        action,
    }))
}

/// The rotation form: the grace period to give the current key.
pub async fn rotate_form(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
) -> PageResult {
    confirm(st, user, id, "rotate").await
}

/// The confirmation before a revocation.
pub async fn revoke_confirm(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
) -> PageResult {
    confirm(st, user, id, "revoke").await
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    grace_hours: String,
}

pub async fn rotate(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
    Form(f): Form<RotateForm>,
) -> PageResult {
    let hours: i64 = forms::number("grace_hours", &f.grace_hours)
        .map_err(field)?
        .unwrap_or(0);
    let body = proto::RotateKey {
        grace_seconds: hours.saturating_mul(3600),
    };
    let (_, axum::Json(c)) =
        api::rotate(State(st), user.who.clone(), IdPath(id), OptionalJson(body)).await?;
    Ok(created(&user, c))
}

pub async fn revoke(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
) -> PageResult {
    let _revoked = api::revoke(State(st), user.who, IdPath(id)).await?;
    Ok(Redirect::to(&format!("/console/keys/{id}")).into_response())
}

#[derive(Deserialize)]
pub struct Enabled {
    enabled: bool,
    /// A console page to go back to (the alerts timeline).
    #[serde(default)]
    back: String,
}

/// Only console paths: never a redirect to another site.
fn back_to(back: &str, fallback: String) -> String {
    let safe = back.starts_with("/console/")
        && !back.contains("//")
        && !back.contains('\\')
        && back.bytes().all(|b| b.is_ascii_graphic());
    if safe { back.to_owned() } else { fallback }
}

pub async fn set_enabled(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
    Form(f): Form<Enabled>,
) -> PageResult {
    let body = proto::UpdateKey {
        enabled: Some(f.enabled),
        ..Default::default()
    };
    let _updated = api::update(State(st), user.who, IdPath(id), ApiJson(body)).await?;
    Ok(Redirect::to(&back_to(&f.back, format!("/console/keys/{id}"))).into_response())
}

#[cfg(test)]
mod tests {
    use super::back_to;

    #[test]
    fn goes_back_only_to_console_pages() {
        let fallback = || "/console/keys/x".to_owned();
        assert_eq!(back_to("/console/alerts", fallback()), "/console/alerts");
        for bad in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console/\\evil",
            "/v1/keys",
            "",
        ] {
            assert_eq!(back_to(bad, fallback()), fallback(), "{bad}");
        }
    }
}
