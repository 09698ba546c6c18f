//! One event through every detector: the dispatch behind `Detectors::observe`.

use std::net::IpAddr;

use keyward_core::anomaly::{Anomaly, AnomalyKind};
use keyward_core::code::VerifyCode;
use keyward_core::usage::UsageEvent;
use uuid::Uuid;

use crate::Detectors;
use crate::clock::DAY;
use crate::decay::SEC;
use crate::key::{KeyState, PendingNet};
use crate::net::Net;
use crate::networks::IdentityNets;
use crate::report;
use crate::settings::DetectSettings;

/// A short, non-zero tag for a key inside an identity's network list.
fn key_tag(key: Uuid) -> u64 {
    (key.as_u64_pair().1) | 1
}

pub fn event(d: &mut Detectors, e: &UsageEvent, now: i64, out: &mut Vec<Anomaly>) {
    let s = &d.settings;
    let gap = i64::from(s.episode_gap_seconds) * SEC;
    match e.code {
        VerifyCode::NotFound | VerifyCode::Malformed => {
            if let Some(ip) = e.ip
                && let Some(g) = d.guessing.observe(now, ip, s, gap)
            {
                out.push(report::guessing(e, &g));
            }
            return;
        }
        // A dead key refused again (a stale client retrying a revoked key) is no
        // usage: it gets nothing and teaches nothing.
        VerifyCode::Revoked | VerifyCode::Expired | VerifyCode::Disabled => return,
        _ => {}
    }
    let Some(key_id) = e.key_id else {
        return;
    };
    if !d.keys.contains(&key_id) && d.keys.len() >= s.keys_max {
        evict_half(&mut d.keys);
    }
    let state = d
        .keys
        .get_or_insert_with(key_id, || KeyState::new(e.identity_id, now));
    if state.identity.is_none() {
        state.identity = e.identity_id;
    }
    let warm = state.warm(s);
    let net = e.ip.map(|ip| Net::of(ip, s.ipv4_prefix, s.ipv6_prefix));

    if state.events > 0 {
        let silence = now - state.last_seen;
        if warm
            && silence >= i64::from(s.dormant_days) * DAY
            && silence as f64 >= f64::from(s.dormant_gap_factor) * state.longest_gap as f64
            && state.episodes.hit(AnomalyKind::DormantKeyUsed, now, gap)
        {
            let known = net.is_none_or(|n| state.nets.contains(n));
            out.push(report::dormant(e, state, silence, known));
        }
        state.longest_gap = state.longest_gap.max(silence);
    }

    if let (Some(ip), Some(net)) = (e.ip, net) {
        let identity = e
            .identity_id
            .or(state.identity)
            .map(|id| d.identities.entry(id).or_default());
        network(
            state,
            identity,
            &mut d.pending,
            key_id,
            ip,
            net,
            now,
            warm,
            s,
            e,
            out,
        );
    }

    if warm
        && let Some(u) = state.rhythm.judge(now)
        && state.episodes.hit(AnomalyKind::UnusualHour, now, gap)
    {
        out.push(report::unusual_hour(e, state, &u));
    }
    state.rhythm.record(now);

    if let Some(spike) = state.traffic.observe(now, warm, s)
        && state.episodes.hit(AnomalyKind::TrafficSpike, now, gap)
    {
        out.push(report::spike(e, &spike));
    }

    let refused = e.code == VerifyCode::InsufficientScope;
    if let Some(p) = state.scopes.observe(now, refused, &e.scopes, warm, s)
        && state.episodes.hit(AnomalyKind::ScopeProbing, now, gap)
    {
        out.push(report::probing(e, &p));
    }

    state.events = state.events.saturating_add(1);
    state.last_seen = now;
}

