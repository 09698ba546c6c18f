//! Anomaly detection over the usage event stream.
//!
//! [`Detectors`] is fed every usage event in time order and answers the anomalies that
//! event raises. The server runs it online over the events it records; `keyward detect
//! --events FILE` runs the very same code offline, so operators can back-test settings on
//! their own history. docs/anomalies.md explains each detector and its baseline.
//!
//! **Architecture Invariant:** no IO, no async, no clock: time comes from the events.
//! Memory is bounded per key (fixed arrays and capped lists, [`KEY_STATE_BYTES`]), and
//! state about unknown keys is bounded overall (`guess_networks_max` networks).

mod clock;
mod decay;
mod episode;
pub mod events;
mod guessing;
mod key;
mod key_states;
mod net;
mod networks;
mod observe;
mod report;
mod rhythm;
mod scopes;
mod settings;
mod traffic;

#[cfg(feature = "sim")]
pub mod sim;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use keyward_core::anomaly::Anomaly;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use uuid::Uuid;

pub use crate::net::Net;
pub use crate::settings::DetectSettings;

use crate::guessing::GuessTracker;
use crate::key::{KeyState, Rotation};
use crate::key_states::KeyStates;
use crate::networks::IdentityNets;

/// The size of one key's fixed state, with its id and its entry in the index of states
/// (one control byte), without its capped lists' heap parts (networks: up to
/// `networks_per_key` entries; known scopes: up to 32 hashes); see
/// [`Detectors::key_state_max_bytes`].
pub const KEY_STATE_BYTES: usize =
    std::mem::size_of::<(Uuid, KeyState)>() + std::mem::size_of::<(Uuid, u32)>() + 1;

/// State by key or identity id. Ids are minted by Keyward, not chosen by clients, so a
/// fast hasher is safe here (the detectors look up two per event; SipHash was ~3% of
/// them).
pub(crate) type KeyMap<V> = HashMap<Uuid, V, foldhash::fast::RandomState>;

/// Every detector, with the baselines it has learned so far.
#[derive(Debug, Default)]
pub struct Detectors {
    settings: DetectSettings,
    keys: KeyStates,
    identities: KeyMap<IdentityNets>,
    guessing: GuessTracker,
    /// New networks waiting to be judged: (due, key), earliest first.
    pending: BinaryHeap<Reverse<(i64, Uuid)>>,
    /// The latest event time seen (events are expected in order; a late one is
    /// treated as happening now).
    now: i64,
}

impl Detectors {
    pub fn new(settings: DetectSettings) -> Detectors {
        Detectors {
            settings,
            now: i64::MIN,
            ..Detectors::default()
        }
    }

    pub fn settings(&self) -> &DetectSettings {
        &self.settings
    }

    /// Feeds one event (events must come in time order) and appends the anomalies it
    /// raises to `out`.
    pub fn observe(&mut self, event: &UsageEvent, out: &mut Vec<Anomaly>) {
        let at = event.at.timestamp_micros();
        self.now = self.now.max(at);
        self.resolve_pending(self.now, out);
        observe::event(self, event, self.now, out);
    }

    /// Tells the detectors that `old_key` was rotated to `new_key` at `at` and keeps
    /// working until `grace_until`. The new key inherits the old one's baselines (same
    /// client), and uses of the old key during the grace period from places it was never
    /// used from raise OLD_KEY_UNEXPECTED_SOURCE.
    pub fn note_rotated(
        &mut self,
        old_key: Uuid,
        new_key: Uuid,
        at: Timestamp,
        grace_until: Timestamp,
    ) {
        let at = at.timestamp_micros();
        let Some(old) = self.keys.get_mut(&old_key) else {
            return;
        };
        old.rotation = Some(Rotation {
            new_key,
            at,
            grace_until: grace_until.timestamp_micros(),
        });
        let successor = old.inherited();
        self.keys.get_or_insert_with(new_key, || successor);
    }

    /// Judges the new networks whose confirmation window has ended by `at`: call it
    /// when time passes without events (online, e.g. every few seconds).
    pub fn tick(&mut self, at: Timestamp, out: &mut Vec<Anomaly>) {
        self.now = self.now.max(at.timestamp_micros());
        self.resolve_pending(self.now, out);
    }

    /// End of stream: judges every new network still waiting (offline runs).
    pub fn finish(&mut self, out: &mut Vec<Anomaly>) {
        self.resolve_pending(i64::MAX, out);
    }

    /// The memory one key's state holds, in bytes (fixed part and capped lists), if the
    /// key is tracked. Bounded by [`Detectors::key_state_max_bytes`].
    pub fn key_bytes(&self, key_id: Uuid) -> Option<usize> {
        self.keys
            .get(&key_id)
            .map(|k| KEY_STATE_BYTES + k.nets.heap_bytes() + k.scopes.heap_bytes())
    }

    /// The most one key's state can hold with these settings.
    pub fn key_state_max_bytes(&self) -> usize {
        // A Vec grows to at most twice what it holds.
        KEY_STATE_BYTES
            + 2 * self.settings.networks_per_key * std::mem::size_of::<networks::NetEntry>()
            + 2 * scopes::KNOWN_MAX * std::mem::size_of::<u64>()
    }

    /// Keys currently tracked.
    pub fn keys_tracked(&self) -> usize {
        self.keys.len()
    }

    /// Source networks currently tracked for key guessing.
    pub fn networks_tracked(&self) -> usize {
        self.guessing.len()
    }

    fn resolve_pending(&mut self, now: i64, out: &mut Vec<Anomaly>) {
        while let Some(&Reverse((due, key_id))) = self.pending.peek() {
            if due > now {
                break;
            }
            self.pending.pop();
            let final_call = now == i64::MAX;
            if let Some(again) = observe::resolve_new_network(self, key_id, due, final_call, out) {
                self.pending.push(Reverse((again, key_id)));
            }
        }
    }
}
