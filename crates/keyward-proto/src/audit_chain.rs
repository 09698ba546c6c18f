//! `GET /v1/audit/verify` and `keyward audit verify`: the integrity of the audit log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The outcome of recomputing the audit log's hash chain and checking its signed
/// checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// True when every record chains and every checkpoint holds.
    pub ok: bool,
    /// Records read.
    pub checked: u64,
    /// The first record that is not what the chain says (for a truncated tail: the first
    /// missing sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    /// Signed checkpoints that were reached and matched.
    #[serde(default)]
    pub checkpoints: u64,
    /// Whether checkpoint signatures were checked (the server or command knows the key).
    #[serde(default)]
    pub signatures_checked: bool,
    /// Why the log does not verify, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
