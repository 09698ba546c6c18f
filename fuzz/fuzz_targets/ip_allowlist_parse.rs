#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keyward_core::ip::IpAllowlist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 16 bytes pick an address to test; the rest is the allowlist, one entry a line.
    if data.len() < 16 {
        return;
    }
    let (addr, rest) = data.split_at(16);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let entries: Vec<&str> = text.lines().collect();
    let Ok(list) = IpAllowlist::parse(&entries) else {
        return;
    };
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(addr).unwrap());
    let v4 = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
    for a in [
        IpAddr::V6(v6),
        IpAddr::V4(v4),
        IpAddr::V6(v4.to_ipv6_mapped()),
    ] {
        let _ = list.allows(a);
    }
    // The canonical text must parse back to the same list.
    assert_eq!(IpAllowlist::parse(&list.to_strings()).as_ref(), Ok(&list));
    // A mapped address is matched as the IPv4 address it carries.
    assert_eq!(
        list.allows(IpAddr::V4(v4)),
        list.allows(IpAddr::V6(v4.to_ipv6_mapped()))
    );
});
