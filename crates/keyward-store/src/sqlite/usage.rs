//! [`UsageStore`] on the embedded store. Ingestion is what must be fast (100,000+
//! events/s): a batch is one transaction of multi-row `INSERT`s, with the rollups
//! aggregated in memory first so each (bucket, key, code) costs one upsert per batch.

use std::collections::HashMap;
use std::net::IpAddr;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use keyward_core::model::{AuditEntry, KeyRecord};
use keyward_core::posture::KeyUsage;
use keyward_core::time::Timestamp;
use keyward_core::usage::{Bucket, UsageEvent, UsageTags};

use super::event_blocks::{self, MAX_SPAN_MICROS, StoredBlock};
use super::{
    SqliteStore, get, get_time, get_uuid, id_text, identity_from_row, insert_audit, key_from_row,
    map_err, micros,
};
use crate::Result;
use crate::usage::{
    KeySource, PRUNE_CHUNK, PostureInput, Pruned, RetentionCutoffs, TopKey, TopSource, UsageCount,
    UsageStore, UsageSubject, parse_code, rollup_rows, scope_uses,
};

/// Rows per `INSERT` statement: 8 columns × 1000 stays far below SQLite's limit of
/// 32,766 bound parameters.
const ROWS_PER_INSERT: usize = 1000;
/// Event blocks read at a time (each up to 4,096 events).
pub(super) const BLOCKS_PER_PAGE: i64 = 16;

/// Runs a short blocking job (a batch of inserts and one fsync) from async code: under
/// `block_in_place` on a multi-threaded runtime, so the worker's other tasks move to
/// another thread meanwhile; inline on a current-thread runtime (tests, tools), which
/// has no other worker to hand them to.
pub(super) fn run_blocking<T>(job: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(job),
        _ => job(),
    }
}

/// Lets other threads have the CPU between pieces of a long blocking job.
///
/// Why: on a node short of cores the runtime's worker, which serves requests, waits for
/// the thread running a blocking job, and the kernel hands the core over by slices of a
/// few milliseconds: each write of usage or last-use times put milliseconds into the
/// p99 of verify (`perf sched timehist`: worker threads waiting up to 4-8 ms for the
/// one core). A job that gives way ([`crate::slice::give_way`]) every [`Self::EVERY`]
/// keeps those waits short.
pub(crate) struct Yielder(crate::slice::Slice);

impl Yielder {
    /// Longest a blocking job runs before it yields.
    const EVERY: std::time::Duration = std::time::Duration::from_micros(250);
    /// The clock is read once per this many calls (each call is a row or two of work).
    const CALLS_PER_CHECK: u32 = 32;

    pub(crate) fn new() -> Yielder {
        Yielder(crate::slice::Slice::new(Self::EVERY, Self::CALLS_PER_CHECK))
    }

    /// Yields if the job has run for [`Self::EVERY`] since it started or last yielded.
    pub(crate) fn tick(&mut self) {
        if self.0.step() {
            crate::slice::give_way();
        }
    }

    /// [`Self::tick`], reading the clock now (between larger steps).
    pub(crate) fn now(&mut self) {
        if self.0.look() {
            crate::slice::give_way();
        }
    }
}

fn subject_filter(q: &mut QueryBuilder<Sqlite>, subject: Option<UsageSubject>) {
    match subject {
        Some(UsageSubject::Key(id)) => {
            q.push(" AND key_id = ").push_bind(id_text(id));
        }
        Some(UsageSubject::Identity(id)) => {
            q.push(" AND identity_id = ").push_bind(id_text(id));
        }
        None => {}
    }
}

