//! The overview (the console's home): usage of all keys by outcome, the top source
//! addresses and keys of the last day, and the newest alerts. Also the chart fragment
//! that htmx refreshes in place.

use askama::Template;
use axum::extract::State;
use keyward_proto as proto;
use serde::Deserialize;

use super::alerts::{self, Entry};
use super::pages::{self, Chrome, PageResult};
use super::session::ConsoleUser;
use super::usage::{self, ChartPart, ChartQuery, Range, Subject};
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    chart: Option<ChartPart>,
    top: Option<proto::UsageTopResponse>,
    /// `None`: the credential may not read the audit log, where alerts are.
    alerts: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct OverviewQuery {
    #[serde(default)]
    range: Range,
}

pub async fn show(
    State(st): State<AppState>,
    user: ConsoleUser,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> PageResult {
    let who = &user.who;
    let chart = usage::chart_part(&st, who, Subject::Overall, q.range)
        .await
        .ok();
    let top = usage::top(&st, who, Subject::Overall).await.ok();
    let filter = alerts::Filter {
        limit: 5,
        ..Default::default()
    };
    let alerts = alerts::gather(&st, who, &filter).await.ok();
    Ok(pages::ok(OverviewPage {
        chrome: Chrome::new(&user, "overview"),
        chart,
        top,
        alerts,
    }))
}

/// The chart card alone (htmx swaps it in place every few seconds).
pub async fn chart(
    State(st): State<AppState>,
    user: ConsoleUser,
    ApiQuery(q): ApiQuery<ChartQuery>,
) -> PageResult {
    let part = usage::chart_part(&st, &user.who, q.subject(), q.range).await?;
    Ok(pages::ok(part))
}
