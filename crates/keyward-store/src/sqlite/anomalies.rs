//! [`AnomalyStore`] on SQLite. The single writer connection orders cursor moves, so the
//! compare-and-set of the cursor never races.

use std::ops::Bound;

use async_trait::async_trait;
use keyward_core::anomaly::Anomaly;
use keyward_core::anomaly_response::AnomalyPolicy;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::event_blocks::{self, MAX_SPAN_MICROS};
use super::usage::{BLOCK_PAGE, BLOCKS_PER_PAGE};
use super::{
    Cols, SqliteStore, get, get_opt_uuid, get_time, get_uuid, id_text, insert_audit, map_err,
    micros, to_json,
};
use crate::Result;
use crate::anomalies::{
    AnomalyQuery, AnomalyStore, CursorMove, EventCols, NewAnomaly, StoredAnomaly, parse_kind,
    parse_policy, parse_severity,
};

/// Anomaly columns, in the order `anomaly_from_row` reads them.
macro_rules! anomaly_cols {
    () => {
        "id, at, key_id, identity_id, kind, severity, detail, evidence, action_taken"
    };
}

fn anomaly_from_row(r: &SqliteRow) -> Result<StoredAnomaly> {
    let evidence: String = get(r, 7)?;
    Ok(StoredAnomaly {
        id: get_uuid(r, 0, "anomalies.id")?,
        anomaly: Anomaly {
            at: get_time(r, 1, "anomalies.at")?,
            key_id: get_opt_uuid(r, 2, "anomalies.key_id")?,
            identity_id: get_opt_uuid(r, 3, "anomalies.identity_id")?,
            kind: parse_kind(&get::<String>(r, 4)?)?,
            severity: parse_severity(&get::<String>(r, 5)?)?,
            detail: get(r, 6)?,
            evidence: serde_json::from_str(&evidence)
                .map_err(|e| crate::StoreError::Corrupt(format!("anomalies.evidence: {e}")))?,
        },
        action_taken: get(r, 8)?,
    })
}

/// A usage event from the eight columns of a `usage_events` row (rows that versions
/// before event blocks stored), the first at `i`.
pub(super) fn event_from_row_at(r: &impl Cols, i: usize) -> Result<UsageEvent> {
    EventCols {
        at: get_time(r, i, "usage_events.at")?,
        key_id: get_opt_uuid(r, i + 1, "usage_events.key_id")?,
        identity_id: get_opt_uuid(r, i + 2, "usage_events.identity_id")?,
        code: get(r, i + 3)?,
        ip: get(r, i + 4)?,
        scopes: get(r, i + 5)?,
        latency_us: get(r, i + 6)?,
        tags: get(r, i + 7)?,
    }
    .into_event()
}

#[async_trait]
impl AnomalyStore for SqliteStore {
    async fn detect_cursor(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT at FROM anomaly_cursor WHERE id = 1")
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.map(|r| get_time(&r, 0, "anomaly_cursor.at"))
            .transpose()
    }

