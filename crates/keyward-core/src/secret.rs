//! Secret paths and the `secrets:read:<glob>` / `secrets:write:<glob>` scopes.
//!
//! A path is `/`-separated segments of `[A-Za-z0-9._-]` (contract), at most
//! [`PATH_MAX`] bytes and [`SEGMENTS_MAX`] segments, no empty segment (so no leading,
//! trailing or doubled `/`) and no `.` or `..` segment (a path names one secret; it can
//! never be read as a relative path that escapes its prefix).
//!
//! Globs in secret scopes use the same characters plus `*`, matched segment-wise by
//! `globset` with a literal separator:
//!
//! * `*` matches any run of characters *within one segment* (never `/`):
//!   `payments/*` grants `payments/db` but not `payments/eu/db`;
//! * `**` as a whole segment matches any number of whole segments, zero included:
//!   `payments/**` grants `payments/db` and `payments/eu/db` (not `payments` itself);
//!   `**` alone grants every path;
//! * `**` that is not a whole segment (`a**`) is refused at validation, as its meaning
//!   would surprise.
//!
//! Any other scope (`secrets:*`, `*`, `keyward:admin` is checked by the server) grants
//! by the ordinary scope rule: `secrets:*` grants `secrets:read:<path>` for every path.

use globset::{GlobBuilder, GlobMatcher};

use crate::scope;
use crate::validate::FieldError;

/// Longest secret path, in bytes.
pub const PATH_MAX: usize = 512;
/// Most segments in a path.
pub const SEGMENTS_MAX: usize = 32;

pub const READ_PREFIX: &str = "secrets:read:";
pub const WRITE_PREFIX: &str = "secrets:write:";

/// What a principal wants to do with a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn prefix(self) -> &'static str {
        match self {
            Access::Read => READ_PREFIX,
            Access::Write => WRITE_PREFIX,
        }
    }

    /// The scope that names exactly this access to `path` (`secrets:read:a/b`).
    pub fn scope_for(self, path: &str) -> String {
        format!("{}{path}", self.prefix())
    }
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks a secret path; the error names `field`.
pub fn validate_path(field: &str, path: &str) -> Result<(), FieldError> {
    let err = |reason: &str| Err(FieldError::new(field, reason));
    if path.is_empty() {
        return err("must not be empty");
    }
    if path.len() > PATH_MAX {
        return err(&format!("must be at most {PATH_MAX} bytes"));
    }
    let mut segments = 0;
    for seg in path.split('/') {
        segments += 1;
        if seg.is_empty() {
            return err("must not have empty segments (no leading, trailing or double '/')");
        }
        if seg == "." || seg == ".." {
            return err("must not have '.' or '..' segments");
        }
        if !seg.bytes().all(is_path_byte) {
            return err("segments may only hold A-Z, a-z, 0-9 and . _ -");
        }
    }
    if segments > SEGMENTS_MAX {
        return err(&format!("must have at most {SEGMENTS_MAX} segments"));
    }
    Ok(())
}

/// Checks a listing prefix: empty, or what a path may start with (a partial last
/// segment, or a trailing `/`, is fine).
pub fn validate_prefix(field: &str, prefix: &str) -> Result<(), FieldError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let probe = format!("{}x", prefix);
    validate_path(field, &probe)
}

/// If `scope` is a secret glob scope, its access and glob.
pub fn glob_scope(scope: &str) -> Option<(Access, &str)> {
    if let Some(g) = scope.strip_prefix(READ_PREFIX) {
        Some((Access::Read, g))
    } else {
        scope.strip_prefix(WRITE_PREFIX).map(|g| (Access::Write, g))
    }
}

/// Checks the glob of a `secrets:read:`/`secrets:write:` scope: path characters and
/// `*`, `**` only as a whole segment, no empty, `.` or `..` segment.
pub fn validate_glob(glob: &str) -> Result<(), &'static str> {
    if glob.is_empty() {
        return Err("the secret glob must not be empty");
    }
    for seg in glob.split('/') {
        if seg.is_empty() {
            return Err("the secret glob must not have empty segments");
        }
        if seg == "." || seg == ".." {
            return Err("the secret glob must not have '.' or '..' segments");
        }
        if seg.contains("**") && seg != "**" {
            return Err("'**' must be a whole segment of the secret glob");
        }
        if !seg.bytes().all(|b| b == b'*' || is_path_byte(b)) {
            return Err("the secret glob may only hold A-Z, a-z, 0-9, . _ - / and *");
        }
    }
    Ok(())
}

fn matcher(glob: &str) -> Option<GlobMatcher> {
    validate_glob(glob).ok()?;
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

/// Whether `glob` (validated) matches the secret `path`. An invalid glob matches nothing.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    matcher(glob).is_some_and(|m| m.is_match(path))
}

/// Whether one granted scope allows `access` to `path`.
pub fn grants(granted: &str, access: Access, path: &str) -> bool {
    match glob_scope(granted) {
        Some((a, glob)) => a == access && glob_matches(glob, path),
        None => scope::grants(granted, &access.scope_for(path)),
    }
}

