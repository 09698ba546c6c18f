//! `keyward usage` and `keyward report posture`: usage analytics with a small terminal
//! chart, and the posture report.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::{ArgGroup, Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use keyward_client::{PostureParams, TopParams, UsageParams};
use keyward_proto::{PostureReport, UsageResponse, UsageTopResponse};
use serde::Serialize;
use uuid::Uuid;

use crate::commands::Ctx;
use crate::error::CliError;
use crate::output;
use crate::parse;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("subject").args(["key", "identity"]).required(true)))]
pub struct UsageArgs {
    /// The key whose verifications to count
    #[arg(long, value_name = "ID")]
    pub key: Option<Uuid>,
    /// The identity whose keys' verifications to count
    #[arg(long, value_name = "ID")]
    pub identity: Option<Uuid>,
    /// Start, RFC 3339 (default: an hour, a day or 30 days before --to, by bucket)
    #[arg(long, value_name = "TIME", value_parser = parse::rfc3339)]
    pub from: Option<DateTime<Utc>>,
    /// End, RFC 3339, exclusive (default: now)
    #[arg(long, value_name = "TIME", value_parser = parse::rfc3339)]
    pub to: Option<DateTime<Utc>>,
    /// Bucket size
    #[arg(long, default_value = "hour", value_parser = ["minute", "hour", "day"])]
    pub bucket: String,
    /// Also show the top source addresses (and, for an identity, its busiest keys)
    #[arg(long)]
    pub top: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// Findings per identity (no expiry, not rotated, stale, unused scopes, no IP
    /// restriction, admin keys) and a score from 0 to 100
    Posture {
        /// Only this identity
        #[arg(long, value_name = "ID")]
        identity: Option<Uuid>,
        /// Unused this many days makes a key stale and a scope unused
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3660))]
        stale_days: Option<u32>,
        /// Keys older than this many days should have been rotated
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3660))]
        max_age_days: Option<u32>,
    },
}

fn api(ctx: &Ctx, error: keyward_client::Error) -> CliError {
    CliError::Api {
        error: Box::new(error),
        url: ctx.url.clone(),
    }
}

/// `--json` prints the API's JSON; `human` renders it otherwise.
fn print<T: Serialize>(ctx: &Ctx, value: &T, human: impl FnOnce(&T) -> String) {
    if ctx.json {
        println!("{}", output::json(value));
    } else {
        println!("{}", human(value));
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub async fn usage(ctx: &Ctx, args: UsageArgs) -> Result<(), CliError> {
    let c = &ctx.client;
    let u = c
        .usage(&UsageParams {
            key_id: args.key,
            identity_id: args.identity,
            from: args.from,
            to: args.to,
            bucket: Some(args.bucket.clone()),
        })
        .await
        .map_err(|e| api(ctx, e))?;
    let top = if args.top {
        Some(
            c.usage_top(&TopParams {
                key_id: args.key,
                identity_id: args.identity,
                from: u.from,
                to: u.to,
                limit: Some(10),
            })
            .await
            .map_err(|e| api(ctx, e))?,
        )
    } else {
        None
    };
    if ctx.json {
        #[derive(Serialize)]
        struct Both<'a> {
            #[serde(flatten)]
            usage: &'a UsageResponse,
            #[serde(skip_serializing_if = "Option::is_none")]
            top: Option<&'a UsageTopResponse>,
        }
        print(
            ctx,
            &Both {
                usage: &u,
                top: top.as_ref(),
            },
            |_| String::new(),
        );
        return Ok(());
    }
    println!("{}", usage_text(&u));
    if let Some(top) = &top {
        println!("{}", top_text(top));
    }
    Ok(())
}

/// The verifications of each bucket from `from` to `to`, empty buckets included.
fn series(u: &UsageResponse) -> Vec<(DateTime<Utc>, u64)> {
    let step = match u.bucket.as_str() {
        "minute" => TimeDelta::minutes(1),
        "day" => TimeDelta::days(1),
        _ => TimeDelta::hours(1),
    };
    let total = |counts: &keyward_proto::CodeCounts| counts.values().sum::<u64>();
    let (Some(from), Some(to)) = (u.from, u.to) else {
        return u
            .buckets
            .iter()
            .map(|b| (b.start, total(&b.counts)))
            .collect();
    };
    let mut out = Vec::new();
    let mut at = from;
    let mut buckets = u.buckets.iter().peekable();
    // At most a few thousand points (the server caps the range).
    while at < to && out.len() < 20_000 {
        let mut n = 0;
        while let Some(b) = buckets.peek() {
            if b.start < at + step {
                n += total(&b.counts);
                buckets.next();
            } else {
                break;
            }
        }
        out.push((at, n));
        at += step;
    }
    out
}

/// A sparkline of `values`, resampled to at most `width` cells (each the sum of the
/// values it covers).
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let per_cell = values.len().div_ceil(width);
    let cells: Vec<u64> = values.chunks(per_cell).map(|c| c.iter().sum()).collect();
    let max = cells.iter().copied().max().unwrap_or(0);
    cells
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                ' '
            } else {
                // 1..=max maps onto the 8 heights; any use shows at least the lowest.
                BARS[((v * 7).div_ceil(max)) as usize]
            }
        })
        .collect()
}

