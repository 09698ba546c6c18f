#![no_main]

use keyward_core::key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = key::parse(s) {
        // Whatever parses must satisfy the format the contract promises.
        assert!(s.len() <= key::MAX_KEY_LEN);
        assert_eq!(parsed.body.len(), key::BODY_LEN);
        assert!(parsed.body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(key::KeyPrefix::parse(parsed.prefix).is_ok());
        assert_eq!(format!("{}_{}", parsed.prefix, parsed.body), s);
        assert!(parsed.start().starts_with(parsed.prefix));
    }
});
