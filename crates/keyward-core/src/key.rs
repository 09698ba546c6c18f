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

impl std::fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyPrefix {
    type Err = InvalidPrefix;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyPrefix::parse(s)
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
    let start = start_of(&prefix.0, &key[prefix.0.len() + 1..]);
    MintedKey {
        plaintext: key,
        digest,
        start,
    }
}

fn start_of(prefix: &str, body: &str) -> String {
    let mut start = String::with_capacity(prefix.len() + 1 + START_BODY_CHARS);
    start.push_str(prefix);
    start.push('_');
    start.push_str(&body[..START_BODY_CHARS]);
    start
}

/// Appends the 6 base62 characters of the CRC32 of `s`, zero-padded.
fn push_checksum(s: &mut String) {
    let sum = checksum_of(s);
    for &b in &sum {
        s.push(char::from(b));
    }
}

/// The base62 digits, in the contract's order: `0-9A-Za-z`.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 6-character checksum of `s`: CRC32, base62, most significant digit first,
/// zero-padded. Fixed width by construction (62^6 > 2^32), and it allocates nothing.
fn checksum_of(s: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(s.as_bytes());
    let mut buf = [b'0'; CHECKSUM_LEN];
    for d in buf.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    buf
}

/// A string that has the key format and whose checksum holds.
///
/// `Debug` shows only the `start`: a parsed key is the secret itself and must not reach a
/// log through `{:?}`.
#[derive(Clone, Copy, PartialEq, Eq)]
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

/// Longest string in the key format: two 16-character prefix segments, two `_`, the body.
pub const MAX_KEY_LEN: usize = 2 * SEGMENT_MAX + 2 + BODY_LEN;

/// Decides `MALFORMED` without any lookup: format, then checksum.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, MalformedKey> {
    // Bounds the work done on hostile input before anything scans it.
    if key.len() > MAX_KEY_LEN {
        return Err(MalformedKey::Format);
    }
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
        start_of(self.prefix, self.body)
    }
}

impl std::fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey")
            .field("prefix", &self.prefix)
            .field("start", &self.start())
            .finish_non_exhaustive()
    }
}
