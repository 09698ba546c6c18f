use chrono::{TimeDelta, TimeZone, Utc};
use keyward_core::time::Timestamp;
use keyward_core::validate::{self, FieldError, META_MAX_BYTES, SCOPES_MAX, TTL_MAX_SECONDS};
use serde_json::{Map, Value, json};

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + TimeDelta::nanoseconds(123_456_789)
}

fn field(r: Result<impl std::fmt::Debug, FieldError>) -> String {
    r.unwrap_err().field
}

#[test]
fn text_fields() {
    for ok in [
        "billing-worker",
        "Zoë's service",
        "サービス",
        " padded ",
        &"x".repeat(128),
        &"é".repeat(128),
    ] {
        assert_eq!(
            validate::text("name", ok, validate::NAME_MAX),
            Ok(()),
            "{ok:?}"
        );
    }
    for bad in [
        "",
        "   ",
        "\t\n",
        "a\u{0}b",
        "line\nbreak",
        "bell\u{7}",
        "rtl\u{202E}gnp.exe",
        &"x".repeat(129),
    ] {
        let e = validate::text("owner", bad, validate::NAME_MAX).unwrap_err();
        assert_eq!(e.field, "owner", "{bad:?}");
    }
    assert_eq!(
        validate::text("name", "", 10).unwrap_err().to_string(),
        "name: must not be empty"
    );
}

#[test]
fn descriptions() {
    assert_eq!(validate::description(""), Ok(()));
    assert_eq!(validate::description("two\nlines\tand a tab"), Ok(()));
    assert_eq!(
        validate::description(&"é".repeat(validate::DESCRIPTION_MAX)),
        Ok(())
    );
    for bad in [
        "a\rb",
        "nul\u{0}",
        "esc\u{1b}[31m",
        &"x".repeat(validate::DESCRIPTION_MAX + 1),
    ] {
        assert_eq!(field(validate::description(bad)), "description", "{bad:?}");
    }
}

#[test]
fn meta_size() {
    let obj = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
    assert_eq!(validate::meta(&Map::new()), Ok(()));
    assert_eq!(
        validate::meta(&obj(json!({"team": "payments", "n": [1, 2, 3]}))),
        Ok(())
    );
    // `{"k":"..."}` is 8 bytes of overhead.
    let exact = obj(json!({ "k": "x".repeat(META_MAX_BYTES - 8) }));
    assert_eq!(serde_json::to_vec(&exact).unwrap().len(), META_MAX_BYTES);
    assert_eq!(validate::meta(&exact), Ok(()));
    let over = obj(json!({ "k": "x".repeat(META_MAX_BYTES - 7) }));
    assert_eq!(field(validate::meta(&over)), "meta");
    let huge = obj(json!({ "k": "x".repeat(10 * META_MAX_BYTES) }));
    assert_eq!(field(validate::meta(&huge)), "meta");
}

#[test]
fn scope_lists() {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        validate::scopes(&v(&["b", "a", "b", "orders:*", "a"])).unwrap(),
        v(&["b", "a", "orders:*"])
    );
    assert_eq!(validate::scopes(&[]).unwrap(), Vec::<String>::new());
    let e = validate::scopes(&v(&["a", "b", "c", "bad scope"])).unwrap_err();
    assert_eq!(e.field, "scopes[3]");
    assert_eq!(field(validate::scopes(&v(&["a*b"]))), "scopes[0]");
    let many: Vec<String> = (0..=SCOPES_MAX).map(|i| format!("s{i}")).collect();
    assert!(validate::scopes(&many[..SCOPES_MAX]).is_ok());
    assert_eq!(field(validate::scopes(&many)), "scopes");
}

#[test]
fn expiry() {
    let t = now();
    assert_eq!(validate::expiry(None, None, t), Ok(None));
    let later = t + TimeDelta::hours(1);
    let got = validate::expiry(Some(later), None, t).unwrap().unwrap();
    assert_eq!(got, keyward_core::time::truncate(later));
    let got = validate::expiry(None, Some(60), t).unwrap().unwrap();
    assert_eq!(
        got,
        keyward_core::time::truncate(t + TimeDelta::seconds(60))
    );
    assert!(validate::expiry(None, Some(TTL_MAX_SECONDS), t).is_ok());

    assert_eq!(field(validate::expiry(Some(t), None, t)), "expires_at");
    assert_eq!(
        field(validate::expiry(Some(t - TimeDelta::days(1)), None, t)),
        "expires_at"
    );
    // Within the same microsecond as now: not in the future once stored.
    assert_eq!(
        field(validate::expiry(
            Some(t + TimeDelta::nanoseconds(1)),
            None,
            t
        )),
        "expires_at"
    );
    for ttl in [0, -1, TTL_MAX_SECONDS + 1, i64::MAX, i64::MIN] {
        assert_eq!(
            field(validate::expiry(None, Some(ttl), t)),
            "ttl_seconds",
            "{ttl}"
        );
    }
    assert!(validate::expiry(Some(later), Some(60), t).is_err());
}

#[test]
fn remaining() {
    assert_eq!(validate::remaining(None), Ok(()));
    assert_eq!(validate::remaining(Some(0)), Ok(()));
    assert_eq!(validate::remaining(Some(i64::MAX)), Ok(()));
    assert_eq!(field(validate::remaining(Some(-1))), "remaining");
}
