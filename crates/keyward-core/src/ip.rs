//! IP allowlists: CIDRs and single addresses, IPv4 and IPv6.

use std::net::IpAddr;

use ipnet::IpNet;

/// A parsed allowlist. An empty allowlist allows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    nets: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP allowlist entry {entry:?}: expected an address or CIDR (v4 or v6)")]
pub struct InvalidIpEntry {
    pub entry: String,
    /// Index in the list given.
    pub index: usize,
}

/// Most entries a key's allowlist may hold.
pub const MAX_ENTRIES: usize = 10_000;

impl IpAllowlist {
    /// Parses entries; single addresses become /32 or /128 networks, and host bits are
    /// cleared (`10.1.2.3/8` means `10.0.0.0/8`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, InvalidIpEntry> {
        todo!("{}{:?}", entries.len(), std::marker::PhantomData::<IpNet>)
    }

    /// The canonical text of each entry (`10.0.0.0/8`, `2001:db8::1/128`).
    pub fn to_strings(&self) -> Vec<String> {
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `addr` is allowed. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is
    /// matched as the IPv4 address it carries.
    pub fn allows(&self, addr: IpAddr) -> bool {
        todo!("{addr}")
    }
}
