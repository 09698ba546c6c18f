//! The vault's background jobs, on the jobs leader only (`jobs.rs` keeps the
//! `jobs_leader` flag this loop reads): scheduled key rotation, rewrapping data keys
//! after a master key rotation, and `key.old_version_in_use` notices
//! (`rotation_status.rs`). Checks every [`CHECK_EVERY`].
//!
//! **Scheduled rotation, and why one transaction:** for each key whose policy says it
//! is due, the leader mints the new key, seals it for the next version of `deliver_to`,
//! and hands everything to `VaultStore::rotate_on_schedule`, which in ONE transaction
//! stores the new key, marks the old one rotated (it keeps working until now + grace),
//! moves the policy to the new key, inserts the sealed delivery and writes the audit
//! entries (`key.rotate`, actor `system`: the webhook worker turns it into
//! `key.rotated`; and `secret.write`). So either all of it is committed or none:
//!
//! * a crash before the commit leaves no trace: the minted key only ever lived in this
//!   process's memory (it is wiped on drop), and the key is still due, so the next
//!   check mints a fresh one. A minted key can never be stored but undelivered, nor
//!   delivered but unstored;
//! * two leaders overlapping (a leader cut off from PostgreSQL) cannot both rotate: the
//!   old key row is locked and re-checked (`rotated_to` is set by the first), and the
//!   delivery's version is unique; the loser gets `Conflict` and writes nothing.
//!
//! The old key stays valid during its grace, but its cached policy must learn its new
//! `revoked_at`: this node forgets it from the verify cache, and on PostgreSQL the
//! transaction's change feed tells every other node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Duration as TimeDelta;
use keyward_core::envelope;
use keyward_core::key::{self, KeyPrefix};
use keyward_core::model::{AuditEntry, KeyRecord};
use keyward_core::rotation::{self, RotationPolicy};
use keyward_store::vault::{Rewrap, ScheduledRotation, SecretVersion};
use keyward_store::{Store, StoreError};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::vault::Vault;
use crate::verifier::Verifier;

/// Time between two checks (the contract asks for at most 5 s).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Keys rotated per check at most.
const ROTATE_BATCH: u32 = 100;
/// Data keys rewrapped per transaction.
const REWRAP_BATCH: u32 = 200;

pub fn spawn(
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    (vault, old_version_before): (Option<Arc<Vault>>, Duration),
    leader: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            if !leader.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(e) = rotate_due(&*store, &verifier, vault.as_deref()).await {
                tracing::warn!(error = %e, "scheduled rotation failed; will retry");
            }
            if let Some(v) = vault.as_deref()
                && let Err(e) = rewrap_some(&*store, v).await
            {
                tracing::warn!(error = %e, "rewrapping data keys failed; will retry");
            }
            crate::rotation_status::notify_old_versions_in_use(&*store, old_version_before).await;
            if let Some(v) = vault.as_deref()
                && let Err(e) = crate::sealed_secrets::rewrap_some(&*store, v).await
            {
                tracing::warn!(error = %e, "rewrapping sealed secrets failed; will retry");
            }
        }
    })
}

/// Rotates every key that is due now. Returns how many were rotated.
pub async fn rotate_due(
    store: &dyn Store,
    verifier: &Verifier,
    vault: Option<&Vault>,
) -> Result<usize, StoreError> {
    let now = crate::now();
    let mut rotated = 0;
    for (policy, old) in store.due_rotations(now, ROTATE_BATCH).await? {
        if !rotation::is_due(&policy, &old, now) {
            continue;
        }
        if policy.deliver_to.is_some() && vault.is_none() {
            tracing::warn!(key_id = %old.id,
                "a key is due for rotation but its policy delivers to the vault, which is off; \
                 not rotating it");
            continue;
        }
        match rotate_one(store, vault, &policy, &old, now).await {
            Ok(Some((old_digest, new_digest))) => {
                verifier.forget(&old_digest);
                verifier.forget(&new_digest);
                rotated += 1;
            }
            Ok(None) => {}
            Err(StoreError::Conflict(why)) => {
                tracing::info!(key_id = %old.id, %why, "scheduled rotation lost a race; will retry");
            }
            Err(e) => return Err(e),
        }
    }
    if rotated > 0 {
        tracing::info!(keys = rotated, "scheduled rotation: rotated keys");
    }
    Ok(rotated)
}

