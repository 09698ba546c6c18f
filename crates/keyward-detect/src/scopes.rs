//! Scopes a key usually exercises or asks for, and its usual rate of INSUFFICIENT_SCOPE
//! refusals. A burst of refusals for scopes it never used (several distinct ones), or
//! far more refusals than usual, is SCOPE_PROBING.

use std::hash::BuildHasher;

use crate::decay::Decayed;
use crate::settings::DetectSettings;

/// Known scopes remembered per key.
pub const KNOWN_MAX: usize = 32;
/// Window of a burst (tau of the decayed counters, seconds).
const BURST_TAU: f32 = 600.0;
const BURST_SECS: i64 = 600;
/// Memory of the usual refusal rate (seconds).
const BASE_TAU: f32 = 86_400.0;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeMemory {
    known: Vec<u64>,
    refused: Decayed,
    all: Decayed,
    base_refused: Decayed,
    base_all: Decayed,
    /// Recently refused scopes the key never used: (hash, time).
    recent_unknown: [(u64, i64); 8],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probing {
    pub refusals: f32,
    pub expected: f32,
    pub distinct_unknown: u32,
}

/// A scope's tag: a hash with a fixed seed (tags are compared within one process only,
/// and scopes come from the key's own grants or its verifier's requests).
fn tag(scope: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7363_6f70_6573).hash_one(scope) | 1
}

impl ScopeMemory {
    /// Counts one event of the key (refused for scopes or not) and judges the refusals.
    pub fn observe(
        &mut self,
        now: i64,
        refused: bool,
        scopes: &[String],
        warm: bool,
        s: &DetectSettings,
    ) -> Option<Probing> {
        let all = self.all.add(now, BURST_TAU, 1.0);
        // The usual rate is read before this event counts.
        let base_frac = {
            let a = self.base_all.get(now, BASE_TAU);
            if a < 1.0 {
                0.0
            } else {
                self.base_refused.get(now, BASE_TAU) / a
            }
        };
        self.base_all.add(now, BASE_TAU, 1.0);
        if !refused {
            for sc in scopes {
                self.learn(tag(sc));
            }
            return None;
        }
        self.base_refused.add(now, BASE_TAU, 1.0);
        let refusals = self.refused.add(now, BURST_TAU, 1.0);
        if !warm {
            // What a client asks for during warm-up is its normal (a misconfigured
            // client asking for a scope it lacks, every time).
            for sc in scopes {
                self.learn(tag(sc));
            }
            return None;
        }
        for sc in scopes {
            let t = tag(sc);
            if self.known.contains(&t) || self.recent_unknown.iter().any(|(h, _)| *h == t) {
                continue;
            }
            let slot = (0..self.recent_unknown.len())
                .min_by_key(|i| self.recent_unknown[*i].1)
                .unwrap_or(0);
            self.recent_unknown[slot] = (t, now);
        }
        let distinct = self
            .recent_unknown
            .iter()
            .filter(|(h, at)| *h != 0 && now - *at <= BURST_SECS * crate::decay::SEC)
            .count() as u32;
        let expected = base_frac * all;
        let many = refusals >= s.probe_refusals && refusals > 5.0 * expected + 5.0;
        let varied = distinct >= s.probe_distinct_scopes;
        (many || varied).then_some(Probing {
            refusals,
            expected,
            distinct_unknown: distinct,
        })
    }

    /// Heap bytes held (the known-scope list).
    pub fn heap_bytes(&self) -> usize {
        self.known.capacity() * std::mem::size_of::<u64>()
    }

    fn learn(&mut self, t: u64) {
        if !self.known.contains(&t) && self.known.len() < KNOWN_MAX {
            self.known.push(t);
        }
    }
}
