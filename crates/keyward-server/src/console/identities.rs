//! Identities: the list (search, owner, posture score), a page per identity (keys,
//! findings, usage, recent activity), and create, edit, disable and delete, each
//! through the `/v1/identities` handlers.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use keyward_proto as proto;
use keyward_store::console::AuditSearch;
use serde::Deserialize;
use uuid::Uuid;

use super::forms::Form;
use super::pages::{self, Chrome, PageResult};
use super::session::ConsoleUser;
use super::usage::{self, ChartPart, Range, Subject};
use crate::auth::{AUDIT_READ, KEYS_READ, Principal};
use crate::extract::{ApiJson, ApiQuery, IdPath};
use crate::routes::{identities as api, keys as keys_api, posture};
use crate::state::AppState;

/// Most identities the list reads (then searches in memory).
const LIST_MAX: usize = 10_000;

pub struct Listed {
    pub identity: proto::Identity,
    pub score: Option<u32>,
    pub findings: usize,
}

#[derive(Template)]
#[template(path = "console/identities.html")]
struct ListPage {
    chrome: Chrome,
    q: String,
    items: Vec<Listed>,
    /// Whether posture scores could be read (they need `keyward:keys:read` too).
    scored: bool,
}

#[derive(Debug, Deserialize, Default)]
pub struct Search {
    #[serde(default)]
    q: String,
}

async fn all_identities(
    st: &AppState,
    who: &Principal,
) -> Result<Vec<proto::Identity>, pages::PageError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let q = api::ListQuery {
            limit: Some(1000),
            cursor,
        };
        let axum::Json(page) = api::list(State(st.clone()), who.clone(), ApiQuery(q)).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) if out.len() < LIST_MAX => cursor = Some(c),
            _ => return Ok(out),
        }
    }
}

async fn posture_of(
    st: &AppState,
    who: &Principal,
    identity_id: Option<Uuid>,
) -> Option<proto::PostureReport> {
    let q = posture::PostureQuery {
        identity_id,
        stale_days: None,
        max_age_days: None,
    };
    posture::report(State(st.clone()), who.clone(), ApiQuery(q))
        .await
        .ok()
        .map(|axum::Json(r)| r)
}

pub async fn list(
    State(st): State<AppState>,
    user: ConsoleUser,
    ApiQuery(search): ApiQuery<Search>,
) -> PageResult {
    let identities = all_identities(&st, &user.who).await?;
    let report = posture_of(&st, &user.who, None).await;
    let needle = search.q.trim().to_lowercase();
    let items = identities
        .into_iter()
        .filter(|i| {
            needle.is_empty()
                || i.name.to_lowercase().contains(&needle)
                || i.owner.to_lowercase().contains(&needle)
                || i.description.to_lowercase().contains(&needle)
                || i.id.to_string() == needle
        })
        .map(|identity| {
            let p = report
                .as_ref()
                .and_then(|r| r.identities.iter().find(|p| p.id == identity.id));
            Listed {
                score: p.map(|p| p.score),
                findings: p.map(|p| p.findings.len()).unwrap_or(0),
                identity,
            }
        })
        .collect();
    Ok(pages::ok(ListPage {
        chrome: Chrome::new(&user, "identities"),
        q: search.q,
        items,
        scored: report.is_some(),
    }))
}

#[derive(Template)]
#[template(path = "console/identity_form.html")]
struct FormPage {
    chrome: Chrome,
    /// `None`: a new identity.
    identity: Option<proto::Identity>,
}

pub async fn new_form(user: ConsoleUser) -> PageResult {
    Ok(pages::ok(FormPage {
        chrome: Chrome::new(&user, "identities"),
        identity: None,
    }))
}

pub async fn edit_form(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
) -> PageResult {
    let axum::Json(identity) = api::show(State(st), user.who.clone(), IdPath(id)).await?;
    Ok(pages::ok(FormPage {
        chrome: Chrome::new(&user, "identities"),
        identity: Some(identity),
    }))
}

#[derive(Deserialize)]
pub struct IdentityForm {
    name: String,
    owner: String,
    #[serde(default)]
    description: String,
}

pub async fn create(
    State(st): State<AppState>,
    user: ConsoleUser,
    Form(f): Form<IdentityForm>,
) -> PageResult {
    let body = proto::CreateIdentity {
        name: f.name,
        owner: f.owner,
        description: Some(f.description),
        meta: None,
        enabled: None,
    };
    let (_, axum::Json(created)) = api::create(State(st), user.who, ApiJson(body)).await?;
    Ok(Redirect::to(&format!("/console/identities/{}", created.id)).into_response())
}

