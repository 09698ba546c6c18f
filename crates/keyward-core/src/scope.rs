//! Scopes: strings such as `orders:read`; a granted scope ending in `*` grants every scope
//! it prefixes (`orders:*` grants `orders:read`; `*` grants everything).

/// Checks the form of a scope: 1-128 characters of `[A-Za-z0-9:._/-]`, optionally ending
/// in a single `*` (a wildcard, only valid at the end).
pub fn validate(scope: &str) -> Result<(), InvalidScope> {
    todo!("{scope}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {reason}")]
pub struct InvalidScope {
    pub scope: String,
    pub reason: &'static str,
}

/// Whether one granted scope grants `required`.
pub fn grants(granted: &str, required: &str) -> bool {
    todo!("{granted}{required}")
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
    todo!("{requested}{}", granted.len())
}
