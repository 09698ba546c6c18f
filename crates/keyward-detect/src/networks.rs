//! Usual networks: per key, and per identity (to tell a stolen key from a whole service
//! moving). Both are capped lists with least-recently-seen eviction.

use crate::net::Net;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetEntry {
    pub net: Net,
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u32,
}

/// A capped set of networks, least recently seen evicted first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetSet {
    entries: Vec<NetEntry>,
}

impl NetSet {
    pub fn contains(&self, net: Net) -> bool {
        self.entries.iter().any(|e| e.net == net)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<NetEntry>()
    }

    /// Counts a use of `net`; true when it was already known.
    pub fn touch(&mut self, net: Net, now: i64, cap: usize) -> bool {
        if let Some(e) = self.entries.iter_mut().find(|e| e.net == net) {
            e.last_seen = now;
            e.count = e.count.saturating_add(1);
            return true;
        }
        if self.entries.len() >= cap.max(1) {
            let oldest = (0..self.entries.len())
                .min_by_key(|i| self.entries[*i].last_seen)
                .unwrap_or(0);
            self.entries.swap_remove(oldest);
        }
        self.entries.push(NetEntry {
            net,
            first_seen: now,
            last_seen: now,
            count: 1,
        });
        false
    }

    /// The usual networks, most used first (at most `n`), for explanations.
    pub fn top(&self, n: usize) -> Vec<String> {
        let mut v: Vec<&NetEntry> = self.entries.iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.count));
        v.into_iter().take(n).map(|e| e.net.to_string()).collect()
    }
}

/// Networks an identity's keys have used recently, with which keys (by a short tag).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityNets {
    entries: Vec<IdentityNet>,
    /// The identity's most recently seen keys: (tag, last seen).
    keys: [(u64, i64); 4],
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct IdentityNet {
    net: Net,
    first_seen: i64,
    last_seen: i64,
    /// Up to two distinct keys seen there (tags: the low 64 bits of the key id).
    keys: [u64; 2],
}

/// Networks remembered per identity.
pub const IDENTITY_NETS: usize = 32;

impl IdentityNets {
    pub fn touch(&mut self, net: Net, key_tag: u64, now: i64) {
        match self.keys.iter_mut().find(|(k, _)| *k == key_tag) {
            Some(k) => k.1 = now,
            None => {
                if let Some(oldest) = self.keys.iter_mut().min_by_key(|(_, at)| *at) {
                    *oldest = (key_tag, now);
                }
            }
        }
        if let Some(e) = self.entries.iter_mut().find(|e| e.net == net) {
            e.last_seen = now;
            if e.keys[0] != key_tag && e.keys[1] == 0 {
                e.keys[1] = key_tag;
            }
            return;
        }
        if self.entries.len() >= IDENTITY_NETS {
            let oldest = (0..self.entries.len())
                .min_by_key(|i| self.entries[*i].last_seen)
                .unwrap_or(0);
            self.entries.swap_remove(oldest);
        }
        self.entries.push(IdentityNet {
            net,
            first_seen: now,
            last_seen: now,
            keys: [key_tag, 0],
        });
    }

    /// True when a key of the identity other than `key_tag` was used since `since`.
    pub fn has_other_keys(&self, key_tag: u64, since: i64) -> bool {
        self.keys
            .iter()
            .any(|(k, at)| *k != 0 && *k != key_tag && *at >= since)
    }

    /// True when a key of the identity other than `key_tag` used `net` since `since`.
    pub fn other_key_used(&self, net: Net, key_tag: u64, since: i64) -> bool {
        self.entries.iter().any(|e| {
            e.net == net && e.last_seen >= since && e.keys.iter().any(|k| *k != 0 && *k != key_tag)
        })
    }
}
