//! The key format: `<prefix>_<body>`, where the body is 32 random base62 characters and a
//! 6-character base62 CRC32 of everything before it (contract, "Keys").

use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::digest::KeyDigest;

pub const RANDOM_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
pub const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
pub const SEGMENT_MAX: usize = 16;
/// Characters of the body shown in listings (`start`), enough to tell keys apart by eye
/// and far too few to help guess one.
pub const START_BODY_CHARS: usize = 4;
pub const DEFAULT_PREFIX: &str = "kw";

/// A validated key prefix: 1-16 of `[a-z0-9]`, optionally `_` and a second such segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "prefix must be 1-16 characters of [a-z0-9], optionally followed by '_' and one more such segment (e.g. kw, kw_live)"
)]
pub struct InvalidPrefix;

impl KeyPrefix {
    pub fn parse(s: &str) -> Result<Self, InvalidPrefix> {
        if is_valid_prefix(s) {
            Ok(KeyPrefix(s.to_owned()))
        } else {
            Err(InvalidPrefix)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        KeyPrefix(DEFAULT_PREFIX.to_owned())
    }
}

fn is_valid_segment(s: &str) -> bool {
    (1..=SEGMENT_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_valid_prefix(s: &str) -> bool {
    match s.split_once('_') {
        None => is_valid_segment(s),
        Some((a, b)) => is_valid_segment(a) && is_valid_segment(b),
    }
}

/// A freshly minted key. The plaintext is zeroized when dropped; it leaves the process
/// exactly once, in the answer that creates or rotates the key.
pub struct MintedKey {
    pub plaintext: Zeroizing<String>,
    pub digest: KeyDigest,
    /// The prefix and the first characters of the body, for display (`kw_4fGh`).
    pub start: String,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// Mints a key from the operating system's CSPRNG. `Alphanumeric` samples by rejection,
/// so every one of the 62 characters is equally likely (no modulo bias).
pub fn mint(prefix: &KeyPrefix) -> MintedKey {
    let mut rng = OsRng.unwrap_err();
    let mut key = Zeroizing::new(String::with_capacity(prefix.0.len() + 1 + BODY_LEN));
    key.push_str(&prefix.0);
    key.push('_');
    for b in Alphanumeric.sample_iter(&mut rng).take(RANDOM_LEN) {
        key.push(b as char);
    }
    push_checksum(&mut key);
    let digest = KeyDigest::of(&key);
    let start = start_of(&key, prefix.0.len());
    MintedKey {
        plaintext: key,
        digest,
        start,
    }
}

fn start_of(key: &str, prefix_len: usize) -> String {
    key[..prefix_len + 1 + START_BODY_CHARS].to_owned()
}

/// Appends the 6 base62 characters of the CRC32 of `s`, zero-padded.
fn push_checksum(s: &mut String) {
    let crc = crc32fast::hash(s.as_bytes());
    let mut buf = [b'0'; CHECKSUM_LEN];
    let encoded = base62::encode(crc);
    buf[CHECKSUM_LEN - encoded.len()..].copy_from_slice(encoded.as_bytes());
    // base62 output is ASCII.
    s.push_str(std::str::from_utf8(&buf).expect("ascii"));
}

/// The 6-character checksum of `s`, without allocating.
fn checksum_of(s: &str) -> [u8; CHECKSUM_LEN] {
    let crc = crc32fast::hash(s.as_bytes());
    let mut buf = [b'0'; CHECKSUM_LEN];
    let mut tmp = [0u8; 8];
    let n = base62::encode_bytes(crc, &mut tmp).expect("a u32 fits in 6 base62 digits");
    buf[CHECKSUM_LEN - n..].copy_from_slice(&tmp[..n]);
    buf
}

/// A string that has the key format and whose checksum holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub prefix: &'a str,
    pub body: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    #[error("not in the key format <prefix>_<38 base62 characters>")]
    Format,
    #[error("checksum does not match")]
    Checksum,
}

/// Decides `MALFORMED` without any lookup: format, then checksum.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, MalformedKey> {
    let (prefix, body) = key.rsplit_once('_').ok_or(MalformedKey::Format)?;
    if body.len() != BODY_LEN
        || !body.bytes().all(|b| b.is_ascii_alphanumeric())
        || !is_valid_prefix(prefix)
    {
        return Err(MalformedKey::Format);
    }
    let split = key.len() - CHECKSUM_LEN;
    if checksum_of(&key[..split]) != key.as_bytes()[split..] {
        return Err(MalformedKey::Checksum);
    }
    Ok(ParsedKey { prefix, body })
}

impl ParsedKey<'_> {
    pub fn start(&self) -> String {
        start_of(&format!("{}_{}", self.prefix, self.body), self.prefix.len())
    }
}
