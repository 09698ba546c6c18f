use keyward_core::KeyDigest;
use keyward_core::key::{self, KeyPrefix, MalformedKey};
use proptest::prelude::*;

/// The contract's checksum, computed independently of `key.rs`: CRC32 of everything before
/// the checksum, base62 `0-9A-Za-z` via the `base62` crate, left-padded with `0` to 6.
fn reference_checksum(s: &str) -> String {
    format!("{:0>6}", base62::encode(crc32fast::hash(s.as_bytes())))
}

fn with_checksum(head: &str) -> String {
    format!("{head}{}", reference_checksum(head))
}

const RANDOM: &str = "abcdefghijABCDEFGHIJ0123456789xy";

#[test]
fn minted_keys_have_the_contract_format() {
    for prefix in [
        "kw",
        "kw_live",
        "acme_test",
        "a",
        "0123456789abcdef_0123456789abcdef",
    ] {
        let p = KeyPrefix::parse(prefix).unwrap();
        let m = key::mint(&p);
        let k: &str = &m.plaintext;
        assert_eq!(k.len(), prefix.len() + 1 + key::BODY_LEN);
        let body = &k[prefix.len() + 1..];
        assert!(k.starts_with(&format!("{prefix}_")));
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(&body[32..], reference_checksum(&k[..k.len() - 6]));
        assert_eq!(m.start, format!("{prefix}_{}", &body[..4]));
        assert_eq!(m.digest, KeyDigest::of(k));
        let parsed = key::parse(k).unwrap();
        assert_eq!(parsed.prefix, prefix);
        assert_eq!(parsed.body, body);
        assert_eq!(parsed.start(), m.start);
    }
}

#[test]
fn default_prefix_is_kw() {
    assert_eq!(KeyPrefix::default().as_str(), "kw");
    assert!(
        key::mint(&KeyPrefix::default())
            .plaintext
            .starts_with("kw_")
    );
}

#[test]
fn minted_keys_differ() {
    let p = KeyPrefix::default();
    let a = key::mint(&p);
    let b = key::mint(&p);
    assert_ne!(*a.plaintext, *b.plaintext);
}

#[test]
fn minted_key_debug_does_not_show_the_key() {
    let m = key::mint(&KeyPrefix::default());
    let shown = format!("{m:?}");
    assert!(!shown.contains(&m.plaintext[3..]), "{shown}");
    let parsed = key::parse(&m.plaintext).unwrap();
    let shown = format!("{parsed:?}");
    assert!(!shown.contains(parsed.body), "{shown}");
    assert!(shown.contains(&parsed.start()), "{shown}");
}

