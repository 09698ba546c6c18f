#![no_main]

use keyward_core::permission::{MAX_QUERY_LEN, Permission};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Permission::parse(s) {
        Ok(p) => {
            // Printing and reparsing must give the same tree (the parser flattens, and
            // the printer writes what the parser flattens back to).
            // Printing may add spaces around parentheses, so it can outgrow the limit.
            let printed = p.to_string();
            if printed.len() <= MAX_QUERY_LEN {
                let again = Permission::parse(&printed).expect("printed query reparses");
                assert_eq!(again, p, "{s:?} printed as {printed:?}");
            }
            // Queries are monotone: holding every scope named satisfies any query.
            assert!(p.evaluate(&p.scopes()));
        }
        Err(e) => assert!(e.position <= s.len()),
    }
});
