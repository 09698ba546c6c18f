//! Scopes: strings such as `orders:read`; a granted scope ending in `*` grants every scope
//! it prefixes (`orders:*` grants `orders:read`; `*` grants everything).

/// Longest scope, wildcard included.
pub const SCOPE_MAX_LEN: usize = 128;

/// Whether `b` may appear in a scope (the wildcard `*` aside).
pub fn is_scope_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'/' | b'-')
}

/// Checks the form of a scope: 1-128 characters of `[A-Za-z0-9:._/-]`, optionally ending
/// in a single `*` (a wildcard, only valid at the end).
pub fn validate(scope: &str) -> Result<(), InvalidScope> {
    let err = |reason| {
        Err(InvalidScope {
            scope: scope.to_owned(),
            reason,
        })
    };
    if scope.is_empty() {
        return err("must not be empty");
    }
    if scope.len() > SCOPE_MAX_LEN {
        return err("must be at most 128 characters");
    }
    // `secrets:read:<glob>` / `secrets:write:<glob>`: `*` anywhere, as `secret.rs` says.
    if let Some((_, glob)) = crate::secret::glob_scope(scope) {
        return crate::secret::validate_glob(glob).or_else(err);
    }
    let body = scope.strip_suffix('*').unwrap_or(scope);
    for b in body.bytes() {
        if b == b'*' {
            return err("'*' is only allowed once, as the last character");
        }
        if !is_scope_byte(b) {
            return err("only A-Z, a-z, 0-9 and : . _ / - are allowed");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {reason}")]
pub struct InvalidScope {
    pub scope: String,
    pub reason: &'static str,
}

/// Whether one granted scope grants `required`.
pub fn grants(granted: &str, required: &str) -> bool {
    if granted == required {
        return true;
    }
    match granted.strip_suffix('*') {
        Some(prefix) => required.starts_with(prefix),
        None => false,
    }
}

/// Whether any of `granted` grants `required`.
pub fn any_grants<S: AsRef<str>>(granted: &[S], required: &str) -> bool {
    granted.iter().any(|g| grants(g.as_ref(), required))
}

/// Whether `granted` grants every one of `required`.
pub fn grants_all<S: AsRef<str>, R: AsRef<str>>(granted: &[S], required: &[R]) -> bool {
    required.iter().all(|r| any_grants(granted, r.as_ref()))
}

/// Whether a key with `granted` scopes may be given all of `requested` scopes by a
/// principal holding `granted`: every requested scope, wildcards included, must be covered
/// (`orders:*` covers `orders:read` and `orders:x:*`; `orders:read` does not cover `orders:*`).
pub fn covers<S: AsRef<str>>(granted: &[S], requested: &str) -> bool {
    granted.iter().any(|g| covers_one(g.as_ref(), requested))
}

fn covers_one(granted: &str, requested: &str) -> bool {
    if granted == requested {
        return true;
    }
    // A secret glob covers only the plain secret scopes it matches (globs are not
    // prefixes: `secrets:read:a/*` must not cover `secrets:read:a/**`).
    if let Some((access, glob)) = crate::secret::glob_scope(granted) {
        return crate::secret::glob_scope(requested).is_some_and(|(a, path)| {
            a == access && !path.contains('*') && crate::secret::glob_matches(glob, path)
        });
    }
    let Some(granted_prefix) = granted.strip_suffix('*') else {
        // A plain scope names one scope; it cannot stand for a wildcard's whole family.
        return false;
    };
    // A requested wildcard stands for every scope starting with its prefix; all of them
    // start with `granted_prefix` exactly when that prefix does.
    let requested_prefix = requested.strip_suffix('*').unwrap_or(requested);
    requested_prefix.starts_with(granted_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_the_charset_and_a_trailing_wildcard() {
        for ok in [
            "orders:read",
            "a",
            "*",
            "orders:*",
            "A-Z_a.z/0:9",
            "ord*",
            &"x".repeat(128),
            &format!("{}*", "x".repeat(127)),
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn validate_refuses_bad_scopes() {
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "orders read",
            "orders:read\n",
            "ordérs",
            "a,b",
            "(a)",
            &"x".repeat(129),
            &format!("{}*", "x".repeat(128)),
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate("").unwrap_err().reason, "must not be empty");
        assert_eq!(validate("a*b").unwrap_err().scope, "a*b");
    }

    #[test]
    fn grants_exact_and_wildcard() {
        assert!(grants("orders:read", "orders:read"));
        assert!(!grants("orders:read", "orders:write"));
        assert!(!grants("orders:read", "orders:read:all"));
        assert!(!grants("orders", "orders:read"));
        assert!(grants("orders:*", "orders:read"));
        assert!(grants("orders:*", "orders:x:y"));
        assert!(grants("orders:*", "orders:*"));
        assert!(!grants("orders:*", "orders"));
        assert!(!grants("orders:*", "billing:read"));
        assert!(grants("ord*", "orders:read"));
        assert!(grants("*", "anything:at:all"));
        assert!(grants("*", "*"));
        // A required wildcard is only a literal string to `grants`.
        assert!(!grants("orders:read", "orders:*"));
    }

    #[test]
    fn grants_all_needs_every_scope() {
        let granted = ["orders:*", "billing:read"];
        assert!(grants_all(&granted, &["orders:read", "billing:read"]));
        assert!(!grants_all(&granted, &["orders:read", "billing:write"]));
        assert!(grants_all(&granted, &[] as &[&str]));
        assert!(!grants_all(&[] as &[&str], &["a"]));
    }

    #[test]
    fn covers_wildcards_only_by_wider_wildcards() {
        assert!(covers(&["orders:*"], "orders:*"));
        assert!(covers(&["*"], "orders:*"));
        assert!(covers(&["ord*"], "orders:*"));
        assert!(covers(&["orders:*"], "orders:x:*"));
        assert!(covers(&["orders:*"], "orders:read"));
        assert!(!covers(&["orders:read"], "orders:*"));
        assert!(!covers(&["orders:x:*"], "orders:*"));
        assert!(!covers(&["orders:*"], "orders*"));
        assert!(!covers(&["orders:*"], "*"));
        assert!(covers(&["*"], "*"));
        assert!(covers(&["orders:read"], "orders:read"));
        assert!(!covers(&[] as &[&str], "orders:read"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn scope() -> impl Strategy<Value = String> {
        // A tiny alphabet, so that prefixes and wildcards collide often.
        "[ab:]{0,4}\\*?".prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest! {
        /// `covers` is sound: whatever a covered wildcard would grant, the coverer grants too.
        #[test]
        fn covers_is_sound(g in scope(), r in scope(), probe in "[ab:]{0,6}") {
            if covers(&[g.as_str()], &r) && grants(&r, &probe) {
                prop_assert!(grants(&g, &probe));
            }
        }

        /// For plain requested scopes, covering is granting.
        #[test]
        fn covers_plain_is_grants(g in scope(), r in "[ab:]{1,4}") {
            prop_assert_eq!(covers(&[g.as_str()], &r), grants(&g, &r));
        }
    }
}
