//! Usage events stored in blocks: many events to one row.
//!
//! Why: every verification becomes a usage event, and on a node that serves verify the
//! event's storage competes with verify for the same cores. As one row each (eight
//! columns, uuids as text, an index on the time) an event cost ~2.6 µs of CPU to
//! insert: binding, two B-tree inserts, WAL pages for ~150 bytes of row and index. A
//! block is one row holding up to [`MAX_EVENTS`] events packed with `postcard` (uuids as
//! 16 bytes, times as varint offsets from the block's first, a length per event so
//! that reads skip events outside their time range): one B-tree insert per block, half
//! the bytes per event.
//!
//! Every read of raw events is a range of time (top sources, who still uses a key, the
//! anomaly tail, retention), so each block records the times of its first and last
//! event, indexed by the first. A block spans at most [`MAX_SPAN_MICROS`] of event
//! time, so the blocks that can hold an event of `[from, to)` are exactly those whose
//! first event is in `[from - MAX_SPAN_MICROS, to)`.
//!
//! **Architecture Invariant:** a block's events are sorted by time and lie within
//! `[first_at, last_at]`, and `last_at - first_at <= MAX_SPAN_MICROS` (checked on every
//! write by [`blocks`] and by `tests::blocks_are_sorted_and_bounded`).

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::{Bound, RangeBounds};

use keyward_core::usage::{UsageEvent, UsageTags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Result, StoreError};

/// Events per block, at most.
pub(crate) const MAX_EVENTS: usize = 4096;
/// Event time one block spans, at most (µs). A read of a time range also reads the
/// blocks that start up to this long before it: short, as the writer's batches are
/// (200 ms); a batch that spans more (events retried after an outage) takes more blocks.
pub(crate) const MAX_SPAN_MICROS: i64 = 500_000;
/// The first byte of every block: the encoding below.
const FORMAT_POSTCARD_V1: u8 = 1;

/// One event as a block stores it, after its time (see [`blocks`] for the layout).
#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    key_id: Option<[u8; 16]>,
    identity_id: Option<[u8; 16]>,
    /// The contract's code (`VALID`, ...): text, so that a stored block never depends
    /// on the order of an enum.
    #[serde(borrow)]
    code: Cow<'a, str>,
    ip: Option<IpAddr>,
    #[serde(borrow)]
    scopes: Vec<Cow<'a, str>>,
    latency_us: u32,
    tags: Option<UsageTags>,
}

/// A block ready to insert.
pub(crate) struct Block {
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub bytes: Vec<u8>,
}

/// Packs `events` (any order) into blocks sorted by time, each within the limits above.
///
/// Layout: the format byte, then per event, in time order: its time as µs after the
/// block's `first_at` and the length of what follows (postcard varints), then the rest
/// of it ([`Packed`], postcard). The lengths let a read of a time range skip the events
/// outside it without decoding them: the anomaly tail reads the recent end of blocks
/// many times a second.
pub(crate) fn blocks(events: &[UsageEvent]) -> Result<Vec<Block>> {
    let pack_err =
        |e: postcard::Error| StoreError::Corrupt(format!("a usage event could not be packed: {e}"));
    let mut order: Vec<(i64, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.at.timestamp_micros(), i))
        .collect();
    order.sort_unstable();
    let mut out = Vec::new();
    let mut rest = &order[..];
    let mut one = Vec::with_capacity(128);
    while let Some(&(first_at, _)) = rest.first() {
        let n = rest
            .iter()
            .take(MAX_EVENTS)
            .take_while(|(at, _)| at - first_at <= MAX_SPAN_MICROS)
            .count();
        let (these, later) = rest.split_at(n);
        let mut bytes = Vec::with_capacity(1 + 72 * n);
        bytes.push(FORMAT_POSTCARD_V1);
        for &(at, i) in these {
            let e = &events[i];
            let packed = Packed {
                key_id: e.key_id.map(|k| *k.as_bytes()),
                identity_id: e.identity_id.map(|k| *k.as_bytes()),
                code: Cow::Borrowed(e.code.as_str()),
                ip: e.ip,
                scopes: e.scopes.iter().map(|s| Cow::Borrowed(s.as_str())).collect(),
                latency_us: e.latency_us,
                tags: e.tags.clone(),
            };
            one.clear();
            one = postcard::to_extend(&packed, one).map_err(pack_err)?;
            bytes = postcard::to_extend(&((at - first_at) as u64), bytes).map_err(pack_err)?;
            bytes = postcard::to_extend(&(one.len() as u64), bytes).map_err(pack_err)?;
            bytes.extend_from_slice(&one);
        }
        let last_at = these.last().map_or(first_at, |(at, _)| *at);
        debug_assert!(last_at - first_at <= MAX_SPAN_MICROS);
        out.push(Block {
            first_at,
            last_at,
            count: n as i64,
            bytes,
        });
        rest = later;
    }
    Ok(out)
}

