//! Route rules: which scopes or permission query a request needs, by method and path
//! prefix.
//!
//! A rule is `[METHODS] PREFIX=REQUIREMENT`:
//!
//! ```text
//! POST /orders=orders:write
//! GET,HEAD /orders=orders:read
//! /admin=admin:* AND (ops OR oncall)
//! /public=
//! ```
//!
//! METHODS is a comma-separated list (or `*`, or nothing: any method). PREFIX starts
//! with `/` and matches whole path segments (`/orders` matches `/orders` and
//! `/orders/7`, not `/ordersx`). REQUIREMENT is a permission query (a single scope is
//! one); empty means "any valid key". The longest matching prefix wins; among rules of
//! the same prefix, one naming the method wins over one for any method. A request no
//! rule matches needs only what `--require-scope` asks for.

use std::borrow::Cow;

use keyward_core::permission::Permission;

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Upper-case method names; empty: any method.
    pub methods: Vec<String>,
    /// Starts with `/`, without a trailing `/` (except the root `/`).
    pub prefix: String,
    /// `None`: any valid key.
    pub permission: Option<Permission>,
}

/// Why a rule did not parse: the text is echoed, it never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route rule {rule:?}: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let err = |reason: &str| RuleError {
            rule: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (target, requirement) = text
            .split_once('=')
            .ok_or_else(|| err("expected [METHODS] /PREFIX=REQUIREMENT"))?;
        let target = target.trim();
        let (methods, prefix) = match target.split_once(char::is_whitespace) {
            Some((m, p)) => (m.trim(), p.trim()),
            None => ("", target),
        };
        let methods = match methods {
            "" | "*" => Vec::new(),
            list => list
                .split(',')
                .map(|m| {
                    let m = m.trim();
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                        Err(err("methods are names like GET or POST, comma-separated"))
                    } else {
                        Ok(m.to_ascii_uppercase())
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        if !prefix.starts_with('/') || prefix.contains(char::is_whitespace) {
            return Err(err("the path prefix must start with / and hold no spaces"));
        }
        let prefix = match prefix.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let requirement = requirement.trim();
        let permission = if requirement.is_empty() {
            None
        } else {
            Some(Permission::parse(requirement).map_err(|e| err(&e.to_string()))?)
        };
        Ok(Rule {
            methods,
            prefix,
            permission,
        })
    }

    /// How well the rule fits: `None` if it does not apply, else a rank where a longer
    /// prefix always beats a shorter one and a named method beats "any".
    fn fit(&self, method: &str, path: &str) -> Option<(usize, bool)> {
        let named = !self.methods.is_empty();
        if named && !self.methods.iter().any(|m| m == method) {
            return None;
        }
        let within = self.prefix == "/"
            || path == self.prefix
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        within.then_some((self.prefix.len(), named))
    }
}

/// Every rule, parsed once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    /// Parses `--route` values.
    pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Rules, RuleError> {
        texts
            .iter()
            .map(|t| Rule::parse(t.as_ref()))
            .collect::<Result<_, _>>()
            .map(Rules::new)
    }

    /// Parses a rules file: one rule per line; blank lines and `#` comments are skipped.
    pub fn parse_file(text: &str) -> Result<Rules, RuleError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        Rules::parse_all(&lines)
    }

    /// Appends `other`'s rules.
    pub fn extend(&mut self, other: Rules) {
        self.rules.extend(other.rules);
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for a request: `path` is the normalised path (`normalise_path`). A few
    /// rules, scanned linearly: cheaper than a trie at the sizes a gateway has.
    pub fn matching(&self, method: &str, path: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter_map(|r| r.fit(method, path).map(|f| (f, r)))
            .max_by_key(|(f, _)| *f)
            .map(|(_, r)| r)
    }
}