/// Whether any granted scope allows `access` to `path`.
pub fn any_grants<S: AsRef<str>>(granted: &[S], access: Access, path: &str) -> bool {
    granted.iter().any(|g| grants(g.as_ref(), access, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in [
            "a",
            "payments/db",
            "a.b/c_d/e-f",
            "A/B/C",
            "x/..y",
            "...",
            ".a",
        ] {
            assert_eq!(validate_path("path", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/./b",
            "..",
            "a/..",
            ".",
            "a b",
            "a\\b",
            "é",
            "a*",
            &"x".repeat(PATH_MAX + 1),
            &vec!["a"; SEGMENTS_MAX + 1].join("/"),
        ] {
            let e = validate_path("path", bad).unwrap_err();
            assert_eq!(e.field, "path", "{bad}");
        }
        assert!(validate_path("p", &vec!["a"; SEGMENTS_MAX].join("/")).is_ok());
    }

    #[test]
    fn prefixes() {
        for ok in ["", "a", "a/", "payments/d", "a/b/"] {
            assert!(validate_prefix("prefix", ok).is_ok(), "{ok}");
        }
        for bad in ["/", "/a", "a//", "../", "a b"] {
            assert!(validate_prefix("prefix", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs_match_segment_wise() {
        assert!(glob_matches("payments/*", "payments/db"));
        assert!(!glob_matches("payments/*", "payments/eu/db"));
        assert!(!glob_matches("payments/*", "payments"));
        assert!(!glob_matches("payments/*", "paymentsx/db"));
        assert!(glob_matches("payments/**", "payments/db"));
        assert!(glob_matches("payments/**", "payments/eu/db"));
        assert!(!glob_matches("payments/**", "payments"));
        assert!(!glob_matches("payments/**", "other/db"));
        assert!(glob_matches("**", "a/b/c"));
        assert!(glob_matches("*/db", "x/db"));
        assert!(!glob_matches("*/db", "x/y/db"));
        assert!(glob_matches("**/db", "x/y/db"));
        assert!(glob_matches("a/**/z", "a/z"));
        assert!(glob_matches("a/**/z", "a/b/c/z"));
        assert!(glob_matches("db-*", "db-main"));
        assert!(glob_matches("exact/path", "exact/path"));
        assert!(!glob_matches("exact/path", "exact/path2"));
        // Refused globs match nothing.
        assert!(!glob_matches("a**", "abc"));
        assert!(!glob_matches("a/../b", "b"));
        assert!(!glob_matches("[ab]", "a"));
    }

    #[test]
    fn scopes_grant_by_access() {
        assert!(grants(
            "secrets:read:payments/*",
            Access::Read,
            "payments/db"
        ));
        assert!(!grants(
            "secrets:read:payments/*",
            Access::Write,
            "payments/db"
        ));
        assert!(grants(
            "secrets:write:payments/*",
            Access::Write,
            "payments/db"
        ));
        assert!(!grants(
            "secrets:write:payments/*",
            Access::Read,
            "payments/db"
        ));
        // Ordinary wildcards keep their prefix meaning.
        assert!(grants("secrets:*", Access::Read, "a/b/c"));
        assert!(grants("secrets:*", Access::Write, "a"));
        assert!(grants("*", Access::Write, "a"));
        assert!(!grants("orders:*", Access::Read, "a"));
        // A glob scope is a glob, not a prefix.
        assert!(!grants("secrets:read:pay", Access::Read, "payments/db"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        "[ab.][ab_-]{0,3}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..5).prop_map(|v| v.join("/"))
    }

    proptest! {
        /// Every valid path is matched by itself as a glob, and by `**`.
        #[test]
        fn a_path_matches_itself(p in path()) {
            prop_assert!(validate_path("p", &p).is_ok());
            prop_assert!(glob_matches(&p, &p));
            prop_assert!(glob_matches("**", &p));
        }

        /// `prefix/**` matches exactly the paths strictly under `prefix`.
        #[test]
        fn double_star_is_every_path_below(pre in path(), rest in path(), other in path()) {
            let glob = format!("{pre}/**");
            let below = format!("{pre}/{rest}");
            prop_assert!(glob_matches(&glob, &below));
            let under = other.starts_with(&format!("{pre}/"));
            prop_assert_eq!(glob_matches(&glob, &other), under);
        }

        /// `prefix/*` matches exactly the paths one segment below `prefix`.
        #[test]
        fn star_is_one_segment(pre in path(), p in path()) {
            let glob = format!("{pre}/*");
            let expected = p
                .strip_prefix(&format!("{pre}/"))
                .is_some_and(|rest| !rest.contains('/'));
            prop_assert_eq!(glob_matches(&glob, &p), expected);
        }

        /// Replacing a whole-segment `*` by `**` only widens a glob.
        #[test]
        fn double_star_widens_star(segs in prop::collection::vec(segment(), 1..4), i in 0usize..4, p in path()) {
            let i = i % segs.len();
            let mut one = segs.clone();
            one[i] = "*".into();
            let mut many = segs;
            many[i] = "**".into();
            if glob_matches(&one.join("/"), &p) {
                prop_assert!(glob_matches(&many.join("/"), &p));
            }
        }

        /// A `*` never lets a match cross a `/`: the match has as many segments as the
        /// glob when the glob has no `**`.
        #[test]
        fn star_keeps_segment_count(segs in prop::collection::vec(prop_oneof![segment(), Just("*".to_string())], 1..4), p in path()) {
            let glob = segs.join("/");
            if glob_matches(&glob, &p) {
                prop_assert_eq!(p.split('/').count(), segs.len());
            }
        }
    }
}
