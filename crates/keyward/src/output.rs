//! Human output: tables (comfy-table). JSON output is the API's JSON, pretty-printed.

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use keyward_proto::{AuditRecord, CreatedKey, Identity, Key, Meta, VerifyResponse};
use serde::Serialize;

pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("wire types serialise")
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    t
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: &Option<DateTime<Utc>>, none: &str) -> String {
    t.as_ref().map(time).unwrap_or_else(|| none.to_string())
}

fn meta(m: &Meta) -> String {
    if m.is_empty() {
        String::new()
    } else {
        serde_json::to_string(m).unwrap_or_default()
    }
}

fn list(v: &[String], none: &str) -> String {
    if v.is_empty() {
        none.to_string()
    } else {
        v.join("\n")
    }
}

// ---------------------------------------------------------------- identities

pub fn identities(items: &[Identity]) -> String {
    let mut t = table(&["ID", "NAME", "OWNER", "ENABLED", "CREATED"]);
    for i in items {
        t.add_row(vec![
            i.id.to_string(),
            i.name.clone(),
            i.owner.clone(),
            yes_no(i.enabled).into(),
            time(&i.created_at),
        ]);
    }
    t.to_string()
}

pub fn identity(i: &Identity) -> String {
    let mut t = table(&[]);
    t.add_row(vec!["id".to_string(), i.id.to_string()]);
    t.add_row(vec!["name".to_string(), i.name.clone()]);
    t.add_row(vec!["owner".to_string(), i.owner.clone()]);
    t.add_row(vec!["description".to_string(), i.description.clone()]);
    t.add_row(vec!["enabled".to_string(), yes_no(i.enabled).into()]);
    t.add_row(vec!["meta".to_string(), meta(&i.meta)]);
    t.add_row(vec!["created_at".to_string(), time(&i.created_at)]);
    t.add_row(vec!["updated_at".to_string(), time(&i.updated_at)]);
    t.to_string()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

// ---------------------------------------------------------------- keys

/// A one-word state: active, disabled, expired, revoked, or rotating (revoked later).
pub fn key_status(k: &Key, now: DateTime<Utc>) -> &'static str {
    match k.revoked_at {
        Some(at) if at <= now => return "revoked",
        Some(_) => return "rotating",
        None => {}
    }
    if k.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if !k.enabled {
        "disabled"
    } else {
        "active"
    }
}

pub fn keys(items: &[Key], now: DateTime<Utc>) -> String {
    let mut t = table(&[
        "ID",
        "NAME",
        "START",
        "IDENTITY",
        "SCOPES",
        "STATUS",
        "EXPIRES",
        "LAST USED",
    ]);
    for k in items {
        t.add_row(vec![
            k.id.to_string(),
            k.name.clone(),
            format!("{}…", k.start),
            k.identity_id.to_string(),
            list(&k.scopes, ""),
            key_status(k, now).into(),
            opt_time(&k.expires_at, "never"),
            opt_time(&k.last_used_at, "never"),
        ]);
    }
    t.to_string()
}

pub fn key(k: &Key, now: DateTime<Utc>) -> String {
    let rate_limits: Vec<String> = k
        .rate_limits
        .iter()
        .map(|r| format!("{}: {}/{}s", r.name, r.limit, r.window_seconds))
        .collect();
    let mut t = table(&[]);
    let rows: Vec<(&str, String)> = vec![
        ("id", k.id.to_string()),
        ("identity_id", k.identity_id.to_string()),
        ("name", k.name.clone()),
        ("prefix", k.prefix.clone()),
        ("start", format!("{}…", k.start)),
        ("status", key_status(k, now).into()),
        ("scopes", list(&k.scopes, "(none)")),
        ("enabled", yes_no(k.enabled).into()),
        ("created_at", time(&k.created_at)),
        ("updated_at", time(&k.updated_at)),
        ("expires_at", opt_time(&k.expires_at, "never")),
        ("revoked_at", opt_time(&k.revoked_at, "-")),
        ("ip_allowlist", list(&k.ip_allowlist, "(any)")),
        ("rate_limits", list(&rate_limits, "(none)")),
        (
            "remaining",
            k.remaining
                .map(|r| r.to_string())
                .unwrap_or_else(|| "unlimited".into()),
        ),
        ("last_used_at", opt_time(&k.last_used_at, "never")),
        ("meta", meta(&k.meta)),
        (
            "rotated_from",
            k.rotated_from.map(|u| u.to_string()).unwrap_or_default(),
        ),
        (
            "rotated_to",
            k.rotated_to.map(|u| u.to_string()).unwrap_or_default(),
        ),
    ];
    for (name, value) in rows {
        t.add_row(vec![name.to_string(), value]);
    }
    t.to_string()
}

