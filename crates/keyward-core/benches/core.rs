//! The pure parts of a verification, one by one: parse and checksum, digest, policy
//! evaluation (with a small and a 10,000-entry IP allowlist), permission queries.
//!
//! `cargo bench -p keyward-core --bench core`

use std::hint::black_box;
use std::net::IpAddr;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::ip::IpAllowlist;
use keyward_core::permission::Permission;
use keyward_core::policy::{KeyPolicy, VerifyRequest};
use keyward_core::{KeyDigest, KeyPrefix, key};

fn policy(allowlist: IpAllowlist) -> KeyPolicy {
    KeyPolicy {
        revoked_at: None,
        expires_at: Some(Utc::now() + chrono::Duration::days(30)),
        enabled: true,
        identity_enabled: true,
        ip_allowlist: allowlist,
        scopes: smallvec::smallvec![
            "orders:*".into(),
            "billing:read".into(),
            "reports:read".into()
        ],
    }
}

/// `n - 1` disjoint (every other) /24 networks in 10.0.0.0/8 and one IPv6 network.
fn allowlist(n: usize) -> IpAllowlist {
    let mut entries: Vec<String> = (0..n - 1)
        .map(|i| format!("10.{}.{}.0/24", (2 * i / 256) % 256, (2 * i) % 256))
        .collect();
    entries.push("2001:db8::/32".into());
    IpAllowlist::parse(&entries).unwrap()
}

fn benches(c: &mut Criterion) {
    let minted = key::mint(&KeyPrefix::default());
    let k = minted.plaintext.as_str().to_owned();
    c.bench_function("key/parse+checksum", |b| {
        b.iter(|| key::parse(black_box(&k)).is_ok())
    });
    c.bench_function("key/digest", |b| b.iter(|| KeyDigest::of(black_box(&k))));
    c.bench_function("key/parse+checksum+digest", |b| {
        b.iter(|| {
            key::parse(black_box(&k)).unwrap();
            KeyDigest::of(black_box(&k))
        })
    });
    c.bench_function("key/mint", |b| b.iter(|| key::mint(&KeyPrefix::default())));

    let now = Utc::now();
    let scopes = vec!["orders:read".to_owned(), "billing:read".to_owned()];
    let permission = Permission::parse("orders:write AND (billing:read OR billing:admin)").unwrap();
    let ip: IpAddr = "10.200.17.5".parse().unwrap();
    for (label, n) in [("10", 10), ("10k", 10_000)] {
        let p = policy(allowlist(n));
        let req = VerifyRequest {
            scopes: &scopes,
            permission: Some(&permission),
            ip: Some(ip),
        };
        c.bench_function(&format!("policy/evaluate, allowlist {label}"), |b| {
            b.iter(|| p.evaluate(black_box(&req), now))
        });
        let list = allowlist(n);
        c.bench_function(&format!("allowlist/match {label}"), |b| {
            b.iter(|| list.allows(black_box(ip)))
        });
    }
    let p = policy(IpAllowlist::default());
    let req = VerifyRequest {
        scopes: &scopes,
        permission: None,
        ip: None,
    };
    c.bench_function("policy/evaluate, scopes only", |b| {
        b.iter(|| p.evaluate(black_box(&req), now))
    });
    c.bench_function("permission/parse", |b| {
        b.iter(|| {
            Permission::parse(black_box(
                "orders:write AND (billing:read OR billing:admin)",
            ))
        })
    });
}

criterion_group!(core, benches);
criterion_main!(core);
