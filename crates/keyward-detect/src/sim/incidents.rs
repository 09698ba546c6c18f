//! Rotations (benign, with normal grace-period use) and the labelled incidents: every
//! anomaly kind, alternately blatant and subtle.

use keyward_core::anomaly::AnomalyKind;
use keyward_core::code::VerifyCode;
use rand::Rng;

use super::fleet::{Fleet, KeyPlan, RotationPlan, START};
use super::traffic::{DAY, HOUR, MIN, Profile, SEC};
use super::{Incident, NO_SCOPE, NONE, Rec, SimConfig, ts};

/// Scopes an intruder probes for (none of them granted to any simulated key).
const PROBES: [&str; 8] = [
    "users:write",
    "billing:write",
    "orders:delete",
    "secrets:read",
    "payments:refund",
    "keyward:admin",
    "inventory:admin",
    "audit:read",
];

/// Keys that stay in use to the end, untouched by other plans.
fn plain(p: &KeyPlan, end: i64) -> bool {
    !p.taken && p.end == end && p.revoked_at.is_none() && p.rotation.is_none() && p.moved.is_none()
}

pub fn plan_rotations(f: &mut Fleet) {
    let days = (f.end - START) / DAY;
    for i in 0..f.plans.len() {
        let p = &f.plans[i];
        if !(p.end == f.end && p.revoked_at.is_none() && p.start == START && days >= 7) {
            continue;
        }
        if !f.rng.random_bool(0.12) {
            continue;
        }
        let at = START + f.rng.random_range(4 * DAY..(days - 2) * DAY);
        let grace_until = at + DAY;
        let switch_at = at + f.rng.random_range(0..12 * HOUR);
        let lagging_until = switch_at.max(at + f.rng.random_range(12 * HOUR..22 * HOUR));
        let identity = f.keys[f.plans[i].key as usize].identity;
        let new_key = {
            f.keys.push(super::SimKey {
                id: uuid::Uuid::from_u128(f.rng.random::<u128>() | 1),
                identity,
            });
            (f.keys.len() - 1) as u32
        };
        let old = f.plans[i].key;
        f.rotations.push((old, new_key, grace_until));
        f.recs.push(Rec {
            at,
            key: old,
            code: VerifyCode::Valid,
            ip: f.plans[i].hosts[0],
            scope: (f.rotations.len() - 1) as u16,
            rotation: true,
        });
        f.plans[i].rotation = Some(RotationPlan {
            at,
            grace_until,
            switch_at,
            lagging_until,
            new_key,
        });
    }
}

pub fn inject(f: &mut Fleet, cfg: &SimConfig) -> Vec<Incident> {
    let mut labels = Vec::new();
    for kind in AnomalyKind::ALL {
        for i in 0..cfg.incidents_per_kind {
            let subtle = i % 2 == 1;
            if let Some(l) = one(f, kind, subtle, i) {
                labels.push(l);
            }
        }
    }
    labels
}

fn pick(f: &mut Fleet, ok: impl Fn(&KeyPlan) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..f.plans.len()).filter(|i| ok(&f.plans[*i])).collect();
    if candidates.is_empty() {
        return None;
    }
    let i = candidates[f.rng.random_range(0..candidates.len())];
    f.plans[i].taken = true;
    Some(i)
}

fn warm_from(p: &KeyPlan) -> i64 {
    p.start + 4 * DAY
}

