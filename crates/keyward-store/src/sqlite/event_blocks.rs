//! Usage events stored in blocks: many events to one row.
//!
//! Why: every verification becomes a usage event, and on a node that serves verify the
//! event's storage competes with verify for the same cores. As one row each (eight
//! columns, uuids as text, an index on the time) an event cost ~2.6 µs of CPU to
//! insert: binding, two B-tree inserts, WAL pages for ~150 bytes of row and index. A
//! block is one row holding up to [`MAX_EVENTS`] events: one B-tree insert per block.
//! Inside, the distinct shapes of its events (key, identity, code, address, scopes,
//! tags) are stored once, and each event as three varints: its time after the block's
//! first, its shape, its latency. A busy block holds thousands of events of a few keys
//! from a few addresses, so an event takes about 5 bytes (a row took ~150, the first
//! block format ~60): less to write through the WAL, to checkpoint, to read back and to
//! keep for the retention period.
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

use keyward_core::VerifyCode;
use keyward_core::usage::{UsageEvent, UsageTags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Result, StoreError};

/// Events per block, at most.
pub(crate) const MAX_EVENTS: usize = 4096;
/// Event time one block spans, at most (µs). A read of a time range also reads the
/// blocks that start up to this long before it, so it is kept short; a writer's batch
/// (a second of events, or more when retried after an outage) takes two blocks or more.
pub(crate) const MAX_SPAN_MICROS: i64 = 500_000;
/// The first byte of a block written by versions before 0.150: one postcard record per
/// event ([`Packed`]). Still read; no longer written.
const FORMAT_POSTCARD_V1: u8 = 1;
/// The first byte of every block written now: a table of the distinct shapes of its
/// events, then three varints per event (see [`blocks`]).
const FORMAT_SHAPES_V2: u8 = 2;

/// What a version 1 block stores of one event, after its time.
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

/// Everything of an event but its time and latency: a version 2 block stores each
/// distinct shape once, and every event as a reference to one. A busy block holds
/// thousands of events of a few keys from a few addresses, so an event takes about 5
/// bytes instead of about 60 (less to write through the WAL, to checkpoint, to read back
/// and to keep for the retention period).
#[derive(Serialize, Deserialize)]
struct Shape<'a> {
    key_id: Option<[u8; 16]>,
    identity_id: Option<[u8; 16]>,
    /// The contract's code, as text (see [`Packed::code`]).
    #[serde(borrow)]
    code: Cow<'a, str>,
    ip: Option<IpAddr>,
    #[serde(borrow)]
    scopes: Vec<Cow<'a, str>>,
    tags: Option<Cow<'a, UsageTags>>,
}

impl<'a> Shape<'a> {
    fn of(e: &'a UsageEvent) -> Shape<'a> {
        Shape {
            key_id: e.key_id.map(|k| *k.as_bytes()),
            identity_id: e.identity_id.map(|k| *k.as_bytes()),
            code: Cow::Borrowed(e.code.as_str()),
            ip: e.ip,
            scopes: e.scopes.iter().map(|s| Cow::Borrowed(s.as_str())).collect(),
            tags: e.tags.as_ref().map(Cow::Borrowed),
        }
    }
}

/// An event as a key of the table of shapes: equal when everything but the time and the
/// latency is (no copy of the event, nothing allocated per event).
struct SameShape<'a>(&'a UsageEvent);

impl SameShape<'_> {
    #[allow(clippy::type_complexity)]
    fn fields(
        &self,
    ) -> (
        Option<Uuid>,
        Option<Uuid>,
        VerifyCode,
        Option<IpAddr>,
        &[String],
        Option<&UsageTags>,
    ) {
        let e = self.0;
        (
            e.key_id,
            e.identity_id,
            e.code,
            e.ip,
            &e.scopes,
            e.tags.as_ref(),
        )
    }
}

impl PartialEq for SameShape<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for SameShape<'_> {}

impl std::hash::Hash for SameShape<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.fields().hash(h);
    }
}

/// A block ready to insert.
pub(crate) struct Block {
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub bytes: Vec<u8>,
}

fn pack_err(e: postcard::Error) -> StoreError {
    StoreError::Corrupt(format!("a usage event could not be packed: {e}"))
}

