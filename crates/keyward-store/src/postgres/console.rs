//! [`ConsoleStore`] on PostgreSQL: one filtered query.

use async_trait::async_trait;
use keyward_core::model::AuditRecord;
use keyward_core::time::Timestamp;
use keyward_core::usage::Bucket;
use sqlx::{Postgres, QueryBuilder};

use super::{PgStore, audit_from_row, map_err};
use crate::Result;
use crate::console::{AuditSearch, ConsoleStore};
use crate::usage::UsageCount;

#[async_trait]
impl ConsoleStore for PgStore {
    async fn search_audit(&self, s: &AuditSearch) -> Result<Vec<AuditRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT seq, at, actor, action, target, request_id, source_ip, detail::text \
             FROM audit_log WHERE seq < ",
        );
        q.push_bind(s.before.unwrap_or(i64::MAX));
        if !s.actions.is_empty() {
            q.push(" AND action IN (");
            let mut list = q.separated(", ");
            for a in &s.actions {
                list.push_bind(a.clone());
            }
            q.push(")");
        }
        if let Some(p) = &s.action_prefix {
            // starts_with, not LIKE: the prefix needs no pattern escaping.
            q.push(" AND starts_with(action, ")
                .push_bind(p.clone())
                .push(")");
        }
        if let Some(a) = &s.actor {
            q.push(" AND actor = ").push_bind(a.clone());
        }
        if !s.targets.is_empty() {
            q.push(" AND target IN (");
            let mut list = q.separated(", ");
            for t in &s.targets {
                list.push_bind(t.clone());
            }
            q.push(")");
        }
        if let Some(t) = &s.text {
            q.push(" AND strpos(lower(actor || ' ' || action || ' ' || target || ' ' || detail::text), lower(")
                .push_bind(t.clone())
                .push(")) > 0");
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(s.limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn usage_counts_overall(
        &self,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageCount>> {
        self.counts(None, bucket, from, to).await
    }
}
