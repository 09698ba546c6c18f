//! The digest under which a key is stored and looked up.
//!
//! **Architecture Invariant:** only `KeyDigest`s of keys are persisted, cached or logged,
//! never the key. A key's 32 random base62 characters carry ~190 bits of entropy, so a
//! plain SHA-256 cannot be reversed or brute-forced from a copy of the database.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of the whole key string (`prefix_body`).
#[derive(Clone, Copy, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(KeyDigest(out))
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(KeyDigest(b.try_into().ok()?))
    }
}

/// Constant-time, so that comparing digests leaks nothing through timing.
impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Hashes the same bytes `eq` compares, so equal digests hash equally.
impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Never prints the digest in full: logs get a short, non-identifying fingerprint.
impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyDigest({}…)", &hex::encode(&self.0[..4]))
    }
}
