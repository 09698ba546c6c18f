//! The HTTP routes, one module per resource.

pub mod admins;
pub mod anomalies;
pub mod audit;
pub mod audit_verify;
pub mod health;
pub mod identities;
pub mod keys;
pub mod leaks;
pub mod posture;
pub mod rotation_policy;
pub mod rotation_status;
pub mod secrets;
pub mod tokens;
pub mod usage;
pub mod verify;
pub mod verify_answer;
pub mod webhooks;

use keyward_core::model::AuditEntry;

use crate::auth::Principal;

/// The audit entry for a change made by `who`.
pub fn audit_entry(
    who: &Principal,
    action: &str,
    target: impl ToString,
    detail: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        at: crate::now(),
        actor: who.actor(),
        action: action.to_owned(),
        target: target.to_string(),
        request_id: who.request_id(),
        source_ip: who.source_ip.map(|ip| ip.to_string()),
        detail,
    }
}
