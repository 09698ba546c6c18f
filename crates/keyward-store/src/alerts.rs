//! Alerts raised from usage (`key.rate_limited`, `key.usage_exceeded`): at most one per
//! key, kind and alert window, across restarts and across the nodes sharing a store.

use async_trait::async_trait;
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use uuid::Uuid;

use crate::Result;

#[async_trait]
pub trait AlertStore: Send + Sync + 'static {
    /// Writes `audit` (the alert) unless an alert of `kind` for `key_id` opened a window
    /// after `window_open_after` (that is, `now - window`); when it writes, `now` opens
    /// the new window, in the same transaction as the audit entry. The window is taken
    /// by one conditional upsert, so of two nodes racing only one writes. Returns whether
    /// the alert was written.
    async fn raise_key_alert(
        &self,
        key_id: Uuid,
        kind: &str,
        now: Timestamp,
        window_open_after: Timestamp,
        audit: &AuditEntry,
    ) -> Result<bool>;
}
