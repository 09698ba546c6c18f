//! The fleet: identities, their keys and rhythms, the benign changes, then the
//! incidents; everything flattened into one time-ordered stream.

use std::net::IpAddr;

use keyward_core::code::VerifyCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::traffic::{Addresses, DAY, HOUR, MIN, Profile, log_uniform, poisson};
use super::{NO_SCOPE, Rec, Scenario, SimConfig, SimKey, incidents};

/// 2026-01-05T00:00:00Z, a Monday.
pub const START: i64 = 1_767_571_200_000_000;

pub const SCOPES: [&str; 10] = [
    "orders:read",
    "orders:write",
    "billing:read",
    "reports:read",
    "inventory:read",
    "inventory:write",
    "shipping:read",
    "users:read",
    "metrics:write",
    "exports:read",
];
/// Scopes a misconfigured client keeps asking for (and is refused).
pub const MISCONFIGURED: &str = "exports:write";

/// Everything known about one key's plan.
#[derive(Debug, Clone)]
pub struct KeyPlan {
    pub key: u32,
    pub identity: usize,
    pub profile: Profile,
    pub growth: f64,
    pub hosts: Vec<IpAddr>,
    /// The identity moves to new addresses at this time.
    pub moved: Option<(i64, Vec<IpAddr>)>,
    pub scopes: Vec<u16>,
    pub misconfigured: bool,
    pub start: i64,
    /// Retired (no more use) at this time.
    pub end: i64,
    pub revoked_at: Option<i64>,
    pub rotation: Option<RotationPlan>,
    /// Already carries an incident.
    pub taken: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct RotationPlan {
    pub at: i64,
    pub grace_until: i64,
    /// Most clients switch to the new key then; one lagging host keeps the old one
    /// until near the end of the grace period.
    pub switch_at: i64,
    pub lagging_until: i64,
    pub new_key: u32,
}

pub struct Fleet {
    pub rng: StdRng,
    pub recs: Vec<Rec>,
    pub keys: Vec<SimKey>,
    pub scopes: Vec<String>,
    pub rotations: Vec<(u32, u32, i64)>,
    pub plans: Vec<KeyPlan>,
    pub addresses: Addresses,
    pub end: i64,
}

impl Fleet {
    pub fn scope(&mut self, name: &str) -> u16 {
        match self.scopes.iter().position(|s| s == name) {
            Some(i) => i as u16,
            None => {
                self.scopes.push(name.to_owned());
                (self.scopes.len() - 1) as u16
            }
        }
    }

    pub fn push(&mut self, at: i64, key: u32, code: VerifyCode, ip: IpAddr, scope: u16) {
        self.recs.push(Rec {
            at,
            key,
            code,
            ip,
            scope,
            rotation: false,
        });
    }

