//! Rotation status (issue 7, item 5): which sources still use the older keys of a
//! rotation lineage during their grace, and the `key.old_version_in_use` notice the
//! jobs leader writes (`vault_jobs.rs` calls [`notify_old_versions_in_use`]).
//!
//! A lineage is followed through `rotated_to` (to its newest key) and `rotated_from`
//! (to its oldest), at most [`MAX_LINEAGE`] steps each way, so a corrupt cycle cannot
//! loop. An old key's sources are its accepted verifications since it was rotated, that
//! is since its successor was created.
//!
//! The notice is written once per old key: `UsageStore::record_old_version_notice`
//! remembers it in the same transaction as its audit entry, so a restart or another
//! leader does not write it again. The audit entry (actor `system`) is what the webhook
//! worker delivers as the `key.old_version_in_use` event; its detail names keys, times
//! and source addresses, never key material.

use std::time::Duration;

use keyward_core::model::{AuditEntry, KeyRecord};
use keyward_core::time::Timestamp;
use keyward_proto as proto;
use keyward_store::usage::KeySource;
use keyward_store::{Store, StoreError};
use serde_json::json;
use uuid::Uuid;

/// The most keys followed each way from the key asked about.
pub const MAX_LINEAGE: usize = 32;
/// Sources listed per old key at most.
const SOURCES_PER_KEY: u32 = 100;
/// Old keys looked at per check at most.
const NOTICE_BATCH: u32 = 100;

/// The lineage of key `id`, newest first; `None` if there is no such key.
pub async fn lineage(store: &dyn Store, id: Uuid) -> Result<Option<Vec<KeyRecord>>, StoreError> {
    let Some(mut newest) = store.get_key(id).await? else {
        return Ok(None);
    };
    for _ in 0..MAX_LINEAGE {
        let Some(next) = newest.rotated_to else { break };
        match store.get_key(next).await? {
            Some(k) => newest = k,
            None => break,
        }
    }
    let mut keys = vec![newest];
    while keys.len() <= MAX_LINEAGE {
        let Some(prev) = keys.last().and_then(|k| k.rotated_from) else {
            break;
        };
        match store.get_key(prev).await? {
            Some(k) => keys.push(k),
            None => break,
        }
    }
    Ok(Some(keys))
}

/// The rotation status of the lineage of key `id`; `None` if there is no such key.
pub async fn status(
    store: &dyn Store,
    id: Uuid,
) -> Result<Option<proto::RotationStatus>, StoreError> {
    let Some(keys) = lineage(store, id).await? else {
        return Ok(None);
    };
    let mut previous = Vec::with_capacity(keys.len().saturating_sub(1));
    for pair in keys.windows(2) {
        let (successor, old) = (&pair[0], &pair[1]);
        let sources = store
            .key_sources_since(old.id, successor.created_at, SOURCES_PER_KEY)
            .await?;
        previous.push(proto::OldKeyStatus {
            id: old.id,
            expires_at: stops_working_at(old),
            last_used_at: old.last_used_at,
            sources: sources.into_iter().map(wire).collect(),
        });
    }
    Ok(Some(proto::RotationStatus {
        current: proto::LineageKey { id: keys[0].id },
        previous,
    }))
}

/// The end of an old key's grace, or its own expiry if that comes first.
fn stops_working_at(k: &KeyRecord) -> Option<Timestamp> {
    match (k.revoked_at, k.expires_at) {
        (Some(r), Some(e)) => Some(r.min(e)),
        (r, e) => r.or(e),
    }
}

fn wire(s: KeySource) -> proto::OldKeySource {
    proto::OldKeySource {
        ip: s.ip,
        tags: s.tags,
        last_seen: s.last_seen,
        count: s.count,
    }
}

/// How long before the end of a grace of `grace` the notice is due: `before`, or half
/// the grace if that is shorter (so a short grace still gets a timely notice).
pub fn notice_lead(before: Duration, grace: chrono::Duration) -> chrono::Duration {
    let before = chrono::Duration::from_std(before).unwrap_or(chrono::Duration::MAX);
    before.min(grace / 2)
}

/// Writes the `key.old_version_in_use` notice of every old key whose grace ends soon
/// (see [`notice_lead`]) and that was used since its rotation. Failures are logged; the
/// next check retries.
pub async fn notify_old_versions_in_use(store: &dyn Store, before: Duration) {
    if let Err(e) = notify(store, before, crate::now()).await {
        tracing::warn!(error = %e, "old key version notices failed; will retry");
    }
}

/// [`notify_old_versions_in_use`] at `now`. Returns how many notices it wrote.
pub async fn notify(
    store: &dyn Store,
    before: Duration,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let until = now + chrono::Duration::from_std(before).unwrap_or(chrono::Duration::MAX / 2);
    let mut written = 0;
    for old in store.keys_in_grace(now, until, NOTICE_BATCH).await? {
        let (Some(grace_ends_at), Some(new_id)) = (old.revoked_at, old.rotated_to) else {
            continue;
        };
        let Some(new) = store.get_key(new_id).await? else {
            continue;
        };
        if grace_ends_at - now > notice_lead(before, grace_ends_at - new.created_at) {
            continue;
        }
        let sources = store
            .key_sources_since(old.id, new.created_at, SOURCES_PER_KEY)
            .await?;
        if sources.is_empty() {
            continue;
        }
        let sources: Vec<_> = sources
            .iter()
            .map(|s| json!({"ip": s.ip, "count": s.count, "last_seen": s.last_seen}))
            .collect();
        let audit = AuditEntry {
            at: now,
            actor: "system".into(),
            action: "key.old_version_in_use".into(),
            target: old.id.to_string(),
            request_id: None,
            source_ip: None,
            detail: json!({"key_id": old.id, "new_key_id": new.id,
                           "grace_ends_at": grace_ends_at, "sources": sources}),
        };
        if store.record_old_version_notice(old.id, &audit).await? {
            tracing::info!(key_id = %old.id, "an old key version is still in use near the end of its grace");
            written += 1;
        }
    }
    Ok(written)
}
