//! Usage on console pages: the chart of verifications by outcome (per key, identity or
//! overall) and the top source addresses, through the API's usage handlers.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use keyward_core::usage::Bucket;
use keyward_proto as proto;
use serde::Deserialize;
use uuid::Uuid;

use super::chart;
use super::pages::PageError;
use crate::auth::Principal;
use crate::extract::ApiQuery;
use crate::routes::usage as api;
use crate::state::AppState;

/// Whose usage a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Overall,
    Key(Uuid),
    Identity(Uuid),
}

/// The period a chart covers, and its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    /// The last hour, per minute.
    #[default]
    Hour,
    /// The last day, per hour.
    Day,
    /// The last 30 days, per day.
    Month,
}

impl Range {
    fn bucket(self) -> (&'static str, TimeDelta) {
        match self {
            Range::Hour => ("minute", TimeDelta::hours(1)),
            Range::Day => ("hour", TimeDelta::days(1)),
            Range::Month => ("day", TimeDelta::days(30)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
            Range::Month => "month",
        }
    }
}

/// The query of the chart fragment (`/console/usage/chart`).
#[derive(Debug, Deserialize)]
pub struct ChartQuery {
    pub key_id: Option<Uuid>,
    pub identity_id: Option<Uuid>,
    #[serde(default)]
    pub range: Range,
}

impl ChartQuery {
    pub fn subject(&self) -> Subject {
        match (self.key_id, self.identity_id) {
            (Some(k), _) => Subject::Key(k),
            (None, Some(i)) => Subject::Identity(i),
            (None, None) => Subject::Overall,
        }
    }
}

/// The chart card: the SVG, its legend, range links, and the htmx attributes that
/// refresh it every 10 seconds.
#[derive(Template)]
#[template(path = "console/chart.html")]
pub struct ChartPart {
    pub svg: String,
    pub total: u64,
    pub legend: Vec<(&'static str, u64)>,
    /// The query string of this chart (without the range).
    pub query: String,
    pub range: &'static str,
    pub ranges: [(&'static str, &'static str); 3],
}

async fn counts(
    st: &AppState,
    who: &Principal,
    subject: Subject,
    range: Range,
) -> Result<proto::UsageResponse, PageError> {
    let (bucket, span) = range.bucket();
    let to = crate::now() + TimeDelta::seconds(1);
    let from = to - span;
    match subject {
        Subject::Overall => {
            api::require_usage_read(who)?;
            let b = Bucket::parse(bucket).expect("a known bucket");
            let rows = st.store.usage_counts_overall(b, from, to).await?;
            let mut buckets: BTreeMap<DateTime<Utc>, proto::CodeCounts> = BTreeMap::new();
            let mut total = proto::CodeCounts::new();
            for c in rows {
                *buckets
                    .entry(c.start)
                    .or_default()
                    .entry(c.code.as_str().to_owned())
                    .or_default() += c.count;
                *total.entry(c.code.as_str().to_owned()).or_default() += c.count;
            }
            Ok(proto::UsageResponse {
                buckets: buckets
                    .into_iter()
                    .map(|(start, counts)| proto::UsageBucket { start, counts })
                    .collect(),
                total,
                bucket: bucket.to_owned(),
                from: Some(b.start(from)),
                to: Some(to),
            })
        }
        Subject::Key(_) | Subject::Identity(_) => {
            let (key_id, identity_id) = match subject {
                Subject::Key(k) => (Some(k), None),
                Subject::Identity(i) => (None, Some(i)),
                Subject::Overall => (None, None),
            };
            let q = api::UsageQuery {
                key_id,
                identity_id,
                from: Some(from),
                to: Some(to),
                bucket: Some(bucket.to_owned()),
            };
            let axum::Json(u) = api::usage(State(st.clone()), who.clone(), ApiQuery(q)).await?;
            Ok(u)
        }
    }
}

/// The chart card of `subject` over `range`.
pub async fn chart_part(
    st: &AppState,
    who: &Principal,
    subject: Subject,
    range: Range,
) -> Result<ChartPart, PageError> {
    let usage = counts(st, who, subject, range).await?;
    let (title, query) = match subject {
        Subject::Overall => ("Verifications, all keys".to_owned(), String::new()),
        Subject::Key(k) => (format!("Verifications of key {k}"), format!("key_id={k}&")),
        Subject::Identity(i) => (
            format!("Verifications of identity {i}"),
            format!("identity_id={i}&"),
        ),
    };
    Ok(ChartPart {
        svg: chart::usage_svg(&usage, &title),
        total: usage.total.values().sum(),
        legend: chart::CODES
            .iter()
            .filter_map(|(code, _)| usage.total.get(*code).map(|n| (*code, *n)))
            .collect(),
        query,
        range: range.as_str(),
        ranges: [
            ("hour", "Last hour"),
            ("day", "Last day"),
            ("month", "Last 30 days"),
        ],
    })
}

/// The top source addresses (and, for all keys or an identity, the top keys) of the
/// last day.
pub async fn top(
    st: &AppState,
    who: &Principal,
    subject: Subject,
) -> Result<proto::UsageTopResponse, PageError> {
    let (key_id, identity_id) = match subject {
        Subject::Key(k) => (Some(k), None),
        Subject::Identity(i) => (None, Some(i)),
        Subject::Overall => (None, None),
    };
    let q = api::TopQuery {
        key_id,
        identity_id,
        from: None,
        to: None,
        limit: Some(10),
    };
    let axum::Json(t) = api::top(State(st.clone()), who.clone(), ApiQuery(q)).await?;
    Ok(t)
}

/// The usage panel of a key's or identity's page: the chart and the top source
/// addresses, each left out when the credential may not read usage.
pub async fn panel(
    st: &AppState,
    who: &Principal,
    subject: Subject,
    range: Range,
) -> (Option<ChartPart>, Vec<proto::TopSource>) {
    let chart = chart_part(st, who, subject, range).await.ok();
    let sources = top(st, who, subject)
        .await
        .map(|t| t.sources)
        .unwrap_or_default();
    (chart, sources)
}