/// The events of a block (`first_at` as stored with it) whose time (µs) is in `times`,
/// in time order; of those, `keep` picks which to return (it sees the time, the key
/// and the code). Events outside `times` are skipped without being decoded.
pub(crate) fn events(
    first_at: i64,
    bytes: &[u8],
    times: impl RangeBounds<i64>,
    mut keep: impl FnMut(i64, Option<Uuid>, &str) -> bool,
    out: &mut Vec<UsageEvent>,
) -> Result<()> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("usage event block: {what}"));
    let Some((&format, mut rest)) = bytes.split_first() else {
        return Err(corrupt("empty"));
    };
    if format != FORMAT_POSTCARD_V1 {
        return Err(corrupt(&format!("unknown format {format}")));
    }
    while !rest.is_empty() {
        let (after_first, r) = varint(rest)?;
        let (len, r) = varint(r)?;
        let len = usize::try_from(len).map_err(|_| corrupt("length"))?;
        if r.len() < len {
            return Err(corrupt("length"));
        }
        let (this, r) = r.split_at(len);
        rest = r;
        let at = i64::try_from(after_first)
            .ok()
            .and_then(|d| first_at.checked_add(d))
            .ok_or_else(|| corrupt("time"))?;
        if !times.contains(&at) {
            // Sorted by time: past the end of the range, nothing more is in it.
            match times.end_bound() {
                Bound::Included(end) if at > *end => break,
                Bound::Excluded(end) if at >= *end => break,
                _ => continue,
            }
        }
        let p: Packed = postcard::from_bytes(this).map_err(|e| corrupt(&e.to_string()))?;
        let key_id = p.key_id.map(Uuid::from_bytes);
        if !keep(at, key_id, &p.code) {
            continue;
        }
        out.push(UsageEvent {
            at: chrono::DateTime::from_timestamp_micros(at).ok_or_else(|| corrupt("time"))?,
            key_id,
            identity_id: p.identity_id.map(Uuid::from_bytes),
            code: crate::usage::parse_code(&p.code)?,
            ip: p.ip,
            scopes: p.scopes.into_iter().map(Cow::into_owned).collect(),
            latency_us: p.latency_us,
            tags: p.tags,
        });
    }
    Ok(())
}

/// A postcard varint and what follows it.
fn varint(bytes: &[u8]) -> Result<(u64, &[u8])> {
    postcard::take_from_bytes::<u64>(bytes)
        .map_err(|e| StoreError::Corrupt(format!("usage event block: {e}")))
}

/// A stored block as read back: id, first event time, packed events.
pub(crate) type StoredBlock = (i64, i64, Vec<u8>);

/// The events of `(after, until]` (µs) in time order, at most `limit`, from the blocks
/// `next_page` hands over in order of `(first_at, id)`: each call gets the last block
/// seen (`None` at first) and returns the next few, empty at the end. Blocks are read
/// only until the first `limit` events are certain: every block still unread starts at
/// or after the last one read.
pub(crate) fn events_after(
    after: i64,
    until: i64,
    limit: usize,
    mut next_page: impl FnMut(Option<(i64, i64)>) -> Result<Vec<StoredBlock>>,
) -> Result<Vec<UsageEvent>> {
    let mut out = Vec::new();
    let mut last_seen = None;
    loop {
        let page = next_page(last_seen)?;
        let Some(&(id, first_at, _)) = page.last() else {
            break;
        };
        last_seen = Some((first_at, id));
        for (_, first, bytes) in &page {
            events(
                *first,
                bytes,
                (Bound::Excluded(after), Bound::Included(until)),
                |_, _, _| true,
                &mut out,
            )?;
        }
        // Unread blocks start at `first_at` or later: what is before it is complete.
        if out
            .iter()
            .filter(|e| e.at.timestamp_micros() < first_at)
            .count()
            >= limit
        {
            break;
        }
    }
    out.sort_by_key(|e| e.at);
    out.truncate(limit);
    Ok(out)
}

