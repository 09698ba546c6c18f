//! Everything the detectors remember about one key. Fixed-size or capped parts only,
//! so memory per key is bounded (see `KEY_STATE_BYTES` in BENCHMARKS.md).

use std::net::IpAddr;

use uuid::Uuid;

use crate::episode::Episodes;
use crate::net::Net;
use crate::networks::NetSet;
use crate::rhythm::Rhythm;
use crate::scopes::ScopeMemory;
use crate::settings::DetectSettings;
use crate::traffic::Traffic;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub identity: Option<Uuid>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: u32,
    /// The longest silence between two uses so far.
    pub longest_gap: i64,
    pub rhythm: Rhythm,
    pub traffic: Traffic,
    pub nets: NetSet,
    /// Networks learned without an alert (many: a roaming key without usual networks).
    pub learned_nets: u32,
    pub pending: Option<PendingNet>,
    pub scopes: ScopeMemory,
    pub episodes: Episodes,
    pub rotation: Option<Rotation>,
}

/// A network new to the key, waiting for its confirmation window to end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingNet {
    pub net: Net,
    pub ip: IpAddr,
    pub first_at: i64,
    pub last_at: i64,
    pub count: u32,
    /// Uses from the key's usual networks meanwhile (two places at once).
    pub concurrent: u32,
}

/// The key was rotated out: it keeps working until `grace_until`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotation {
    pub new_key: Uuid,
    pub at: i64,
    pub grace_until: i64,
}

impl KeyState {
    pub fn new(identity: Option<Uuid>, now: i64) -> KeyState {
        KeyState {
            identity,
            first_seen: now,
            last_seen: now,
            events: 0,
            longest_gap: 0,
            rhythm: Rhythm::default(),
            traffic: Traffic::default(),
            nets: NetSet::default(),
            learned_nets: 0,
            pending: None,
            scopes: ScopeMemory::default(),
            episodes: Episodes::default(),
            rotation: None,
        }
    }

    /// Past warm-up: seen long enough and often enough to have a baseline.
    pub fn warm(&self, s: &DetectSettings) -> bool {
        self.events >= s.warmup_events
            && self.last_seen - self.first_seen >= i64::from(s.warmup_hours) * crate::clock::HOUR
    }

    /// The successor's starting point after a rotation: the same client will use it, so
    /// it inherits the baseline (not the episodes, the pending network or the rotation).
    pub fn inherited(&self) -> KeyState {
        KeyState {
            pending: None,
            episodes: Episodes::default(),
            rotation: None,
            ..self.clone()
        }
    }

    /// True when the key learned so many networks that none is "usual".
    pub fn roaming(&self, s: &DetectSettings) -> bool {
        self.learned_nets >= s.roaming_networks
    }
}
