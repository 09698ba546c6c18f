//! [`AnomalyStore`] on PostgreSQL. The cursor's compare-and-set is one conditional
//! `UPDATE`: of two leaders (the brief overlap of a change of leader) one moves it and
//! records, the other writes nothing and starts again from the stored cursor.

use async_trait::async_trait;
use keyward_core::anomaly::Anomaly;
use keyward_core::anomaly_response::AnomalyPolicy;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_core::usage::UsageEvent;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{PgStore, get, insert_audit, map_err, to_json};
use crate::Result;
use crate::anomalies::{
    AnomalyQuery, AnomalyStore, CursorMove, EventCols, NewAnomaly, StoredAnomaly, parse_kind,
    parse_policy, parse_severity,
};

/// Anomaly columns, in the order `anomaly_from_row` reads them.
macro_rules! anomaly_cols {
    () => {
        "id, at, key_id, identity_id, kind, severity, detail, evidence::text, action_taken"
    };
}

fn anomaly_from_row(r: &PgRow) -> Result<StoredAnomaly> {
    let evidence: String = get(r, 7)?;
    Ok(StoredAnomaly {
        id: get(r, 0)?,
        anomaly: Anomaly {
            at: get(r, 1)?,
            key_id: get(r, 2)?,
            identity_id: get(r, 3)?,
            kind: parse_kind(&get::<String>(r, 4)?)?,
            severity: parse_severity(&get::<String>(r, 5)?)?,
            detail: get(r, 6)?,
            evidence: serde_json::from_str(&evidence)
                .map_err(|e| crate::StoreError::Corrupt(format!("anomalies.evidence: {e}")))?,
        },
        action_taken: get(r, 8)?,
    })
}

#[async_trait]
impl AnomalyStore for PgStore {
    async fn detect_cursor(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT at FROM anomaly_cursor WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| get(&r, 0)).transpose()
    }

    async fn usage_events_after(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: u32,
        out: &mut Vec<UsageEvent>,
    ) -> Result<()> {
        out.clear();
        let rows = sqlx::query(
            "SELECT at, key_id, identity_id, code, ip, scopes, latency_us, tags::text \
             FROM usage_events WHERE at > $1 AND at <= $2 ORDER BY at LIMIT $3",
        )
        .bind(after)
        .bind(until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        for r in &rows {
            out.push(
                EventCols {
                    at: get(r, 0)?,
                    key_id: get(r, 1)?,
                    identity_id: get(r, 2)?,
                    code: get(r, 3)?,
                    ip: get(r, 4)?,
                    scopes: get(r, 5)?,
                    latency_us: i64::from(get::<i32>(r, 6)?),
                    tags: get(r, 7)?,
                }
                .into_event()?,
            );
        }
        Ok(())
    }

    async fn count_usage_events_after(&self, after: Timestamp, until: Timestamp) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*)::int8 FROM usage_events WHERE at > $1 AND at <= $2",
        )
        .bind(after)
        .bind(until)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(n.max(0) as u64)
    }

    async fn record_anomalies(
        &self,
        cursor: CursorMove,
        items: &[NewAnomaly],
        regroup: chrono::TimeDelta,
    ) -> Result<Option<Vec<Uuid>>> {
        let mut tx = self.begin().await?;
        let moved = match cursor.from {
            None => sqlx::query(
                "INSERT INTO anomaly_cursor (id, at) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(cursor.to),
            Some(from) => sqlx::query("UPDATE anomaly_cursor SET at = $1 WHERE id = 1 AND at = $2")
                .bind(cursor.to)
                .bind(from),
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
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9 WHERE NOT EXISTS \
                 (SELECT 1 FROM anomalies WHERE subject = $10 AND kind = $11 AND at >= $12 AND at <= $13)",
            )
            .bind(item.id)
            .bind(a.at)
            .bind(a.key_id)
            .bind(a.identity_id)
            .bind(a.kind.as_str())
            .bind(a.severity.as_str())
            .bind(&a.detail)
            .bind(to_json(&a.evidence)?)
            .bind(&item.subject)
            .bind(&item.subject)
            .bind(a.kind.as_str())
            .bind(a.at - regroup)
            .bind(a.at)
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
            " FROM anomalies WHERE action_taken IS NULL ORDER BY at, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut tx = self.begin().await?;
        let pending = sqlx::query(
            "UPDATE anomalies SET action_taken = $1 WHERE id = $2 AND action_taken IS NULL",
        )
        .bind(action_taken)
        .bind(id)
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
            " FROM anomalies WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(anomaly_from_row).transpose()
    }

    async fn list_anomalies(&self, q: &AnomalyQuery) -> Result<Vec<StoredAnomaly>> {
        let mut b = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            anomaly_cols!(),
            " FROM anomalies WHERE 1 = 1"
        ));
        if let Some(k) = q.key_id {
            b.push(" AND key_id = ").push_bind(k);
        }
        if let Some(i) = q.identity_id {
            b.push(" AND identity_id = ").push_bind(i);
        }
        if let Some(s) = q.since {
            b.push(" AND at >= ").push_bind(s);
        }
        if let Some(k) = q.kind {
            b.push(" AND kind = ").push_bind(k.as_str());
        }
        if let Some(s) = q.severity {
            b.push(" AND severity = ").push_bind(s.as_str());
        }
        if let Some((at, id)) = q.before {
            b.push(" AND (at < ")
                .push_bind(at)
                .push(" OR (at = ")
                .push_bind(at)
                .push(" AND id < ")
                .push_bind(id)
                .push("))");
        }
        b.push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(anomaly_from_row).collect()
    }

    async fn get_anomaly_policy(&self, identity_id: Uuid) -> Result<Option<AnomalyPolicy>> {
        let row =
            sqlx::query("SELECT action, min_severity FROM anomaly_policies WHERE identity_id = $1")
                .bind(identity_id)
                .fetch_optional(&self.pool)
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO anomaly_policies (identity_id, action, min_severity, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (identity_id) DO UPDATE SET \
             action = excluded.action, min_severity = excluded.min_severity, \
             updated_at = excluded.updated_at",
        )
        .bind(identity_id)
        .bind(policy.action.as_str())
        .bind(policy.min_severity.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn prune_anomalies(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM anomalies WHERE at < $1 AND action_taken IS NOT NULL")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }
}
