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

/// Constant-time, so that comparing digests leaks nothing through timing. Compared as
/// four 64-bit words rather than 32 bytes (`subtle`'s slice comparison goes byte by
/// byte, each through an optimisation barrier): every cache lookup on the verify path
/// compares digests, and this is ~15 instructions instead of ~200.
impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        let word = |d: &[u8; 32], i: usize| {
            u64::from_ne_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        (0..4)
            .fold(subtle::Choice::from(1), |same, i| {
                same & word(&self.0, i).ct_eq(&word(&other.0, i))
            })
            .into()
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

#[cfg(test)]
mod tests {
    use super::KeyDigest;
    use proptest::prelude::*;

    proptest! {
        /// The word-wise constant-time comparison agrees with comparing the bytes: equal
        /// digests are equal, and a difference in any one byte is seen.
        #[test]
        fn digests_compare_as_their_bytes(a in any::<[u8; 32]>(), at in 0usize..32, flip in 1u8..=255) {
            prop_assert!(KeyDigest(a) == KeyDigest(a));
            let mut b = a;
            b[at] ^= flip;
            prop_assert!(KeyDigest(a) != KeyDigest(b));
        }
    }
}
