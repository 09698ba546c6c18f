//! Source networks: an address truncated to its /24 (IPv4) or /48 (IPv6), the unit in
//! which "usual places" are learned. IPv4-mapped IPv6 addresses count as IPv4.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A network, packed into 128 bits (IPv4 as its IPv4-mapped IPv6 form), with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Net {
    bits: u128,
    prefix: u8,
}

impl Net {
    /// The network of `ip`, with the settings' prefixes (already validated).
    pub fn of(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Net {
        let net = match ip.to_canonical() {
            IpAddr::V4(a) => Ipv4Net::new(a, v4_prefix).map(|n| IpNet::V4(n.trunc())),
            IpAddr::V6(a) => Ipv6Net::new(a, v6_prefix).map(|n| IpNet::V6(n.trunc())),
        };
        // Prefixes are validated with the settings; a bad one degrades to the address.
        let net = net.unwrap_or_else(|_| IpNet::from(ip));
        Net {
            bits: addr_bits(net.network()),
            prefix: net.prefix_len(),
        }
    }

    pub fn as_ipnet(&self) -> IpNet {
        let v6 = std::net::Ipv6Addr::from(self.bits);
        match v6.to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, self.prefix.min(32))
                .map(IpNet::V4)
                .unwrap_or_default(),
            None => Ipv6Net::new(v6, self.prefix.min(128))
                .map(IpNet::V6)
                .unwrap_or_default(),
        }
    }

    /// Which of 256 slots an address of this network falls in: its last octet for an
    /// IPv4 /24, a hash of the host part otherwise. Used to count distinct addresses.
    pub fn slot(ip: IpAddr) -> u8 {
        match ip.to_canonical() {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => {
                let b = u128::from(a);
                (b ^ (b >> 8) ^ (b >> 16) ^ (b >> 32) ^ (b >> 64)) as u8
            }
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_ipnet())
    }
}

/// An address as 128 bits (IPv4 mapped).
pub fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_truncate_and_print() {
        let n = Net::of("203.0.113.77".parse().unwrap(), 24, 48);
        assert_eq!(n.to_string(), "203.0.113.0/24");
        assert_eq!(n, Net::of("::ffff:203.0.113.1".parse().unwrap(), 24, 48));
        let n6 = Net::of("2001:db8:1:2::5".parse().unwrap(), 24, 48);
        assert_eq!(n6.to_string(), "2001:db8:1::/48");
        assert_eq!(Net::slot("203.0.113.77".parse().unwrap()), 77);
    }
}
