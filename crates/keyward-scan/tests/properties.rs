//! Properties of the detector over arbitrary input.

use keyward_core::key::{KeyPrefix, mint};
use keyward_scan::engine::{Detector, Generic};
use keyward_scan::finding::redact;
use proptest::prelude::*;

fn detector() -> &'static Detector {
    static D: std::sync::OnceLock<Detector> = std::sync::OnceLock::new();
    D.get_or_init(Detector::new)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes: no panic, and every hit lies inside the buffer with a sane position.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for mode in [Generic::Off, Generic::QuotedOnly, Generic::All] {
            for h in detector().detect(&data, mode) {
                prop_assert!(h.start < h.end && h.end <= data.len());
                prop_assert!(h.line >= 1 && h.column >= 1);
                prop_assert!(!redact(&h.secret, h.keyward).contains(h.secret.as_str()) || h.secret.len() < 8);
            }
        }
    }

    /// A minted key between non-word bytes is always found as a Keyward key, whatever
    /// surrounds it; flipping one of its characters makes it a near miss, never reported.
    #[test]
    fn minted_keys_are_found_and_near_misses_never_are(
        before in "[ -~\n]{0,200}",
        after in "[ -~\n]{0,200}",
        sep1 in "[ =:\"'\n,(]",
        sep2 in "[ ;\"'\n,)]",
        flip in 3usize..41,
    ) {
        let k = mint(&KeyPrefix::default());
        let key = k.plaintext.as_str();
        let text = format!("{before}{sep1}{key}{sep2}{after}");
        let hits = detector().detect(text.as_bytes(), Generic::All);
        prop_assert!(hits.iter().any(|h| h.keyward && h.secret.as_str() == key), "{text:?}");

        let mut near = key.to_owned();
        let c = near.as_bytes()[flip];
        let r = if c == b'x' { "y" } else { "x" };
        near.replace_range(flip..flip + 1, r);
        let text = format!("{before}{sep1}{near}{sep2}{after}");
        for h in detector().detect(text.as_bytes(), Generic::All) {
            // Not as a Keyward key, and (a `kw_` near miss fitting no vendor format) not at all.
            prop_assert!(!h.secret.contains(&near[3..]), "{} on {text:?}", h.rule);
        }
    }
}