    async fn usage_events_after(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: u32,
        out: &mut Vec<UsageEvent>,
    ) -> Result<()> {
        let (after, until, limit) = (micros(after), micros(until), limit as usize);
        let start = (after.saturating_sub(MAX_SPAN_MICROS + 1), i64::MAX);
        let to = until.saturating_add(1);
        // Read on this thread, not through sqlx's connection thread: through sqlx the
        // tail cost ~14 µs of the node's CPU per event (bench/load.sh), on the node that
        // also serves verify.
        if let Some(sync) = &self.sync_reader {
            let read = super::usage::run_blocking(|| {
                sync.read(|conn| {
                    let mut stmt = conn.prepare_cached(BLOCK_PAGE)?;
                    let mut collect = event_blocks::EventsAfter::new(after, until, limit, out);
                    let mut last = start;
                    let mut yielder = super::usage::Yielder::new();
                    // Rows are stepped one at a time and their blobs borrowed, not
                    // copied: the read stops at the first block it does not need.
                    'pages: loop {
                        let mut rows = stmt.query(rusqlite::params![
                            last.0,
                            last.1,
                            to,
                            BLOCKS_PER_PAGE,
                            after
                        ])?;
                        let mut n = 0;
                        while let Some(r) = rows.next()? {
                            n += 1;
                            // A block decodes up to 4,096 events: check the clock each.
                            yielder.now();
                            let (id, first_at): (i64, i64) = (r.get(0)?, r.get(1)?);
                            if !collect.needs_block_at(first_at) {
                                break 'pages;
                            }
                            if let Err(e) = collect.add(first_at, r.get_ref(2)?.as_blob()?) {
                                return Ok(Err(e));
                            }
                            last = (first_at, id);
                        }
                        if n < BLOCKS_PER_PAGE {
                            break;
                        }
                    }
                    collect.finish();
                    Ok(Ok(()))
                })
            });
            if let Some(answer) = read {
                return answer;
            }
        }
        let mut pages = Vec::new();
        let mut last = start;
        loop {
            let page = self.block_page(last, after, to).await?;
            let Some(&(id, first_at, _)) = page.last() else {
                break;
            };
            last = (first_at, id);
            pages.push(page);
        }
        let mut pages = pages.into_iter();
        event_blocks::events_after(after, until, limit, out, |_| {
            Ok(pages.next().unwrap_or_default())
        })
    }

    async fn count_usage_events_after(&self, after: Timestamp, until: Timestamp) -> Result<u64> {
        let (after, until) = (micros(after), micros(until));
        // Blocks wholly inside the range count as stored; the few at its edges are read.
        let inside: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(count), 0) FROM usage_event_blocks \
             WHERE first_at > ? AND last_at <= ?",
        )
        .bind(after)
        .bind(until)
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let edges = sqlx::query(
            "SELECT first_at, events FROM usage_event_blocks \
             WHERE first_at > ?1 AND first_at <= ?2 AND NOT (first_at > ?3 AND last_at <= ?4)",
        )
        .bind(after.saturating_sub(MAX_SPAN_MICROS + 1))
        .bind(until)
        .bind(after)
        .bind(until)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let mut n = inside.max(0) as u64;
        let mut evs = Vec::new();
        for r in &edges {
            let bytes: Vec<u8> = get(r, 1)?;
            evs.clear();
            event_blocks::events(
                get(r, 0)?,
                &bytes,
                (Bound::Excluded(after), Bound::Included(until)),
                |_, _, _| true,
                &mut evs,
            )?;
            n += evs.len() as u64;
        }
        Ok(n)
    }

    async fn record_anomalies(
        &self,
        cursor: CursorMove,
        items: &[NewAnomaly],
        regroup: chrono::TimeDelta,
    ) -> Result<Option<Vec<Uuid>>> {
        let mut tx = self.begin_write().await?;
        let moved = match cursor.from {
            None => sqlx::query(
                "INSERT INTO anomaly_cursor (id, at) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(micros(cursor.to)),
            Some(from) => sqlx::query("UPDATE anomaly_cursor SET at = ? WHERE id = 1 AND at = ?")
                .bind(micros(cursor.to))
                .bind(micros(from)),
        }
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected()
            == 1;
        if !moved {
            return Ok(None);
        }
        let mut written = Vec::new();
        for item in items {
            let a = &item.anomaly;
            let inserted = sqlx::query(
                "INSERT INTO anomalies \
                 (id, at, key_id, identity_id, kind, severity, detail, evidence, subject) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS \
                 (SELECT 1 FROM anomalies WHERE subject = ? AND kind = ? AND at >= ? AND at <= ?)",
            )
            .bind(id_text(item.id))
            .bind(micros(a.at))
            .bind(a.key_id.map(id_text))
            .bind(a.identity_id.map(id_text))
            .bind(a.kind.as_str())
            .bind(a.severity.as_str())
            .bind(&a.detail)
            .bind(to_json(&a.evidence)?)
            .bind(&item.subject)
            .bind(&item.subject)
            .bind(a.kind.as_str())
            .bind(micros(a.at - regroup))
            .bind(micros(a.at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            if inserted == 1 {
                written.push(item.id);
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Some(written))
    }

    async fn pending_anomalies(&self, limit: u32) -> Result<Vec<StoredAnomaly>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            anomaly_cols!(),
            " FROM anomalies WHERE action_taken IS NULL ORDER BY at, id LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(anomaly_from_row).collect()
    }

    async fn finish_anomaly(
        &self,
        id: Uuid,
        action_taken: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let pending = sqlx::query(
            "UPDATE anomalies SET action_taken = ? WHERE id = ? AND action_taken IS NULL",
        )
        .bind(action_taken)
        .bind(id_text(id))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected()
            == 1;
        if !pending {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn get_anomaly(&self, id: Uuid) -> Result<Option<StoredAnomaly>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            anomaly_cols!(),
            " FROM anomalies WHERE id = ?"
        ))
        .bind(id_text(id))
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(anomaly_from_row).transpose()
    }

    async fn list_anomalies(&self, q: &AnomalyQuery) -> Result<Vec<StoredAnomaly>> {
        let mut b = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            anomaly_cols!(),
            " FROM anomalies WHERE 1 = 1"
        ));
        if let Some(k) = q.key_id {
            b.push(" AND key_id = ").push_bind(id_text(k));
        }
        if let Some(i) = q.identity_id {
            b.push(" AND identity_id = ").push_bind(id_text(i));
        }
        if let Some(s) = q.since {
            b.push(" AND at >= ").push_bind(micros(s));
        }
        if let Some(k) = q.kind {
            b.push(" AND kind = ").push_bind(k.as_str());
        }
        if let Some(s) = q.severity {
            b.push(" AND severity = ").push_bind(s.as_str());
        }
        if let Some((at, id)) = q.before {
            b.push(" AND (at < ")
                .push_bind(micros(at))
                .push(" OR (at = ")
                .push_bind(micros(at))
                .push(" AND id < ")
                .push_bind(id_text(id))
                .push("))");
        }
        b.push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.reader).await.map_err(map_err)?;
        rows.iter().map(anomaly_from_row).collect()
    }

    async fn get_anomaly_policy(&self, identity_id: Uuid) -> Result<Option<AnomalyPolicy>> {
        let row =
            sqlx::query("SELECT action, min_severity FROM anomaly_policies WHERE identity_id = ?")
                .bind(id_text(identity_id))
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        row.map(|r| parse_policy(&get::<String>(&r, 0)?, &get::<String>(&r, 1)?))
            .transpose()
    }

    async fn put_anomaly_policy(
        &self,
        identity_id: Uuid,
        policy: &AnomalyPolicy,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO anomaly_policies (identity_id, action, min_severity, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (identity_id) DO UPDATE SET \
             action = excluded.action, min_severity = excluded.min_severity, \
             updated_at = excluded.updated_at",
        )
        .bind(id_text(identity_id))
        .bind(policy.action.as_str())
        .bind(policy.min_severity.as_str())
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn prune_anomalies(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM anomalies WHERE at < ? AND action_taken IS NOT NULL")
            .bind(micros(before))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }
}
