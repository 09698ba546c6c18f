//! Properties of the posture rules and the usage scope mask over arbitrary keys.

use std::collections::HashSet;

use chrono::{TimeDelta, TimeZone, Utc};
use keyward_core::KeyDigest;
use keyward_core::model::KeyRecord;
use keyward_core::policy::VerifyRequest;
use keyward_core::posture::{
    FindingKind, KeyUsage, PostureSettings, is_keyward_scope, key_findings, score,
};
use keyward_core::time::Timestamp;
use keyward_core::usage::{exercised_scopes, scopes_in_mask, scopes_in_mask_into};
use proptest::prelude::*;
use uuid::Uuid;

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

const SCOPES: [&str; 6] = [
    "orders:read",
    "orders:write",
    "orders:*",
    "billing:read",
    "keyward:admin",
    "keyward:keys:read",
];

fn key(
    age: i64,
    last_use: Option<i64>,
    scopes: Vec<String>,
    expires: bool,
    ips: bool,
) -> KeyRecord {
    let created = now() - TimeDelta::days(age);
    KeyRecord {
        id: Uuid::nil(),
        identity_id: Uuid::nil(),
        name: String::new(),
        prefix: "kw".into(),
        start: "kw_x".into(),
        digest: KeyDigest::from_slice(&[1; 32]).unwrap(),
        scopes,
        created_at: created,
        updated_at: created,
        expires_at: expires.then(|| now() + TimeDelta::days(1)),
        revoked_at: None,
        enabled: true,
        ip_allowlist: if ips {
            vec!["10.0.0.0/8".into()]
        } else {
            vec![]
        },
        rate_limits: vec![],
        remaining: None,
        last_used_at: last_use.map(|d| now() - TimeDelta::days(d)),
        meta: Default::default(),
        rotated_from: None,
        rotated_to: None,
    }
}

fn scope_set() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(SCOPES.to_vec(), 0..=SCOPES.len())
        .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

proptest! {
    #[test]
    fn findings_are_consistent(
        age in 0i64..1000,
        last_use in proptest::option::of(0i64..1000),
        granted in scope_set(),
        used in scope_set(),
        expires: bool,
        ips: bool,
        stale_days in 1u32..400,
        max_age_days in 1u32..400,
    ) {
        let k = key(age, last_use, granted.clone(), expires, ips);
        let usage = KeyUsage { exercised: used.iter().cloned().collect::<HashSet<_>>() };
        let settings = PostureSettings { stale_days, max_age_days };
        let f = key_findings(&k, &usage, settings, now());
        let kinds: Vec<FindingKind> = f.iter().map(|f| f.kind).collect();
        // Each kind at most once per key, and STALE excludes UNUSED_SCOPES.
        let distinct: HashSet<_> = kinds.iter().collect();
        prop_assert_eq!(distinct.len(), kinds.len());
        prop_assert!(!(kinds.contains(&FindingKind::Stale) && kinds.contains(&FindingKind::UnusedScopes)));
        prop_assert_eq!(kinds.contains(&FindingKind::NoExpiry), !expires);
        prop_assert_eq!(kinds.contains(&FindingKind::NoIpRestriction), !ips);
        prop_assert_eq!(kinds.contains(&FindingKind::NotRotated), age > i64::from(max_age_days));
        prop_assert_eq!(
            kinds.contains(&FindingKind::AdminKey),
            granted.iter().any(|s| is_keyward_scope(s))
        );
        for finding in &f {
            // Unused scopes are granted, not exercised, and never Keyward's own.
            for s in &finding.scopes {
                prop_assert!(granted.contains(s));
                prop_assert!(!used.contains(s));
                prop_assert!(!is_keyward_scope(s));
            }
        }
        let expected = 100i64 - kinds.iter().map(|k| i64::from(k.weight())).sum::<i64>();
        prop_assert_eq!(i64::from(score(&f)), expected.max(0));
    }

    #[test]
    fn the_mask_names_only_granted_scopes_that_grant_a_request(
        granted in scope_set(),
        requested in scope_set(),
    ) {
        let req = VerifyRequest { scopes: &requested, permission: None, ip: None };
        let names = scopes_in_mask(&granted, exercised_scopes(&granted, &req));
        for n in &names {
            prop_assert!(granted.contains(n));
            prop_assert!(requested.iter().any(|r| keyward_core::scope::grants(n, r)));
        }
        // Every requested scope the key holds is accounted for by some named scope.
        for r in &requested {
            if granted.iter().any(|g| keyward_core::scope::grants(g, r)) {
                prop_assert!(names.iter().any(|n| keyward_core::scope::grants(n, r)));
            }
        }
    }

    #[test]
    fn names_written_over_an_earlier_list_are_the_same_names(
        granted in scope_set(),
        mask in any::<u64>(),
        earlier in scope_set(),
    ) {
        let mut out = earlier;
        scopes_in_mask_into(&granted, mask, &mut out);
        prop_assert_eq!(out, scopes_in_mask(&granted, mask));
    }
}