/// Adds up, per source address, the events of `blocks` in `[from, to)` that `keep`
/// accepts (µs times).
pub(crate) fn count_sources(
    blocks: &[StoredBlock],
    from: i64,
    to: i64,
    keep: impl Fn(&UsageEvent) -> bool,
    counts: &mut std::collections::HashMap<IpAddr, u64>,
) -> Result<()> {
    let mut evs = Vec::new();
    for (_, first_at, bytes) in blocks {
        evs.clear();
        events(*first_at, bytes, from..to, |_, _, _| true, &mut evs)?;
        for e in evs.iter().filter(|e| keep(e)) {
            if let Some(ip) = e.ip {
                *counts.entry(ip).or_default() += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::VerifyCode;

    fn event(at_micros: i64, n: u128) -> UsageEvent {
        UsageEvent {
            at: chrono::DateTime::from_timestamp_micros(at_micros).unwrap(),
            key_id: (!n.is_multiple_of(5)).then(|| Uuid::from_u128(n)),
            identity_id: (!n.is_multiple_of(7)).then(|| Uuid::from_u128(n + 1000)),
            code: if n.is_multiple_of(3) {
                VerifyCode::RateLimited
            } else {
                VerifyCode::Valid
            },
            ip: match n % 3 {
                0 => None,
                1 => Some("10.1.2.3".parse().unwrap()),
                _ => Some("2001:db8::7".parse().unwrap()),
            },
            scopes: (0..(n % 3)).map(|i| format!("orders:{i}")).collect(),
            latency_us: n as u32,
            tags: (n.is_multiple_of(4)).then(|| UsageTags::from([("job".into(), format!("j{n}"))])),
        }
    }

    fn decode_all(blocks: &[Block]) -> Vec<UsageEvent> {
        let mut out = Vec::new();
        for b in blocks {
            events(b.first_at, &b.bytes, .., |_, _, _| true, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn round_trips_every_field() {
        let base = 1_780_000_000_000_000;
        let mut input: Vec<_> = (0..300u128)
            .map(|n| event(base + (n as i64 * 7919) % 500_000, n))
            .collect();
        let blocks = blocks(&input).unwrap();
        let out = decode_all(&blocks);
        input.sort_by_key(|e| e.at);
        let mut sorted_out = out.clone();
        sorted_out.sort_by_key(|e| e.at);
        assert_eq!(out.len(), input.len());
        // Same multiset: sort both by every distinguishing field.
        let key = |e: &UsageEvent| (e.at, e.latency_us);
        input.sort_by_key(key);
        sorted_out.sort_by_key(key);
        assert_eq!(sorted_out, input);
    }

    #[test]
    fn blocks_are_sorted_and_bounded() {
        let base = 1_780_000_000_000_000;
        // Stragglers minutes old, a long batch, and more events than one block holds.
        let mut input: Vec<_> = (0..10_000u128)
            .map(|n| event(base + (n as i64 % 3000) * 1_000, n))
            .collect();
        input.push(event(base - 600_000_000, 1));
        input.push(event(base - 600_000_001, 2));
        let blocks = blocks(&input).unwrap();
        let mut total = 0;
        for b in &blocks {
            let evs = decode_all(std::slice::from_ref(b));
            assert_eq!(evs.len() as i64, b.count);
            assert!(b.count as usize <= MAX_EVENTS);
            assert!(b.last_at - b.first_at <= MAX_SPAN_MICROS);
            let times: Vec<i64> = evs.iter().map(|e| e.at.timestamp_micros()).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(times.first(), Some(&b.first_at));
            assert_eq!(times.last(), Some(&b.last_at));
            total += evs.len();
        }
        assert_eq!(total, input.len());
        assert!(blocks.windows(2).all(|w| w[0].first_at <= w[1].first_at));
    }

    #[test]
    fn a_time_range_returns_exactly_its_events() {
        let base = 1_780_000_000_000_000;
        let input: Vec<_> = (0..200u128)
            .map(|n| event(base + n as i64 * 1000, n))
            .collect();
        let blocks = blocks(&input).unwrap();
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0];
        let times = |out: &[UsageEvent]| -> Vec<i64> {
            out.iter().map(|e| e.at.timestamp_micros() - base).collect()
        };
        let mut out = Vec::new();
        let range = (
            Bound::Excluded(base + 10_000),
            Bound::Included(base + 20_000),
        );
        events(b.first_at, &b.bytes, range, |_, _, _| true, &mut out).unwrap();
        assert_eq!(times(&out), (11..=20).map(|n| n * 1000).collect::<Vec<_>>());
        out.clear();
        events(
            b.first_at,
            &b.bytes,
            base + 150_000..,
            |_, k, _| k.is_some(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 50 - 10, "keys of every fifth event are None");
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic() {
        let blocks = blocks(&[event(1_780_000_000_000_000, 4)]).unwrap();
        let mut bytes = blocks[0].bytes.clone();
        for cut in 0..bytes.len() {
            let mut out = Vec::new();
            let _ = events(0, &bytes[..cut], .., |_, _, _| true, &mut out);
        }
        bytes[0] = 9;
        let mut out = Vec::new();
        assert!(events(0, &bytes, .., |_, _, _| true, &mut out).is_err());
    }
}