#[allow(clippy::too_many_arguments)]
fn network(
    state: &mut KeyState,
    mut identity: Option<&mut IdentityNets>,
    queue: &mut std::collections::BinaryHeap<std::cmp::Reverse<(i64, Uuid)>>,
    key_id: Uuid,
    ip: IpAddr,
    net: Net,
    now: i64,
    warm: bool,
    s: &DetectSettings,
    e: &UsageEvent,
    out: &mut Vec<Anomaly>,
) {
    let tag = key_tag(key_id);
    if let Some(idn) = identity.as_deref_mut() {
        idn.touch(net, tag, now);
    }
    if let Some(p) = &mut state.pending {
        if p.net == net {
            p.count += 1;
            p.last_at = now;
            return;
        }
        if state.nets.contains(net) {
            p.concurrent += 1;
        }
    }
    if state.nets.contains(net) {
        state.nets.touch(net, now, s.networks_per_key);
        return;
    }
    let identity_there = identity
        .as_deref()
        .is_some_and(|idn| idn.other_key_used(net, tag, now - 30 * DAY));
    if let Some(r) = state.rotation
        && now >= r.at
        && now <= r.grace_until
        && warm
    {
        if !identity_there {
            let gap = i64::from(s.episode_gap_seconds) * SEC;
            if state
                .episodes
                .hit(AnomalyKind::OldKeyUnexpectedSource, now, gap)
            {
                out.push(report::old_key(e, state, &r, net, ip));
            }
        }
        state.nets.touch(net, now, s.networks_per_key);
        return;
    }
    if !warm || state.roaming(s) || identity_there {
        // Learned silently: still warming up, a key used from everywhere, or a place
        // the identity's other keys already use (the service moved or grew there).
        state.nets.touch(net, now, s.networks_per_key);
        if !identity_there {
            state.learned_nets = state.learned_nets.saturating_add(1);
        }
        return;
    }
    if state.pending.is_none() {
        state.pending = Some(PendingNet {
            net,
            ip,
            first_at: now,
            last_at: now,
            count: 1,
            concurrent: 0,
        });
        let due = now + i64::from(s.new_network_confirm_seconds) * SEC;
        queue.push(std::cmp::Reverse((due, key_id)));
    }
}

/// Judges a new network once its confirmation window has passed: benign when another
/// key of the same identity showed up there too (the whole service moved); an anomaly
/// when the key was meanwhile also used from its usual networks (two places at once),
/// when the identity has no other active key to confirm a move, or when none came
/// within `new_network_wait_seconds`. Otherwise asks to be called again (the answer:
/// when), so a quiet sibling key has time to show up.
pub fn resolve_new_network(
    d: &mut Detectors,
    key_id: Uuid,
    due: i64,
    final_call: bool,
    out: &mut Vec<Anomaly>,
) -> Option<i64> {
    let s = &d.settings;
    let state = d.keys.get_mut(&key_id)?;
    let p = state.pending?;
    let confirm = i64::from(s.new_network_confirm_seconds) * SEC;
    let tag = key_tag(key_id);
    let idn = state.identity.and_then(|id| d.identities.get(&id));
    let moved = idn.is_some_and(|idn| idn.other_key_used(p.net, tag, p.first_at - confirm));
    let siblings = idn.is_some_and(|idn| idn.has_other_keys(tag, p.first_at - 7 * DAY));
    let waited = due - p.first_at >= i64::from(s.new_network_wait_seconds) * SEC;
    if !moved && p.concurrent == 0 && siblings && !waited && !final_call {
        return Some(due + 60 * SEC);
    }
    state.pending = None;
    state.nets.touch(p.net, p.last_at, s.networks_per_key);
    if !moved {
        out.push(report::new_network(key_id, state, &p));
    }
    None
}

/// Drops the least recently seen half of the keys (only past `keys_max`).
fn evict_half(keys: &mut crate::key_states::KeyStates) {
    let mut seen: Vec<i64> = keys.values().map(|k| k.last_seen).collect();
    let mid = seen.len() / 2;
    let (_, cut, _) = seen.select_nth_unstable(mid);
    let cut = *cut;
    keys.retain(|k| k.last_seen > cut);
}
