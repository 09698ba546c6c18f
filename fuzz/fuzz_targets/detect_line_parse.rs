#![no_main]

use keyward_detect::events::{Line, parse_line};
use keyward_detect::{DetectSettings, Detectors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Parsing never panics; whatever parses as an event can be fed to the detectors
    // and written back as a line that parses to the same event.
    if let Ok(Line::Event(e)) = parse_line(s) {
        let mut d = Detectors::new(DetectSettings::default());
        let mut out = Vec::new();
        d.observe(&e, &mut out);
        d.finish(&mut out);
        let again = serde_json::to_string(&e).unwrap();
        assert_eq!(parse_line(&again), Ok(Line::Event(e)));
    }
});