async fn rotate_one(
    store: &dyn Store,
    vault: Option<&Vault>,
    policy: &RotationPolicy,
    old: &KeyRecord,
    now: keyward_core::time::Timestamp,
) -> Result<Option<(keyward_core::KeyDigest, keyward_core::KeyDigest)>, StoreError> {
    let prefix = KeyPrefix::parse(&old.prefix)
        .map_err(|_| StoreError::Corrupt(format!("stored prefix of key {} is invalid", old.id)))?;
    let minted = key::mint(&prefix);
    let new = KeyRecord {
        id: Uuid::now_v7(),
        start: minted.start.clone(),
        digest: minted.digest,
        created_at: now,
        updated_at: now,
        // The new key gets the lifetime the old one was given, counted from now.
        expires_at: old.expires_at.map(|e| now + (e - old.created_at)),
        revoked_at: None,
        last_used_at: None,
        rotated_from: Some(old.id),
        rotated_to: None,
        ..old.clone()
    };
    let system = |action: &str, target: String, detail| AuditEntry {
        at: now,
        actor: "system".into(),
        action: action.into(),
        target,
        request_id: None,
        source_ip: None,
        detail,
    };
    let mut audit = vec![system(
        "key.rotate",
        old.id.to_string(),
        json!({"new_key_id": new.id, "grace_seconds": policy.grace_seconds,
               "start": new.start, "scheduled": true, "deliver_to": policy.deliver_to}),
    )];
    let delivery = match (&policy.deliver_to, vault) {
        (Some(path), Some(vault)) => {
            let version = store.latest_secret_version(path).await?.unwrap_or(0) + 1;
            audit.push(system(
                "secret.write",
                path.clone(),
                json!({"path": path, "version": version, "rotated_key_id": new.id}),
            ));
            Some(SecretVersion {
                path: path.clone(),
                version,
                sealed: vault.seal(path, version, minted.plaintext.as_bytes()),
                meta: json!({"key_id": new.id, "rotated_from": old.id})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                created_at: now,
            })
        }
        _ => None,
    };
    let r = ScheduledRotation {
        old_id: old.id,
        new,
        old_revoked_at: now + TimeDelta::seconds(policy.grace_seconds),
        now,
        delivery,
        audit,
    };
    let digests = (old.digest, r.new.digest);
    Ok(store.rotate_on_schedule(&r).await?.map(|_| digests))
}

/// Rewraps one batch of data keys still under an older master key. Returns how many.
pub async fn rewrap_some(store: &dyn Store, vault: &Vault) -> Result<u64, StoreError> {
    let ring = vault.ring();
    if ring.previous_ids().is_empty() {
        return Ok(0);
    }
    let current = ring.current().id().to_owned();
    let rows = store.secrets_to_rewrap(&current, REWRAP_BATCH).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut rewraps = Vec::with_capacity(rows.len());
    for v in &rows {
        match envelope::rewrap(ring, &v.path, v.version, &v.sealed) {
            Ok((wrapped_key, master_key_id)) => rewraps.push(Rewrap {
                path: v.path.clone(),
                version: v.version,
                old_master_key_id: v.sealed.master_key_id.clone(),
                wrapped_key,
                master_key_id,
            }),
            Err(e) => tracing::error!(path = %v.path, version = v.version, error = %e,
                "cannot rewrap a data key"),
        }
    }
    let audit = AuditEntry {
        at: crate::now(),
        actor: "system".into(),
        action: "vault.rewrap".into(),
        target: current.clone(),
        request_id: None,
        source_ip: None,
        detail: json!({"count": rewraps.len(), "master_key_id": current}),
    };
    let n = store.rewrap_secrets(&rewraps, &audit).await?;
    let left = store.secrets_to_rewrap(&current, 1).await?.len();
    tracing::info!(
        rewrapped = n,
        done = left == 0,
        "rewrapped data keys under the current master key"
    );
    Ok(n)
}
