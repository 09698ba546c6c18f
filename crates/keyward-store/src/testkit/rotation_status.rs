//! Conformance tests of the rotation status queries of
//! [`UsageStore`](crate::usage::UsageStore) (issue 7, item 5), run on every store
//! (`tests/rotation_status.rs`): an old key's sources since its rotation, the keys in
//! their grace, and the once-only `key.old_version_in_use` notice.

use chrono::Duration;

use keyward_core::VerifyCode;
use keyward_core::usage::UsageEvent;

use super::{audit, audit_since, key, last_seq, new_identity, new_key, now};
use crate::Store;

/// Accepted verifications since a time, grouped by address and tags, newest first;
/// other keys, other outcomes and earlier events are left out.
pub async fn key_sources_since(store: &dyn Store) {
    let i = new_identity(store, "rotation-sources").await;
    let k = new_key(store, key(i.id)).await;
    let other = new_key(store, key(i.id)).await;
    let since = now() - Duration::minutes(10);
    let ev = |secs: i64, key_id, code, ip: &str, tag: Option<&str>| UsageEvent {
        at: since + Duration::seconds(secs),
        key_id: Some(key_id),
        identity_id: Some(i.id),
        code,
        ip: Some(ip.parse().unwrap()),
        scopes: vec![],
        latency_us: 1,
        tags: tag.map(|t| [("service".to_owned(), t.to_owned())].into()),
    };
    let events = vec![
        ev(-5, k.id, VerifyCode::Valid, "10.0.0.1", None), // before: left out
        ev(1, k.id, VerifyCode::Valid, "10.0.0.1", None),
        ev(2, k.id, VerifyCode::Valid, "10.0.0.1", None),
        ev(3, k.id, VerifyCode::Valid, "10.0.0.2", Some("billing")),
        ev(4, k.id, VerifyCode::RateLimited, "10.0.0.3", None), // refused: left out
        ev(5, other.id, VerifyCode::Valid, "10.0.0.4", None),   // another key
    ];
    store.record_usage(&events).await.unwrap();

    let got = store.key_sources_since(k.id, since, 10).await.unwrap();
    let summary: Vec<_> = got
        .iter()
        .map(|s| (s.ip.clone().unwrap(), s.count, s.last_seen))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("10.0.0.2".to_owned(), 1, since + Duration::seconds(3)),
            ("10.0.0.1".to_owned(), 2, since + Duration::seconds(2)),
        ],
        "newest first"
    );
    assert_eq!(got[0].tags, Some(serde_json::json!({"service": "billing"})));
    assert_eq!(got[1].tags, None);
    let limited = store.key_sources_since(k.id, since, 1).await.unwrap();
    assert_eq!(limited.len(), 1);
    let none = store
        .key_sources_since(k.id, since + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Keys in their grace that were used since their rotation are listed until their
/// notice is written, which happens once, with its audit entry in the same transaction.
pub async fn old_version_notice_once(store: &dyn Store) {
    let i = new_identity(store, "rotation-notice").await;
    let t = now();
    let old = new_key(store, key(i.id)).await;
    let new = key(i.id);
    let grace_end = t + Duration::minutes(30);
    store
        .rotate_key(old.id, &new, grace_end, t, &audit("key.rotate", old.id))
        .await
        .unwrap()
        .unwrap();
    // A key rotated with no grace left is not in its grace.
    let gone = new_key(store, key(i.id)).await;
    store
        .rotate_key(gone.id, &key(i.id), t, t, &audit("key.rotate", gone.id))
        .await
        .unwrap()
        .unwrap();

    // In its grace too, but unused since its rotation: left out.
    let unused = new_key(store, key(i.id)).await;
    store
        .rotate_key(
            unused.id,
            &key(i.id),
            grace_end,
            t,
            &audit("key.rotate", unused.id),
        )
        .await
        .unwrap()
        .unwrap();
    let used = |key_id, code| UsageEvent {
        at: t + Duration::seconds(1),
        key_id: Some(key_id),
        identity_id: Some(i.id),
        code,
        ip: Some("10.0.0.1".parse().unwrap()),
        scopes: vec![],
        latency_us: 1,
        tags: None,
    };
    store
        .record_usage(&[
            used(old.id, VerifyCode::Valid),
            used(unused.id, VerifyCode::RateLimited),
        ])
        .await
        .unwrap();

    let until = t + Duration::hours(1);
    let ids = |keys: Vec<keyward_core::model::KeyRecord>| -> Vec<uuid::Uuid> {
        keys.iter().map(|k| k.id).collect()
    };
    let listed = ids(store.keys_in_grace(t, until, 1000).await.unwrap());
    assert!(listed.contains(&old.id), "in its grace");
    assert!(!listed.contains(&gone.id), "revoked already");
    assert!(!listed.contains(&new.id), "not rotated");
    assert!(!listed.contains(&unused.id), "not used since its rotation");
    let later = ids(store
        .keys_in_grace(t, t + Duration::minutes(10), 1000)
        .await
        .unwrap());
    assert!(!later.contains(&old.id), "its grace ends after `until`");

    let seq = last_seq(store).await;
    let notice = audit("key.old_version_in_use", old.id);
    assert!(
        store
            .record_old_version_notice(old.id, &notice)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_old_version_notice(old.id, &audit("key.old_version_in_use", old.id))
            .await
            .unwrap(),
        "written once"
    );
    assert_eq!(audit_since(store, seq).await, vec![notice]);
    let listed = ids(store.keys_in_grace(t, until, 1000).await.unwrap());
    assert!(!listed.contains(&old.id), "noticed already");
}
