use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keyward_core::ip::{IpAllowlist, MAX_ENTRIES};
use proptest::prelude::*;

fn list(entries: &[&str]) -> IpAllowlist {
    IpAllowlist::parse(entries).unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn empty_allows_everything() {
    let l = list(&[]);
    assert!(l.is_empty());
    assert!(l.allows(ip("1.2.3.4")));
    assert!(l.allows(ip("2001:db8::1")));
}

#[test]
fn v4_cidr() {
    let l = list(&["10.0.0.0/8", "192.168.1.0/24"]);
    assert!(l.allows(ip("10.0.0.0")));
    assert!(l.allows(ip("10.255.255.255")));
    assert!(l.allows(ip("192.168.1.77")));
    assert!(!l.allows(ip("11.0.0.1")));
    assert!(!l.allows(ip("192.168.2.1")));
    assert!(!l.allows(ip("2001:db8::1")));
}

#[test]
fn v6_cidr() {
    let l = list(&["2001:db8::/32"]);
    assert!(l.allows(ip("2001:db8:ffff::1")));
    assert!(!l.allows(ip("2001:db9::1")));
    assert!(!l.allows(ip("10.0.0.1")));
}

#[test]
fn bare_addresses_are_single_hosts() {
    let l = list(&["10.0.0.1", "2001:db8::1"]);
    assert_eq!(l.to_strings(), ["10.0.0.1/32", "2001:db8::1/128"]);
    assert!(l.allows(ip("10.0.0.1")));
    assert!(!l.allows(ip("10.0.0.2")));
    assert!(l.allows(ip("2001:db8::1")));
    assert!(!l.allows(ip("2001:db8::2")));
}

#[test]
fn host_bits_are_cleared() {
    let l = list(&["10.1.2.3/8", "2001:db8:1:2::5/32", " 192.168.1.9/24 "]);
    assert_eq!(
        l.to_strings(),
        ["10.0.0.0/8", "2001:db8::/32", "192.168.1.0/24"]
    );
    assert!(l.allows(ip("10.200.0.1")));
}

#[test]
fn mapped_addresses_match_as_ipv4() {
    let l = list(&["10.0.0.0/8"]);
    assert!(l.allows(ip("::ffff:10.1.2.3")));
    assert!(!l.allows(ip("::ffff:11.1.2.3")));
    let any4 = list(&["0.0.0.0/0"]);
    assert!(any4.allows(ip("::ffff:1.2.3.4")));
    assert!(!any4.allows(ip("2001:db8::1")));
    // The IPv4-compatible (not mapped) form is a plain IPv6 address.
    assert!(!l.allows(ip("::10.1.2.3")));
}

#[test]
fn mapped_entries_become_ipv4() {
    let l = list(&["::ffff:10.0.0.0/104", "::ffff:1.2.3.4", "::ffff:0:0/96"]);
    assert_eq!(l.to_strings(), ["10.0.0.0/8", "1.2.3.4/32", "0.0.0.0/0"]);
    let l = list(&["::ffff:10.0.0.0/104"]);
    assert!(l.allows(ip("10.9.9.9")));
    assert!(l.allows(ip("::ffff:10.9.9.9")));
    assert!(!l.allows(ip("11.0.0.1")));
    // Wider than the mapped range: stays IPv6, and IPv4 clients are not IPv6 clients.
    let l = list(&["::/0"]);
    assert_eq!(l.to_strings(), ["::/0"]);
    assert!(!l.allows(ip("1.2.3.4")));
}

#[test]
fn invalid_entries_are_refused_with_their_index() {
    for bad in [
        "",
        "abc",
        "10.0.0",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "2001:db8::/129",
        "10.0.0.0/",
        "/8",
        "1.2.3.4.5",
        "fe80::1%eth0",
        "10.0.0.0/8/8",
        "01.2.3.4x",
    ] {
        let e = IpAllowlist::parse(&["10.0.0.1", bad]).expect_err(bad);
        assert_eq!(e.index, 1, "{bad:?}");
        assert_eq!(e.entry, bad);
    }
}

#[test]
fn entry_count_is_limited() {
    let entries: Vec<String> = (0..MAX_ENTRIES as u32)
        .map(|i| Ipv4Addr::from(i).to_string())
        .collect();
    assert_eq!(IpAllowlist::parse(&entries).unwrap().len(), MAX_ENTRIES);
    let mut too_many = entries;
    too_many.push("1.1.1.1".into());
    let e = IpAllowlist::parse(&too_many).unwrap_err();
    assert_eq!(e.index, MAX_ENTRIES);
    assert!(e.to_string().contains("too many"), "{e}");
}

#[test]
fn canonical_text_round_trips() {
    let l = list(&["10.1.2.3/8", "::ffff:1.2.3.4", "2001:DB8::1"]);
    assert_eq!(IpAllowlist::parse(&l.to_strings()).unwrap(), l);
}

/// Naive references: compare the top `prefix` bits.
fn v4_contains(net: u32, prefix: u8, addr: u32) -> bool {
    prefix == 0 || (net >> (32 - prefix)) == (addr >> (32 - prefix))
}
fn v6_contains(net: u128, prefix: u8, addr: u128) -> bool {
    prefix == 0 || (net >> (128 - prefix)) == (addr >> (128 - prefix))
}

proptest! {
    #[test]
    fn v4_matches_reference(
        nets in prop::collection::vec((any::<u32>(), 0u8..=32), 1..5),
        addr in any::<u32>(),
        flip in 0u32..32,
    ) {
        let entries: Vec<String> =
            nets.iter().map(|(n, p)| format!("{}/{p}", Ipv4Addr::from(*n))).collect();
        let l = IpAllowlist::parse(&entries).unwrap();
        // Also probe an address close to the first network, where matches are likely.
        for a in [addr, nets[0].0 ^ (1 << flip)] {
            let expected = nets.iter().any(|&(n, p)| v4_contains(n, p, a));
            prop_assert_eq!(l.allows(IpAddr::V4(a.into())), expected);
            prop_assert_eq!(l.allows(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())), expected);
        }
    }

    #[test]
    fn v6_matches_reference(
        nets in prop::collection::vec((any::<u128>(), 0u8..=128), 1..5),
        addr in any::<u128>(),
        flip in 0u32..128,
    ) {
        // Keep the generated networks clear of the mapped range, which canonicalises to v4.
        let nets: Vec<(u128, u8)> = nets.into_iter().map(|(n, p)| (n | (1 << 127), p.max(1))).collect();
        let entries: Vec<String> =
            nets.iter().map(|(n, p)| format!("{}/{p}", Ipv6Addr::from(*n))).collect();
        let l = IpAllowlist::parse(&entries).unwrap();
        for a in [addr, nets[0].0 ^ (1 << flip)] {
            let expected = nets.iter().any(|&(n, p)| v6_contains(n, p, a));
            prop_assert_eq!(l.allows(IpAddr::V6(a.into())), expected);
        }
    }

    #[test]
    fn parse_never_panics(entries in prop::collection::vec("\\PC{0,24}", 0..4)) {
        let _ = IpAllowlist::parse(&entries);
    }
}
