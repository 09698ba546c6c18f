//! What the web console reads beyond the API's own calls: the audit log newest first,
//! filtered, for the audit table, the alerts timeline and each identity's recent
//! activity (`list_audit` pages oldest first, as a tailing reader needs); and usage
//! of all keys together, for the overview.

use async_trait::async_trait;
use keyward_core::model::AuditRecord;
use keyward_core::time::Timestamp;
use keyward_core::usage::Bucket;

use crate::Result;
use crate::usage::UsageCount;

/// Which audit records to return, newest first. Empty lists and `None` match everything;
/// the conditions are ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSearch {
    /// Only records with a sequence number below this one (the next page's cursor).
    pub before: Option<i64>,
    /// Any of these exact actions (`key.rate_limited`).
    pub actions: Vec<String>,
    /// Actions starting with this (`key.` for every key action).
    pub action_prefix: Option<String>,
    /// This exact actor.
    pub actor: Option<String>,
    /// Any of these exact targets (an identity's id and its keys' ids).
    pub targets: Vec<String>,
    /// Case-insensitive substring of the actor, action, target or detail.
    pub text: Option<String>,
    /// Page size.
    pub limit: u32,
}

#[async_trait]
pub trait ConsoleStore: Send + Sync + 'static {
    /// Audit records matching `search`, highest sequence number first.
    async fn search_audit(&self, search: &AuditSearch) -> Result<Vec<AuditRecord>>;

    /// Verifications of every key together, per bucket and outcome (the overview's
    /// chart; `UsageStore::usage_counts` is per key or identity).
    async fn usage_counts_overall(
        &self,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageCount>>;
}