    fn new_key(&mut self, identity: Uuid) -> u32 {
        self.keys.push(SimKey {
            id: Uuid::from_u128(self.rng.random::<u128>() | 1),
            identity,
        });
        (self.keys.len() - 1) as u32
    }
}

pub fn generate(cfg: &SimConfig) -> Scenario {
    let end = START + i64::from(cfg.days) * DAY;
    let mut f = Fleet {
        rng: StdRng::seed_from_u64(cfg.seed),
        recs: Vec::new(),
        keys: Vec::new(),
        scopes: Vec::new(),
        rotations: Vec::new(),
        plans: Vec::new(),
        addresses: Addresses::default(),
        end,
    };
    for s in SCOPES {
        f.scope(s);
    }
    let misconfigured_scope = f.scope(MISCONFIGURED);
    let mut identity = 0;
    while f.plans.len() < cfg.keys {
        plan_identity(&mut f, identity, cfg);
        identity += 1;
    }
    incidents::plan_rotations(&mut f);
    let mut key_days = 0.0;
    for i in 0..f.plans.len() {
        let plan = f.plans[i].clone();
        key_days += (end - plan.start) as f64 / DAY as f64;
        emit_key(&mut f, &plan, cfg.seed, misconfigured_scope);
    }
    background_failures(&mut f);
    let labels = incidents::inject(&mut f, cfg);
    let notes = f
        .plans
        .iter()
        .map(|p| {
            let kind = match p.profile {
                Profile::Steady { rate, .. } => format!("steady {rate:.2}/min"),
                Profile::Office { rate, .. } => format!("office {rate:.2}/min"),
                Profile::Nightly { rate, .. } => format!("nightly {rate:.2}/min"),
                Profile::Bursty { background, .. } => format!("bursty {background:.2}/min"),
            };
            let siblings = f.plans.iter().filter(|q| q.identity == p.identity).count();
            let note = format!(
                "{kind}, {siblings} keys in identity, growth {:.2}, moved {:?}, rotated {}, start day {}",
                p.growth,
                p.moved.as_ref().map(|m| (m.0 - START) as f64 / DAY as f64),
                p.rotation.is_some(),
                (p.start - START) / DAY
            );
            (f.keys[p.key as usize].id, note)
        })
        .collect();
    f.recs.sort_by_key(|r| (r.at, r.rotation));
    Scenario {
        recs: f.recs,
        keys: f.keys,
        scopes: f.scopes,
        rotations: f.rotations,
        incidents: labels,
        key_days,
        notes,
    }
}

fn plan_identity(f: &mut Fleet, identity: usize, cfg: &SimConfig) {
    let rng = &mut f.rng;
    let kind = rng.random_range(0..4);
    let n_keys = [1, 1, 2, 2, 3][rng.random_range(0..5)];
    let v6 = rng.random_bool(0.1);
    let net = f.addresses.fresh(rng, v6);
    let id = Uuid::from_u128(rng.random::<u128>() | 1);
    let end = f.end;
    let days = i64::from(cfg.days);
    // A service keeps one rhythm; its keys differ in volume.
    let start_h = rng.random_range(6..10);
    let office_len = rng.random_range(8..11);
    let night_start = rng.random_range(0..300);
    let night_dur = rng.random_range(20..60);
    let phase = rng.random::<f64>();
    let moves = n_keys >= 2 && rng.random_bool(0.25);
    let move_at = START + rng.random_range(4 * DAY..(days - 1).max(5) * DAY);
    let new_net = f.addresses.fresh(rng, v6);
    for _ in 0..n_keys {
        let rng = &mut f.rng;
        let profile = match kind {
            0 => Profile::Steady {
                rate: log_uniform(rng, 0.1, 3.0),
                phase,
            },
            1 => Profile::Office {
                start_h,
                end_h: start_h + office_len,
                rate: log_uniform(rng, 0.5, 6.0),
            },
            2 => Profile::Nightly {
                start: night_start + rng.random_range(0..10),
                dur: night_dur,
                rate: log_uniform(rng, 5.0, 50.0),
            },
            _ => {
                let mut bursts = Vec::new();
                for d in 0..days {
                    for _ in 0..rng.random_range(1..5) {
                        let s = START + d * DAY + rng.random_range(6 * HOUR..22 * HOUR);
                        let len = rng.random_range(2..10) * MIN;
                        bursts.push((s, s + len, log_uniform(rng, 10.0, 50.0)));
                    }
                }
                Profile::Bursty {
                    background: log_uniform(rng, 0.05, 0.3),
                    bursts,
                }
            }
        };
        let hosts: Vec<u8> = (0..rng.random_range(1..4))
            .map(|_| rng.random_range(2..250))
            .collect();
        let n_scopes = rng.random_range(1..4);
        let scopes = (0..n_scopes)
            .map(|_| rng.random_range(0..SCOPES.len()) as u16)
            .collect();
        let growth = if rng.random_bool(0.2) {
            rng.random_range(0.02..0.06)
        } else {
            0.0
        };
        let start = if rng.random_bool(0.06) {
            START + rng.random_range(2 * DAY..(days - 2).max(3) * DAY)
        } else {
            START
        };
        let retired = rng.random_bool(0.08);
        let key_end = if retired {
            START + rng.random_range(4 * DAY + 7 * HOUR..4 * DAY + 22 * HOUR)
        } else {
            end
        };
        let revoked_at = (!retired && start == START && rng.random_bool(0.04))
            .then(|| START + rng.random_range(4 * DAY..(days - 1).max(5) * DAY));
        let misconfigured = rng.random_bool(0.05);
        let moved = moves.then(|| (move_at, hosts.iter().map(|h| new_net.host(*h)).collect()));
        let key = f.new_key(id);
        f.plans.push(KeyPlan {
            key,
            identity,
            profile,
            growth,
            hosts: hosts.iter().map(|h| net.host(*h)).collect(),
            moved,
            scopes,
            misconfigured,
            start,
            end: key_end,
            revoked_at,
            rotation: None,
            taken: false,
        });
    }
}

/// The legitimate traffic of one key (and of its successor after a rotation).
fn emit_key(f: &mut Fleet, plan: &KeyPlan, seed: u64, misconfigured_scope: u16) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ u64::from(plan.key));
    let mut t = plan.start;
    while t < plan.end {
        let day = (t - START) as f64 / DAY as f64;
        let mut lambda = plan.profile.rate(t) * (1.0 + plan.growth).powf(day);
        let revoked = plan.revoked_at.is_some_and(|r| t >= r);
        if revoked {
            // The stale client retries, slowly.
            lambda = lambda.min(0.5);
        }
        for _ in 0..poisson(&mut rng, lambda) {
            let at = t + rng.random_range(0..MIN);
            let h = rng.random_range(0..plan.hosts.len());
            let ip = match &plan.moved {
                Some((when, new)) if at >= *when => new[h],
                _ => plan.hosts[h],
            };
            let key = match plan.rotation {
                Some(r) if at >= r.switch_at => {
                    let lagging = h == 0 && at < r.lagging_until;
                    if lagging { plan.key } else { r.new_key }
                }
                _ => plan.key,
            };
            let (code, scope) = if revoked {
                (VerifyCode::Revoked, NO_SCOPE)
            } else if plan.misconfigured && rng.random_bool(0.03) {
                (VerifyCode::InsufficientScope, misconfigured_scope)
            } else {
                let s = plan.scopes[rng.random_range(0..plan.scopes.len())];
                (VerifyCode::Valid, s)
            };
            f.push(at, key, code, ip, scope);
        }
        t += MIN;
    }
}

