//! Key guessing: NOT_FOUND and MALFORMED answers, per source network, against the
//! network's usual failure rate. One address failing many times (a brute force), or
//! many addresses of one network failing together (a spread one), is KEY_GUESSING.
//!
//! State is per network in a capped map: when it is full, the least recently seen half
//! is dropped at once (amortised O(1) per event, bounded memory whatever the traffic).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::decay::Decayed;
use crate::net::{Net, addr_bits};
use crate::settings::DetectSettings;

/// Burst window (tau, seconds): "failures in the last five minutes".
const FAST_TAU: f32 = 300.0;
/// The network's usual failure rate is remembered over hours.
const BASE_TAU: f32 = 21_600.0;
/// Distinct addresses are counted over two rotating 5-minute bitmaps.
const SLOT_WINDOW: i64 = 300 * crate::decay::SEC;
/// Addresses tracked per network (the busiest, space-saving style).
const TOP: usize = 4;

#[derive(Debug, Clone, Default)]
struct NetGuess {
    fast: Decayed,
    base: Decayed,
    slots_now: [u64; 4],
    slots_prev: [u64; 4],
    slots_since: i64,
    top: [(u128, Decayed); TOP],
    last_seen: i64,
    last_hit: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guessing {
    pub net: Net,
    /// The address failing most, and its failures in the last five minutes.
    pub top_ip: IpAddr,
    pub top_count: f32,
    /// Failures from the whole network in the last five minutes.
    pub net_count: f32,
    pub distinct_addresses: u32,
    /// The network's usual failures per five minutes.
    pub expected: f32,
    pub spread: bool,
}

#[derive(Debug, Default)]
pub struct GuessTracker {
    nets: HashMap<Net, NetGuess>,
}

impl GuessTracker {
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Counts one failed lookup from `ip`; answers the finding when it opens an episode
    /// for the network.
    pub fn observe(
        &mut self,
        now: i64,
        ip: IpAddr,
        s: &DetectSettings,
        gap: i64,
    ) -> Option<Guessing> {
        let net = Net::of(ip, s.ipv4_prefix, s.ipv6_prefix);
        if !self.nets.contains_key(&net) && self.nets.len() >= s.guess_networks_max {
            self.evict_half();
        }
        let g = self.nets.entry(net).or_insert_with(|| NetGuess {
            slots_since: now,
            last_hit: i64::MIN / 2,
            ..NetGuess::default()
        });
        g.last_seen = now;
        let expected = g.base.get(now, BASE_TAU) * FAST_TAU / BASE_TAU;
        g.base.add(now, BASE_TAU, 1.0);
        let net_count = g.fast.add(now, FAST_TAU, 1.0);
        if now - g.slots_since >= SLOT_WINDOW {
            g.slots_prev = if now - g.slots_since >= 2 * SLOT_WINDOW {
                [0; 4]
            } else {
                g.slots_now
            };
            g.slots_now = [0; 4];
            g.slots_since = now;
        }
        let slot = Net::slot(ip);
        g.slots_now[usize::from(slot / 64)] |= 1 << (slot % 64);
        let distinct: u32 = (0..4)
            .map(|i| (g.slots_now[i] | g.slots_prev[i]).count_ones())
            .sum();
        let bits = addr_bits(ip.to_canonical());
        let top_count = match g.top.iter_mut().find(|(a, _)| *a == bits) {
            Some((_, d)) => d.add(now, FAST_TAU, 1.0),
            None => {
                let weakest = (0..TOP)
                    .min_by(|a, b| {
                        let va = g.top[*a].1.get(now, FAST_TAU);
                        let vb = g.top[*b].1.get(now, FAST_TAU);
                        va.total_cmp(&vb)
                    })
                    .unwrap_or(0);
                g.top[weakest] = (bits, Decayed::default());
                g.top[weakest].1.add(now, FAST_TAU, 1.0)
            }
        };
        let above_usual = |v: f32| v > 4.0 * expected + 10.0;
        let single = top_count >= s.guess_per_address && above_usual(top_count);
        let spread = distinct >= s.guess_spread_addresses
            && net_count >= s.guess_spread_failures
            && above_usual(net_count);
        if !(single || spread) {
            return None;
        }
        let opens = now.saturating_sub(g.last_hit) >= gap;
        g.last_hit = now;
        opens.then_some(Guessing {
            net,
            top_ip: ip,
            top_count,
            net_count,
            distinct_addresses: distinct,
            expected,
            spread: !single,
        })
    }

    /// Drops the least recently seen half of the networks.
    fn evict_half(&mut self) {
        let mut seen: Vec<i64> = self.nets.values().map(|g| g.last_seen).collect();
        let mid = seen.len() / 2;
        let (_, cut, _) = seen.select_nth_unstable(mid);
        let cut = *cut;
        self.nets.retain(|_, g| g.last_seen > cut);
    }
}