pub async fn update(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
    Form(f): Form<IdentityForm>,
) -> PageResult {
    let body = proto::UpdateIdentity {
        name: Some(f.name),
        owner: Some(f.owner),
        description: Some(f.description),
        meta: None,
        enabled: None,
    };
    let _updated = api::update(State(st), user.who, IdPath(id), ApiJson(body)).await?;
    Ok(Redirect::to(&format!("/console/identities/{id}")).into_response())
}

#[derive(Deserialize)]
pub struct Enabled {
    enabled: bool,
}

pub async fn set_enabled(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
    Form(f): Form<Enabled>,
) -> PageResult {
    let body = proto::UpdateIdentity {
        name: None,
        owner: None,
        description: None,
        meta: None,
        enabled: Some(f.enabled),
    };
    let _updated = api::update(State(st), user.who, IdPath(id), ApiJson(body)).await?;
    Ok(Redirect::to(&format!("/console/identities/{id}")).into_response())
}

#[derive(Template)]
#[template(path = "console/identity_delete.html")]
struct DeletePage {
    chrome: Chrome,
    identity: proto::Identity,
}

pub async fn delete_confirm(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
) -> PageResult {
    let axum::Json(identity) = api::show(State(st), user.who.clone(), IdPath(id)).await?;
    Ok(pages::ok(DeletePage {
        chrome: Chrome::new(&user, "identities"),
        identity,
    }))
}

pub async fn delete(
    State(st): State<AppState>,
    user: ConsoleUser,
    IdPath(id): IdPath,
) -> PageResult {
    let _deleted = api::delete(State(st), user.who, IdPath(id)).await?;
    Ok(Redirect::to("/console/identities").into_response())
}

pub struct Activity {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
}

#[derive(Template)]
#[template(path = "console/identity.html")]
struct ShowPage {
    chrome: Chrome,
    identity: proto::Identity,
    /// `None`: the credential may not read keys.
    keys: Option<Vec<proto::Key>>,
    posture: Option<proto::PostureIdentity>,
    chart: Option<ChartPart>,
    sources: Vec<proto::TopSource>,
    /// `None`: the credential may not read the audit log.
    activity: Option<Vec<Activity>>,
    /// The alerts about this identity's keys (`None`: no `keyward:audit:read`).
    alerts: Option<Vec<super::alerts::Entry>>,
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
    let axum::Json(identity) = api::show(State(st.clone()), who.clone(), IdPath(id)).await?;
    let keys = if who.require(KEYS_READ).is_ok() {
        let lq = keys_api::ListQuery {
            identity_id: Some(id),
            limit: Some(1000),
            cursor: None,
        };
        let axum::Json(page) = keys_api::list(State(st.clone()), who.clone(), ApiQuery(lq)).await?;
        Some(page.items)
    } else {
        None
    };
    let posture = posture_of(&st, who, Some(id))
        .await
        .and_then(|r| r.identities.into_iter().next());
    let subject = Subject::Identity(id);
    let (chart, sources) = usage::panel(&st, who, subject, q.range).await;
    let activity = if who.require(AUDIT_READ).is_ok() {
        let mut targets = vec![id.to_string()];
        targets.extend(keys.iter().flatten().map(|k| k.id.to_string()));
        let search = AuditSearch {
            targets,
            limit: 20,
            ..Default::default()
        };
        let records = st.store.search_audit(&search).await?;
        Some(
            records
                .into_iter()
                .map(|r| Activity {
                    at: pages::when(r.entry.at),
                    actor: r.entry.actor,
                    action: r.entry.action,
                    target: r.entry.target,
                })
                .collect(),
        )
    } else {
        None
    };
    let filter = super::alerts::Filter {
        key_id: None,
        identity_id: Some(id),
        limit: 20,
    };
    let alerts = super::alerts::gather(&st, who, &filter).await.ok();
    Ok(pages::ok(ShowPage {
        chrome: Chrome::new(&user, "identities"),
        identity,
        keys,
        posture,
        chart,
        sources,
        activity,
        alerts,
    }))
}

/// For templates: a key's state in a word.
pub fn key_state(k: &proto::Key) -> &'static str {
    let now = chrono::Utc::now();
    if k.revoked_at.is_some_and(|t| t <= now) {
        "revoked"
    } else if k.expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else if !k.enabled {
        "disabled"
    } else if k.rotated_to.is_some() {
        "rotating out"
    } else {
        "active"
    }
}

/// For templates: the badge class of a key's state.
pub fn key_badge(k: &proto::Key) -> &'static str {
    match key_state(k) {
        "active" => "ok",
        "rotating out" => "warn",
        _ => "bad",
    }
}
