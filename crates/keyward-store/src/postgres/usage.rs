//! [`UsageStore`] on PostgreSQL. A batch is one transaction: events as `UNNEST` arrays
//! (one statement per chunk), rollups aggregated in memory and upserted in key order, so
//! nodes writing at once lock rows in the same order and cannot deadlock.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use keyward_core::model::{AuditEntry, KeyRecord};
use keyward_core::posture::KeyUsage;
use keyward_core::time::Timestamp;
use keyward_core::usage::{Bucket, UsageEvent};

use super::{
    PgStore, corrupt, get, identity_from_row, insert_audit, key_from_row, map_err, to_json,
};
use crate::Result;
use crate::usage::{
    KeySource, PRUNE_CHUNK, PostureInput, Pruned, RetentionCutoffs, TopKey, TopSource, UsageCount,
    UsageStore, UsageSubject, parse_code, rollup_rows, scope_uses,
};

/// Events per `INSERT ... UNNEST` statement.
const ROWS_PER_INSERT: usize = 10_000;

fn subject_filter(q: &mut QueryBuilder<Postgres>, subject: Option<UsageSubject>) {
    match subject {
        Some(UsageSubject::Key(id)) => {
            q.push(" AND key_id = ").push_bind(id);
        }
        Some(UsageSubject::Identity(id)) => {
            q.push(" AND identity_id = ").push_bind(id);
        }
        None => {}
    }
}

fn time(micros: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("usage: time out of range"))
}

#[async_trait]
impl UsageStore for PgStore {
    async fn record_usage(&self, events: &[UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let n = chunk.len();
            let (mut at, mut key, mut identity, mut code) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut ip, mut scopes, mut latency, mut tags) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for e in chunk {
                at.push(e.at);
                key.push(e.key_id);
                identity.push(e.identity_id);
                code.push(e.code.as_str());
                ip.push(e.ip.map(|ip| ip.to_string()));
                scopes.push(e.scopes.join(" "));
                latency.push(i32::try_from(e.latency_us).unwrap_or(i32::MAX));
                tags.push(e.tags.as_ref().map(to_json).transpose()?);
            }
            sqlx::query(
                "INSERT INTO usage_events \
                 (at, key_id, identity_id, code, ip, scopes, latency_us, tags) \
                 SELECT at, key_id, identity_id, code, ip, scopes, latency_us, tags::jsonb \
                 FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::text[], \
                             $5::text[], $6::text[], $7::int4[], $8::text[]) \
                 AS u(at, key_id, identity_id, code, ip, scopes, latency_us, tags)",
            )
            .bind(at)
            .bind(key)
            .bind(identity)
            .bind(code)
            .bind(ip)
            .bind(scopes)
            .bind(latency)
            .bind(tags)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }

        let rows = rollup_rows(events);
        let n = rows.len();
        let (mut gran, mut start, mut key, mut identity, mut code, mut count) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((b, s, k, c), (i, n)) in rows {
            gran.push(b.as_str());
            start.push(time(s)?);
            key.push(k);
            identity.push(i);
            code.push(c.as_str());
            count.push(n);
        }
        if !gran.is_empty() {
            sqlx::query(
                "INSERT INTO usage_rollups (granularity, start, key_id, identity_id, code, count) \
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::uuid[], $4::uuid[], \
                                      $5::text[], $6::int8[]) \
                 ON CONFLICT (granularity, key_id, start, code) \
                 DO UPDATE SET count = usage_rollups.count + EXCLUDED.count",
            )
            .bind(gran)
            .bind(start)
            .bind(key)
            .bind(identity)
            .bind(code)
            .bind(count)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }

