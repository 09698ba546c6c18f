//! Keyward keys: found by shape, confirmed by `keyward_core::key::parse` (format and
//! CRC32 checksum), with no lookup.
//!
//! A key is `<prefix>_<38 base62>` with a prefix of one or two `[a-z0-9]{1,16}` segments,
//! so it lies at the end of a run of `[A-Za-z0-9_]`: any further base62 character would
//! lengthen the body. The scan walks such runs (a byte loop, no regex), and for each run
//! of at least 40 bytes tries the two-segment prefix, then the one-segment prefix.
//!
//! A string in the key format whose checksum fails is a *near miss*. It is never a
//! Keyward key (no server would accept it: `MALFORMED` is decided by the checksum), so it
//! is never reported as one; the engine also keeps the generic detector quiet on it
//! (it is a typo, a truncated or hand-made example, or a made-up test value). A rule for
//! another vendor whose format it also fits (Stripe's `sk_live_...`) still reports it,
//! as that vendor's credential.

use keyward_core::key::{self, MalformedKey};

/// Where a string in the Keyward key format lies, and whether its checksum holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCandidate {
    pub start: usize,
    pub end: usize,
    /// The checksum holds: a Keyward key. Otherwise a near miss.
    pub valid: bool,
}

const MIN_RUN: usize = 1 + 1 + key::BODY_LEN;

static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'_';
        i += 1;
    }
    t
};

/// Every string in the Keyward key format in `data`, valid or not.
///
/// Skips ahead like Boyer-Moore: a run of at least `MIN_RUN` word bytes that starts at or
/// after `i` must cover byte `i + MIN_RUN - 1`, so when that byte is not a word byte the
/// scan jumps past it, and most of a text is never looked at.
pub fn find(data: &[u8], out: &mut Vec<KeyCandidate>) {
    let n = data.len();
    // Invariant: `i == 0` or `data[i - 1]` is not a word byte.
    let mut i = 0;
    while i + MIN_RUN <= n {
        let probe = i + MIN_RUN - 1;
        if !WORD[data[probe] as usize] {
            i = probe + 1;
            continue;
        }
        let mut start = probe;
        while start > i && WORD[data[start - 1] as usize] {
            start -= 1;
        }
        let mut end = probe + 1;
        while end < n && WORD[data[end] as usize] {
            end += 1;
        }
        if end - start >= MIN_RUN
            && let Some(c) = candidate_in_run(data, start, end)
        {
            out.push(c);
        }
        i = end + 1;
    }
}

fn candidate_in_run(data: &[u8], run_start: usize, run_end: usize) -> Option<KeyCandidate> {
    let body_start = run_end - key::BODY_LEN;
    let body = &data[body_start..run_end];
    if data[body_start - 1] != b'_' || !body.iter().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    // The prefix: the last one or two `_`-separated segments before the body.
    let sep = body_start - 1;
    let seg1_start = segment_start(data, run_start, sep);
    let mut starts = Vec::with_capacity(2);
    if seg1_start > run_start && data[seg1_start - 1] == b'_' {
        let seg2_start = segment_start(data, run_start, seg1_start - 1);
        starts.push(seg2_start);
    }
    starts.push(seg1_start);
    let mut near_miss = None;
    for s in starts {
        // Both are ASCII, so the slice is UTF-8.
        let text = std::str::from_utf8(&data[s..run_end]).ok()?;
        match key::parse(text) {
            Ok(_) => {
                return Some(KeyCandidate {
                    start: s,
                    end: run_end,
                    valid: true,
                });
            }
            Err(MalformedKey::Checksum) if near_miss.is_none() => {
                near_miss = Some(KeyCandidate {
                    start: s,
                    end: run_end,
                    valid: false,
                });
            }
            Err(_) => {}
        }
    }
    near_miss
}

/// Start of the `_`-free segment that ends at `end` (exclusive), not before `floor`.
fn segment_start(data: &[u8], floor: usize, end: usize) -> usize {
    let mut s = end;
    while s > floor && data[s - 1] != b'_' {
        s -= 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::key::{KeyPrefix, mint};

    fn found(text: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        find(text.as_bytes(), &mut out);
        out.iter()
            .map(|c| (text[c.start..c.end].to_owned(), c.valid))
            .collect()
    }

    #[test]
    fn finds_minted_keys_of_every_prefix_shape() {
        for prefix in [
            "kw",
            "kw_live",
            "acme_test",
            "a",
            "abcdefghijklmnop_0123456789abcdef",
        ] {
            let k = mint(&KeyPrefix::parse(prefix).unwrap());
            let key = k.plaintext.as_str();
            for text in [
                key.to_string(),
                format!("token = \"{key}\""),
                format!("KEYWARD_TOKEN={key}\n"),
                format!("X_{key} "),
                format!("{{\"key\":\"{key}\"}}"),
            ] {
                assert_eq!(found(&text), vec![(key.to_owned(), true)], "{text}");
            }
        }
    }

    #[test]
    fn a_near_miss_is_never_valid() {
        let k = mint(&KeyPrefix::default());
        let mut bad = k.plaintext.to_string();
        // Change one character of the random part: the checksum no longer holds.
        let i = 5;
        let c = bad.as_bytes()[i];
        let replacement = if c == b'a' { "b" } else { "a" };
        bad.replace_range(i..i + 1, replacement);
        assert_eq!(found(&bad), vec![(bad.clone(), false)]);
    }

    #[test]
    fn keys_at_every_offset_and_back_to_back() {
        let keys: Vec<String> = (0..3)
            .map(|_| mint(&KeyPrefix::default()).plaintext.to_string())
            .collect();
        for pad in 0..50 {
            let text = format!("{}{} {},{}", " ".repeat(pad), keys[0], keys[1], keys[2]);
            let got: Vec<String> = found(&text).into_iter().map(|(k, _)| k).collect();
            assert_eq!(got, keys, "pad {pad}");
        }
    }

    #[test]
    fn longer_bodies_and_other_shapes_are_not_candidates() {
        let k = mint(&KeyPrefix::default());
        let key = k.plaintext.as_str();
        assert!(found(&format!("{key}A")).is_empty());
        assert!(found(&"a".repeat(80)).is_empty());
        assert!(found(&format!("KW_{}", &key[3..])).is_empty());
    }
}
