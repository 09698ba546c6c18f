//! The store conformance suite: the behaviour every [`Store`] must have, written once
//! against the trait so each implementation (SQLite now, PostgreSQL later) runs the very
//! same checks. Enabled by the `testkit` feature.
//!
//! Each test takes a store and panics on a violation. They tolerate data written by the
//! other tests (names and ids are unique per test), so [`run_all`] can run them in turn
//! on one store; but a test that checks the audit log expects nobody else to be writing
//! to the store while it runs, and [`bootstrap_once`] needs a store never bootstrapped.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use keyward_core::KeyDigest;
use keyward_core::key::{KeyPrefix, mint};
use keyward_core::model::{AuditEntry, Identity, IdentityPatch, KeyPatch, KeyRecord};
use keyward_core::ratelimit::RateLimitSpec;
use keyward_core::time::{Timestamp, truncate};

use crate::{Bootstrap, Consumed, Store, StoreError};

pub mod console;
mod servers;
pub use servers::{OwnPostgres, OwnRedis, free_port};
pub mod anomalies;
pub mod rotation_status;
pub mod sealed_secrets;
pub mod usage;
pub mod vault;
pub mod webhooks;

/// Runs every test of the suite on `store`, which must be empty (never bootstrapped).
pub async fn run_all(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    bootstrap_once(s).await;
    ping(s).await;
    identity_roundtrip(s).await;
    identity_pagination(s).await;
    identity_name_conflict_and_reuse(s).await;
    identity_patch(s).await;
    key_roundtrip(s).await;
    key_create_conflicts(s).await;
    key_pagination(s).await;
    key_patch(s).await;
    revoke_key(s).await;
    delete_identity_revokes_keys(s).await;
    rotate_key_lineage(s).await;
    rotate_key_conflicts(s).await;
    consume_remaining(s).await;
    consume_remaining_concurrent(store.clone()).await;
    record_last_used(s).await;
    audit_log_order(s).await;
    sweep_expired(s).await;
    usage::usage_counts_match_events(s).await;
    usage::prune_usage(s).await;
    usage::posture_inputs(s).await;
}

// ---------------------------------------------------------------- fixtures

