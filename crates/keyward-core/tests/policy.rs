use std::net::IpAddr;

use chrono::{TimeDelta, TimeZone, Utc};
use keyward_core::VerifyCode;
use keyward_core::ip::IpAllowlist;
use keyward_core::permission::Permission;
use keyward_core::policy::{KeyPolicy, VerifyRequest};
use keyward_core::time::Timestamp;
use proptest::prelude::*;

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn valid_policy() -> KeyPolicy {
    KeyPolicy {
        revoked_at: None,
        expires_at: None,
        enabled: true,
        identity_enabled: true,
        ip_allowlist: IpAllowlist::default(),
        scopes: smallvec::smallvec!["orders:*".into(), "billing:read".into()],
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn valid_key() {
    let p = valid_policy();
    assert_eq!(
        p.evaluate(&VerifyRequest::default(), now()),
        VerifyCode::Valid
    );
    let perm = Permission::parse("orders:read AND (billing:read OR billing:admin)").unwrap();
    let scopes = vec!["orders:write".to_owned()];
    let req = VerifyRequest {
        scopes: &scopes,
        permission: Some(&perm),
        ip: ip("10.0.0.1"),
    };
    assert_eq!(p.evaluate(&req, now()), VerifyCode::Valid);
}

#[test]
fn time_boundaries() {
    let mut p = valid_policy();
    p.revoked_at = Some(now());
    assert_eq!(
        p.evaluate(&VerifyRequest::default(), now()),
        VerifyCode::Revoked
    );
    // A rotated key in its grace period still works.
    p.revoked_at = Some(now() + TimeDelta::microseconds(1));
    assert_eq!(
        p.evaluate(&VerifyRequest::default(), now()),
        VerifyCode::Valid
    );
    p.expires_at = Some(now());
    assert_eq!(
        p.evaluate(&VerifyRequest::default(), now()),
        VerifyCode::Expired
    );
    p.expires_at = Some(now() + TimeDelta::seconds(1));
    assert_eq!(
        p.evaluate(&VerifyRequest::default(), now()),
        VerifyCode::Valid
    );
}

#[test]
fn allowlist_refuses_missing_and_outside_addresses() {
    let mut p = valid_policy();
    p.ip_allowlist = IpAllowlist::parse(&["10.0.0.0/8"]).unwrap();
    let mut req = VerifyRequest::default();
    assert_eq!(p.evaluate(&req, now()), VerifyCode::IpNotAllowed);
    req.ip = ip("11.0.0.1");
    assert_eq!(p.evaluate(&req, now()), VerifyCode::IpNotAllowed);
    req.ip = ip("10.0.0.1");
    assert_eq!(p.evaluate(&req, now()), VerifyCode::Valid);
    req.ip = ip("::ffff:10.0.0.1");
    assert_eq!(p.evaluate(&req, now()), VerifyCode::Valid);
}

#[test]
fn scopes_and_permission_are_both_required() {
    let p = valid_policy();
    let need = vec!["billing:write".to_owned()];
    let req = VerifyRequest {
        scopes: &need,
        ..Default::default()
    };
    assert_eq!(p.evaluate(&req, now()), VerifyCode::InsufficientScope);
    let perm = Permission::parse("admin OR billing:write").unwrap();
    let req = VerifyRequest {
        permission: Some(&perm),
        ..Default::default()
    };
    assert_eq!(p.evaluate(&req, now()), VerifyCode::InsufficientScope);
}

#[derive(Debug, Clone, Copy)]
enum IpFault {
    None,
    Missing,
    Outside,
}

#[derive(Debug, Clone, Copy)]
enum ScopeFault {
    None,
    Scopes,
    Permission,
    Both,
}

proptest! {
    /// Whatever combination of checks fails, the answer is the first failing one in the
    /// contract's order.
    #[test]
    fn code_is_the_first_failing_check(
        revoked in any::<bool>(),
        expired in any::<bool>(),
        key_disabled in any::<bool>(),
        identity_disabled in any::<bool>(),
        ip_fault in prop_oneof![Just(IpFault::None), Just(IpFault::Missing), Just(IpFault::Outside)],
        scope_fault in prop_oneof![
            Just(ScopeFault::None), Just(ScopeFault::Scopes),
            Just(ScopeFault::Permission), Just(ScopeFault::Both),
        ],
        has_allowlist in any::<bool>(),
        offset_s in 0i64..1000,
    ) {
        let t = now();
        let policy = KeyPolicy {
            revoked_at: Some(if revoked { t - TimeDelta::seconds(offset_s) } else { t + TimeDelta::seconds(offset_s + 1) }),
            expires_at: if expired { Some(t - TimeDelta::seconds(offset_s)) } else { None },
            enabled: !key_disabled,
            identity_enabled: !identity_disabled,
            ip_allowlist: if has_allowlist || !matches!(ip_fault, IpFault::None) {
                IpAllowlist::parse(&["10.0.0.0/8", "2001:db8::/32"]).unwrap()
            } else {
                IpAllowlist::default()
            },
            scopes: smallvec::smallvec!["orders:*".into(), "billing:read".into()],
        };
        let ok_perm = Permission::parse("orders:read AND (billing:read OR billing:admin)").unwrap();
        let bad_perm = Permission::parse("orders:read AND billing:admin").unwrap();
        let ok_scopes = vec!["orders:write".to_owned(), "billing:read".to_owned()];
        let bad_scopes = vec!["orders:write".to_owned(), "billing:write".to_owned()];
        let (scopes, perm) = match scope_fault {
            ScopeFault::None => (&ok_scopes, &ok_perm),
            ScopeFault::Scopes => (&bad_scopes, &ok_perm),
            ScopeFault::Permission => (&ok_scopes, &bad_perm),
            ScopeFault::Both => (&bad_scopes, &bad_perm),
        };
        let req = VerifyRequest {
            scopes,
            permission: Some(perm),
            ip: match ip_fault {
                IpFault::None => ip("10.1.2.3"),
                IpFault::Missing => None,
                IpFault::Outside => ip("192.0.2.1"),
            },
        };
        let failing = [
            (revoked, VerifyCode::Revoked),
            (expired, VerifyCode::Expired),
            (key_disabled || identity_disabled, VerifyCode::Disabled),
            (!matches!(ip_fault, IpFault::None), VerifyCode::IpNotAllowed),
            (!matches!(scope_fault, ScopeFault::None), VerifyCode::InsufficientScope),
        ];
        let expected = failing
            .iter()
            .find(|(fails, _)| *fails)
            .map_or(VerifyCode::Valid, |&(_, code)| code);
        prop_assert_eq!(policy.evaluate(&req, t), expected);
        // The codes' declaration order is the contract's order too.
        prop_assert!(failing.windows(2).all(|w| w[0].1 < w[1].1));
    }
}
