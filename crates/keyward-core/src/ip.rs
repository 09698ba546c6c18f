//! IP allowlists: CIDRs and single addresses, IPv4 and IPv6.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// A parsed allowlist. An empty allowlist allows every address.
// The field stays private so the linear scan can become a prefix trie without callers
// noticing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    nets: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP allowlist entry {entry:?}: {reason}")]
pub struct InvalidIpEntry {
    pub entry: String,
    /// Index in the list given.
    pub index: usize,
    pub reason: &'static str,
}

/// Most entries a key's allowlist may hold.
pub const MAX_ENTRIES: usize = 10_000;

const NOT_AN_ADDRESS: &str = "expected an address or CIDR (v4 or v6)";

impl IpAllowlist {
    /// Parses entries; single addresses become /32 or /128 networks, and host bits are
    /// cleared (`10.1.2.3/8` means `10.0.0.0/8`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, InvalidIpEntry> {
        if entries.len() > MAX_ENTRIES {
            return Err(InvalidIpEntry {
                entry: entries[MAX_ENTRIES].as_ref().chars().take(64).collect(),
                index: MAX_ENTRIES,
                reason: "too many entries (at most 10000)",
            });
        }
        let nets = entries
            .iter()
            .enumerate()
            .map(|(index, e)| {
                parse_entry(e.as_ref()).ok_or_else(|| InvalidIpEntry {
                    // Bounded, so a hostile entry cannot balloon the error message.
                    entry: e.as_ref().chars().take(64).collect(),
                    index,
                    reason: NOT_AN_ADDRESS,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IpAllowlist { nets })
    }

    /// The canonical text of each entry (`10.0.0.0/8`, `2001:db8::1/128`).
    pub fn to_strings(&self) -> Vec<String> {
        self.nets.iter().map(|n| n.to_string()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether `addr` is allowed. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is
    /// matched as the IPv4 address it carries.
    pub fn allows(&self, addr: IpAddr) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let addr = addr.to_canonical();
        self.nets.iter().any(|n| n.contains(&addr))
    }
}

fn parse_entry(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    let net = match entry.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
    };
    Some(canonical(net.trunc()))
}

/// Stores an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it
/// stands for, because `allows` matches mapped addresses as IPv4. A mapped network
/// shorter than /96 reaches beyond the mapped range and stays IPv6.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
    {
        let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix is at most 32");
        return IpNet::V4(v4);
    }
    net
}
