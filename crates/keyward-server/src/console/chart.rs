//! Usage charts as SVG drawn on the server: verifications per time bucket, stacked by
//! outcome. No script is needed to see them; each bar segment has a `<title>` tooltip,
//! and the chart carries a text summary for screen readers.

use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Utc};
use keyward_proto as proto;

/// Outcomes in stacking order (accepted first), with their colours (the legend's CSS
/// classes `sw-<CODE>` use the same).
pub const CODES: &[(&str, &str)] = &[
    ("VALID", "#1a7f37"),
    ("RATE_LIMITED", "#bf8700"),
    ("USAGE_EXCEEDED", "#8250df"),
    ("INSUFFICIENT_SCOPE", "#0969da"),
    ("IP_NOT_ALLOWED", "#cf222e"),
    ("REVOKED", "#6e7781"),
    ("EXPIRED", "#953800"),
    ("DISABLED", "#424a53"),
    ("NOT_FOUND", "#a40e26"),
    ("MALFORMED", "#e16f24"),
];

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 26.0;
const TOP: f64 = 10.0;
/// Most bars drawn; longer ranges are the caller's to bucket more coarsely.
const MAX_BARS: usize = 400;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The bucket starts from `from` to `to`, so empty buckets show as gaps.
fn slots(from: DateTime<Utc>, to: DateTime<Utc>, step: TimeDelta) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to && out.len() < MAX_BARS {
        out.push(t);
        t += step;
    }
    out
}

fn step_of(bucket: &str) -> TimeDelta {
    match bucket {
        "minute" => TimeDelta::minutes(1),
        "day" => TimeDelta::days(1),
        _ => TimeDelta::hours(1),
    }
}

fn label(t: DateTime<Utc>, bucket: &str) -> String {
    match bucket {
        "day" => t.format("%b %d").to_string(),
        _ => t.format("%H:%M").to_string(),
    }
}

/// The chart of one usage answer, as an `<svg>` element (with `title` as its name).
pub fn usage_svg(usage: &proto::UsageResponse, title: &str) -> String {
    let step = step_of(&usage.bucket);
    let to = usage.to.unwrap_or_else(Utc::now);
    let from = usage
        .from
        .or_else(|| usage.buckets.first().map(|b| b.start))
        .unwrap_or(to - step * 24);
    let slots = slots(from, to, step);
    let by_start: std::collections::HashMap<DateTime<Utc>, &proto::CodeCounts> =
        usage.buckets.iter().map(|b| (b.start, &b.counts)).collect();
    let total_of = |c: &proto::CodeCounts| c.values().sum::<u64>();
    let max = slots
        .iter()
        .filter_map(|s| by_start.get(s))
        .map(|c| total_of(c))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = W - LEFT - 4.0;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w / slots.len().max(1) as f64;
    let total: u64 = usage.total.values().sum();
    let summary = if total == 0 {
        "No verifications in this period.".to_owned()
    } else {
        let parts: Vec<String> = CODES
            .iter()
            .filter_map(|(code, _)| usage.total.get(*code).map(|n| format!("{code} {n}")))
            .collect();
        format!("{total} verifications: {}.", parts.join(", "))
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" data-total="{total}"><title id="chart-title">{}</title><desc id="chart-desc">{}</desc>"#,
        escape(title),
        escape(&summary)
    );
    // Axes and the maximum's gridline.
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}" stroke="#8c959f"/><line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#8c959f"/><line x1="{LEFT}" y1="{TOP}" x2="{x1}" y2="{TOP}" stroke="#d0d7de" stroke-dasharray="4 4"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end" fill="#57606a">{max}</text><text x="{tx}" y="{y0}" font-size="11" text-anchor="end" fill="#57606a">0</text>"##,
        y0 = TOP + plot_h,
        x1 = W - 4.0,
        tx = LEFT - 6.0,
        ty = TOP + 10.0,
    );
    for (i, start) in slots.iter().enumerate() {
        let Some(counts) = by_start.get(start) else {
            continue;
        };
        let x = LEFT + i as f64 * bar_w + bar_w * 0.1;
        let w = (bar_w * 0.8).max(1.0);
        let mut y = TOP + plot_h;
        for (code, colour) in CODES {
            let Some(&n) = counts.get(*code) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            let h = plot_h * n as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{colour}"><title>{} · {code}: {n}</title></rect>"#,
                escape(&super::pages::when(start)),
            );
        }
    }
    // Time labels: first, middle and last bucket.
    let picks = [0, slots.len() / 2, slots.len().saturating_sub(1)];
    let mut seen = Vec::new();
    for (n, i) in picks.into_iter().enumerate() {
        if seen.contains(&i) || i >= slots.len() {
            continue;
        }
        seen.push(i);
        let anchor = ["start", "middle", "end"][n];
        let x = LEFT + i as f64 * bar_w + bar_w / 2.0;
        let _ = write!(
            svg,
            r##"<text x="{x:.2}" y="{}" font-size="11" text-anchor="{anchor}" fill="#57606a">{}</text>"##,
            H - 8.0,
            escape(&label(slots[i], &usage.bucket))
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(counts: &[(i64, &str, u64)]) -> proto::UsageResponse {
        let from: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut buckets: Vec<proto::UsageBucket> = Vec::new();
        let mut total = proto::CodeCounts::new();
        for (minute, code, n) in counts {
            let start = from + TimeDelta::minutes(*minute);
            match buckets.iter_mut().find(|b| b.start == start) {
                Some(b) => {
                    b.counts.insert((*code).to_owned(), *n);
                }
                None => buckets.push(proto::UsageBucket {
                    start,
                    counts: [((*code).to_owned(), *n)].into_iter().collect(),
                }),
            }
            *total.entry((*code).to_owned()).or_default() += n;
        }
        proto::UsageResponse {
            buckets,
            total,
            bucket: "minute".into(),
            from: Some(from),
            to: Some(from + TimeDelta::minutes(60)),
        }
    }

    #[test]
    fn bars_stack_by_outcome_with_a_summary() {
        let svg = usage_svg(
            &usage(&[(0, "VALID", 3), (0, "RATE_LIMITED", 1), (5, "VALID", 4)]),
            "Usage <of> a key",
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("data-total=\"8\""));
        assert!(svg.contains("8 verifications: VALID 7, RATE_LIMITED 1."));
        // Titles are escaped.
        assert!(svg.contains("Usage &lt;of&gt; a key"));
        // The tallest bar (4 at minute 5) reaches the top of the plot.
        assert!(svg.contains(&format!("height=\"{:.2}\"", H - TOP - BOTTOM)));
    }

    #[test]
    fn empty_usage_draws_axes_and_says_so() {
        let svg = usage_svg(&usage(&[]), "Nothing");
        assert_eq!(svg.matches("<rect").count(), 0);
        assert!(svg.contains("No verifications in this period."));
    }
}