fn one(f: &mut Fleet, kind: AnomalyKind, subtle: bool, i: usize) -> Option<Incident> {
    let end = f.end;
    let label = |key: Option<u32>, f: &Fleet, network: Option<String>, start: i64, stop: i64| {
        Some(Incident {
            kind,
            key_id: key.map(|k| f.keys[k as usize].id),
            network,
            start: ts(start),
            end: ts(stop),
            subtle,
        })
    };
    match kind {
        AnomalyKind::TrafficSpike => {
            let p = pick(f, |p| {
                plain(p, end)
                    && warm_from(p) < end - 2 * DAY
                    && (!subtle
                        || matches!(p.profile, Profile::Steady { .. } | Profile::Office { .. }))
            })?;
            let plan = f.plans[p].clone();
            let from = f.rng.random_range(warm_from(&plan)..end - 2 * DAY);
            let start = plan.profile.busy_time(from, &mut f.rng);
            let base = plan.profile.typical() * (1.0 + plan.growth).powf(8.0);
            let (rate, dur) = if subtle {
                (3.0 * base + 4.0, 90 * MIN)
            } else {
                let peak = match &plan.profile {
                    Profile::Bursty { bursts, .. } => {
                        bursts.iter().map(|b| b.2).fold(0.0, f64::max)
                    }
                    _ => base,
                };
                (10.0 * peak + 60.0, 10 * MIN)
            };
            let stop = steady(
                f,
                &plan,
                start,
                dur,
                rate,
                VerifyCode::Valid,
                plan.hosts[0],
                None,
            );
            label(Some(plan.key), f, None, start, stop)
        }
        AnomalyKind::NewNetwork => {
            let p = pick(f, |p| plain(p, end) && warm_from(p) < end - 2 * DAY)?;
            let plan = f.plans[p].clone();
            let from = f.rng.random_range(warm_from(&plan)..end - 2 * DAY);
            let start = plan.profile.busy_time(from, &mut f.rng);
            let net = f.addresses.fresh(&mut f.rng, false);
            let ip = net.host(f.rng.random_range(2..250));
            let rate = if subtle { 0.25 } else { 3.0 };
            let stop = steady(f, &plan, start, HOUR, rate, VerifyCode::Valid, ip, None);
            label(Some(plan.key), f, Some(net.name()), start, stop)
        }
        AnomalyKind::UnusualHour => {
            let p = pick(f, |p| {
                plain(p, end)
                    && warm_from(p) < end - 2 * DAY
                    && matches!(p.profile, Profile::Office { .. } | Profile::Nightly { .. })
            })?;
            let plan = f.plans[p].clone();
            let mut day = f
                .rng
                .random_range((warm_from(&plan) - START) / DAY + 1..(end - START) / DAY - 1);
            while (day + 3).rem_euclid(7) >= 5 && matches!(plan.profile, Profile::Office { .. }) {
                day -= 1;
            }
            let hour = match plan.profile {
                Profile::Office { end_h, .. } => {
                    if subtle {
                        end_h + 1
                    } else {
                        end_h + 7
                    }
                }
                Profile::Nightly { start, dur, .. } => {
                    let last = (start + dur) / 60;
                    if subtle { last + 2 } else { last + 10 }
                }
                _ => 12,
            } % 24;
            let start = START + day * DAY + hour * HOUR + f.rng.random_range(0..20) * MIN;
            let (rate, dur) = if subtle {
                (0.34, 15 * MIN)
            } else {
                (2.0, 20 * MIN)
            };
            let stop = steady(
                f,
                &plan,
                start,
                dur,
                rate,
                VerifyCode::Valid,
                plan.hosts[0],
                None,
            );
            label(Some(plan.key), f, None, start, stop)
        }
        AnomalyKind::ScopeProbing => {
            let p = pick(f, |p| plain(p, end) && warm_from(p) < end - 2 * DAY)?;
            let plan = f.plans[p].clone();
            let from = f.rng.random_range(warm_from(&plan)..end - 2 * DAY);
            let start = plan.profile.busy_time(from, &mut f.rng);
            let (distinct, count, dur) = if subtle {
                (3, 5, 10 * MIN)
            } else {
                (8, 40, 5 * MIN)
            };
            let first = i % PROBES.len();
            let scopes: Vec<u16> = (0..distinct)
                .map(|j| f.scope(PROBES[(first + j) % PROBES.len()]))
                .collect();
            let mut stop = start;
            for j in 0..count {
                let at = start + dur * j as i64 / count as i64 + f.rng.random_range(0..5 * SEC);
                f.push(
                    at,
                    plan.key,
                    VerifyCode::InsufficientScope,
                    plan.hosts[0],
                    scopes[j % distinct],
                );
                stop = stop.max(at);
            }
            label(Some(plan.key), f, None, start, stop)
        }
        AnomalyKind::DormantKeyUsed => {
            let p = pick(f, |p| {
                !p.taken && p.start == START && p.end < end && p.end + 7 * DAY + 2 * HOUR < end
            })?;
            let plan = f.plans[p].clone();
            let start = f.rng.random_range(plan.end + 7 * DAY + HOUR..end - HOUR);
            let (ip, count, net) = if subtle {
                (plan.hosts[0], 2, None)
            } else {
                let net = f.addresses.fresh(&mut f.rng, false);
                (net.host(9), 20, Some(net.name()))
            };
            let stop = steady(
                f,
                &plan,
                start,
                10 * MIN,
                count as f64 / 10.0,
                VerifyCode::Valid,
                ip,
                Some(count),
            );
            label(Some(plan.key), f, net, start, stop)
        }
        AnomalyKind::KeyGuessing => {
            let net = f.addresses.fresh(&mut f.rng, false);
            let start = START + f.rng.random_range(DAY..(end - START) - HOUR);
            let (hosts, rate, dur): (Vec<u8>, f64, i64) = match (subtle, i % 4) {
                (false, _) => (vec![66], 60.0, 10 * MIN),
                (true, 1) => (vec![77], 8.0, 30 * MIN),
                _ => ((10..22).collect(), 1.5, 30 * MIN),
            };
            let mut stop = start;
            for h in &hosts {
                let mut at = start;
                let every = (MIN as f64 / rate) as i64;
                while at < start + dur {
                    let code = if f.rng.random_bool(0.2) {
                        VerifyCode::Malformed
                    } else {
                        VerifyCode::NotFound
                    };
                    let jitter = f.rng.random_range(0..every.max(2) / 2);
                    f.push(at + jitter, NONE, code, net.host(*h), NO_SCOPE);
                    stop = stop.max(at + jitter);
                    at += every;
                }
            }
            label(None, f, Some(net.name()), start, stop)
        }
        AnomalyKind::OldKeyUnexpectedSource => {
            let p = pick(f, |p| !p.taken && p.rotation.is_some())?;
            let plan = f.plans[p].clone();
            let r = plan.rotation?;
            let start = f.rng.random_range(r.at + HOUR..r.grace_until - HOUR);
            let net = f.addresses.fresh(&mut f.rng, false);
            let count = if subtle { 2 } else { 30 };
            let stop = steady(
                f,
                &plan,
                start,
                10 * MIN,
                count as f64 / 10.0,
                VerifyCode::Valid,
                net.host(5),
                Some(count),
            );
            label(Some(plan.key), f, Some(net.name()), start, stop)
        }
    }
}

/// Requests at a steady `rate` per minute for `dur` (or exactly `count` of them),
/// with the key's own scopes; answers the time of the last one.
#[allow(clippy::too_many_arguments)]
fn steady(
    f: &mut Fleet,
    plan: &KeyPlan,
    start: i64,
    dur: i64,
    rate: f64,
    code: VerifyCode,
    ip: std::net::IpAddr,
    count: Option<usize>,
) -> i64 {
    let n = count.unwrap_or((rate * dur as f64 / MIN as f64).round().max(1.0) as usize);
    let mut stop = start;
    for j in 0..n {
        let at = start + dur * j as i64 / n as i64 + f.rng.random_range(0..SEC);
        let scope = plan.scopes[j % plan.scopes.len()];
        f.push(at, plan.key, code, ip, scope);
        stop = stop.max(at);
    }
    stop
}