/// A new key: the key itself, prominently, a one-line warning, then its fields.
pub fn created_key(k: &CreatedKey, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    out.push_str(&format!("\n    {}\n\n", k.key));
    out.push_str(
        "warning: this key is shown only once; store it now (Keyward keeps only a digest).\n",
    );
    if let Some(prev) = &k.previous {
        out.push_str(&format!(
            "previous key {} keeps working until {}\n",
            prev.id,
            time(&prev.expires_at)
        ));
    }
    out.push('\n');
    out.push_str(&key(&k.fields, now));
    out
}

// ---------------------------------------------------------------- verify, audit

pub fn verify(v: &VerifyResponse) -> String {
    let code = serde_json::to_value(v.code)
        .ok()
        .and_then(|c| c.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", v.code));
    let mut out = if v.valid {
        format!("valid ({code})\n")
    } else {
        format!("not valid: {code}\n")
    };
    let mut t = table(&[]);
    let mut any = false;
    let mut row = |name: &str, value: String| {
        t.add_row(vec![name.to_string(), value]);
        any = true;
    };
    if let Some(id) = v.key_id {
        row("key_id", id.to_string());
    }
    if let Some(id) = v.identity_id {
        row("identity_id", id.to_string());
    }
    if let Some(s) = &v.scopes {
        row("scopes", list(s, "(none)"));
    }
    if let Some(r) = v.remaining {
        row("remaining", r.to_string());
    }
    if let Some(rl) = &v.rate_limit {
        row(
            "rate_limit",
            format!(
                "{}: {}/{} left, resets {}",
                rl.name,
                rl.remaining,
                rl.limit,
                time(&rl.reset_at)
            ),
        );
    }
    if let Some(at) = &v.expires_at {
        row("expires_at", time(at));
    }
    if any {
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}

pub fn audit(items: &[AuditRecord]) -> String {
    let mut t = table(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET"]);
    for r in items {
        t.add_row(vec![
            r.seq.to_string(),
            time(&r.at),
            r.actor.clone(),
            r.action.clone(),
            r.target.clone(),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use uuid::Uuid;

    fn sample_key(now: DateTime<Utc>) -> Key {
        Key {
            id: Uuid::nil(),
            identity_id: Uuid::nil(),
            name: "ci".into(),
            prefix: "kw".into(),
            start: "kw_AbCd".into(),
            scopes: vec!["orders:read".into()],
            created_at: now,
            updated_at: now,
            expires_at: None,
            revoked_at: None,
            enabled: true,
            ip_allowlist: vec![],
            rate_limits: vec![],
            remaining: None,
            last_used_at: None,
            meta: Meta::new(),
            rotated_from: None,
            rotated_to: None,
        }
    }

    #[test]
    fn statuses() {
        let now = Utc::now();
        let mut k = sample_key(now);
        assert_eq!(key_status(&k, now), "active");
        k.enabled = false;
        assert_eq!(key_status(&k, now), "disabled");
        k.expires_at = Some(now - Duration::seconds(1));
        assert_eq!(key_status(&k, now), "expired");
        k.revoked_at = Some(now + Duration::hours(1));
        assert_eq!(key_status(&k, now), "rotating");
        k.revoked_at = Some(now);
        assert_eq!(key_status(&k, now), "revoked");
    }

    #[test]
    fn created_key_shows_the_key_and_the_warning() {
        let now = Utc::now();
        let created = CreatedKey {
            key: "kw_secretbody".into(),
            fields: sample_key(now),
            previous: None,
        };
        let out = created_key(&created, now);
        assert!(out.contains("\n    kw_secretbody\n"));
        assert!(out.contains("shown only once"));
        // The table shows only the start.
        assert_eq!(out.matches("kw_secretbody").count(), 1);
    }
}