/// A horizontal bar of `value` against `max`, `width` cells wide.
pub fn bar(value: u64, max: u64, width: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let cells = ((value as f64 / max as f64) * width as f64).round() as usize;
    "█".repeat(cells.max(usize::from(value > 0)))
}

fn usage_text(u: &UsageResponse) -> String {
    let points = series(u);
    let values: Vec<u64> = points.iter().map(|p| p.1).collect();
    let total: u64 = u.total.values().sum();
    let peak = values.iter().copied().max().unwrap_or(0);
    let mut out = String::new();
    if let (Some(from), Some(to)) = (u.from, u.to) {
        out.push_str(&format!(
            "verifications per {} from {} to {}\n",
            u.bucket,
            time(&from),
            time(&to)
        ));
    }
    out.push_str(&format!(
        "{}\n{total} in all, at most {peak} per {}\n",
        sparkline(&values, 60),
        u.bucket
    ));
    let codes: Vec<&String> = u.total.keys().collect();
    let mut header = vec!["START", "TOTAL"];
    header.extend(codes.iter().map(|c| c.as_str()));
    header.push("");
    let mut t = table(&header);
    for b in &u.buckets {
        let n: u64 = b.counts.values().sum();
        let mut row = vec![time(&b.start), n.to_string()];
        row.extend(
            codes
                .iter()
                .map(|c| b.counts.get(*c).copied().unwrap_or(0).to_string()),
        );
        row.push(bar(n, peak, 20));
        t.add_row(row);
    }
    if u.buckets.is_empty() {
        out.push_str("no verifications in this range");
    } else {
        out.push_str(&t.to_string());
    }
    out
}

fn top_text(top: &UsageTopResponse) -> String {
    let mut out = String::from("top source addresses\n");
    let max = top.sources.first().map_or(0, |s| s.count);
    let mut t = table(&["ADDRESS", "VERIFICATIONS", ""]);
    for s in &top.sources {
        t.add_row(vec![
            s.ip.clone(),
            s.count.to_string(),
            bar(s.count, max, 30),
        ]);
    }
    out.push_str(&t.to_string());
    if !top.keys.is_empty() {
        out.push_str("\ntop keys\n");
        let max = top.keys.first().map_or(0, |k| k.count);
        let mut t = table(&["KEY", "VERIFICATIONS", "VALID", ""]);
        for k in &top.keys {
            t.add_row(vec![
                k.key_id.to_string(),
                k.count.to_string(),
                k.valid.to_string(),
                bar(k.count, max, 30),
            ]);
        }
        out.push_str(&t.to_string());
    }
    out
}

pub async fn report(ctx: &Ctx, cmd: ReportCmd) -> Result<(), CliError> {
    match cmd {
        ReportCmd::Posture {
            identity,
            stale_days,
            max_age_days,
        } => {
            let r = ctx
                .client
                .posture_report(&PostureParams {
                    identity_id: identity,
                    stale_days,
                    max_age_days,
                })
                .await
                .map_err(|e| api(ctx, e))?;
            print(ctx, &r, posture_text);
        }
    }
    Ok(())
}

fn kind_name(k: keyward_proto::FindingKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn posture_text(r: &PostureReport) -> String {
    let mut t = table(&["IDENTITY", "OWNER", "SCORE", "KEY", "FINDING", "DETAIL"]);
    for i in &r.identities {
        if i.findings.is_empty() {
            t.add_row(vec![
                i.name.clone(),
                i.owner.clone(),
                i.score.to_string(),
                String::new(),
                "-".into(),
                "nothing to fix".into(),
            ]);
        }
        for (n, f) in i.findings.iter().enumerate() {
            let first = n == 0;
            t.add_row(vec![
                if first { i.name.clone() } else { String::new() },
                if first {
                    i.owner.clone()
                } else {
                    String::new()
                },
                if first {
                    i.score.to_string()
                } else {
                    String::new()
                },
                f.key_id.map(|k| k.to_string()).unwrap_or_default(),
                kind_name(f.kind),
                f.detail.clone(),
            ]);
        }
    }
    format!(
        "{}\nscore: 100 minus ADMIN_KEY 25, NOT_ROTATED 15, STALE 15, NO_EXPIRY 10, \
         UNUSED_SCOPES 10, NO_IP_RESTRICTION 5 per finding (stale after {} days, \
         rotate after {} days)",
        t, r.stale_days, r.max_age_days
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_peak() {
        assert_eq!(sparkline(&[0, 1, 4, 8], 10), " ▂▅█");
        assert_eq!(sparkline(&[0, 0], 10), "  ");
        assert_eq!(sparkline(&[1; 100], 10).chars().count(), 10);
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn bars_show_any_use() {
        assert_eq!(bar(0, 10, 10), "");
        assert_eq!(bar(1, 1000, 10), "█");
        assert_eq!(bar(10, 10, 5), "█████");
    }
}