/// Typos and stale configuration: NOT_FOUND and MALFORMED from all over, a few an hour,
/// and a client retrying a deleted key for an afternoon now and then.
fn background_failures(f: &mut Fleet) {
    let mut t = START;
    while t < f.end {
        let rng = &mut f.rng;
        let n = poisson(rng, 0.3);
        for _ in 0..n {
            let net = f.addresses.fresh(&mut f.rng, false);
            let rng = &mut f.rng;
            let code = if rng.random_bool(0.5) {
                VerifyCode::NotFound
            } else {
                VerifyCode::Malformed
            };
            let ip = net.host(rng.random_range(2..250));
            let at = t + rng.random_range(0..MIN);
            f.push(at, super::NONE, code, ip, NO_SCOPE);
        }
        t += MIN;
    }
    // Stale clients: a known host retrying a deleted key every 30-120 s for hours.
    for _ in 0..(f.plans.len() / 30).max(1) {
        let p = f.rng.random_range(0..f.plans.len());
        let ip = f.plans[p].hosts[0];
        let rng = &mut f.rng;
        let mut at = START + rng.random_range(0..(f.end - START - 6 * HOUR).max(1));
        let until = at + rng.random_range(1..6) * HOUR;
        let every = rng.random_range(30..120) * super::traffic::SEC;
        while at < until {
            f.push(at, super::NONE, VerifyCode::NotFound, ip, NO_SCOPE);
            at += every;
        }
    }
}
