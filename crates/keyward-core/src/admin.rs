//! Human administrators: argon2id passwords, TOTP (RFC 6238) with replay protection,
//! one-time recovery codes. Pure: callers pass the time and store the results.
//!
//! Secrets here are held in types whose `Debug` prints `[redacted]` and which zeroize
//! on drop; none of them is `Display`.

use std::fmt;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

/// TOTP parameters every authenticator app understands: SHA-1, 6 digits, 30 s.
pub const TOTP_DIGITS: usize = 6;
pub const TOTP_PERIOD: u64 = 30;
/// Bytes of a TOTP secret (160 bits, RFC 4226's recommendation).
const TOTP_SECRET_LEN: usize = 20;
/// Recovery codes handed out at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Shortest password accepted.
pub const PASSWORD_MIN: usize = 12;
/// Longest password accepted (bounds the hashing work a request can cause).
pub const PASSWORD_MAX: usize = 1024;

/// A secret string (a password, a session token, a recovery code): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(Zeroizing<String>);

impl Redacted {
    pub fn new(s: impl Into<String>) -> Redacted {
        Redacted(Zeroizing::new(s.into()))
    }
    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Redacted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Redacted::new)
    }
}

// ---------------------------------------------------------------- passwords

/// The argon2id PHC string of `password` (default parameters: 19 MiB, 2 passes), with
/// a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut salt)
        .expect("the OS random number generator failed");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// Whether `password` matches the PHC string (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to spend the same time on when there is no such user, so the answer time
/// does not tell which usernames exist.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("keyward-no-such-user"))
}

// ---------------------------------------------------------------- TOTP

/// A TOTP shared secret, as its base32 text (what is stored and put in the URI).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Zeroizing<String>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    pub fn generate() -> TotpSecret {
        let mut raw = Zeroizing::new(vec![0u8; TOTP_SECRET_LEN]);
        OsRng
            .try_fill_bytes(&mut raw)
            .expect("the OS random number generator failed");
        TotpSecret::from_bytes(&raw)
    }

    fn from_bytes(raw: &[u8]) -> TotpSecret {
        match Secret::Raw(raw.to_vec()).to_encoded() {
            Secret::Encoded(s) => TotpSecret(Zeroizing::new(s)),
            Secret::Raw(_) => unreachable!("to_encoded answers Encoded"),
        }
    }

    /// From stored base32 text.
    pub fn from_base32(s: &str) -> TotpSecret {
        TotpSecret(Zeroizing::new(s.to_owned()))
    }

    pub fn base32(&self) -> &str {
        &self.0
    }

    fn totp(&self) -> Option<TOTP> {
        let raw = Secret::Encoded(self.0.to_string()).to_bytes().ok()?;
        Some(TOTP::new_unchecked(
            Algorithm::SHA1,
            TOTP_DIGITS,
            1,
            TOTP_PERIOD,
            raw,
        ))
    }

    /// The `otpauth://` URI authenticator apps enrol from (Key Uri Format).
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Redacted {
        let enc = |s: &str| form_urlencoded_component(s);
        Redacted::new(format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD}",
            enc(issuer),
            enc(account),
            self.base32(),
            enc(issuer),
        ))
    }

    /// The code for the step that holds `unix_secs` (for tests and enrolment checks).
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.totp()
            .map(|t| t.generate(unix_secs))
            .unwrap_or_default()
    }

    /// The time step `code` is valid for at `unix_secs`, allowing one step of clock skew
    /// either way; `None` if it is valid for none. Compares in constant time. The caller
    /// refuses a step not later than the last one used (replay).
    pub fn check(&self, code: &str, unix_secs: u64) -> Option<i64> {
        let totp = self.totp()?;
        if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now_step = unix_secs / TOTP_PERIOD;
        let mut found = None;
        // Every candidate is computed and compared, so timing does not tell which matched.
        for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
            let expected = totp.generate(step * TOTP_PERIOD);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                found = Some(step as i64);
            }
        }
        found
    }
}

/// Percent-encodes what is not unreserved (RFC 3986), for the URI's label and issuer.
fn form_urlencoded_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------- recovery codes

/// New one-time recovery codes (`xxxxx-xxxxx`, ~59 bits each), to show once.
pub fn recovery_codes() -> Vec<Redacted> {
    let mut rng = OsRng.unwrap_err();
    (0..RECOVERY_CODES)
        .map(|_| {
            let s: String = Alphanumeric
                .sample_iter(&mut rng)
                .take(10)
                .map(|b| (b as char).to_ascii_lowercase())
                .collect();
            Redacted::new(format!("{}-{}", &s[..5], &s[5..]))
        })
        .collect()
}

/// What is stored of a recovery code: SHA-256 (hex) of its normalised form. The codes
/// are long random strings, not passwords, so a plain digest is enough to keep them
/// unreadable from the database.
pub fn recovery_code_hash(code: &str) -> String {
    let normal: Zeroizing<String> = Zeroizing::new(
        code.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    );
    hex::encode(Sha256::digest(normal.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn totp_with_a_controlled_clock() {
        let secret = TotpSecret::generate();
        let t = 1_700_000_000u64;
        let step = (t / TOTP_PERIOD) as i64;
        let code = secret.code_at(t);
        assert_eq!(secret.check(&code, t), Some(step));
        // One step of skew either way is accepted; two is not.
        assert_eq!(secret.check(&code, t + TOTP_PERIOD), Some(step));
        assert_eq!(secret.check(&code, t - TOTP_PERIOD), Some(step));
        assert_eq!(secret.check(&code, t + 2 * TOTP_PERIOD), None);
        // Wrong or malformed codes.
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert_eq!(secret.check(&wrong, t), None);
        assert_eq!(secret.check("12345", t), None);
        assert_eq!(secret.check("abcdef", t), None);
        // The stored form round-trips.
        assert_eq!(
            TotpSecret::from_base32(secret.base32()).check(&code, t),
            Some(step)
        );
    }

    #[test]
    fn otpauth_uri_and_redaction() {
        let secret = TotpSecret::generate();
        let uri = secret.otpauth_uri("Keyward", "alice ops");
        assert!(
            uri.expose()
                .starts_with("otpauth://totp/Keyward:alice%20ops?secret=")
        );
        assert!(uri.expose().contains(secret.base32()));
        assert_eq!(format!("{uri:?}"), "[redacted]");
        assert!(!format!("{secret:?}").contains(secret.base32()));
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_normalised() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let c = codes[0].expose();
        assert_eq!(
            recovery_code_hash(c),
            recovery_code_hash(&c.to_uppercase().replace('-', " "))
        );
        assert_ne!(recovery_code_hash(c), recovery_code_hash(codes[1].expose()));
    }
}
