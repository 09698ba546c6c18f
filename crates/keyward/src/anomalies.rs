//! `keyward anomalies` (what the detectors raised, newest first) and `keyward identity
//! anomaly-policy` (the automatic response: notify or disable the key).

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};
use comfy_table::{ContentArrangement, Table, presets};
use keyward_client::AnomalyParams;
use keyward_proto::{AnomalyList, AnomalyPolicy, PutAnomalyPolicy};
use uuid::Uuid;

use crate::commands::Ctx;
use crate::error::CliError;
use crate::output;
use crate::parse;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct AnomaliesArgs {
    /// Only anomalies about this key
    #[arg(long, value_name = "ID")]
    pub key: Option<Uuid>,
    /// Only anomalies about this identity's keys
    #[arg(long, value_name = "ID")]
    pub identity: Option<Uuid>,
    /// Only anomalies at or after this time, RFC 3339
    #[arg(long, value_name = "TIME", value_parser = parse::rfc3339)]
    pub since: Option<DateTime<Utc>>,
    /// Only this kind (NEW_NETWORK, TRAFFIC_SPIKE, UNUSUAL_HOUR, SCOPE_PROBING,
    /// DORMANT_KEY_USED, KEY_GUESSING, OLD_KEY_UNEXPECTED_SOURCE)
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this severity
    #[arg(long, value_parser = ["low", "medium", "high"])]
    pub severity: Option<String>,
    /// Items to show (newest first)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start at this page (a previous page's next_cursor)
    #[arg(long)]
    pub cursor: Option<String>,
    /// Output: a table, or the API's JSON (as --json)
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The identity
    pub id: Uuid,
    /// Set the response: notify (alert only) or disable_key (alert and disable the key;
    /// keys with keyward: scopes are never disabled automatically). Without it: show.
    #[arg(long, value_parser = ["notify", "disable_key"])]
    pub action: Option<String>,
    /// disable_key applies at this severity and above (default high)
    #[arg(long, value_parser = ["low", "medium", "high"], requires = "action")]
    pub min_severity: Option<String>,
}

fn api(ctx: &Ctx, error: keyward_client::Error) -> CliError {
    CliError::Api {
        error: Box::new(error),
        url: ctx.url.clone(),
    }
}

fn short(id: Option<Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
}

/// The anomalies as a table: when, what, how bad, about which key, what was done, and
/// the sentence that explains it.
pub fn anomalies_table(list: &AnomalyList) -> String {
    if list.items.is_empty() {
        return "no anomalies".into();
    }
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec!["at", "kind", "severity", "key", "action", "detail"]);
    for a in &list.items {
        t.add_row(vec![
            a.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            a.kind.clone(),
            a.severity.clone(),
            short(a.key_id),
            a.action_taken.clone().unwrap_or_else(|| "pending".into()),
            a.detail.clone(),
        ]);
    }
    let mut out = t.to_string();
    if let Some(c) = &list.next_cursor {
        out.push_str(&format!("\nmore: --cursor {c}"));
    }
    out
}

pub async fn list(ctx: &Ctx, args: AnomaliesArgs) -> Result<(), CliError> {
    let list = ctx
        .client
        .anomalies(&AnomalyParams {
            key_id: args.key,
            identity_id: args.identity,
            since: args.since,
            kind: args.kind,
            severity: args.severity,
            limit: args.limit,
            cursor: args.cursor,
        })
        .await
        .map_err(|e| api(ctx, e))?;
    if ctx.json || args.format == Format::Json {
        println!("{}", output::json(&list));
    } else {
        println!("{}", anomalies_table(&list));
    }
    Ok(())
}

pub async fn policy(ctx: &Ctx, args: PolicyArgs) -> Result<(), CliError> {
    let c = &ctx.client;
    let policy: AnomalyPolicy = match args.action {
        Some(action) => {
            c.set_anomaly_policy(
                args.id,
                &PutAnomalyPolicy {
                    action,
                    min_severity: args.min_severity,
                },
            )
            .await
        }
        None => c.anomaly_policy(args.id).await,
    }
    .map_err(|e| api(ctx, e))?;
    if ctx.json {
        println!("{}", output::json(&policy));
    } else {
        println!(
            "identity {}: {} (disable_key applies from severity {})",
            policy.identity_id, policy.action, policy.min_severity
        );
    }
    Ok(())
}
