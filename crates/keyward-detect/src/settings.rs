//! The detectors' tunables, with the defaults the server runs with. Every field has a
//! default (`#[serde(default)]`), so a settings file names only what it changes.

use serde::{Deserialize, Serialize};

/// The detectors' tunables. `Default` is what the server runs with; see
/// docs/anomalies.md for what each one does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectSettings {
    /// A key alerts on baseline kinds (traffic, network, hour, scopes, dormancy) only
    /// after it has been seen for this long...
    pub warmup_hours: u32,
    /// ...and used this many times.
    pub warmup_events: u32,
    /// Anomalies of one kind for one key (or one network) closer together than this are
    /// one episode: only the first is reported.
    pub episode_gap_seconds: u32,

    /// The prefix that makes a "network" of an IPv4 address.
    pub ipv4_prefix: u8,
    /// The prefix that makes a "network" of an IPv6 address.
    pub ipv6_prefix: u8,
    /// Usual networks remembered per key (least recently used evicted).
    pub networks_per_key: usize,
    /// A new network is judged this long after its first use: time for the identity's
    /// other keys to show up there too (a move, not a theft).
    pub new_network_confirm_seconds: u32,
    /// ...and, while the identity has other keys that might still show up there and the
    /// key was not meanwhile used from its usual networks, up to this long.
    pub new_network_wait_seconds: u32,
    /// A key that learned this many networks during warm-up has no usual networks
    /// (clients everywhere) and never raises NEW_NETWORK.
    pub roaming_networks: u32,

    /// Sudden spike: requests in the last minute above this multiple of the busiest
    /// minute of the last 8 days...
    pub spike_sudden_factor: f32,
    /// ...and at least this many.
    pub spike_sudden_min: f32,
    /// Sustained rise: requests in the last half hour above this multiple of the usual
    /// for this hour of the week, and above the busiest half hour of the last 8 days...
    pub spike_sustained_factor: f32,
    /// ...and at least this many.
    pub spike_sustained_min: f32,
    /// ...for at least this many minutes.
    pub spike_sustained_minutes: u32,

    /// Scope probing: this many distinct scopes the key never used, refused within
    /// ten minutes...
    pub probe_distinct_scopes: u32,
    /// ...or this many INSUFFICIENT_SCOPE refusals within ten minutes, far above the
    /// key's usual refusal rate.
    pub probe_refusals: f32,

    /// Dormant: silent for at least this many days...
    pub dormant_days: u32,
    /// ...and for this multiple of the longest silence seen before.
    pub dormant_gap_factor: f32,

    /// Key guessing: NOT_FOUND/MALFORMED answers to one address within five minutes.
    pub guess_per_address: f32,
    /// Key guessing spread over a network: this many distinct addresses...
    pub guess_spread_addresses: u32,
    /// ...with at least this many failures between them within five minutes.
    pub guess_spread_failures: f32,
    /// Source networks tracked for key guessing (least recently seen evicted).
    pub guess_networks_max: usize,
    /// Keys tracked at most (least recently seen evicted).
    pub keys_max: usize,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            warmup_hours: 72,
            warmup_events: 50,
            episode_gap_seconds: 1800,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            networks_per_key: 16,
            new_network_confirm_seconds: 180,
            new_network_wait_seconds: 1800,
            roaming_networks: 10,
            spike_sudden_factor: 4.0,
            spike_sudden_min: 40.0,
            spike_sustained_factor: 3.0,
            spike_sustained_min: 100.0,
            spike_sustained_minutes: 10,
            probe_distinct_scopes: 3,
            probe_refusals: 25.0,
            dormant_days: 7,
            dormant_gap_factor: 3.0,
            guess_per_address: 25.0,
            guess_spread_addresses: 8,
            guess_spread_failures: 30.0,
            guess_networks_max: 16_384,
            keys_max: 1_000_000,
        }
    }
}

impl DetectSettings {
    /// Checks the values that would make the detectors meaningless; the error names the
    /// field.
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=32).contains(&self.ipv4_prefix) {
            return Err("ipv4_prefix: must be 8-32".into());
        }
        if !(16..=128).contains(&self.ipv6_prefix) {
            return Err("ipv6_prefix: must be 16-128".into());
        }
        if !(1..=256).contains(&self.networks_per_key) {
            return Err("networks_per_key: must be 1-256".into());
        }
        if self.guess_networks_max < 16 {
            return Err("guess_networks_max: must be at least 16".into());
        }
        if self.keys_max < 16 {
            return Err("keys_max: must be at least 16".into());
        }
        let factors = [
            ("spike_sudden_factor", self.spike_sudden_factor),
            ("spike_sustained_factor", self.spike_sustained_factor),
            ("dormant_gap_factor", self.dormant_gap_factor),
        ];
        for (name, v) in factors {
            if !(v.is_finite() && v >= 1.0) {
                return Err(format!("{name}: must be a number >= 1"));
            }
        }
        let mins = [
            ("spike_sudden_min", self.spike_sudden_min),
            ("spike_sustained_min", self.spike_sustained_min),
            ("probe_refusals", self.probe_refusals),
            ("guess_per_address", self.guess_per_address),
            ("guess_spread_failures", self.guess_spread_failures),
        ];
        for (name, v) in mins {
            if !(v.is_finite() && v >= 1.0) {
                return Err(format!("{name}: must be a number >= 1"));
            }
        }
        Ok(())
    }
}
