//! What a scan reports. A [`Finding`] never holds a whole secret: only a redacted form and
//! a fingerprint (a truncated, domain-separated SHA-256).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// One leaked secret, as the contract's JSON shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The file as reached from the PATH given (for `--git` and `--staged`: the path in
    /// the repository; for stdin: `-`).
    pub path: String,
    /// From 1.
    pub line: u64,
    /// From 1, in Unicode scalar values.
    pub column: u64,
    pub rule: String,
    /// A Keyward key whose checksum holds.
    pub keyward: bool,
    pub redacted: String,
    /// Stable across scans and line moves: rule, path and secret. What a baseline holds.
    pub fingerprint: String,
    /// `--git`: the commit that introduced the blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A Keyward key found by the scan, kept for `--revoke`. Zeroized on drop; `Debug` shows
/// only where it was found.
pub struct LeakedKey {
    pub key: Zeroizing<String>,
    /// Index of its finding in the report.
    pub finding: usize,
}

impl std::fmt::Debug for LeakedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakedKey")
            .field("finding", &self.finding)
            .finish_non_exhaustive()
    }
}

/// How many characters of a secret are shown: at most 4, and at most a quarter of it, so
/// even a short password keeps three quarters hidden.
fn shown(len: usize) -> usize {
    (len / 4).min(4)
}

/// The redacted form. A Keyward key shows its `start` (prefix and 4 body characters, as
/// `key list` does) so it can be matched to the listing; anything else shows at most 4
/// characters (a quarter, for short secrets), then `…` and its length.
pub fn redact(secret: &str, keyward: bool) -> String {
    if let (true, Ok(k)) = (keyward, keyward_core::key::parse(secret)) {
        return format!("{}…", k.start());
    }
    let chars: Vec<char> = secret.chars().collect();
    let head: String = chars[..shown(chars.len())].iter().collect();
    format!("{head}…({} chars)", chars.len())
}

/// The fingerprint of a finding: the first 32 hex digits of
/// SHA-256(`keyward-scan/v1` 0 rule 0 path 0 secret).
pub fn fingerprint(rule: &str, path: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    for part in ["keyward-scan/v1", rule, path, secret] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::key::{KeyPrefix, mint};

    #[test]
    fn redaction_never_shows_the_whole_secret() {
        for len in 1..200 {
            let secret: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let r = redact(&secret, false);
            let head = r.split('…').next().unwrap();
            assert!(head.len() * 4 <= len, "{len}: {r}");
            assert!(len < 8 || !r.contains(&secret), "{len}: {r}");
        }
        let k = mint(&KeyPrefix::parse("kw_live").unwrap());
        let r = redact(&k.plaintext, true);
        assert_eq!(r, format!("{}…", k.start));
        assert!(!r.contains(&k.plaintext[8..]));
    }

    #[test]
    fn fingerprints_depend_on_rule_path_and_secret() {
        let a = fingerprint("r", "p", "s");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint("r", "p", "s"));
        assert_ne!(a, fingerprint("r", "p2", "s"));
        assert_ne!(a, fingerprint("r2", "p", "s"));
        assert_ne!(a, fingerprint("r", "p", "s2"));
        assert_ne!(fingerprint("ab", "c", "s"), fingerprint("a", "bc", "s"));
    }
}