/// Stores `events` as event blocks (`event_blocks.rs`) through sqlx.
async fn insert_blocks(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    events: &[UsageEvent],
) -> Result<()> {
    for b in event_blocks::blocks(events)? {
        sqlx::query(super::usage_ingest::INSERT_BLOCK)
            .bind(b.first_at)
            .bind(b.last_at)
            .bind(b.count)
            .bind(b.bytes)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

/// Adds the rollup counts and scope uses of `events` (upserts: counts add up, last uses
/// take the latest).
async fn add_counts(tx: &mut sqlx::Transaction<'_, Sqlite>, events: &[UsageEvent]) -> Result<()> {
    let rollups: Vec<_> = rollup_rows(events).into_iter().collect();
    for chunk in rollups.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_rollups \
                 (granularity, start, key_id, identity_id, code, count) ",
        );
        q.push_values(
            chunk,
            |mut b, ((bucket, start, key, code), (identity, n))| {
                b.push_bind(bucket.as_str())
                    .push_bind(*start)
                    .push_bind(id_text(*key))
                    .push_bind(id_text(*identity))
                    .push_bind(code.as_str())
                    .push_bind(*n);
            },
        );
        q.push(
            " ON CONFLICT (granularity, key_id, start, code) \
                 DO UPDATE SET count = count + excluded.count",
        );
        q.build().execute(&mut **tx).await.map_err(map_err)?;
    }
    let uses: Vec<_> = scope_uses(events).into_iter().collect();
    for chunk in uses.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_key_scopes (key_id, scope, last_used_at) ",
        );
        q.push_values(chunk, |mut b, ((key, scope), at)| {
            b.push_bind(id_text(*key))
                .push_bind(*scope)
                .push_bind(micros(*at));
        });
        q.push(
            " ON CONFLICT (key_id, scope) \
                 DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)",
        );
        q.build().execute(&mut **tx).await.map_err(map_err)?;
    }
    Ok(())
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn record_usage(&self, events: &[UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(ingest) = &self.usage_ingest {
            // The writer connection is the in-process write permit: held, nothing else
            // here writes while the ingestion connection does.
            let _permit = self.writer.acquire().await.map_err(map_err)?;
            return run_blocking(|| ingest.write(events));
        }
        let mut tx = self.begin_write().await?;
        insert_blocks(&mut tx, events).await?;
        add_counts(&mut tx, events).await?;
        // Everything stored is counted (see pending_rollups.rs for the watermark).
        sqlx::query(
            "UPDATE usage_rollup_watermark SET through_block = \
             (SELECT coalesce(max(id), 0) FROM usage_event_blocks) WHERE id = 1",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn usage_counts(
        &self,
        subject: UsageSubject,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageCount>> {
        self.counts(Some(subject), bucket, from, to).await
    }

    async fn top_sources(
        &self,
        subject: Option<UsageSubject>,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopSource>> {
        let (from, to) = (micros(from), micros(to));
        let mut counts = HashMap::new();
        self.scan_blocks(from, to, |blocks| {
            event_blocks::count_sources(
                blocks,
                from,
                to,
                |e| match subject {
                    Some(UsageSubject::Key(id)) => e.key_id == Some(id),
                    Some(UsageSubject::Identity(id)) => e.identity_id == Some(id),
                    None => true,
                },
                &mut counts,
            )
        })
        .await?;
        let mut top: Vec<TopSource> = counts
            .into_iter()
            .map(|(ip, count)| TopSource {
                ip: ip.to_string(),
                count,
            })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.ip.cmp(&b.ip)));
        top.truncate(limit as usize);
        Ok(top)
    }

    async fn top_keys(
        &self,
        identity_id: Option<Uuid>,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopKey>> {
        self.settle_rollups().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT key_id, identity_id, SUM(count) AS n, \
             SUM(CASE WHEN code = 'VALID' THEN count ELSE 0 END) \
             FROM usage_rollups WHERE granularity = 'hour' AND start >= ",
        );
        q.push_bind(Bucket::Hour.start_micros(micros(from)))
            .push(" AND start < ")
            .push_bind(micros(to));
        subject_filter(&mut q, identity_id.map(UsageSubject::Identity));
        q.push(" GROUP BY key_id, identity_id ORDER BY n DESC, key_id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.reader).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(TopKey {
                    key_id: get_uuid(r, 0, "usage_rollups.key_id")?,
                    identity_id: get_uuid(r, 1, "usage_rollups.identity_id")?,
                    count: get::<i64>(r, 2)?.max(0) as u64,
                    valid: get::<i64>(r, 3)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn settle_usage(&self, everything: bool) -> Result<()> {
        self.settle_pending(!everything).await
    }

    async fn prune_usage(&self, c: RetentionCutoffs) -> Result<Pruned> {
        // Nothing pending may count events about to go.
        self.settle_rollups().await?;
        let mut pruned = Pruned::default();
        pruned.events += self.prune_event_blocks(micros(c.raw_before)).await?;
        let rollup_delete = "DELETE FROM usage_rollups WHERE (granularity, key_id, start, code) IN \
             (SELECT granularity, key_id, start, code FROM usage_rollups \
              WHERE granularity = ? AND start < ? LIMIT ?)";
        for (bucket, before) in [
            (Bucket::Minute, c.minute_before),
            (Bucket::Hour, c.rollup_before),
            (Bucket::Day, c.rollup_before),
        ] {
            pruned.rollups += self
                .delete_in_chunks(rollup_delete, Some(bucket), micros(before))
                .await?;
        }
        Ok(pruned)
    }

    async fn posture_inputs(
        &self,
        identity_id: Option<Uuid>,
        since: Timestamp,
    ) -> Result<Vec<PostureInput>> {
        self.settle_rollups().await?;
        // One read transaction: a consistent snapshot of identities, keys and scope uses.
        let mut tx = self.reader.begin().await.map_err(map_err)?;
        let id = identity_id.map(id_text);
        let identities = sqlx::query(concat!(
            "SELECT ",
            identity_cols!(),
            " FROM identities WHERE deleted_at IS NULL AND (?1 IS NULL OR id = ?1) ORDER BY id"
        ))
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let keys = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys k JOIN identities i ON i.id = k.identity_id \
             WHERE i.deleted_at IS NULL AND k.revoked_at IS NULL \
             AND (?1 IS NULL OR k.identity_id = ?1) ORDER BY k.id"
        ))
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let scopes = sqlx::query(
            "SELECT s.key_id, s.scope FROM usage_key_scopes s JOIN keys k ON k.id = s.key_id \
             WHERE s.last_used_at >= ?1 AND k.revoked_at IS NULL \
             AND (?2 IS NULL OR k.identity_id = ?2)",
        )
        .bind(micros(since))
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;

        let mut used: HashMap<Uuid, KeyUsage> = HashMap::new();
        for r in &scopes {
            used.entry(get_uuid(r, 0, "usage_key_scopes.key_id")?)
                .or_default()
                .exercised
                .insert(get(r, 1)?);
        }
        let mut out: Vec<PostureInput> = identities
            .iter()
            .map(|r| {
                Ok(PostureInput {
                    identity: identity_from_row(r)?,
                    keys: vec![],
                })
            })
            .collect::<Result<_>>()?;
        let index: HashMap<Uuid, usize> = out
            .iter()
            .enumerate()
            .map(|(i, p)| (p.identity.id, i))
            .collect();
        for r in &keys {
            let k = key_from_row(r)?;
            let Some(&i) = index.get(&k.identity_id) else {
                continue;
            };
            let usage = used.remove(&k.id).unwrap_or_default();
            out[i].keys.push((k, usage));
        }
        Ok(out)
    }

    async fn key_sources_since(
        &self,
        key_id: Uuid,
        since: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeySource>> {
        // A scan of the events since `since`, filtered by key: the events of an old key
        // are those of its grace, a short window.
        let since = micros(since);
        let mut groups: HashMap<(Option<IpAddr>, Option<UsageTags>), (u64, i64)> = HashMap::new();
        let mut evs = Vec::new();
        self.scan_blocks(since, i64::MAX, |blocks| {
            for (_, first_at, bytes) in blocks {
                evs.clear();
                event_blocks::events(
                    *first_at,
                    bytes,
                    since..,
                    |_, key, code| key == Some(key_id) && code == "VALID",
                    &mut evs,
                )?;
                for e in evs.drain(..) {
                    let at = e.at.timestamp_micros();
                    let g = groups.entry((e.ip, e.tags)).or_insert((0, at));
                    g.0 += 1;
                    g.1 = g.1.max(at);
                }
            }
            Ok(())
        })
        .await?;
        let mut sources = groups
            .into_iter()
            .map(|((ip, tags), (count, last))| {
                Ok(KeySource {
                    ip: ip.map(|ip| ip.to_string()),
                    tags: tags
                        .map(serde_json::to_value)
                        .transpose()
                        .map_err(|e| crate::StoreError::Corrupt(format!("usage tags: {e}")))?,
                    count,
                    last_seen: chrono::DateTime::from_timestamp_micros(last)
                        .ok_or_else(|| crate::StoreError::Corrupt("usage event time".into()))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        sources.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| b.count.cmp(&a.count))
        });
        sources.truncate(limit as usize);
        Ok(sources)
    }

    async fn keys_in_grace(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeyRecord>> {
        // The jobs leader asks every 2 s. Settling the pending counts of every key for
        // that (a tenth of a busy node's CPU) is needed only when a key in question
        // has uncounted uses, which is rare: old keys near the end of their grace.
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT k.id FROM keys k WHERE k.rotated_to IS NOT NULL AND k.revoked_at > ? \
             AND k.revoked_at <= ? \
             AND NOT EXISTS (SELECT 1 FROM old_version_notices n WHERE n.key_id = k.id)",
        )
        .bind(micros(now))
        .bind(micros(until))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: std::collections::HashSet<Uuid> =
            candidates.iter().filter_map(|id| id.parse().ok()).collect();
        if self
            .usage_ingest
            .as_ref()
            .is_some_and(|i| i.pending_valid_use_of(&ids))
        {
            self.settle_rollups().await?;
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys k WHERE k.rotated_to IS NOT NULL AND k.revoked_at > ? \
             AND k.revoked_at <= ? \
             AND NOT EXISTS (SELECT 1 FROM old_version_notices n WHERE n.key_id = k.id) \
             AND EXISTS (SELECT 1 FROM usage_rollups r, keys s \
                 WHERE s.id = k.rotated_to AND r.granularity = 'minute' \
                 AND r.key_id = k.id AND r.code = 'VALID' \
                 AND r.start >= s.created_at / 60000000 * 60000000) \
             ORDER BY k.revoked_at, k.id LIMIT ?"
        ))
        .bind(micros(now))
        .bind(micros(until))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn record_old_version_notice(&self, key_id: Uuid, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO old_version_notices (key_id, noticed_at) VALUES (?, ?) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(id_text(key_id))
        .bind(micros(audit.at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }
}

impl SqliteStore {
    /// Hands `each` the event blocks that may hold events of `[from, to)` (µs), a page
    /// at a time, in order of their first event.
    async fn scan_blocks(
        &self,
        from: i64,
        to: i64,
        mut each: impl FnMut(&[StoredBlock]) -> Result<()>,
    ) -> Result<()> {
        let mut after = (from.saturating_sub(MAX_SPAN_MICROS + 1), i64::MAX);
        loop {
            let page = self.block_page(after, from.saturating_sub(1), to).await?;
            let Some(&(id, first_at, _)) = page.last() else {
                return Ok(());
            };
            each(&page)?;
            after = (first_at, id);
        }
    }

    /// The blocks after `(first_at, id)` in that order, with events after `since` and
    /// whose first event is before `to`: one page.
    pub(super) async fn block_page(
        &self,
        (first_at, id): (i64, i64),
        since: i64,
        to: i64,
    ) -> Result<Vec<StoredBlock>> {
        let rows = sqlx::query(BLOCK_PAGE)
            .bind(first_at)
            .bind(id)
            .bind(to)
            .bind(BLOCKS_PER_PAGE)
            .bind(since)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
            .collect()
    }

    /// Deletes the event blocks whose events are all before `before` (µs); returns how
    /// many events went.
    async fn prune_event_blocks(&self, before: i64) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            let gone: Vec<(i64, i64)> = sqlx::query_as(
                "DELETE FROM usage_event_blocks WHERE id IN \
                 (SELECT id FROM usage_event_blocks WHERE first_at < ?1 AND last_at < ?1 \
                  LIMIT ?2) RETURNING id, count",
            )
            .bind(before)
            .bind(BLOCKS_PER_PAGE)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            total += gone.iter().map(|(_, n)| (*n).max(0) as u64).sum::<u64>();
            if gone.len() < BLOCKS_PER_PAGE as usize {
                return Ok(total);
            }
        }
    }

    /// Moves the rows of `usage_events` that versions before event blocks left into
    /// blocks (migration 0140), counting the ones not counted yet on the way: once done,
    /// every block is counted and the watermark names the last. Only the process that
    /// recounts may do this (see `recover_rollups`).
    pub(super) async fn convert_event_rows(&self) -> Result<u64> {
        const ROWS: i64 = 20_000;
        if !self.usage_ingest.as_ref().is_some_and(|i| i.defers()) {
            return Ok(0);
        }
        let mut converted = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            let (mark, last): (i64, i64) = sqlx::query_as(
                "SELECT through_rowid, (SELECT coalesce(max(rowid), 0) FROM usage_events) \
                 FROM usage_rollup_watermark WHERE id = 1",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            // Rowids below the watermark with none above: the table was emptied and
            // filled again without a settle; all of it is uncounted.
            let mark = if last < mark { 0 } else { mark };
            let rows = sqlx::query(
                "SELECT rowid, at, key_id, identity_id, code, ip, scopes, latency_us, tags \
                 FROM usage_events ORDER BY rowid LIMIT ?",
            )
            .bind(ROWS)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            let Some(through) = rows.last().map(|r| get::<i64>(r, 0)).transpose()? else {
                return Ok(converted);
            };
            let mut events = Vec::with_capacity(rows.len());
            let mut uncounted = Vec::new();
            for r in &rows {
                let e = super::anomalies::event_from_row_at(r, 1)?;
                if get::<i64>(r, 0)? > mark {
                    uncounted.push(e.clone());
                }
                events.push(e);
            }
            add_counts(&mut tx, &uncounted).await?;
            insert_blocks(&mut tx, &events).await?;
            sqlx::query("DELETE FROM usage_events WHERE rowid <= ?")
                .bind(through)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query(
                "UPDATE usage_rollup_watermark SET through_rowid = ?, through_block = \
                 (SELECT coalesce(max(id), 0) FROM usage_event_blocks) WHERE id = 1",
            )
            .bind(through.max(mark))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            converted += events.len() as u64;
        }
    }
}

/// One page of event blocks in `(first_at, id)` order (`?1`, `?2`: the last one seen;
/// `?3`: the end of the range, exclusive; `?4`: the page size; `?5`: only blocks with
/// events after this). The last condition is checked before a block's packed events are
/// read: blocks that start before a range but end before it too cost no blob copy.
pub(super) const BLOCK_PAGE: &str = "SELECT id, first_at, events FROM usage_event_blocks \
     WHERE (first_at > ?1 OR (first_at = ?1 AND id > ?2)) AND first_at < ?3 \
     AND last_at > ?5 ORDER BY first_at, id LIMIT ?4";

impl SqliteStore {
    /// Runs a `... LIMIT ?` delete until it removes fewer than a chunk, one short write
    /// transaction per chunk. `bucket`, when given, is bound before the cut-off.
    async fn delete_in_chunks(
        &self,
        sql: &'static str,
        bucket: Option<Bucket>,
        before: i64,
    ) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut q = sqlx::query(sql);
            if let Some(b) = bucket {
                q = q.bind(b.as_str());
            }
            let done = q
                .bind(before)
                .bind(PRUNE_CHUNK)
                .execute(&self.writer)
                .await
                .map_err(map_err)?
                .rows_affected();
            total += done;
            if done < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

impl SqliteStore {
    /// Writes the rollups pending behind ingested events (`pending_rollups.rs`), so that
    /// a read sees every stored event counted.
    pub(super) async fn settle_rollups(&self) -> Result<()> {
        self.settle_pending(false).await
    }

    async fn settle_pending(&self, only_aged: bool) -> Result<()> {
        let Some(ingest) = &self.usage_ingest else {
            return Ok(());
        };
        // Checked before taking the write permit: the writer's tick asks every second.
        if !ingest.has_pending(only_aged) {
            return Ok(());
        }
        let _permit = self.writer.acquire().await.map_err(map_err)?;
        run_blocking(|| ingest.settle(only_aged))
    }

    /// Counts the events stored beyond the watermark: those whose rollups were still
    /// pending when the process stopped without settling them (a crash, a kill).
    pub(super) async fn recover_rollups(&self) -> Result<u64> {
        if !self.usage_ingest.as_ref().is_some_and(|i| i.defers()) {
            // Only the process that may keep counts pending recounts: any other may be
            // looking at that process's pending events (see pending_rollups.rs).
            return Ok(0);
        }
        let mut recounted = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            let mark: i64 =
                sqlx::query_scalar("SELECT through_block FROM usage_rollup_watermark WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
            let rows = sqlx::query(
                "SELECT id, first_at, events FROM usage_event_blocks \
                 WHERE id > ? ORDER BY id LIMIT ?",
            )
            .bind(mark)
            .bind(BLOCKS_PER_PAGE)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            let Some(through) = rows.last().map(|r| get::<i64>(r, 0)).transpose()? else {
                return Ok(recounted);
            };
            let mut events = Vec::new();
            for r in &rows {
                let bytes: Vec<u8> = get(r, 2)?;
                event_blocks::events(get(r, 1)?, &bytes, .., |_, _, _| true, &mut events)?;
            }
            add_counts(&mut tx, &events).await?;
            sqlx::query("UPDATE usage_rollup_watermark SET through_block = ? WHERE id = 1")
                .bind(through)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            recounted += events.len() as u64;
        }
    }

    /// Usage counts of one key or identity, or of all (`None`: the console's overview).
    pub(super) async fn counts(
        &self,
        subject: Option<UsageSubject>,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageCount>> {
        self.settle_rollups().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT start, code, SUM(count) FROM usage_rollups WHERE granularity = ",
        );
        q.push_bind(bucket.as_str());
        subject_filter(&mut q, subject);
        q.push(" AND start >= ")
            .push_bind(bucket.start_micros(micros(from)))
            .push(" AND start < ")
            .push_bind(micros(to))
            .push(" GROUP BY start, code ORDER BY start, code");
        let rows = q.build().fetch_all(&self.reader).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let n: i64 = get(r, 2)?;
                Ok(UsageCount {
                    start: get_time(r, 0, "usage_rollups.start")?,
                    code: parse_code(&get::<String>(r, 1)?)?,
                    count: n.max(0) as u64,
                })
            })
            .collect()
    }
}
