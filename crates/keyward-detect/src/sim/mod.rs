//! A synthetic fleet, for evaluating the detectors (feature `sim`): hundreds of keys over
//! days, each with its own rhythm (steady, office hours, nightly batches, bursty),
//! addresses and scopes, the benign changes real fleets have (services moving to new
//! addresses, gradual growth, stale clients retrying revoked keys, rotations with normal
//! grace-period use, keys retired or created midway, typos), and labelled incidents of
//! every anomaly kind, from blatant to subtle. [`score`] runs the detectors over it.
//!
//! Deterministic for a seed (ChaCha12 from `rand`'s `StdRng`).

mod fleet;
mod incidents;
mod score;
mod traffic;

use std::net::IpAddr;

use chrono::DateTime;
use keyward_core::anomaly::AnomalyKind;
use keyward_core::code::VerifyCode;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use uuid::Uuid;

pub use score::{KindScore, Score, median, score};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub keys: usize,
    pub days: u32,
    /// Labelled incidents of each kind (half blatant, half subtle).
    pub incidents_per_kind: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            keys: 300,
            days: 14,
            incidents_per_kind: 8,
        }
    }
}

/// One generated record, compact (the fleet makes millions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub at: i64,
    /// Index in `Scenario::keys`, or `NONE` for unknown keys.
    pub key: u32,
    pub code: VerifyCode,
    pub ip: IpAddr,
    /// Index in `Scenario::scopes`, or `NONE`; for a rotation, index in `rotations`.
    pub scope: u16,
    pub rotation: bool,
}

pub(crate) const NONE: u32 = u32::MAX;
pub(crate) const NO_SCOPE: u16 = u16::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SimKey {
    pub id: Uuid,
    pub identity: Uuid,
}

/// A labelled incident: what the detectors should report.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub kind: AnomalyKind,
    /// The key concerned (`None` for key guessing).
    pub key_id: Option<Uuid>,
    /// The source network (key guessing is matched by it).
    pub network: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub subtle: bool,
}

/// One item of the stream, in time order.
#[derive(Debug, Clone)]
pub enum Item {
    Event(UsageEvent),
    Rotated {
        old: Uuid,
        new: Uuid,
        at: Timestamp,
        grace_until: Timestamp,
    },
}

/// A generated fleet and its labels.
pub struct Scenario {
    pub(crate) recs: Vec<Rec>,
    pub(crate) keys: Vec<SimKey>,
    pub(crate) scopes: Vec<String>,
    pub(crate) rotations: Vec<(u32, u32, i64)>,
    pub incidents: Vec<Incident>,
    /// Sum over keys of the days each existed: the denominator of false alerts.
    pub key_days: f64,
    pub(crate) notes: Vec<(Uuid, String)>,
}

pub(crate) fn ts(micros: i64) -> Timestamp {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

impl Scenario {
    pub fn generate(cfg: &SimConfig) -> Scenario {
        fleet::generate(cfg)
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// A short description of a key's plan (profile, benign changes), for inspecting
    /// false alerts.
    pub fn describe(&self, key_id: uuid::Uuid) -> String {
        self.notes
            .iter()
            .find(|(k, _)| *k == key_id)
            .map_or_else(|| "unknown key".into(), |(_, n)| n.clone())
    }

    /// The stream, in time order.
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        self.recs.iter().map(|r| self.item(r))
    }

    fn item(&self, r: &Rec) -> Item {
        if r.rotation {
            let (old, new, grace) = self.rotations[usize::from(r.scope)];
            return Item::Rotated {
                old: self.keys[old as usize].id,
                new: self.keys[new as usize].id,
                at: ts(r.at),
                grace_until: ts(grace),
            };
        }
        let key = (r.key != NONE).then(|| self.keys[r.key as usize]);
        Item::Event(UsageEvent {
            at: ts(r.at),
            key_id: key.map(|k| k.id),
            identity_id: key.map(|k| k.identity),
            code: r.code,
            ip: Some(r.ip),
            scopes: if r.scope == NO_SCOPE {
                vec![]
            } else {
                vec![self.scopes[usize::from(r.scope)].clone()]
            },
            latency_us: 0,
            tags: None,
        })
    }

    /// The stream as `keyward detect --events` lines (rotations as
    /// `{"event":"key.rotated",...}` lines, which `keyward detect` also reads).
    pub fn write_events(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        for item in self.items() {
            match item {
                Item::Event(e) => serde_json::to_writer(&mut *w, &e)?,
                Item::Rotated {
                    old,
                    new,
                    at,
                    grace_until,
                } => serde_json::to_writer(
                    &mut *w,
                    &serde_json::json!({
                        "event": "key.rotated", "at": at, "key_id": old,
                        "new_key_id": new, "grace_until": grace_until,
                    }),
                )?,
            }
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}
