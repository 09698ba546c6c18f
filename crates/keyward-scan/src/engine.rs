//! The detection engine over one buffer: the Aho-Corasick prefilter picks the rules whose
//! keywords occur, their regexes run, the Keyward key scan and the generic detector run,
//! and overlapping matches are resolved (Keyward first, then rules in table order, the
//! generic detector last).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use zeroize::Zeroizing;

use crate::generic;
use crate::keyward::{self, KeyCandidate};
use crate::rules::{GENERIC_PASSWORD_RULE, GENERIC_SECRET_RULE, KEYWARD_RULE, RULES, Rule};

/// The inline allow marker: a finding on a line holding it is not reported.
pub const ALLOW_MARKER: &[u8] = b"keyward:allow";
/// Other scanners' inline markers, honoured too so a repository need not mark a line twice.
pub const FOREIGN_ALLOW_MARKERS: &[&[u8]] = &[b"gitleaks:allow", b"pragma: allowlist secret"];

/// One match, before it becomes a [`crate::Finding`]. Holds the secret (zeroized on drop)
/// so the caller can fingerprint it, redact it and, for Keyward keys, report it.
pub struct Hit {
    pub rule: &'static str,
    pub keyward: bool,
    pub start: usize,
    pub end: usize,
    /// 1-based line of `start`.
    pub line: u64,
    /// 1-based column of `start`, in Unicode scalar values (invalid UTF-8 bytes count one
    /// each).
    pub column: u64,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("rule", &self.rule)
            .field("keyward", &self.keyward)
            .field("line", &self.line)
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

struct Compiled {
    rule: &'static Rule,
    regex: Regex,
}

/// The compiled rules. Build once, share across threads.
pub struct Detector {
    rules: Vec<Compiled>,
    prefilter: AhoCorasick,
    /// For each prefilter pattern: the rules it enables (indexes into `rules`), or
    /// `GENERIC` for the generic detector.
    pattern_rules: Vec<Vec<usize>>,
    generic: Regex,
}

const GENERIC: usize = usize::MAX;

/// How the generic assignment detector runs on a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generic {
    /// Off (lockfiles: hashes and integrity strings only).
    Off,
    /// Only quoted values: source code, where an unquoted value is an expression
    /// (`token = next_token()`, `KEY: SomeType = 5`), not a literal.
    QuotedOnly,
    /// Quoted and unquoted values: configuration (`.env`, YAML, properties, shell).
    All,
}