#[test]
fn prefix_rules() {
    let long = "a".repeat(16);
    for ok in [
        "kw",
        "kw_live",
        "acme_test",
        "a",
        "0",
        "k9_2x",
        &long,
        &format!("{long}_{long}"),
    ] {
        assert!(KeyPrefix::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "_",
        "kw_",
        "_kw",
        "KW",
        "kw_Live",
        "Kw",
        "kw-live",
        "kw live",
        "kw.live",
        "a_b_c",
        "kw__live",
        "é",
        &"a".repeat(17),
        &format!("kw_{}", "a".repeat(17)),
    ] {
        assert!(KeyPrefix::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn parse_accepts_a_reference_key() {
    let k = with_checksum(&format!("kw_live_{RANDOM}"));
    let p = key::parse(&k).unwrap();
    assert_eq!((p.prefix, p.body.len()), ("kw_live", 38));
    assert_eq!(p.start(), "kw_live_abcd");
}

#[test]
fn parse_rejects_bad_prefixes_even_with_a_valid_checksum() {
    for prefix in ["KW", "Kw_live", "a_b_c", &"a".repeat(17), "kw-live", ""] {
        let k = with_checksum(&format!("{prefix}_{RANDOM}"));
        assert_eq!(key::parse(&k), Err(MalformedKey::Format), "{k}");
    }
}

#[test]
fn parse_rejects_bad_bodies() {
    let good = with_checksum(&format!("kw_{RANDOM}"));
    assert!(key::parse(&good).is_ok());
    // Wrong lengths.
    assert_eq!(
        key::parse(&good[..good.len() - 1]),
        Err(MalformedKey::Format)
    );
    assert_eq!(key::parse(&format!("{good}0")), Err(MalformedKey::Format));
    // Characters outside base62, with the checksum recomputed so only the charset is wrong.
    for c in ['-', '+', '/', '=', ' ', '_'] {
        let random: String = RANDOM.chars().take(31).chain([c]).collect();
        let k = with_checksum(&format!("kw_{random}"));
        assert_eq!(key::parse(&k), Err(MalformedKey::Format), "{k}");
    }
    for bad in ["", "kw", "kw_", "_", "nounderscore", "kw_é"] {
        assert_eq!(key::parse(bad), Err(MalformedKey::Format), "{bad:?}");
    }
    assert_eq!(key::parse(&"a".repeat(100_000)), Err(MalformedKey::Format));
}

#[test]
fn wrong_checksum_is_checksum() {
    let good = with_checksum(&format!("kw_{RANDOM}"));
    let mut bad = good.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(key::parse(&bad), Err(MalformedKey::Checksum));
    let random_changed = good.replacen('a', "b", 1);
    assert_eq!(key::parse(&random_changed), Err(MalformedKey::Checksum));
}

#[test]
fn checksum_is_zero_padded() {
    // Find bodies whose CRC needs fewer than 6 base62 digits (about 1 in 5 does).
    let mut found = 0;
    for i in 0..10_000u32 {
        let head = format!("kw_{:0>32}", i);
        let crc = crc32fast::hash(head.as_bytes());
        if base62::encode(crc).len() < 6 {
            let k = with_checksum(&head);
            assert!(k.ends_with(&reference_checksum(&head)));
            assert!(k[k.len() - 6..].starts_with('0'));
            assert!(key::parse(&k).is_ok(), "{k}");
            found += 1;
        }
    }
    assert!(found > 100);
}

#[test]
fn checksum_uses_0_9_a_z_lower_order() {
    // CRC32("kw_" + 32 zeros) encoded by hand, digit order 0-9, A-Z, a-z.
    let head = format!("kw_{}", "0".repeat(32));
    let mut n = crc32fast::hash(head.as_bytes());
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = alphabet[(n % 62) as usize];
        n /= 62;
    }
    let k = format!("{head}{}", std::str::from_utf8(&digits).unwrap());
    assert!(key::parse(&k).is_ok(), "{k}");
}

fn prefix_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,16}(_[a-z0-9]{1,16})?"
}

proptest! {
    #[test]
    fn mint_parse_roundtrip(prefix in prefix_strategy()) {
        let p = KeyPrefix::parse(&prefix).unwrap();
        let m = key::mint(&p);
        let parsed = key::parse(&m.plaintext).unwrap();
        prop_assert_eq!(parsed.prefix, prefix.as_str());
        prop_assert_eq!(parsed.start(), m.start);
    }

    /// CRC32 catches every single-character substitution, and a character outside the
    /// format fails the format check.
    #[test]
    fn any_single_char_change_fails(
        prefix in prefix_strategy(),
        index in any::<prop::sample::Index>(),
        replacement in prop_oneof![
            prop::char::range('0', '9'),
            prop::char::range('A', 'Z'),
            prop::char::range('a', 'z'),
            Just('_'), Just('-'), Just(' '), Just('é'), Just('\0'),
        ],
    ) {
        let m = key::mint(&KeyPrefix::parse(&prefix).unwrap());
        let k: &str = &m.plaintext;
        let i = index.index(k.len());
        let original = k.as_bytes()[i] as char;
        prop_assume!(original != replacement);
        let mut changed = String::new();
        changed.push_str(&k[..i]);
        changed.push(replacement);
        changed.push_str(&k[i + 1..]);
        prop_assert!(key::parse(&changed).is_err(), "{} parsed", changed);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = key::parse(&s);
    }

    #[test]
    fn keys_with_valid_checksums_parse(prefix in prefix_strategy(), random in "[0-9A-Za-z]{32}") {
        let k = with_checksum(&format!("{prefix}_{random}"));
        prop_assert!(key::parse(&k).is_ok());
    }
}