        let uses = scope_uses(events);
        if !uses.is_empty() {
            let (mut key, mut scope, mut at) = (vec![], vec![], vec![]);
            for ((k, s), t) in uses {
                key.push(k);
                scope.push(s);
                at.push(t);
            }
            sqlx::query(
                "INSERT INTO usage_key_scopes (key_id, scope, last_used_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) \
                 ON CONFLICT (key_id, scope) DO UPDATE SET last_used_at = \
                 GREATEST(usage_key_scopes.last_used_at, EXCLUDED.last_used_at)",
            )
            .bind(key)
            .bind(scope)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
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
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT ip, COUNT(*) AS n FROM usage_events WHERE ip IS NOT NULL AND at >= ",
        );
        q.push_bind(from).push(" AND at < ").push_bind(to);
        subject_filter(&mut q, subject);
        q.push(" GROUP BY ip ORDER BY n DESC, ip LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(TopSource {
                    ip: get(r, 0)?,
                    count: get::<i64>(r, 1)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn top_keys(
        &self,
        identity_id: Option<Uuid>,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<TopKey>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT key_id, identity_id, SUM(count)::int8 AS n, \
             SUM(CASE WHEN code = 'VALID' THEN count ELSE 0 END)::int8 \
             FROM usage_rollups WHERE granularity = 'hour' AND start >= ",
        );
        q.push_bind(Bucket::Hour.start(from))
            .push(" AND start < ")
            .push_bind(to);
        subject_filter(&mut q, identity_id.map(UsageSubject::Identity));
        q.push(" GROUP BY key_id, identity_id ORDER BY n DESC, key_id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(TopKey {
                    key_id: get(r, 0)?,
                    identity_id: get(r, 1)?,
                    count: get::<i64>(r, 2)?.max(0) as u64,
                    valid: get::<i64>(r, 3)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn prune_usage(&self, c: RetentionCutoffs) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        loop {
            let done = sqlx::query(
                "DELETE FROM usage_events WHERE ctid IN \
                 (SELECT ctid FROM usage_events WHERE at < $1 LIMIT $2)",
            )
            .bind(c.raw_before)
            .bind(PRUNE_CHUNK)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
            pruned.events += done;
            if done < PRUNE_CHUNK as u64 {
                break;
            }
        }
        for (bucket, before) in [
            (Bucket::Minute, c.minute_before),
            (Bucket::Hour, c.rollup_before),
            (Bucket::Day, c.rollup_before),
        ] {
            loop {
                let done = sqlx::query(
                    "DELETE FROM usage_rollups WHERE (granularity, key_id, start, code) IN \
                     (SELECT granularity, key_id, start, code FROM usage_rollups \
                      WHERE granularity = $1 AND start < $2 LIMIT $3)",
                )
                .bind(bucket.as_str())
                .bind(before)
                .bind(PRUNE_CHUNK)
                .execute(&self.pool)
                .await
                .map_err(map_err)?
                .rows_affected();
                pruned.rollups += done;
                if done < PRUNE_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    async fn posture_inputs(
        &self,
        identity_id: Option<Uuid>,
        since: Timestamp,
    ) -> Result<Vec<PostureInput>> {
        // One snapshot for the three reads.
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let identities = sqlx::query(concat!(
            "SELECT ",
            identity_cols!(),
            " FROM identities WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id = $1) \
             ORDER BY id"
        ))
        .bind(identity_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let keys = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys k JOIN identities i ON i.id = k.identity_id \
             WHERE i.deleted_at IS NULL AND k.revoked_at IS NULL \
             AND ($1::uuid IS NULL OR k.identity_id = $1) ORDER BY k.id"
        ))
        .bind(identity_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let scopes = sqlx::query(
            "SELECT s.key_id, s.scope FROM usage_key_scopes s JOIN keys k ON k.id = s.key_id \
             WHERE s.last_used_at >= $1 AND k.revoked_at IS NULL \
             AND ($2::uuid IS NULL OR k.identity_id = $2)",
        )
        .bind(since)
        .bind(identity_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;

        let mut used: HashMap<Uuid, KeyUsage> = HashMap::new();
        for r in &scopes {
            used.entry(get(r, 0)?)
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
        // The (key_id, at) index: the events of one key since its rotation.
        let rows = sqlx::query(
            "SELECT ip, tags::text, COUNT(*)::int8 AS n, MAX(at) AS last FROM usage_events \
             WHERE key_id = $1 AND at >= $2 AND code = 'VALID' \
             GROUP BY ip, tags ORDER BY last DESC, n DESC LIMIT $3",
        )
        .bind(key_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let tags: Option<String> = get(r, 1)?;
                Ok(KeySource {
                    ip: get(r, 0)?,
                    tags: tags
                        .map(|t| serde_json::from_str(&t))
                        .transpose()
                        .map_err(|e| corrupt(&format!("usage tags: {e}")))?,
                    count: get::<i64>(r, 2)?.max(0) as u64,
                    last_seen: get(r, 3)?,
                })
            })
            .collect()
    }

    async fn keys_in_grace(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys k WHERE k.rotated_to IS NOT NULL AND k.revoked_at > $1 \
             AND k.revoked_at <= $2 \
             AND NOT EXISTS (SELECT 1 FROM old_version_notices n WHERE n.key_id = k.id) \
             AND EXISTS (SELECT 1 FROM usage_rollups r, keys s \
                 WHERE s.id = k.rotated_to AND r.granularity = 'minute' \
                 AND r.key_id = k.id AND r.code = 'VALID' \
                 AND r.start >= date_trunc('minute', s.created_at)) \
             ORDER BY k.revoked_at, k.id LIMIT $3"
        ))
        .bind(now)
        .bind(until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn record_old_version_notice(&self, key_id: Uuid, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin().await?;
        // The primary key decides between two leaders: the loser inserts nothing and
        // writes no audit entry.
        let done = sqlx::query(
            "INSERT INTO old_version_notices (key_id, noticed_at) VALUES ($1, $2) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(audit.at)
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

impl PgStore {
    /// Usage counts of one key or identity, or of all (`None`: the console's overview).
    pub(super) async fn counts(
        &self,
        subject: Option<UsageSubject>,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageCount>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT start, code, SUM(count)::int8 FROM usage_rollups WHERE granularity = ",
        );
        q.push_bind(bucket.as_str());
        subject_filter(&mut q, subject);
        q.push(" AND start >= ")
            .push_bind(bucket.start(from))
            .push(" AND start < ")
            .push_bind(to)
            .push(" GROUP BY start, code ORDER BY start, code");
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(UsageCount {
                    start: get(r, 0)?,
                    code: parse_code(&get::<String>(r, 1)?)?,
                    count: get::<i64>(r, 2)?.max(0) as u64,
                })
            })
            .collect()
    }
}