impl Generic {
    /// The mode for a file, from its name.
    pub fn for_path(path: &str) -> Generic {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        if crate::scan::LOCKFILES.contains(&name) {
            return Generic::Off;
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(".env") || lower == "-" || lower == "dockerfile" {
            return Generic::All;
        }
        match lower.rsplit_once('.') {
            None => Generic::All,
            Some((_, ext)) => {
                if CONFIG_EXTENSIONS.contains(&ext) {
                    Generic::All
                } else {
                    Generic::QuotedOnly
                }
            }
        }
    }
}

/// Extensions of configuration and script files, where unquoted values are literals.
const CONFIG_EXTENSIONS: &[&str] = &[
    "env",
    "properties",
    "ini",
    "cfg",
    "conf",
    "config",
    "yaml",
    "yml",
    "toml",
    "sh",
    "bash",
    "zsh",
    "ps1",
    "bat",
    "cmd",
    "xml",
    "txt",
    "npmrc",
    "pypirc",
    "netrc",
    "tfvars",
    "hcl",
    "tf",
    "local",
    "example",
    "sample",
    "dist",
    "secret",
    "secrets",
];

impl Default for Detector {
    fn default() -> Self {
        Detector::new()
    }
}

impl Detector {
    /// Compiles every rule. The patterns are ours and tested, so a failure is a bug.
    pub fn new() -> Detector {
        let rules: Vec<Compiled> = RULES
            .iter()
            .map(|rule| Compiled {
                rule,
                regex: RegexBuilder::new(rule.pattern)
                    .unicode(false)
                    .size_limit(50 << 20)
                    .build()
                    .unwrap_or_else(|e| panic!("rule {} does not compile: {e}", rule.id)),
            })
            .collect();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_rules: Vec<Vec<usize>> = Vec::new();
        let mut add = |kw: &str, idx: usize| {
            let kw = kw.to_ascii_lowercase();
            match patterns.iter().position(|p| *p == kw) {
                Some(i) => pattern_rules[i].push(idx),
                None => {
                    patterns.push(kw);
                    pattern_rules.push(vec![idx]);
                }
            }
        };
        for (i, c) in rules.iter().enumerate() {
            assert!(
                !c.rule.keywords.is_empty(),
                "rule {} has no keyword",
                c.rule.id
            );
            for kw in c.rule.keywords {
                add(kw, i);
            }
        }
        for kw in generic::KEYWORDS {
            add(kw, GENERIC);
        }
        let prefilter = AhoCorasickBuilder::new()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("keywords build an automaton");
        Detector {
            rules,
            prefilter,
            pattern_rules,
            generic: generic::regex(),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every finding in `data`, in order of position. `generic` turns the generic
    /// assignment detector on (off for lockfiles, whose hashes it need not see).
    pub fn detect(&self, data: &[u8], generic: Generic) -> Vec<Hit> {
        let mut raw: Vec<Raw> = Vec::new();

        // Keyward keys: always looked for, no prefilter (any prefix is possible).
        let mut candidates = Vec::new();
        keyward::find(data, &mut candidates);
        for c in &candidates {
            if c.valid {
                raw.push(Raw {
                    rule: KEYWARD_RULE,
                    keyward: true,
                    priority: 0,
                    start: c.start,
                    end: c.end,
                });
            }
        }

        // Which rules can match: those with a keyword in the buffer.
        let mut enabled = vec![false; self.rules.len()];
        let mut generic_enabled = false;
        let mut remaining = self.rules.len() + 1;
        for m in self.prefilter.find_overlapping_iter(data) {
            for &r in &self.pattern_rules[m.pattern().as_usize()] {
                let slot = if r == GENERIC {
                    &mut generic_enabled
                } else {
                    &mut enabled[r]
                };
                if !*slot {
                    *slot = true;
                    remaining -= 1;
                }
            }
            if remaining == 0 {
                break;
            }
        }

        for (i, c) in self.rules.iter().enumerate() {
            if !enabled[i] {
                continue;
            }
            for caps in c.regex.captures_iter(data) {
                let m = caps.get(1).or_else(|| caps.get(0)).expect("group 0");
                let Ok(secret) = std::str::from_utf8(m.as_bytes()) else {
                    continue;
                };
                if generic::is_placeholder(secret)
                    || generic::is_doc_host(caps.get(0).map_or(&[][..], |m| m.as_bytes()))
                    || (c.rule.entropy > 0.0 && generic::entropy(secret) < c.rule.entropy)
                    || password_is_user_name(data, m.start(), secret)
                {
                    continue;
                }
                raw.push(Raw {
                    rule: c.rule.id,
                    keyward: false,
                    priority: 1 + i,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }

        if generic != Generic::Off && generic_enabled {
            self.generic_hits(data, &candidates, generic, &mut raw);
        }

        resolve(data, raw)
    }

    fn generic_hits(
        &self,
        data: &[u8],
        candidates: &[KeyCandidate],
        mode: Generic,
        raw: &mut Vec<Raw>,
    ) {
        for caps in self.generic.captures_iter(data) {
            let Some(value) = (2..=5).find_map(|i| caps.get(i)) else {
                continue;
            };
            if caps.get(5).is_some()
                && (mode == Generic::QuotedOnly || data.get(value.end()) == Some(&b'('))
            {
                // Unquoted: an expression in code; a call anywhere.
                continue;
            }
            let (Ok(name), Ok(text)) = (
                std::str::from_utf8(&caps[1]),
                std::str::from_utf8(value.as_bytes()),
            ) else {
                continue;
            };
            if name.len() > generic::NAME_MAX || text.len() > generic::VALUE_MAX {
                continue;
            }
            let Some(kind) = generic::classify_name(name) else {
                continue;
            };
            let trimmed = text.trim();
            if !generic::is_secret(kind, trimmed) {
                continue;
            }
            let start = value.start() + (text.len() - text.trim_start().len());
            let end = start + trimmed.len();
            // A near miss of the Keyward format is a typo or a made-up example: quiet.
            if candidates
                .iter()
                .any(|c| !c.valid && c.start < end && start < c.end)
            {
                continue;
            }
            raw.push(Raw {
                rule: match kind {
                    generic::Kind::Secret => GENERIC_SECRET_RULE,
                    generic::Kind::Password => GENERIC_PASSWORD_RULE,
                },
                keyward: false,
                priority: usize::MAX,
                start,
                end,
            });
        }
    }
}

/// `scheme://guest:guest@host`: a password equal to the user name is a local default.
fn password_is_user_name(data: &[u8], start: usize, secret: &str) -> bool {
    let before = &data[start.saturating_sub(200)..start];
    let Some(before) = before.strip_suffix(b":") else {
        return false;
    };
    let user_start = memchr::memmem::rfind(before, b"://").map(|i| i + 3);
    user_start.is_some_and(|u| &before[u..] == secret.as_bytes())
}

struct Raw {
    rule: &'static str,
    keyward: bool,
    priority: usize,
    start: usize,
    end: usize,
}

/// Drops matches that overlap a better one, drops allowed lines, and computes positions.
fn resolve(data: &[u8], mut raw: Vec<Raw>) -> Vec<Hit> {
    raw.sort_by_key(|r| (r.priority, r.start));
    let mut kept: Vec<Raw> = Vec::with_capacity(raw.len());
    for r in raw {
        if kept.iter().all(|k| r.end <= k.start || k.end <= r.start) {
            kept.push(r);
        }
    }
    kept.sort_by_key(|r| r.start);

    let mut hits = Vec::with_capacity(kept.len());
    let mut line = 1u64;
    let mut line_start = 0usize;
    let mut pos = 0usize;
    for r in kept {
        for nl in memchr::memchr_iter(b'\n', &data[pos..r.start]) {
            line += 1;
            line_start = pos + nl + 1;
        }
        pos = r.start;
        let line_end = memchr::memchr(b'\n', &data[r.start..])
            .map(|i| r.start + i)
            .unwrap_or(data.len());
        let line_text = &data[line_start..line_end];
        if std::iter::once(ALLOW_MARKER)
            .chain(FOREIGN_ALLOW_MARKERS.iter().copied())
            .any(|m| memchr::memmem::find(line_text, m).is_some())
        {
            continue;
        }
        let column = 1 + String::from_utf8_lossy(&data[line_start..r.start])
            .chars()
            .count() as u64;
        let secret = Zeroizing::new(String::from_utf8_lossy(&data[r.start..r.end]).into_owned());
        hits.push(Hit {
            rule: r.rule,
            keyward: r.keyward,
            start: r.start,
            end: r.end,
            line,
            column,
            secret,
        });
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Rng, render};
    use keyward_core::key::{KeyPrefix, mint};

    fn rules_found(d: &Detector, text: &str) -> Vec<&'static str> {
        d.detect(text.as_bytes(), Generic::All)
            .iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn there_are_at_least_100_rules_with_unique_ids() {
        assert!(RULES.len() >= 100, "{}", RULES.len());
        let mut ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
    }

    #[test]
    fn rules_find_their_examples_and_not_their_counters() {
        let d = Detector::new();
        let mut failures = Vec::new();
        for (i, rule) in RULES.iter().enumerate() {
            for seed in 0..5 {
                let mut rng = Rng::new(i as u64 * 1000 + seed);
                let text = render(rule.example, &mut rng);
                let found = rules_found(&d, &format!("line one\n{text}\nline three\n"));
                if found != [rule.id] {
                    failures.push(format!("{}: example {text:?} gave {found:?}", rule.id));
                }
                let counter = render(rule.counter, &mut rng);
                let found = rules_found(&d, &counter);
                if found.contains(&rule.id) {
                    failures.push(format!("{}: counter {counter:?} was found", rule.id));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let d = Detector::new();
        let k = mint(&KeyPrefix::default());
        let text = format!("a\nbb\néé key = {}\n", k.plaintext.as_str());
        let hits = d.detect(text.as_bytes(), Generic::All);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].line, hits[0].column), (3, 10));
        assert!(hits[0].keyward);
        assert_eq!(hits[0].rule, KEYWARD_RULE);
    }

    #[test]
    fn keyward_keys_win_over_other_rules_and_near_misses_stay_quiet() {
        let d = Detector::new();
        let k = mint(&KeyPrefix::parse("sk_live").unwrap());
        let key = k.plaintext.as_str();
        let hits = d.detect(format!("STRIPE_KEY={key}").as_bytes(), Generic::All);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].keyward);

        let k = mint(&KeyPrefix::default());
        let mut bad = k.plaintext.to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        for text in [
            format!("KEYWARD_TOKEN={bad}"),
            format!("api_key = \"{bad}\""),
            bad.clone(),
        ] {
            assert!(d.detect(text.as_bytes(), Generic::All).is_empty(), "{text}");
        }
    }

    #[test]
    fn code_files_need_quoted_values() {
        let d = Detector::new();
        let v = "q8Zr2LmX0vT5nWc7Jp4Ks9Hd";
        for (path, text, found) in [
            ("a.rs", format!("let token = {v};"), false),
            ("a.rs", format!("let token = \"{v}\";"), true),
            ("a.env", format!("TOKEN={v}"), true),
            (".env.local", format!("TOKEN={v}"), true),
            ("Cargo.lock", format!("token = \"{v}\""), false),
        ] {
            let hits = d.detect(text.as_bytes(), Generic::for_path(path));
            assert_eq!(!hits.is_empty(), found, "{path}: {text}");
        }
    }

    #[test]
    fn inline_allow_marker() {
        let d = Detector::new();
        let k = mint(&KeyPrefix::default());
        for marker in [
            "keyward:allow",
            "gitleaks:allow",
            "pragma: allowlist secret",
        ] {
            let text = format!("t = \"{}\" # {marker}\n", k.plaintext.as_str());
            assert!(
                d.detect(text.as_bytes(), Generic::All).is_empty(),
                "{marker}"
            );
        }
    }

    #[test]
    fn invalid_utf8_around_a_key_is_fine() {
        let d = Detector::new();
        let k = mint(&KeyPrefix::default());
        let mut data = vec![0xff, 0xfe, b' '];
        data.extend_from_slice(k.plaintext.as_bytes());
        data.extend_from_slice(&[b' ', 0xc3]);
        let hits = d.detect(&data, Generic::All);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].column, 4);
    }
}
