//! Conformance tests of [`ConsoleStore`](crate::console::ConsoleStore): every store runs
//! them (`tests/console.rs`). Each uses actions and targets of its own, so it tolerates
//! data written by others.

use serde_json::json;
use uuid::Uuid;

use chrono::Duration;
use keyward_core::VerifyCode;
use keyward_core::time::Timestamp;
use keyward_core::usage::Bucket;

use super::usage::event;
use super::{audit, minimal_key, new_identity, new_key};
use crate::Store;
use crate::console::AuditSearch;
use crate::usage::UsageSubject;

fn search(f: impl FnOnce(&mut AuditSearch)) -> AuditSearch {
    let mut s = AuditSearch {
        limit: 100,
        ..Default::default()
    };
    f(&mut s);
    s
}

/// Newest first, each filter narrows, `before` pages, and the text search is
/// case-insensitive over actor, action, target and detail.
pub async fn search_audit_filters_newest_first(store: &dyn Store) {
    // Each test run has actions of its own: `t<uuid>.a` and `t<uuid>.b`.
    let tag = format!("t{}", Uuid::now_v7().simple());
    let (a, b) = (format!("{tag}.a"), format!("{tag}.b"));
    let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
    // An identity's change goes through the store's ordinary path too.
    new_identity(store, &format!("console-{tag}")).await;
    let mut entries = Vec::new();
    for (action, target) in [(&a, t1), (&b, t1), (&a, t2), (&b, t2)] {
        let mut e = audit(action, target);
        e.detail = json!({"note": format!("Needle-{target}")});
        // A mutating call that writes only its audit entry: an identity create.
        let i = super::identity(&format!("{action}-{target}"));
        store.create_identity(&i, &e).await.unwrap();
        entries.push(e);
    }
    let all = store
        .search_audit(&search(|s| s.action_prefix = Some(format!("{tag}."))))
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert_eq!(all[0].entry.action, b);
    assert_eq!(all[0].entry.target, t2.to_string());

    let only_a = store
        .search_audit(&search(|s| s.actions = vec![a.clone()]))
        .await
        .unwrap();
    assert_eq!(only_a.len(), 2);
    assert!(only_a.iter().all(|r| r.entry.action == a));

    let both = store
        .search_audit(&search(|s| s.actions = vec![a.clone(), b.clone()]))
        .await
        .unwrap();
    assert_eq!(both.len(), 4);

    let t1_only = store
        .search_audit(&search(|s| {
            s.action_prefix = Some(format!("{tag}."));
            s.targets = vec![t1.to_string()];
        }))
        .await
        .unwrap();
    assert_eq!(t1_only.len(), 2);
    assert!(t1_only.iter().all(|r| r.entry.target == t1.to_string()));

    // Case-insensitive, in the detail.
    let needle = store
        .search_audit(&search(|s| {
            s.text = Some(format!("needle-{t2}").to_uppercase())
        }))
        .await
        .unwrap();
    assert_eq!(needle.len(), 2);
    assert!(needle.iter().all(|r| r.entry.target == t2.to_string()));

    // Paging: before the newest, with a limit of one.
    let page = store
        .search_audit(&search(|s| {
            s.action_prefix = Some(format!("{tag}."));
            s.before = Some(all[0].seq);
            s.limit = 1;
        }))
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, all[1].seq);

    // The actor filter, and a prefix that is not a pattern: `%` matches nothing.
    let by_actor = store
        .search_audit(&search(|s| {
            s.action_prefix = Some(format!("{tag}."));
            s.actor = Some("system".into());
        }))
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 4);
    let nobody = store
        .search_audit(&search(|s| {
            s.action_prefix = Some(format!("{tag}."));
            s.actor = Some("nobody".into());
        }))
        .await
        .unwrap();
    assert!(nobody.is_empty());
    let pattern = store
        .search_audit(&search(|s| s.action_prefix = Some(format!("{tag}%"))))
        .await
        .unwrap();
    assert!(pattern.is_empty());
}

/// The overall counts are the sum of every identity's, per bucket and outcome.
pub async fn usage_counts_overall_sums_every_key(store: &dyn Store) {
    let t: Timestamp = "2025-03-07T08:00:00Z".parse().unwrap();
    let (i, j) = (
        new_identity(store, "overall-a").await,
        new_identity(store, "overall-b").await,
    );
    let a = new_key(store, minimal_key(i.id)).await;
    let b = new_key(store, minimal_key(j.id)).await;
    let events = vec![
        event(t, Some((a.id, i.id)), VerifyCode::Valid, "10.0.0.1"),
        event(
            t + Duration::seconds(5),
            Some((b.id, j.id)),
            VerifyCode::Valid,
            "10.0.0.2",
        ),
        event(
            t + Duration::seconds(70),
            Some((b.id, j.id)),
            VerifyCode::RateLimited,
            "10.0.0.2",
        ),
        event(
            t + Duration::seconds(80),
            None,
            VerifyCode::NotFound,
            "10.0.0.3",
        ),
    ];
    store.record_usage(&events).await.unwrap();
    let (from, to) = (t, t + Duration::hours(1));
    let all = store
        .usage_counts_overall(Bucket::Minute, from, to)
        .await
        .unwrap();
    let summed =
        |code: VerifyCode| -> u64 { all.iter().filter(|c| c.code == code).map(|c| c.count).sum() };
    assert_eq!(summed(VerifyCode::Valid), 2);
    assert_eq!(summed(VerifyCode::RateLimited), 1);
    let first_minute: u64 = all.iter().filter(|c| c.start == t).map(|c| c.count).sum();
    assert_eq!(first_minute, 2, "{all:?}");
    // Each identity's counts are a part of the whole.
    let of_j = store
        .usage_counts(UsageSubject::Identity(j.id), Bucket::Minute, from, to)
        .await
        .unwrap();
    assert_eq!(of_j.iter().map(|c| c.count).sum::<u64>(), 2);
}