/// Now, at the precision stores keep, with a non-zero microsecond part (so a store that
/// keeps only milliseconds fails the round trips).
pub fn now() -> Timestamp {
    let t = truncate(Utc::now());
    if t.timestamp_subsec_micros().is_multiple_of(1000) {
        t + Duration::microseconds(7)
    } else {
        t
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", Uuid::now_v7().simple())
}

/// An audit entry with every field set, distinct from every other one.
pub fn audit(action: &str, target: impl ToString) -> AuditEntry {
    AuditEntry {
        at: now(),
        actor: "system".to_owned(),
        action: action.to_owned(),
        target: target.to_string(),
        request_id: Some(Uuid::now_v7().to_string()),
        source_ip: Some("2001:db8::7".to_owned()),
        detail: json!({"fields": ["name", "owner"], "n": 1, "nested": {"ok": true}}),
    }
}

/// An identity with every field set.
pub fn identity(name: &str) -> Identity {
    let t = now();
    let mut meta = serde_json::Map::new();
    meta.insert("team".into(), json!("payments"));
    meta.insert("tier".into(), json!(3));
    Identity {
        id: Uuid::now_v7(),
        name: unique(name),
        owner: "team-payments@example.com".to_owned(),
        description: "charges cards — nightly batch ✓".to_owned(),
        meta,
        enabled: true,
        created_at: t,
        updated_at: t + Duration::microseconds(1),
    }
}

/// A key of `identity_id` with every field set (times at microsecond precision).
pub fn key(identity_id: Uuid) -> KeyRecord {
    let prefix = KeyPrefix::parse("kw_test").unwrap();
    let minted = mint(&prefix);
    let t = now();
    let mut meta = serde_json::Map::new();
    meta.insert("purpose".into(), json!("ci"));
    KeyRecord {
        id: Uuid::now_v7(),
        identity_id,
        name: unique("deploy"),
        prefix: prefix.as_str().to_owned(),
        start: minted.start.clone(),
        digest: minted.digest,
        scopes: vec!["orders:read".into(), "billing:*".into()],
        created_at: t,
        updated_at: t + Duration::microseconds(3),
        expires_at: Some(t + Duration::days(30) + Duration::microseconds(11)),
        revoked_at: None,
        enabled: true,
        ip_allowlist: vec![
            "10.0.0.0/8".into(),
            "2001:db8::/32".into(),
            "192.0.2.1".into(),
        ],
        rate_limits: vec![
            RateLimitSpec {
                name: "burst".into(),
                limit: 10,
                window_seconds: 1,
            },
            RateLimitSpec {
                name: "daily".into(),
                limit: 10_000,
                window_seconds: 86_400,
            },
        ],
        remaining: Some(5),
        last_used_at: Some(t - Duration::microseconds(999_999)),
        meta,
        rotated_from: None,
        rotated_to: None,
    }
}

/// A key with every optional field empty.
pub fn minimal_key(identity_id: Uuid) -> KeyRecord {
    KeyRecord {
        name: String::new(),
        scopes: vec![],
        expires_at: None,
        ip_allowlist: vec![],
        rate_limits: vec![],
        remaining: None,
        last_used_at: None,
        meta: serde_json::Map::new(),
        ..key(identity_id)
    }
}

async fn new_identity(store: &dyn Store, name: &str) -> Identity {
    let i = identity(name);
    store
        .create_identity(&i, &audit("identity.create", i.id))
        .await
        .unwrap();
    i
}

async fn new_key(store: &dyn Store, k: KeyRecord) -> KeyRecord {
    store
        .create_key(&k, &audit("key.create", k.id))
        .await
        .unwrap();
    k
}

/// The sequence number of the newest audit record (0 for none).
async fn last_seq(store: &dyn Store) -> i64 {
    let mut after = None;
    let mut last = 0;
    loop {
        let page = store.list_audit(after, 500).await.unwrap();
        match page.last() {
            Some(r) => {
                last = r.seq;
                after = Some(r.seq);
            }
            None => return last,
        }
    }
}

/// The audit entries written after `seq`.
async fn audit_since(store: &dyn Store, seq: i64) -> Vec<AuditEntry> {
    store
        .list_audit(Some(seq), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .collect()
}

fn assert_conflict<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

/// Every live identity, paging with `page` items at a time.
async fn all_identities(store: &dyn Store, page: u32) -> Vec<Identity> {
    let mut out: Vec<Identity> = Vec::new();
    let mut after = None;
    loop {
        let items = store.list_identities(after, page).await.unwrap();
        assert!(
            items.len() <= page as usize,
            "a page holds at most `limit` items"
        );
        let Some(last) = items.last() else { break };
        after = Some(last.id);
        let full = items.len() == page as usize;
        out.extend(items);
        if !full {
            break;
        }
    }
    out
}

async fn all_keys(store: &dyn Store, identity_id: Option<Uuid>, page: u32) -> Vec<KeyRecord> {
    let mut out: Vec<KeyRecord> = Vec::new();
    let mut after = None;
    loop {
        let items = store.list_keys(identity_id, after, page).await.unwrap();
        assert!(
            items.len() <= page as usize,
            "a page holds at most `limit` items"
        );
        let Some(last) = items.last() else { break };
        after = Some(last.id);
        let full = items.len() == page as usize;
        out.extend(items);
        if !full {
            break;
        }
    }
    out
}

fn assert_strictly_ascending(ids: &[Uuid]) {
    for w in ids.windows(2) {
        assert!(
            w[0] < w[1],
            "ids must be strictly ascending: {} !< {}",
            w[0],
            w[1]
        );
        assert!(
            w[0].to_string() < w[1].to_string(),
            "text order must match id order"
        );
    }
}

// ---------------------------------------------------------------- tests

/// The root identity and key are created once; later calls write nothing.
pub async fn bootstrap_once(store: &dyn Store) {
    let root = identity("root");
    let mut root_key = key(root.id);
    root_key.scopes = vec!["keyward:admin".into()];
    root_key.remaining = None;
    let b = Bootstrap {
        audit: audit("bootstrap", root_key.id),
        identity: root.clone(),
        key: root_key.clone(),
    };
    let seq = last_seq(store).await;
    assert!(store.bootstrap(&b).await.unwrap(), "first bootstrap");
    assert_eq!(
        store.get_identity(root.id).await.unwrap(),
        Some(root.clone())
    );
    assert_eq!(
        store.get_key(root_key.id).await.unwrap(),
        Some(root_key.clone())
    );
    assert_eq!(audit_since(store, seq).await, vec![b.audit.clone()]);

    // A second bootstrap, with other records, changes nothing.
    let other = identity("root");
    let b2 = Bootstrap {
        audit: audit("bootstrap", "again"),
        key: key(other.id),
        identity: other.clone(),
    };
    let seq = last_seq(store).await;
    assert!(!store.bootstrap(&b2).await.unwrap(), "second bootstrap");
    assert!(!store.bootstrap(&b).await.unwrap(), "same bootstrap again");
    assert_eq!(store.get_identity(other.id).await.unwrap(), None);
    assert_eq!(store.get_key(b2.key.id).await.unwrap(), None);
    assert!(audit_since(store, seq).await.is_empty());
}

pub async fn ping(store: &dyn Store) {
    store.ping().await.unwrap();
}

/// Every identity field comes back as written, at microsecond precision.
pub async fn identity_roundtrip(store: &dyn Store) {
    let seq = last_seq(store).await;
    let mut i = identity("roundtrip");
    i.enabled = false;
    let a = audit("identity.create", i.id);
    store.create_identity(&i, &a).await.unwrap();
    assert_eq!(
        audit_since(store, seq).await,
        vec![a],
        "audit written with the change"
    );

    assert_eq!(store.get_identity(i.id).await.unwrap(), Some(i.clone()));
    assert_eq!(store.get_identity(Uuid::now_v7()).await.unwrap(), None);
    let listed = all_identities(store, 100).await;
    assert_eq!(listed.iter().filter(|x| **x == i).count(), 1);

    // The same id twice is a conflict, and writes no audit record.
    let seq = last_seq(store).await;
    let mut dup = identity("roundtrip");
    dup.id = i.id;
    assert_conflict(
        store
            .create_identity(&dup, &audit("identity.create", dup.id))
            .await,
        "duplicate identity id",
    );
    assert!(
        audit_since(store, seq).await.is_empty(),
        "no audit for a refused change"
    );
}

/// Live identities come in id order; the cursor is exclusive.
pub async fn identity_pagination(store: &dyn Store) {
    let mut mine = Vec::new();
    for n in 0..5 {
        mine.push(new_identity(store, &format!("page{n}")).await.id);
    }
    let deleted = new_identity(store, "page-deleted").await;
    store
        .delete_identity(deleted.id, now(), &audit("identity.delete", deleted.id))
        .await
        .unwrap()
        .unwrap();

    for page in [1, 2, 3, 100] {
        let all: Vec<Uuid> = all_identities(store, page)
            .await
            .iter()
            .map(|i| i.id)
            .collect();
        assert_strictly_ascending(&all);
        let seen: Vec<Uuid> = all.iter().copied().filter(|id| mine.contains(id)).collect();
        let mut expected = mine.clone();
        expected.sort();
        assert_eq!(seen, expected, "page size {page}");
        assert!(
            !all.contains(&deleted.id),
            "deleted identities are not listed"
        );
    }

    let mut sorted = mine.clone();
    sorted.sort();
    let after = store.list_identities(Some(sorted[1]), 2).await.unwrap();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|i| i.id > sorted[1]));
    assert_eq!(after[0].id, sorted[2]);
    assert!(store.list_identities(None, 0).await.unwrap().is_empty());
}