/// The path rules are matched against: percent-decoded, with runs of `/` merged, so a
/// request cannot slip past a rule by spelling its path differently from how the
/// upstream will read it. `None` for paths the gateway refuses: dot segments (`.`,
/// `..`) that an upstream might resolve to another rule's prefix, or bytes that do not
/// decode to UTF-8.
///
/// A path that is already normal (the usual case) is returned as it is, not copied.
pub fn normalise_path(raw: &str) -> Option<Cow<'_, str>> {
    let segments_normal = || {
        raw.strip_prefix('/').is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\'))
        })
    };
    if !raw.contains('%') && segments_normal() {
        return Some(Cow::Borrowed(raw));
    }
    decode_and_normalise(raw).map(Cow::Owned)
}

fn decode_and_normalise(raw: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." || segment.contains('\\') {
            return None;
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(texts: &[&str]) -> Rules {
        Rules::parse_all(texts).unwrap()
    }

    fn needs(r: &Rules, method: &str, path: &str) -> Option<String> {
        r.matching(method, path).map(|rule| {
            rule.permission
                .as_ref()
                .map_or_else(String::new, |p| p.to_string())
        })
    }

    #[test]
    fn longest_prefix_wins_then_the_named_method() {
        let r = rules(&[
            "/=base",
            "/orders=orders:read",
            "POST /orders=orders:write",
            "GET,HEAD /orders/export=orders:export",
        ]);
        assert_eq!(
            needs(&r, "GET", "/orders/7").as_deref(),
            Some("orders:read")
        );
        assert_eq!(
            needs(&r, "POST", "/orders").as_deref(),
            Some("orders:write")
        );
        assert_eq!(
            needs(&r, "GET", "/orders/export/x").as_deref(),
            Some("orders:export")
        );
        assert_eq!(
            needs(&r, "POST", "/orders/export").as_deref(),
            Some("orders:write")
        );
        assert_eq!(needs(&r, "GET", "/ordersx").as_deref(), Some("base"));
    }

    #[test]
    fn no_rule_and_empty_requirements() {
        let r = rules(&["* /public/=", "/orders=orders:read"]);
        assert_eq!(needs(&r, "GET", "/public/a").as_deref(), Some(""));
        assert_eq!(needs(&r, "GET", "/other"), None);
    }

    #[test]
    fn permission_queries_are_accepted() {
        let r = Rule::parse("DELETE /a = admin AND (ops OR oncall)").unwrap();
        assert_eq!(r.methods, vec!["DELETE"]);
        assert_eq!(r.prefix, "/a");
        assert!(r.permission.unwrap().evaluate(&["admin", "ops"]));
    }

    #[test]
    fn bad_rules_say_why() {
        for bad in ["/a", "orders=x", "GET /a=x AND", "G3T /a=x", "GET, /a=x"] {
            let e = Rule::parse(bad).unwrap_err();
            assert_eq!(e.rule, bad);
        }
    }

    #[test]
    fn rules_files_skip_comments_and_blank_lines() {
        let r = Rules::parse_file("# orders\n\nPOST /orders=orders:write\n  /=x\n").unwrap();
        assert_eq!(r.rules.len(), 2);
    }

    #[test]
    fn paths_are_normalised_before_matching() {
        assert_eq!(normalise_path("/%6Frders//7").as_deref(), Some("/orders/7"));
        assert_eq!(normalise_path("").as_deref(), Some("/"));
        assert_eq!(normalise_path("/a/../admin"), None);
        assert_eq!(normalise_path("/a/%2e%2e/admin"), None);
        assert_eq!(normalise_path("/a/%ff"), None);
    }

    #[test]
    fn paths_taken_as_they_are_are_the_normal_ones() {
        // Every path over a small alphabet of the characters that matter, up to 6 long:
        // the shortcut for paths already normal agrees with decoding and normalising.
        let alphabet = ['/', 'a', '.', '%', '2', 'e', '\\'];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .filter(|p| p.len() == paths.last().map_or(0, String::len))
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            paths.extend(longer);
        }
        assert!(paths.len() > 100_000);
        for p in &paths {
            assert_eq!(
                normalise_path(p).map(Cow::into_owned),
                decode_and_normalise(p),
                "{p:?}"
            );
        }
    }
}
