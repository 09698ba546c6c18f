//! Property tests: `observe` never panics, whatever the events (any order, codes,
//! addresses, scopes, rotations), and memory stays bounded per key and overall.

use std::net::IpAddr;

use chrono::DateTime;
use keyward_core::code::VerifyCode;
use keyward_core::usage::UsageEvent;
use keyward_detect::{DetectSettings, Detectors};
use proptest::prelude::*;
use uuid::Uuid;

fn event() -> impl Strategy<Value = (i64, u8, u8, u128, bool, Vec<String>)> {
    (
        // Seconds, jumping back and forth over years (out of order on purpose).
        -100_000_000i64..4_000_000_000,
        0u8..4,
        0u8..10,
        any::<u128>(),
        any::<bool>(),
        prop::collection::vec("[a-z:*]{0,12}", 0..4),
    )
}

fn to_event(
    k: &[Uuid],
    (at, key, code, ip, v6, scopes): (i64, u8, u8, u128, bool, Vec<String>),
) -> UsageEvent {
    let ip: IpAddr = if v6 {
        std::net::Ipv6Addr::from(ip).into()
    } else {
        std::net::Ipv4Addr::from(ip as u32).into()
    };
    let key = (key < 3).then(|| k[usize::from(key)]);
    UsageEvent {
        at: DateTime::from_timestamp(at, 0).unwrap(),
        key_id: key,
        identity_id: key.map(|_| k[3]),
        code: VerifyCode::ALL[usize::from(code)],
        ip: Some(ip),
        scopes,
        latency_us: 0,
        tags: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn observe_never_panics(events in prop::collection::vec(event(), 1..400), rotate_at in 0usize..400) {
        let keys: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let mut d = Detectors::new(DetectSettings::default());
        let mut out = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            let e = to_event(&keys, e);
            if i == rotate_at {
                d.note_rotated(keys[0], keys[1], e.at, e.at);
            }
            d.observe(&e, &mut out);
            let mut at = e.at;
            at += chrono::Duration::seconds(1);
            d.tick(at, &mut out);
        }
        d.finish(&mut out);
        for a in &out {
            prop_assert!(!a.detail.is_empty());
        }
    }

    #[test]
    fn per_key_memory_is_bounded(ips in prop::collection::vec(any::<u32>(), 500..1500)) {
        // One key used from ever new networks with ever new scopes, an hour apart, so
        // it warms up and keeps meeting new places.
        let key = Uuid::now_v7();
        let settings = DetectSettings::default();
        let mut d = Detectors::new(settings);
        let mut out = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let e = UsageEvent {
                at: DateTime::from_timestamp(1_767_571_200 + i as i64 * 600, 0).unwrap(),
                key_id: Some(key),
                identity_id: Some(Uuid::nil()),
                code: if i % 3 == 0 { VerifyCode::InsufficientScope } else { VerifyCode::Valid },
                ip: Some(std::net::Ipv4Addr::from(*ip).into()),
                scopes: vec![format!("scope:{i}")],
                latency_us: 0,
                tags: None,
            };
            d.observe(&e, &mut out);
            prop_assert!(d.key_bytes(key).unwrap() <= d.key_state_max_bytes());
        }
    }
}

#[test]
fn unknown_key_state_is_bounded_overall() {
    let settings = DetectSettings {
        guess_networks_max: 64,
        keys_max: 64,
        ..DetectSettings::default()
    };
    let mut d = Detectors::new(settings);
    let mut out = Vec::new();
    for i in 0..5_000u32 {
        let at = DateTime::from_timestamp(1_767_571_200 + i64::from(i), 0).unwrap();
        let ip: IpAddr = std::net::Ipv4Addr::from(i << 8).into();
        let guess = UsageEvent {
            at,
            key_id: None,
            identity_id: None,
            code: VerifyCode::NotFound,
            ip: Some(ip),
            scopes: vec![],
            latency_us: 0,
            tags: None,
        };
        d.observe(&guess, &mut out);
        let used = UsageEvent {
            key_id: Some(Uuid::now_v7()),
            code: VerifyCode::Valid,
            ..guess
        };
        d.observe(&used, &mut out);
        assert!(d.networks_tracked() <= 64);
        assert!(d.keys_tracked() <= 64);
    }
}
