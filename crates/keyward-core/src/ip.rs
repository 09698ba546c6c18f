//! IP allowlists: CIDRs and single addresses, IPv4 and IPv6.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// A parsed allowlist. An empty allowlist allows every address.
///
/// Matching is a binary search over the networks as sorted, merged address ranges, so a
/// 10,000-entry list costs a dozen comparisons, not 10,000 (`benches/policy.rs`).
///
/// Most keys have no allowlist: the lists sit behind one pointer, `None` when empty, so
/// a key without one carries 8 bytes here rather than three vectors (the verify cache
/// holds a policy per key, and a smaller entry is fewer cache lines to fetch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    lists: Option<Box<Lists>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Lists {
    /// As given (canonical), for display and storage; never empty.
    nets: Vec<IpNet>,
    /// Inclusive `(first, last)` address ranges, sorted and non-overlapping.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
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
        let mut v4 = vec![];
        let mut v6 = vec![];
        for net in &nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Ok(IpAllowlist {
            lists: (!nets.is_empty()).then(|| {
                Box::new(Lists {
                    nets,
                    v4: merge(v4),
                    v6: merge(v6),
                })
            }),
        })
    }

    /// The canonical text of each entry (`10.0.0.0/8`, `2001:db8::1/128`).
    pub fn to_strings(&self) -> Vec<String> {
        self.nets().iter().map(|n| n.to_string()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_none()
    }

    pub fn len(&self) -> usize {
        self.nets().len()
    }

    fn nets(&self) -> &[IpNet] {
        self.lists.as_deref().map_or(&[], |l| &l.nets)
    }

    /// Whether `addr` is allowed. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is
    /// matched as the IPv4 address it carries.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let Some(lists) = self.lists.as_deref() else {
            return true;
        };
        match addr.to_canonical() {
            IpAddr::V4(a) => in_ranges(&lists.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&lists.v6, u128::from(a)),
        }
    }
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T: Ord + Copy + num_like::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if first <= prev.1.succ() => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Whether `x` lies in one of the sorted, disjoint `ranges`.
fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x is the only candidate.
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && x <= ranges[i - 1].1
}

mod num_like {
    /// The next value, saturating at the maximum (so `255.255.255.255` has no successor).
    pub trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
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