/// Packs `events` (any order) into blocks sorted by time, each within the limits above.
///
/// Layout (version 2): the format byte; the number of shapes, then each shape as its
/// length and its [`Shape`] (postcard); then per event, in time order, three postcard
/// varints: its time as µs after the block's `first_at`, the index of its shape, and its
/// latency. A read of a time range skips the events outside it by reading their varints,
/// and decodes only the shapes its events use.
pub(crate) fn blocks(events: &[UsageEvent]) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    BlockPacker::default().pack(events, |b| {
        out.push(Block {
            first_at: b.first_at,
            last_at: b.last_at,
            count: b.count,
            bytes: b.bytes.to_vec(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// One packed block, borrowed from the packer until the next.
pub(crate) struct PackedBlock<'p> {
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub bytes: &'p [u8],
}

/// Packs batches of events into blocks ([`blocks`] describes the layout), keeping its
/// buffers from one batch to the next. The usage writer packs a second of events at a
/// time, hundreds of KiB: with fresh buffers each time, the kernel zeroed new pages for
/// every batch (~0.2 µs per event, a profile of verify over HTTP).
#[derive(Default)]
pub(crate) struct BlockPacker {
    /// (time, index in the batch), sorted.
    order: Vec<(i64, u32)>,
    /// The block's shapes: (index in the batch of the first event of that shape, its
    /// number in the block).
    shapes: hashbrown::HashTable<(u32, u32)>,
    table: Vec<u8>,
    body: Vec<u8>,
    one: Vec<u8>,
    bytes: Vec<u8>,
}

/// The hash of an event's shape (the packer's table rebuilds nothing from it, so any
/// fixed seed does).
fn shape_hash(e: &UsageEvent) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6b65_7977_6172_6400).hash_one(SameShape(e))
}

impl BlockPacker {
    /// Packs `events` (any order) into blocks sorted by time, each within the limits
    /// above, and hands each to `each` in time order.
    pub(crate) fn pack(
        &mut self,
        events: &[UsageEvent],
        mut each: impl FnMut(PackedBlock<'_>) -> Result<()>,
    ) -> Result<()> {
        let batch_len = u32::try_from(events.len())
            .map_err(|_| StoreError::Corrupt("a usage batch too large to pack".into()))?;
        self.order.clear();
        self.order.extend(
            events
                .iter()
                .zip(0..batch_len)
                .map(|(e, i)| (e.at.timestamp_micros(), i)),
        );
        self.order.sort_unstable();
        let order = std::mem::take(&mut self.order);
        let mut rest = &order[..];
        let mut packed = Ok(());
        while let Some(&(first_at, _)) = rest.first() {
            let n = rest
                .iter()
                .take(MAX_EVENTS)
                .take_while(|(at, _)| at - first_at <= MAX_SPAN_MICROS)
                .count();
            let (these, later) = rest.split_at(n);
            packed = self.pack_one(events, these).and_then(|()| {
                each(PackedBlock {
                    first_at,
                    last_at: these.last().map_or(first_at, |(at, _)| *at),
                    count: n as i64,
                    bytes: &self.bytes,
                })
            });
            if packed.is_err() {
                break;
            }
            rest = later;
        }
        self.order = order;
        packed
    }

    /// Packs the events at `these` (sorted by time, one block's worth) into `bytes`.
    fn pack_one(&mut self, events: &[UsageEvent], these: &[(i64, u32)]) -> Result<()> {
        let Some(&(first_at, _)) = these.first() else {
            return Ok(());
        };
        self.shapes.clear();
        self.table.clear();
        self.body.clear();
        for &(at, i) in these {
            let e = &events[i as usize];
            let hash = shape_hash(e);
            let next = self.shapes.len() as u32;
            let shape = match self.shapes.entry(
                hash,
                |(first, _)| SameShape(&events[*first as usize]) == SameShape(e),
                |(first, _)| shape_hash(&events[*first as usize]),
            ) {
                hashbrown::hash_table::Entry::Occupied(o) => o.get().1,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    // Each shape as its length and its record, into one table buffer.
                    self.one.clear();
                    let one = std::mem::take(&mut self.one);
                    self.one = postcard::to_extend(&Shape::of(e), one).map_err(pack_err)?;
                    push_varint(&mut self.table, self.one.len() as u64)?;
                    self.table.extend_from_slice(&self.one);
                    v.insert((i, next));
                    next
                }
            };
            for v in [
                (at - first_at) as u64,
                u64::from(shape),
                u64::from(e.latency_us),
            ] {
                push_varint(&mut self.body, v)?;
            }
        }
        debug_assert!(
            these
                .last()
                .is_some_and(|(at, _)| at - first_at <= MAX_SPAN_MICROS)
        );
        self.bytes.clear();
        self.bytes.push(FORMAT_SHAPES_V2);
        push_varint(&mut self.bytes, self.shapes.len() as u64)?;
        self.bytes.extend_from_slice(&self.table);
        self.bytes.extend_from_slice(&self.body);
        Ok(())
    }
}

/// Appends `v` as a postcard varint.
fn push_varint(buf: &mut Vec<u8>, v: u64) -> Result<()> {
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(&v, taken).map_err(pack_err)?;
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("usage event block: {what}"))
}

/// The time of an event `after_first` µs after its block's `first_at`.
fn event_time(first_at: i64, after_first: u64) -> Result<i64> {
    i64::try_from(after_first)
        .ok()
        .and_then(|d| first_at.checked_add(d))
        .ok_or_else(|| corrupt("time"))
}

/// Whether an event at `at` (sorted by time) is in `times`: `Some(false)` to skip it,
/// `None` once past the end of the range.
fn in_range(times: &impl RangeBounds<i64>, at: i64) -> Option<bool> {
    if times.contains(&at) {
        return Some(true);
    }
    match times.end_bound() {
        Bound::Included(end) if at > *end => None,
        Bound::Excluded(end) if at >= *end => None,
        _ => Some(false),
    }
}

/// The events of a block (`first_at` as stored with it) whose time (µs) is in `times`,
/// in time order; of those, `keep` picks which to return (it sees the time, the key
/// and the code). Events outside `times` are skipped without being decoded.
pub(crate) fn events(
    first_at: i64,
    bytes: &[u8],
    times: impl RangeBounds<i64>,
    keep: impl FnMut(i64, Option<Uuid>, &str) -> bool,
    out: &mut Vec<UsageEvent>,
) -> Result<()> {
    events_with(
        &mut ReadScratch::default(),
        first_at,
        bytes,
        times,
        keep,
        out,
    )
}

/// [`events`], with buffers kept from one block to the next.
pub(crate) fn events_with(
    scratch: &mut ReadScratch,
    first_at: i64,
    bytes: &[u8],
    times: impl RangeBounds<i64>,
    keep: impl FnMut(i64, Option<Uuid>, &str) -> bool,
    out: &mut Vec<UsageEvent>,
) -> Result<()> {
    match bytes.split_first() {
        None => Err(corrupt("empty")),
        Some((&FORMAT_SHAPES_V2, rest)) => events_v2(scratch, first_at, rest, times, keep, out),
        Some((&FORMAT_POSTCARD_V1, rest)) => events_v1(first_at, rest, times, keep, out),
        Some((format, _)) => Err(corrupt(&format!("unknown format {format}"))),
    }
}

/// What a read of a version 2 block knows of each of its shapes.
#[derive(Clone, Copy)]
enum Seen {
    /// Not decoded yet.
    No,
    /// Decoded into the event at this index of `out`: the shape's later events copy it.
    /// (Decoding into the first event rather than into a copy to clone from saves an
    /// allocation per shape: on a node with many busy keys, nearly one per event.)
    Into(usize),
    /// Decoded, and refused by `keep`: its key and code, to ask again.
    Refused(Option<Uuid>, VerifyCode),
}

/// A read's buffers, kept from one block to the next.
#[derive(Default)]
pub(crate) struct ReadScratch {
    /// Each shape's bytes, as a range of the block.
    shapes: Vec<std::ops::Range<usize>>,
    seen: Vec<Seen>,
}

fn events_v2(
    scratch: &mut ReadScratch,
    first_at: i64,
    block: &[u8],
    times: impl RangeBounds<i64>,
    mut keep: impl FnMut(i64, Option<Uuid>, &str) -> bool,
    out: &mut Vec<UsageEvent>,
) -> Result<()> {
    let (n, mut rest) = varint(block)?;
    // The shapes' bytes now, decoded when an event first needs them.
    scratch.shapes.clear();
    scratch.seen.clear();
    for _ in 0..n {
        let (len, r) = varint(rest)?;
        let len = usize::try_from(len).map_err(|_| corrupt("length"))?;
        if r.len() < len {
            return Err(corrupt("length"));
        }
        let start = block.len() - r.len();
        scratch.shapes.push(start..start + len);
        scratch.seen.push(Seen::No);
        rest = &r[len..];
    }
    while !rest.is_empty() {
        let (after_first, r) = varint(rest)?;
        let (shape, r) = varint(r)?;
        let (latency_us, r) = varint(r)?;
        rest = r;
        let at = event_time(first_at, after_first)?;
        match in_range(&times, at) {
            None => break,
            Some(false) => continue,
            Some(true) => {}
        }
        let i = usize::try_from(shape)
            .ok()
            .filter(|i| *i < scratch.shapes.len())
            .ok_or_else(|| corrupt("shape"))?;
        let time = chrono::DateTime::from_timestamp_micros(at).ok_or_else(|| corrupt("time"))?;
        let latency_us = u32::try_from(latency_us).map_err(|_| corrupt("latency"))?;
        match scratch.seen[i] {
            Seen::Into(j) => {
                let first = &out[j];
                if !keep(at, first.key_id, first.code.as_str()) {
                    continue;
                }
                let e = UsageEvent {
                    at: time,
                    latency_us,
                    ..first.clone()
                };
                out.push(e);
            }
            Seen::Refused(key, code) if !keep(at, key, code.as_str()) => {}
            Seen::No | Seen::Refused(..) => {
                let s: Shape<'_> = postcard::from_bytes(&block[scratch.shapes[i].clone()])
                    .map_err(|e| corrupt(&e.to_string()))?;
                let key_id = s.key_id.map(Uuid::from_bytes);
                let code = crate::usage::parse_code(&s.code)?;
                if !keep(at, key_id, code.as_str()) {
                    scratch.seen[i] = Seen::Refused(key_id, code);
                    continue;
                }
                out.push(UsageEvent {
                    at: time,
                    key_id,
                    identity_id: s.identity_id.map(Uuid::from_bytes),
                    code,
                    ip: s.ip,
                    scopes: s.scopes.into_iter().map(Cow::into_owned).collect(),
                    latency_us,
                    tags: s.tags.map(Cow::into_owned),
                });
                scratch.seen[i] = Seen::Into(out.len() - 1);
            }
        }
    }
    Ok(())
}

fn events_v1(
    first_at: i64,
    mut rest: &[u8],
    times: impl RangeBounds<i64>,
    mut keep: impl FnMut(i64, Option<Uuid>, &str) -> bool,
    out: &mut Vec<UsageEvent>,
) -> Result<()> {
    while !rest.is_empty() {
        let (after_first, r) = varint(rest)?;
        let (len, r) = varint(r)?;
        let len = usize::try_from(len).map_err(|_| corrupt("length"))?;
        if r.len() < len {
            return Err(corrupt("length"));
        }
        let (this, r) = r.split_at(len);
        rest = r;
        let at = event_time(first_at, after_first)?;
        match in_range(&times, at) {
            None => break,
            Some(false) => continue,
            Some(true) => {}
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

/// Collects the events of `(after, until]` (µs) in time order, at most `limit`, from
/// blocks handed over in order of `(first_at, id)`. Blocks are decoded only until the
/// first `limit` events are certain: every block still unread starts at or after the
/// next one's `first_at`, so the events before that are complete. Deciding this per
/// block, not per page of blocks, keeps a tail that takes a few thousand events at a time
/// from decoding (and copying) a whole page of 4,096-event blocks for each page it takes.
pub(crate) struct EventsAfter<'o> {
    after: i64,
    until: i64,
    limit: usize,
    out: &'o mut Vec<UsageEvent>,
    scratch: ReadScratch,
}

impl<'o> EventsAfter<'o> {
    /// Collects into `out`, emptied first.
    pub(crate) fn new(
        after: i64,
        until: i64,
        limit: usize,
        out: &'o mut Vec<UsageEvent>,
    ) -> EventsAfter<'o> {
        out.clear();
        EventsAfter {
            after,
            until,
            limit,
            out,
            scratch: ReadScratch::default(),
        }
    }

    /// Whether a block starting at `first_at` (and every later one) can still matter.
    pub(crate) fn needs_block_at(&self, first_at: i64) -> bool {
        // Fewer events than the limit in all: no need to count (many small blocks of a
        // quiet node would otherwise be counted over and over).
        self.out.len() < self.limit
            || self
                .out
                .iter()
                .filter(|e| e.at.timestamp_micros() < first_at)
                .count()
                < self.limit
    }

    /// Takes the events of the next block in order.
    pub(crate) fn add(&mut self, first_at: i64, bytes: &[u8]) -> Result<()> {
        events_with(
            &mut self.scratch,
            first_at,
            bytes,
            (Bound::Excluded(self.after), Bound::Included(self.until)),
            |_, _, _| true,
            self.out,
        )
    }

    /// Leaves the first `limit` events, in time order, in `out`.
    pub(crate) fn finish(self) {
        self.out.sort_by_key(|e| e.at);
        self.out.truncate(self.limit);
    }
}

/// [`EventsAfter`] into `out` over the blocks `next_page` hands over: each call gets the
/// last block seen (`None` at first) and returns the next few, empty at the end.
pub(crate) fn events_after(
    after: i64,
    until: i64,
    limit: usize,
    out: &mut Vec<UsageEvent>,
    mut next_page: impl FnMut(Option<(i64, i64)>) -> Result<Vec<StoredBlock>>,
) -> Result<()> {
    let mut collect = EventsAfter::new(after, until, limit, out);
    let mut last_seen = None;
    'pages: loop {
        let page = next_page(last_seen)?;
        if page.is_empty() {
            break;
        }
        for (id, first_at, bytes) in &page {
            if !collect.needs_block_at(*first_at) {
                break 'pages;
            }
            collect.add(*first_at, bytes)?;
            last_seen = Some((*first_at, *id));
        }
    }
    collect.finish();
    Ok(())
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

    /// A block as versions before format 2 wrote it (one postcard record per event).
    fn block_v1(events: &[UsageEvent]) -> Block {
        let first_at = events[0].at.timestamp_micros();
        let mut bytes = vec![FORMAT_POSTCARD_V1];
        for e in events {
            let one = postcard::to_stdvec(&Packed {
                key_id: e.key_id.map(|k| *k.as_bytes()),
                identity_id: e.identity_id.map(|k| *k.as_bytes()),
                code: Cow::Borrowed(e.code.as_str()),
                ip: e.ip,
                scopes: e.scopes.iter().map(|s| Cow::Borrowed(s.as_str())).collect(),
                latency_us: e.latency_us,
                tags: e.tags.clone(),
            })
            .unwrap();
            let at = (e.at.timestamp_micros() - first_at) as u64;
            bytes = postcard::to_extend(&at, bytes).unwrap();
            bytes = postcard::to_extend(&(one.len() as u64), bytes).unwrap();
            bytes.extend_from_slice(&one);
        }
        Block {
            first_at,
            last_at: events.last().unwrap().at.timestamp_micros(),
            count: events.len() as i64,
            bytes,
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
    fn shapes_used_again_read_back_whole_and_filtered() {
        let base = 1_780_000_000_000_000;
        // Three shapes, each used by many events at other times and latencies.
        let input: Vec<UsageEvent> = (0..150i64)
            .map(|i| UsageEvent {
                at: chrono::DateTime::from_timestamp_micros(base + i * 1_000).unwrap(),
                latency_us: i as u32,
                ..event(base, [1, 2, 4][i as usize % 3])
            })
            .collect();
        let blocks = blocks(&input).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(decode_all(&blocks), input);
        // A filter that refuses a shape's first events and takes its later ones.
        let wanted = event(base, 2).key_id;
        let from = base + 75_000;
        let mut out = Vec::new();
        events(
            blocks[0].first_at,
            &blocks[0].bytes,
            ..,
            |at, key, _| key == wanted && at >= from,
            &mut out,
        )
        .unwrap();
        let expected: Vec<UsageEvent> = input
            .iter()
            .filter(|e| e.key_id == wanted && e.at.timestamp_micros() >= from)
            .cloned()
            .collect();
        assert_eq!(out.len(), 25);
        assert_eq!(out, expected);
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
    fn a_page_of_events_decodes_only_the_blocks_it_needs() {
        let base = 1_780_000_000_000_000;
        // Three full blocks one after another, then one that would fail to decode.
        let input: Vec<_> = (0..3 * MAX_EVENTS as u128)
            .map(|n| event(base + n as i64 * 10, n))
            .collect();
        let mut stored: Vec<StoredBlock> = blocks(&input)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i as i64, b.first_at, b.bytes))
            .collect();
        assert_eq!(stored.len(), 3);
        let end = base + 3 * MAX_EVENTS as i64 * 10;
        stored.push((3, end, vec![9, 9, 9]));
        let mut pages = stored.chunks(2).map(<[StoredBlock]>::to_vec);
        let mut page = vec![event(0, 1)];
        events_after(base - 1, end + 1, MAX_EVENTS + 10, &mut page, |_| {
            Ok(pages.next().unwrap_or_default())
        })
        .unwrap();
        let times: Vec<i64> = page.iter().map(|e| e.at.timestamp_micros()).collect();
        let expected: Vec<i64> = (0..MAX_EVENTS as i64 + 10).map(|n| base + n * 10).collect();
        assert_eq!(times, expected, "the first events, in order");
        // Asked for everything, the damaged block is reached and reported.
        let mut pages = stored.chunks(2).map(<[StoredBlock]>::to_vec);
        let read = events_after(base - 1, end + 1, usize::MAX, &mut page, |_| {
            Ok(pages.next().unwrap_or_default())
        });
        assert!(read.is_err());
    }

    #[test]
    fn blocks_of_the_first_format_still_read_back() {
        let base = 1_780_000_000_000_000;
        let input: Vec<_> = (0..300u128)
            .map(|n| event(base + n as i64 * 1000, n))
            .collect();
        let old = block_v1(&input);
        assert_eq!(decode_all(std::slice::from_ref(&old)), input);
        let mut out = Vec::new();
        let range = (
            Bound::Excluded(base + 10_000),
            Bound::Included(base + 20_000),
        );
        events(old.first_at, &old.bytes, range, |_, _, _| true, &mut out).unwrap();
        assert_eq!(out, input[11..=20]);
    }

    #[test]
    fn an_event_of_a_busy_block_takes_a_few_bytes() {
        let base = 1_780_000_000_000_000;
        // A busy node: three keys, two addresses, one scope each, a tagged job.
        let input: Vec<_> = (0..MAX_EVENTS as u128)
            .map(|n| {
                let mut e = event(base + n as i64 * 100, 1);
                e.key_id = Some(Uuid::from_u128(n % 3));
                e.ip = Some(
                    ["10.0.0.1", "2001:db8::9"][(n % 2) as usize]
                        .parse()
                        .unwrap(),
                );
                e.latency_us = (n % 700) as u32;
                e
            })
            .collect();
        let blocks = blocks(&input).unwrap();
        assert_eq!(blocks.len(), 1);
        let per_event = blocks[0].bytes.len() as f64 / input.len() as f64;
        assert!(per_event < 8.0, "{per_event} bytes per event");
        assert!(block_v1(&input).bytes.len() as f64 / input.len() as f64 > 40.0);
        assert_eq!(decode_all(&blocks), input);
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
        // A reference to a shape the block does not have.
        let two = super::blocks(&[event(0, 4), event(10, 4)]).unwrap();
        let mut bytes = two[0].bytes.clone();
        let last = bytes.len() - 2; // the second event's shape (latency 4 is one byte)
        bytes[last] = 1;
        assert!(events(0, &bytes, .., |_, _, _| true, &mut out).is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_a_read_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            format in 1u8..=2,
            first_at in proptest::num::i64::ANY,
        ) {
            let mut block = vec![format];
            block.extend_from_slice(&bytes);
            let mut out = Vec::new();
            let _ = events(first_at, &block, .., |_, _, _| true, &mut out);
            let _ = events(first_at, &block, 0..1_000, |_, k, _| k.is_some(), &mut out);
        }

        #[test]
        fn a_flipped_byte_never_makes_a_read_panic(at in 0usize..10_000, value in proptest::num::u8::ANY) {
            let input: Vec<_> = (0..200u128).map(|n| event(1_780_000_000_000_000 + n as i64, n)).collect();
            let mut bytes = blocks(&input).unwrap().remove(0).bytes;
            let at = at % bytes.len();
            bytes[at] = value;
            let mut out = Vec::new();
            let _ = events(1_780_000_000_000_000, &bytes, .., |_, _, _| true, &mut out);
        }
    }
}
