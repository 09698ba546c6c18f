//! Output formats: human, JSON (the contract's shape, plus a summary), SARIF 2.1.0.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::rules::{GENERIC_PASSWORD_RULE, GENERIC_SECRET_RULE, KEYWARD_RULE, RULES};
use crate::scan::Report;

/// One line per finding (`path:line:column  rule  redacted`), then a summary line.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{}:{}:{}  {}  {}",
            f.path, f.line, f.column, f.rule, f.redacted
        ));
        if f.keyward {
            out.push_str("  [Keyward key, checksum valid]");
        }
        if let Some(c) = &f.commit {
            out.push_str(&format!("  (commit {})", &c[..c.len().min(12)]));
        }
        out.push('\n');
    }
    out.push_str(&summary(report));
    out.push('\n');
    out
}

/// `3 findings (1 Keyward key) in 120 files (1.2 MiB); skipped 4: 3 binary, 1 too large`
pub fn summary(report: &Report) -> String {
    let n = report.findings.len();
    let k = report.findings.iter().filter(|f| f.keyward).count();
    let mut s = format!(
        "{n} finding{} ({k} Keyward key{}) in {} file{} ({:.1} MiB)",
        plural(n),
        plural(k),
        report.files,
        plural(report.files as usize),
        report.bytes as f64 / (1024.0 * 1024.0)
    );
    if report.baselined > 0 {
        s.push_str(&format!("; {} accepted by the baseline", report.baselined));
    }
    if !report.skipped.is_empty() {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for sk in &report.skipped {
            *kinds.entry(sk.reason.kind()).or_default() += 1;
        }
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        s.push_str(&format!(
            "; skipped {}: {}",
            report.skipped.len(),
            parts.join(", ")
        ));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `{"findings": [...], "skipped": [...], "summary": {...}}`.
pub fn json(report: &Report) -> String {
    let v = json!({
        "findings": report.findings,
        "skipped": report.skipped,
        "summary": {
            "findings": report.findings.len(),
            "keyward": report.findings.iter().filter(|f| f.keyward).count(),
            "files": report.files,
            "bytes": report.bytes,
            "skipped": report.skipped.len(),
            "baselined": report.baselined,
        },
    });
    serde_json::to_string_pretty(&v).expect("JSON values serialise")
}

fn rule_description(id: &str) -> &'static str {
    match id {
        KEYWARD_RULE => "Keyward API key (format and checksum hold)",
        GENERIC_SECRET_RULE => "Random-looking value assigned to a secret-like name",
        GENERIC_PASSWORD_RULE => "Password assigned in code or configuration",
        _ => RULES
            .iter()
            .find(|r| r.id == id)
            .map_or("Secret", |r| r.description),
    }
}

/// Percent-encodes what a relative URI reference cannot hold.
fn uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(char::from(b))
            }
            b'\\' => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A SARIF 2.1.0 log with one run. Each result has the rule, the location, the redacted
/// value in its message and the fingerprint as a partial fingerprint.
pub fn sarif(report: &Report) -> String {
    let mut rule_ids: Vec<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
    rule_ids.sort_unstable();
    rule_ids.dedup();
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "name": id,
                "shortDescription": {"text": rule_description(id)},
                "defaultConfiguration": {"level": "error"},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut props = json!({"keyward": f.keyward, "redacted": f.redacted});
            if let Some(c) = &f.commit {
                props["commit"] = json!(c);
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": rule_ids.binary_search(&f.rule.as_str()).unwrap_or(0),
                "level": "error",
                "message": {"text": format!("{}: {}", rule_description(&f.rule), f.redacted)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&f.path)},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }],
                "partialFingerprints": {"keywardFingerprint/v1": f.fingerprint},
                "properties": props,
            })
        })
        .collect();
    let v = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "keyward-scan",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&v).expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;

    fn report() -> Report {
        Report {
            findings: vec![Finding {
                path: "./a b/c.env".into(),
                line: 3,
                column: 7,
                rule: "github-pat".into(),
                keyward: false,
                redacted: "ghp_…(40 chars)".into(),
                fingerprint: "00ff".into(),
                commit: None,
            }],
            files: 1,
            bytes: 10,
            ..Report::default()
        }
    }

    #[test]
    fn json_has_the_contract_fields_and_no_commit_when_absent() {
        let v: Value = serde_json::from_str(&json(&report())).unwrap();
        let f = &v["findings"][0];
        for k in [
            "path",
            "line",
            "column",
            "rule",
            "keyward",
            "redacted",
            "fingerprint",
        ] {
            assert!(f.get(k).is_some(), "{k}");
        }
        assert!(f.get("commit").is_none());
    }

    #[test]
    fn sarif_is_2_1_0_with_locations() {
        let v: Value = serde_json::from_str(&sarif(&report())).unwrap();
        assert_eq!(v["version"], "2.1.0");
        let r = &v["runs"][0]["results"][0];
        assert_eq!(r["ruleId"], "github-pat");
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "a%20b/c.env");
        assert_eq!(loc["region"]["startLine"], 3);
        assert_eq!(
            v["runs"][0]["tool"]["driver"]["rules"][0]["id"],
            "github-pat"
        );
    }

    #[test]
    fn human_lines_and_summary() {
        let h = human(&report());
        assert!(h.starts_with("./a b/c.env:3:7  github-pat  ghp_…"));
        assert!(h.contains("1 finding (0 Keyward keys) in 1 file"));
    }
}