/// A live name is unique; deleting an identity frees its name.
pub async fn identity_name_conflict_and_reuse(store: &dyn Store) {
    let a = new_identity(store, "clash").await;

    let seq = last_seq(store).await;
    let mut b = identity("other");
    b.name = a.name.clone();
    assert_conflict(
        store
            .create_identity(&b, &audit("identity.create", b.id))
            .await,
        "same name",
    );
    assert_eq!(store.get_identity(b.id).await.unwrap(), None);
    assert!(
        audit_since(store, seq).await.is_empty(),
        "no audit for a refused change"
    );

    // Renaming another identity onto a live name is a conflict too.
    let c = new_identity(store, "rename").await;
    let seq2 = last_seq(store).await;
    let patch = IdentityPatch {
        name: Some(a.name.clone()),
        ..Default::default()
    };
    assert_conflict(
        store
            .update_identity(c.id, &patch, now(), &audit("identity.update", c.id))
            .await,
        "rename onto a live name",
    );
    assert_eq!(store.get_identity(c.id).await.unwrap(), Some(c.clone()));
    assert!(audit_since(store, seq2).await.is_empty());

    // Renaming to its own name is fine.
    let same = IdentityPatch {
        name: Some(c.name.clone()),
        ..Default::default()
    };
    store
        .update_identity(c.id, &same, now(), &audit("identity.update", c.id))
        .await
        .unwrap()
        .unwrap();

    // After delete the name is free, for a new identity and for a rename.
    store
        .delete_identity(a.id, now(), &audit("identity.delete", a.id))
        .await
        .unwrap()
        .unwrap();
    store
        .create_identity(&b, &audit("identity.create", b.id))
        .await
        .unwrap();
    assert_eq!(store.get_identity(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(store.get_identity(a.id).await.unwrap(), None);
    store
        .delete_identity(b.id, now(), &audit("identity.delete", b.id))
        .await
        .unwrap()
        .unwrap();
    let back = store
        .update_identity(c.id, &patch, now(), &audit("identity.update", c.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.name, a.name);
}

/// `None` leaves a field; `Some` sets it; `updated_at` becomes `now`.
pub async fn identity_patch(store: &dyn Store) {
    let i = new_identity(store, "patch").await;

    let t1 = now() + Duration::seconds(1);
    let seq = last_seq(store).await;
    let a = audit("identity.update", i.id);
    let empty = store
        .update_identity(i.id, &IdentityPatch::default(), t1, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        empty,
        Identity {
            updated_at: t1,
            ..i.clone()
        }
    );
    assert_eq!(audit_since(store, seq).await, vec![a]);

    let mut meta = serde_json::Map::new();
    meta.insert("k".into(), json!(["v"]));
    let patch = IdentityPatch {
        name: Some(unique("patched")),
        owner: Some("someone-else".into()),
        description: Some(String::new()),
        meta: Some(meta.clone()),
        enabled: Some(false),
    };
    let t2 = t1 + Duration::microseconds(1);
    let updated = store
        .update_identity(i.id, &patch, t2, &audit("identity.update", i.id))
        .await
        .unwrap()
        .unwrap();
    let expected = Identity {
        id: i.id,
        name: patch.name.clone().unwrap(),
        owner: "someone-else".into(),
        description: String::new(),
        meta,
        enabled: false,
        created_at: i.created_at,
        updated_at: t2,
    };
    assert_eq!(updated, expected);
    assert_eq!(store.get_identity(i.id).await.unwrap(), Some(expected));

    // Unknown or deleted: None, and no audit record.
    let seq = last_seq(store).await;
    assert_eq!(
        store
            .update_identity(Uuid::now_v7(), &patch, t2, &audit("identity.update", "x"))
            .await
            .unwrap(),
        None
    );
    store
        .delete_identity(i.id, t2, &audit("identity.delete", i.id))
        .await
        .unwrap()
        .unwrap();
    let seq_del = last_seq(store).await;
    assert_eq!(seq_del, seq + 1, "only the delete was audited");
    assert_eq!(
        store
            .update_identity(i.id, &patch, t2, &audit("identity.update", i.id))
            .await
            .unwrap(),
        None
    );
    assert_eq!(last_seq(store).await, seq_del);
}

/// Every key field comes back as written; the digest lookup joins the identity.
pub async fn key_roundtrip(store: &dyn Store) {
    let i = new_identity(store, "keys").await;
    let k = key(i.id);
    let seq = last_seq(store).await;
    let a = audit("key.create", k.id);
    store.create_key(&k, &a).await.unwrap();
    assert_eq!(audit_since(store, seq).await, vec![a]);

    assert_eq!(store.get_key(k.id).await.unwrap(), Some(k.clone()));
    let found = store.get_key_by_digest(&k.digest).await.unwrap().unwrap();
    assert_eq!(found.key, k);
    assert!(found.identity_enabled);
    assert_eq!(store.get_key(Uuid::now_v7()).await.unwrap(), None);
    let other = mint(&KeyPrefix::default()).digest;
    assert!(store.get_key_by_digest(&other).await.unwrap().is_none());

    // A key with everything optional left empty, and one already revoked and lineaged.
    let m = new_key(store, minimal_key(i.id)).await;
    assert_eq!(store.get_key(m.id).await.unwrap(), Some(m.clone()));
    let mut r = key(i.id);
    r.revoked_at = Some(now() - Duration::microseconds(5));
    r.enabled = false;
    r.remaining = Some(0);
    r.rotated_from = Some(k.id);
    let r = new_key(store, r).await;
    assert_eq!(store.get_key(r.id).await.unwrap(), Some(r.clone()));

    assert_eq!(
        all_keys(store, Some(i.id), 10).await,
        vec![k.clone(), m.clone(), r.clone()]
    );
    let digests: BTreeSet<[u8; 32]> = store
        .key_digests_of_identity(i.id)
        .await
        .unwrap()
        .iter()
        .map(|d| d.0)
        .collect();
    assert_eq!(digests, [k.digest.0, m.digest.0, r.digest.0].into());

    // Disabling the identity shows in the digest lookup.
    store
        .update_identity(
            i.id,
            &IdentityPatch {
                enabled: Some(false),
                ..Default::default()
            },
            now(),
            &audit("identity.update", i.id),
        )
        .await
        .unwrap()
        .unwrap();
    let found = store.get_key_by_digest(&k.digest).await.unwrap().unwrap();
    assert!(!found.identity_enabled);
    assert_eq!(found.key, k);
    lookup_now_agrees(store, &[k.digest, m.digest, r.digest, other]).await;
}

/// Where a store answers the verify lookup on the calling thread, it answers exactly
/// what the async lookup does (and sees the latest commit).
async fn lookup_now_agrees(store: &dyn Store, digests: &[KeyDigest]) {
    for d in digests {
        if let Some(now) = store.get_key_by_digest_now(d) {
            assert_eq!(
                now.unwrap(),
                store.get_key_by_digest(d).await.unwrap(),
                "lookup of {}",
                d.to_hex()
            );
        }
    }
}

/// A key needs a live identity and a unique id and digest; refusals write nothing.
pub async fn key_create_conflicts(store: &dyn Store) {
    let i = new_identity(store, "key-conflicts").await;
    let k = new_key(store, key(i.id)).await;
    let seq = last_seq(store).await;

    let orphan = key(Uuid::now_v7());
    assert_conflict(
        store
            .create_key(&orphan, &audit("key.create", orphan.id))
            .await,
        "unknown identity",
    );
    let mut same_digest = key(i.id);
    same_digest.digest = k.digest;
    assert_conflict(
        store
            .create_key(&same_digest, &audit("key.create", same_digest.id))
            .await,
        "duplicate digest",
    );
    let mut same_id = key(i.id);
    same_id.id = k.id;
    assert_conflict(
        store
            .create_key(&same_id, &audit("key.create", same_id.id))
            .await,
        "duplicate id",
    );
    assert!(audit_since(store, seq).await.is_empty());
    assert_eq!(store.get_key(orphan.id).await.unwrap(), None);
    assert_eq!(store.get_key(same_digest.id).await.unwrap(), None);
    assert_eq!(store.get_key(k.id).await.unwrap(), Some(k.clone()));

    let gone = new_identity(store, "key-conflicts-gone").await;
    store
        .delete_identity(gone.id, now(), &audit("identity.delete", gone.id))
        .await
        .unwrap()
        .unwrap();
    let late = key(gone.id);
    assert_conflict(
        store.create_key(&late, &audit("key.create", late.id)).await,
        "deleted identity",
    );

    // The error never carries the digest.
    let err = store
        .create_key(&same_digest, &audit("key.create", same_digest.id))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains(&k.digest.to_hex()),
        "no digest in errors: {err}"
    );
}

/// Keys come in id order, optionally of one identity; the cursor is exclusive.
pub async fn key_pagination(store: &dyn Store) {
    let x = new_identity(store, "kp-x").await;
    let y = new_identity(store, "kp-y").await;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for n in 0..7 {
        if n % 3 == 2 {
            ys.push(new_key(store, key(y.id)).await.id);
        } else {
            xs.push(new_key(store, key(x.id)).await.id);
        }
    }
    xs.sort();
    ys.sort();
    for page in [1, 2, 4, 50] {
        let of_x: Vec<Uuid> = all_keys(store, Some(x.id), page)
            .await
            .iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(of_x, xs, "keys of x, page size {page}");
        let all: Vec<Uuid> = all_keys(store, None, page)
            .await
            .iter()
            .map(|k| k.id)
            .collect();
        assert_strictly_ascending(&all);
        let mine: Vec<Uuid> = all
            .into_iter()
            .filter(|id| xs.contains(id) || ys.contains(id))
            .collect();
        let mut expected = [xs.clone(), ys.clone()].concat();
        expected.sort();
        assert_eq!(mine, expected, "all keys, page size {page}");
    }
    let after = store.list_keys(Some(x.id), Some(xs[0]), 2).await.unwrap();
    assert_eq!(
        after.iter().map(|k| k.id).collect::<Vec<_>>(),
        xs[1..3].to_vec()
    );
    assert!(
        store
            .list_keys(Some(Uuid::now_v7()), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `None` leaves a field, `Some(None)` clears a nullable one, `Some(Some)` sets it.
pub async fn key_patch(store: &dyn Store) {
    let i = new_identity(store, "key-patch").await;
    let k = new_key(store, key(i.id)).await;

    let t1 = now() + Duration::seconds(2);
    let seq = last_seq(store).await;
    let a = audit("key.update", k.id);
    let same = store
        .update_key(k.id, &KeyPatch::default(), t1, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        same,
        KeyRecord {
            updated_at: t1,
            ..k.clone()
        }
    );
    assert_eq!(audit_since(store, seq).await, vec![a]);

    // Clear the nullable fields.
    let t2 = t1 + Duration::microseconds(1);
    let clear = KeyPatch {
        expires_at: Some(None),
        remaining: Some(None),
        ..Default::default()
    };
    let cleared = store
        .update_key(k.id, &clear, t2, &audit("key.update", k.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.expires_at, None);
    assert_eq!(cleared.remaining, None);
    assert_eq!(cleared.scopes, k.scopes, "untouched");
    assert_eq!(cleared.updated_at, t2);

    // Set everything.
    let t3 = t2 + Duration::microseconds(1);
    let exp = t3 + Duration::hours(5) + Duration::microseconds(123);
    let mut meta = serde_json::Map::new();
    meta.insert("x".into(), json!(null));
    let set = KeyPatch {
        name: Some("renamed".into()),
        scopes: Some(vec![]),
        expires_at: Some(Some(exp)),
        ip_allowlist: Some(vec!["::1".into()]),
        rate_limits: Some(vec![RateLimitSpec {
            name: "m".into(),
            limit: 1,
            window_seconds: 60,
        }]),
        remaining: Some(Some(0)),
        enabled: Some(false),
        meta: Some(meta.clone()),
    };
    let updated = store
        .update_key(k.id, &set, t3, &audit("key.update", k.id))
        .await
        .unwrap()
        .unwrap();
    let expected = KeyRecord {
        name: "renamed".into(),
        scopes: vec![],
        expires_at: Some(exp),
        ip_allowlist: vec!["::1".into()],
        rate_limits: set.rate_limits.clone().unwrap(),
        remaining: Some(0),
        enabled: false,
        meta,
        updated_at: t3,
        ..k.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(store.get_key(k.id).await.unwrap(), Some(expected.clone()));
    assert_eq!(
        store
            .get_key_by_digest(&k.digest)
            .await
            .unwrap()
            .unwrap()
            .key,
        expected
    );

    let seq = last_seq(store).await;
    assert_eq!(
        store
            .update_key(Uuid::now_v7(), &set, t3, &audit("key.update", "x"))
            .await
            .unwrap(),
        None
    );
    assert!(audit_since(store, seq).await.is_empty());
}

/// Revocation sets `revoked_at = now` and never moves it later.
pub async fn revoke_key(store: &dyn Store) {
    let i = new_identity(store, "revoke").await;
    let k = new_key(store, key(i.id)).await;

    let t1 = now() + Duration::seconds(1);
    let seq = last_seq(store).await;
    let a = audit("key.revoke", k.id);
    let r = store.revoke_key(k.id, t1, &a).await.unwrap().unwrap();
    assert_eq!(r.revoked_at, Some(t1));
    assert_eq!(r.updated_at, t1);
    assert_eq!(audit_since(store, seq).await, vec![a]);
    assert_eq!(store.get_key(k.id).await.unwrap(), Some(r.clone()));

    // Again, later: the earlier time stays.
    let r2 = store
        .revoke_key(k.id, t1 + Duration::seconds(5), &audit("key.revoke", k.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r2.revoked_at, Some(t1));

    // A key revoked in the future (a rotation's grace period) is revoked now.
    let mut g = key(i.id);
    g.revoked_at = Some(t1 + Duration::hours(1));
    let g = new_key(store, g).await;
    let r3 = store
        .revoke_key(g.id, t1, &audit("key.revoke", g.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r3.revoked_at, Some(t1));

    let seq = last_seq(store).await;
    assert_eq!(
        store
            .revoke_key(Uuid::now_v7(), t1, &audit("key.revoke", "x"))
            .await
            .unwrap(),
        None
    );
    assert!(audit_since(store, seq).await.is_empty());
}

/// Deleting an identity hides it and revokes its keys, keeping earlier revocations.
pub async fn delete_identity_revokes_keys(store: &dyn Store) {
    let i = new_identity(store, "delete").await;
    let t0 = now();
    let live = new_key(store, key(i.id)).await;
    let mut past = key(i.id);
    past.revoked_at = Some(t0 - Duration::hours(1));
    let past = new_key(store, past).await;
    let mut grace = key(i.id);
    grace.revoked_at = Some(t0 + Duration::hours(1));
    let grace = new_key(store, grace).await;
    let bystander_identity = new_identity(store, "delete-bystander").await;
    let bystander = new_key(store, key(bystander_identity.id)).await;

    let t1 = t0 + Duration::microseconds(10);
    let seq = last_seq(store).await;
    let a = audit("identity.delete", i.id);
    let touched = store.delete_identity(i.id, t1, &a).await.unwrap().unwrap();
    assert_eq!(audit_since(store, seq).await, vec![a]);
    let touched: BTreeSet<[u8; 32]> = touched.iter().map(|d| d.0).collect();
    assert_eq!(touched, [live.digest.0, grace.digest.0].into());

    assert_eq!(store.get_identity(i.id).await.unwrap(), None);
    assert!(
        !all_identities(store, 100)
            .await
            .iter()
            .any(|x| x.id == i.id)
    );
    assert_eq!(
        store.get_key(live.id).await.unwrap().unwrap().revoked_at,
        Some(t1)
    );
    assert_eq!(
        store.get_key(grace.id).await.unwrap().unwrap().revoked_at,
        Some(t1)
    );
    assert_eq!(store.get_key(past.id).await.unwrap(), Some(past.clone()));
    assert_eq!(
        store.get_key(bystander.id).await.unwrap(),
        Some(bystander.clone())
    );

    // Keys stay, readable, with the identity reported disabled.
    let found = store
        .get_key_by_digest(&live.digest)
        .await
        .unwrap()
        .unwrap();
    assert!(!found.identity_enabled);
    assert_eq!(found.key.revoked_at, Some(t1));
    assert_eq!(store.key_digests_of_identity(i.id).await.unwrap().len(), 3);
    assert_eq!(all_keys(store, Some(i.id), 10).await.len(), 3);

    // Deleting again, or an unknown id: None, nothing written.
    let seq = last_seq(store).await;
    assert_eq!(
        store
            .delete_identity(i.id, t1, &audit("identity.delete", i.id))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_identity(Uuid::now_v7(), t1, &audit("identity.delete", "x"))
            .await
            .unwrap(),
        None
    );
    assert!(audit_since(store, seq).await.is_empty());

    // An identity without keys deletes to an empty list.
    let empty = new_identity(store, "delete-empty").await;
    assert_eq!(
        store
            .delete_identity(empty.id, t1, &audit("identity.delete", empty.id))
            .await
            .unwrap(),
        Some(vec![])
    );
}

/// Rotation stores the new key and links both ways; the old key's grace period ends at
/// the earlier of its existing revocation and the one given.
pub async fn rotate_key_lineage(store: &dyn Store) {
    let i = new_identity(store, "rotate").await;
    let k1 = new_key(store, key(i.id)).await;

    let now1 = now() + Duration::seconds(1);
    let grace1 = now1 + Duration::hours(1);
    let mut k2 = key(i.id);
    k2.created_at = now1;
    k2.updated_at = now1;
    let seq = last_seq(store).await;
    let a = audit("key.rotate", k1.id);
    let old = store
        .rotate_key(k1.id, &k2, grace1, now1, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(audit_since(store, seq).await, vec![a]);
    let expected_old = KeyRecord {
        rotated_to: Some(k2.id),
        revoked_at: Some(grace1),
        updated_at: now1,
        ..k1.clone()
    };
    assert_eq!(old, expected_old);
    assert_eq!(store.get_key(k1.id).await.unwrap(), Some(expected_old));
    let expected_new = KeyRecord {
        rotated_from: Some(k1.id),
        ..k2.clone()
    };
    assert_eq!(
        store.get_key(k2.id).await.unwrap(),
        Some(expected_new.clone())
    );
    assert_eq!(
        store
            .get_key_by_digest(&k2.digest)
            .await
            .unwrap()
            .unwrap()
            .key,
        expected_new
    );

    // A key whose revocation is already set in the future (e.g. by an earlier policy)
    // keeps the earlier of the two times.
    let soon = now1 + Duration::minutes(5);
    let mut k3 = key(i.id);
    k3.revoked_at = Some(soon);
    let k3 = new_key(store, k3).await;
    let k4 = key(i.id);
    let old3 = store
        .rotate_key(
            k3.id,
            &k4,
            now1 + Duration::hours(2),
            now1,
            &audit("key.rotate", k3.id),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old3.revoked_at, Some(soon), "the earlier time wins");
    assert_eq!(old3.rotated_to, Some(k4.id));
    let old3b = store.get_key(k3.id).await.unwrap().unwrap();
    assert_eq!(old3b, old3);

    // A grace of zero: the old key is revoked right away.
    let k5 = key(i.id);
    let old2 = store
        .rotate_key(k2.id, &k5, now1, now1, &audit("key.rotate", k2.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old2.revoked_at, Some(now1));
    assert_eq!(old2.rotated_from, Some(k1.id), "lineage kept both ways");
    assert_eq!(old2.rotated_to, Some(k5.id));
}

/// Rotating a revoked or already rotated key is a conflict and writes nothing.
pub async fn rotate_key_conflicts(store: &dyn Store) {
    let i = new_identity(store, "rotate-conflicts").await;
    let t = now();
    let k1 = new_key(store, key(i.id)).await;
    let k2 = key(i.id);
    store
        .rotate_key(
            k1.id,
            &k2,
            t + Duration::hours(1),
            t,
            &audit("key.rotate", k1.id),
        )
        .await
        .unwrap()
        .unwrap();
    let k1_after = store.get_key(k1.id).await.unwrap().unwrap();

    let seq = last_seq(store).await;
    // Already rotated (still in its grace period).
    let again = key(i.id);
    assert_conflict(
        store
            .rotate_key(
                k1.id,
                &again,
                t + Duration::hours(2),
                t,
                &audit("key.rotate", k1.id),
            )
            .await,
        "already rotated",
    );
    // Revoked.
    let mut revoked = key(i.id);
    revoked.revoked_at = Some(t - Duration::seconds(1));
    let revoked = new_key(store, revoked).await;
    let seq2 = last_seq(store).await;
    assert_eq!(seq2, seq + 1);
    let again2 = key(i.id);
    assert_conflict(
        store
            .rotate_key(revoked.id, &again2, t, t, &audit("key.rotate", revoked.id))
            .await,
        "already revoked",
    );
    // Revoked exactly now counts as revoked.
    let mut at_now = key(i.id);
    at_now.revoked_at = Some(t);
    let at_now = new_key(store, at_now).await;
    let seq3 = last_seq(store).await;
    assert_conflict(
        store
            .rotate_key(at_now.id, &key(i.id), t, t, &audit("key.rotate", at_now.id))
            .await,
        "revoked at now",
    );
    assert_eq!(last_seq(store).await, seq3);
    assert!(audit_since(store, seq2).await.len() == 1, "only the create");
    assert_eq!(store.get_key(again.id).await.unwrap(), None);
    assert_eq!(store.get_key(again2.id).await.unwrap(), None);
    assert_eq!(store.get_key(k1.id).await.unwrap(), Some(k1_after));

    // A new key whose digest is taken: conflict, and the old key is untouched.
    let k3 = new_key(store, key(i.id)).await;
    let mut clash = key(i.id);
    clash.digest = k2.digest;
    assert_conflict(
        store
            .rotate_key(k3.id, &clash, t, t, &audit("key.rotate", k3.id))
            .await,
        "digest clash",
    );
    assert_eq!(store.get_key(k3.id).await.unwrap(), Some(k3.clone()));

    let seq = last_seq(store).await;
    assert_eq!(
        store
            .rotate_key(Uuid::now_v7(), &key(i.id), t, t, &audit("key.rotate", "x"))
            .await
            .unwrap(),
        None
    );
    assert!(audit_since(store, seq).await.is_empty());
}

/// The quota counts down to 0 and stops; unlimited and unknown keys say so.
pub async fn consume_remaining(store: &dyn Store) {
    let i = new_identity(store, "remaining").await;
    let mut k = key(i.id);
    k.remaining = Some(3);
    let k = new_key(store, k).await;
    for left in [2, 1, 0] {
        assert_eq!(
            store.consume_remaining(k.id).await.unwrap(),
            Consumed::Taken { left }
        );
    }
    assert_eq!(
        store.consume_remaining(k.id).await.unwrap(),
        Consumed::Exhausted
    );
    assert_eq!(
        store.get_key(k.id).await.unwrap().unwrap().remaining,
        Some(0)
    );
    store.refund_remaining(k.id).await.unwrap();
    assert_eq!(
        store.get_key(k.id).await.unwrap().unwrap().remaining,
        Some(1)
    );
    assert_eq!(
        store.consume_remaining(k.id).await.unwrap(),
        Consumed::Taken { left: 0 }
    );

    let u = new_key(store, minimal_key(i.id)).await;
    assert_eq!(
        store.consume_remaining(u.id).await.unwrap(),
        Consumed::Unlimited
    );
    store.refund_remaining(u.id).await.unwrap();
    assert_eq!(store.get_key(u.id).await.unwrap().unwrap().remaining, None);
    assert_eq!(
        store.consume_remaining(Uuid::now_v7()).await.unwrap(),
        Consumed::Missing
    );
    store.refund_remaining(Uuid::now_v7()).await.unwrap();
}

/// 50 concurrent consumers of a quota of 20 take exactly 20.
pub async fn consume_remaining_concurrent(store: Arc<dyn Store>) {
    const QUOTA: i64 = 20;
    const CALLERS: usize = 50;
    let i = new_identity(&*store, "remaining-concurrent").await;
    let mut k = key(i.id);
    k.remaining = Some(QUOTA);
    let k = new_key(&*store, k).await;

    let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let store = store.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            store.consume_remaining(k.id).await.unwrap()
        });
    }
    let mut left = Vec::new();
    let mut exhausted = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Consumed::Taken { left: l } => left.push(l),
            Consumed::Exhausted => exhausted += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    left.sort();
    assert_eq!(left, (0..QUOTA).collect::<Vec<_>>(), "each unit taken once");
    assert_eq!(exhausted, CALLERS - QUOTA as usize);
    assert_eq!(
        store.get_key(k.id).await.unwrap().unwrap().remaining,
        Some(0)
    );
}

/// Last-use times only move forward, for a whole batch at once.
pub async fn record_last_used(store: &dyn Store) {
    let i = new_identity(store, "last-used").await;
    let a = new_key(store, minimal_key(i.id)).await; // never used
    let b = new_key(store, key(i.id)).await; // used before
    let t = now();
    let seq = last_seq(store).await;
    store
        .record_last_used(&[
            (a.id, t),
            (b.id, t + Duration::microseconds(5)),
            (a.id, t - Duration::seconds(1)), // older, in the same batch
            (Uuid::now_v7(), t),              // unknown: ignored
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_key(a.id).await.unwrap().unwrap().last_used_at,
        Some(t)
    );
    assert_eq!(
        store.get_key(b.id).await.unwrap().unwrap().last_used_at,
        Some(t + Duration::microseconds(5))
    );
    // An older time does not move it back.
    store
        .record_last_used(&[(a.id, t - Duration::hours(1))])
        .await
        .unwrap();
    assert_eq!(
        store.get_key(a.id).await.unwrap().unwrap().last_used_at,
        Some(t)
    );
    store.record_last_used(&[]).await.unwrap();
    // Not an audited change, and it does not touch `updated_at`.
    assert!(audit_since(store, seq).await.is_empty());
    assert_eq!(
        store.get_key(b.id).await.unwrap().unwrap().updated_at,
        b.updated_at
    );
}

/// The audit log holds one record per change, in the order of the changes, with
/// increasing sequence numbers; `after` is an exclusive cursor.
pub async fn audit_log_order(store: &dyn Store) {
    let seq0 = last_seq(store).await;
    let i = identity("audit");
    let k = key(i.id);
    let t = now();
    let entries = [
        audit("identity.create", i.id),
        audit("key.create", k.id),
        audit("key.update", k.id),
        audit("key.revoke", k.id),
        audit("identity.update", i.id),
        audit("identity.delete", i.id),
    ];
    store.create_identity(&i, &entries[0]).await.unwrap();
    store.create_key(&k, &entries[1]).await.unwrap();
    store
        .update_key(k.id, &KeyPatch::default(), t, &entries[2])
        .await
        .unwrap()
        .unwrap();
    store
        .revoke_key(k.id, t, &entries[3])
        .await
        .unwrap()
        .unwrap();
    store
        .update_identity(i.id, &IdentityPatch::default(), t, &entries[4])
        .await
        .unwrap()
        .unwrap();
    store
        .delete_identity(i.id, t, &entries[5])
        .await
        .unwrap()
        .unwrap();

    let records = store.list_audit(Some(seq0), 100).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        entries.to_vec()
    );
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq increases");
    assert!(seqs[0] > seq0);

    // Paging with the cursor gives the same records.
    let mut paged = Vec::new();
    let mut after = Some(seq0);
    loop {
        let page = store.list_audit(after, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        paged.extend(page);
    }
    assert_eq!(paged, records);

    // `None` starts at the beginning.
    let first = store.list_audit(None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].seq <= seqs[0]);
    assert!(
        store
            .list_audit(Some(i64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The expiry sweep records each expiry once, skips keys revoked before they expired,
/// and only keys whose expiry has passed.
pub async fn sweep_expired(store: &dyn Store) {
    let i = new_identity(store, "sweep").await;
    let t = now();
    let mut expired = key(i.id);
    expired.expires_at = Some(t - Duration::seconds(5));
    let expired = new_key(store, expired).await;
    let mut revoked_first = key(i.id);
    revoked_first.expires_at = Some(t - Duration::seconds(4));
    revoked_first.revoked_at = Some(t - Duration::seconds(10));
    let revoked_first = new_key(store, revoked_first).await;
    let mut later = key(i.id);
    later.expires_at = Some(t + Duration::seconds(1));
    let later = new_key(store, later).await;

    let seq = last_seq(store).await;
    let swept = store.sweep_expired(t, 100_000).await.unwrap();
    assert!(swept.contains(&expired.id), "an expired key is recorded");
    assert!(
        !swept.contains(&revoked_first.id),
        "revoked before it expired"
    );
    assert!(!swept.contains(&later.id), "not expired yet");
    let entries = audit_since(store, seq).await;
    let e = entries
        .iter()
        .find(|e| e.target == expired.id.to_string())
        .expect("an audit entry for the expired key");
    assert_eq!(e.action, "key.expire");
    assert_eq!(e.actor, "system");
    assert_eq!(e.detail["identity_id"], json!(i.id));
    assert_eq!(entries.len(), swept.len());

    let again = store.sweep_expired(t, 100_000).await.unwrap();
    assert!(!again.contains(&expired.id), "recorded once");
    let after = store
        .sweep_expired(t + Duration::seconds(2), 100_000)
        .await
        .unwrap();
    assert!(after.contains(&later.id));
    assert!(!after.contains(&expired.id));
}

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL database of its own for one test, created empty and dropped (with any
/// connections left to it) when this is dropped, so tests run in parallel.
///
/// The server is `KEYWARD_TEST_POSTGRES_URL` (a database URL whose user may create
/// databases), by default `postgres://postgres@127.0.0.1:5432/postgres`.
pub struct TempDatabase {
    /// The URL of the new database.
    pub url: String,
    name: String,
    admin: String,
}

impl TempDatabase {
    pub async fn create() -> TempDatabase {
        use sqlx::Connection;
        let admin = std::env::var("KEYWARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let secs = Utc::now().timestamp();
        let name = format!("kwtest_{secs}_{}", Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL for tests at {admin} (KEYWARD_TEST_POSTGRES_URL): {e}")
            });
        // Databases left by test processes that were killed (no drop ran): any older
        // than an hour, which no test lasts.
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname ~ '^kwtest_[0-9]+_[0-9a-f]{32}$' \
             AND split_part(datname, '_', 2)::bigint < $1",
        )
        .bind(secs - 3600)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for old in stale {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {old} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
        // A name of our own making: [a-z0-9_] only, so it can be spliced in.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let (base, _) = admin
            .rsplit_once('/')
            .expect("KEYWARD_TEST_POSTGRES_URL has a database path");
        let base = base.to_owned();
        let query = admin.split_once('?').map(|(_, q)| format!("?{q}"));
        TempDatabase {
            url: format!("{base}/{name}{}", query.unwrap_or_default()),
            name,
            admin,
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime, which cannot block on another future: use a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
