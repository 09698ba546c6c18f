//! The response to each recorded anomaly: the identity's policy (`notify` by default, or
//! `disable_key` at a minimum severity, never for `keyward:` keys), then the
//! `anomaly.detected` audit record, which fires the webhook. Run by the jobs leader
//! after each detection round, over the anomalies still pending (an outbox: what a
//! crash interrupted is finished by the next round or the next leader).

use keyward_core::anomaly_response::{AnomalyPolicy, Decision, decide};
use keyward_core::model::{AuditEntry, KeyPatch};
use keyward_store::anomalies::StoredAnomaly;
use keyward_store::{Store, StoreError};
use serde_json::json;

use crate::auth::touches_namespace;
use crate::verifier::Verifier;

/// The audit actor of automatic responses.
pub const RESPONSE_ACTOR: &str = "keyward:anomaly-response";
/// Pending anomalies answered per round at most.
const PER_ROUND: u32 = 200;

/// Runs the response of every pending anomaly; stops at the first store failure (the
/// rest stay pending for the next round).
pub async fn respond_pending(store: &dyn Store, verifier: &Verifier) {
    let pending = match store.pending_anomalies(PER_ROUND).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "could not read pending anomalies; will retry");
            return;
        }
    };
    for a in pending {
        if let Err(e) = respond(store, verifier, &a).await {
            tracing::warn!(error = %e, anomaly = %a.id, "anomaly response failed; will retry");
            return;
        }
    }
}

async fn respond(
    store: &dyn Store,
    verifier: &Verifier,
    p: &StoredAnomaly,
) -> Result<(), StoreError> {
    let a = &p.anomaly;
    let key = match a.key_id {
        Some(k) => store.get_key(k).await?,
        None => None,
    };
    let action_taken = match &key {
        None => Decision::Notify.as_str(),
        Some(key) => {
            let policy = store
                .get_anomaly_policy(key.identity_id)
                .await?
                .unwrap_or_else(AnomalyPolicy::default);
            let admin_key = key.scopes.iter().any(|s| touches_namespace(s));
            match decide(&policy, a.severity, admin_key) {
                Decision::DisableKey => disable_key(store, verifier, key, p).await?,
                other => other.as_str(),
            }
        }
    };
    let audit = AuditEntry {
        at: crate::now(),
        actor: "system".into(),
        action: "anomaly.detected".into(),
        target: p.id.to_string(),
        request_id: None,
        source_ip: None,
        detail: json!({
            "id": p.id,
            "at": a.at,
            "key_id": a.key_id,
            "identity_id": a.identity_id,
            "kind": a.kind,
            "severity": a.severity,
            "detail": a.detail,
            "evidence": a.evidence,
            "action_taken": action_taken,
        }),
    };
    store.finish_anomaly(p.id, action_taken, &audit).await?;
    Ok(())
}

/// Disables the key through the same store call and cache eviction as `PATCH
/// /v1/keys/{id} {enabled: false}`: on PostgreSQL the change feed tells every node in
/// the transaction, so it holds cluster-wide at once. Reversible by `PATCH ... {enabled:
/// true}`.
async fn disable_key(
    store: &dyn Store,
    verifier: &Verifier,
    key: &keyward_core::model::KeyRecord,
    p: &StoredAnomaly,
) -> Result<&'static str, StoreError> {
    let now = crate::now();
    if !key.enabled || key.revoked_at.is_some_and(|r| r <= now) {
        return Ok("key_already_disabled");
    }
    let patch = KeyPatch {
        enabled: Some(false),
        ..KeyPatch::default()
    };
    let audit = AuditEntry {
        at: now,
        actor: RESPONSE_ACTOR.into(),
        action: "key.disable".into(),
        target: key.id.to_string(),
        request_id: None,
        source_ip: None,
        detail: json!({
            "changed": ["enabled"],
            "anomaly_id": p.id,
            "kind": p.anomaly.kind,
            "severity": p.anomaly.severity,
        }),
    };
    match store.update_key(key.id, &patch, now, &audit).await? {
        Some(updated) => {
            verifier.forget(&updated.digest);
            Ok(Decision::DisableKey.as_str())
        }
        None => Ok(Decision::Notify.as_str()),
    }
}
