//! Conformance tests of [`AnomalyStore`](crate::anomalies::AnomalyStore), run on every
//! store (`tests/anomalies.rs`). Each test runs on a fresh store (the cursor is global).

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;

use keyward_core::VerifyCode;
use keyward_core::anomaly::{Anomaly, AnomalyKind, Severity};
use keyward_core::anomaly_response::{AnomalyPolicy, ResponseAction};
use keyward_core::time::Timestamp;
use keyward_core::usage::{UsageEvent, UsageTags};

use super::{audit, now};
use crate::Store;
use crate::anomalies::{AnomalyQuery, CursorMove, NewAnomaly};

fn anomaly(
    at: Timestamp,
    key: Uuid,
    identity: Uuid,
    kind: AnomalyKind,
    sev: Severity,
) -> NewAnomaly {
    NewAnomaly {
        id: Uuid::now_v7(),
        anomaly: Anomaly {
            at,
            key_id: Some(key),
            identity_id: Some(identity),
            kind,
            severity: sev,
            detail: format!("{kind} for {key}"),
            evidence: json!({"ip": "203.0.113.9", "observed": 40, "baseline": 2}),
        },
        subject: key.to_string(),
    }
}

async fn audits(store: &dyn Store, action: &str) -> usize {
    store
        .list_audit(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == action)
        .count()
}

/// The cursor moves by compare-and-set, with the anomalies; an episode's repeats within
/// the regroup window are left out; pending anomalies are finished once, with their
/// audit record.
pub async fn record_with_the_cursor_and_finish_once(store: &dyn Store) {
    let t0 = now();
    let regroup = Duration::minutes(10);
    let (key, other, identity) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(store.detect_cursor().await.unwrap(), None);
    let first = anomaly(t0, key, identity, AnomalyKind::NewNetwork, Severity::High);
    let again = anomaly(
        t0 + Duration::minutes(1),
        key,
        identity,
        AnomalyKind::NewNetwork,
        Severity::High,
    );
    let other_kind = anomaly(t0, key, identity, AnomalyKind::TrafficSpike, Severity::Low);
    let other_key = anomaly(
        t0,
        other,
        identity,
        AnomalyKind::NewNetwork,
        Severity::Medium,
    );
    let items = [
        first.clone(),
        again.clone(),
        other_kind.clone(),
        other_key.clone(),
    ];
    let mv = CursorMove { from: None, to: t0 };
    let written = store.record_anomalies(mv, &items, regroup).await.unwrap();
    assert_eq!(
        written,
        Some(vec![first.id, other_kind.id, other_key.id]),
        "the repeat within the regroup window is left out"
    );
    assert_eq!(store.detect_cursor().await.unwrap(), Some(t0));
    // A stale cursor (another leader moved it): nothing is written.
    let t1 = t0 + Duration::seconds(5);
    let late = anomaly(
        t1 + regroup,
        key,
        identity,
        AnomalyKind::NewNetwork,
        Severity::High,
    );
    let stale = CursorMove { from: None, to: t1 };
    assert_eq!(
        store
            .record_anomalies(stale, std::slice::from_ref(&late), regroup)
            .await
            .unwrap(),
        None
    );
    let stale = CursorMove {
        from: Some(t1),
        to: t1,
    };
    assert_eq!(
        store
            .record_anomalies(stale, std::slice::from_ref(&late), regroup)
            .await
            .unwrap(),
        None
    );
    assert!(store.get_anomaly(late.id).await.unwrap().is_none());
    // From the right place; past the regroup window the kind may alert again.
    let mv = CursorMove {
        from: Some(t0),
        to: t1,
    };
    let written = store
        .record_anomalies(mv, std::slice::from_ref(&late), regroup)
        .await
        .unwrap();
    assert_eq!(written, Some(vec![late.id]));
    assert_eq!(store.detect_cursor().await.unwrap(), Some(t1));

    let pending = store.pending_anomalies(100).await.unwrap();
    assert_eq!(pending.len(), 4);
    assert_eq!(
        pending[0].anomaly, first.anomaly,
        "evidence and all round-trip"
    );
    assert!(pending.iter().all(|p| p.action_taken.is_none()));
    let before = audits(store, "anomaly.detected").await;
    let a = audit("anomaly.detected", first.id);
    assert!(
        store
            .finish_anomaly(first.id, "notified", &a)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_anomaly(first.id, "key_disabled", &a)
            .await
            .unwrap()
    );
    assert_eq!(audits(store, "anomaly.detected").await, before + 1);
    let got = store.get_anomaly(first.id).await.unwrap().unwrap();
    assert_eq!(got.action_taken.as_deref(), Some("notified"));
    assert_eq!(store.pending_anomalies(100).await.unwrap().len(), 3);
}

/// Filters, newest first, and the page cursor.
pub async fn list_filters_and_pages(store: &dyn Store) {
    let t0 = now() - Duration::hours(1);
    let (identity, other_identity) = (Uuid::now_v7(), Uuid::now_v7());
    let keys: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut items = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let sev = [Severity::Low, Severity::Medium, Severity::High][i];
        items.push(anomaly(
            t0 + Duration::seconds(i as i64),
            *k,
            identity,
            AnomalyKind::ScopeProbing,
            sev,
        ));
    }
    items.push(anomaly(
        t0 + Duration::seconds(9),
        keys[0],
        other_identity,
        AnomalyKind::DormantKeyUsed,
        Severity::High,
    ));
    let mv = CursorMove { from: None, to: t0 };
    store
        .record_anomalies(mv, &items, Duration::zero())
        .await
        .unwrap()
        .unwrap();
    let q = |f: &dyn Fn(&mut AnomalyQuery)| {
        let mut q = AnomalyQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let ids =
        |v: Vec<crate::anomalies::StoredAnomaly>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let all = ids(store.list_anomalies(&q(&|_| {})).await.unwrap());
    assert_eq!(
        all,
        vec![items[3].id, items[2].id, items[1].id, items[0].id],
        "newest first"
    );
    let by_key = ids(store
        .list_anomalies(&q(&|q| q.key_id = Some(keys[0])))
        .await
        .unwrap());
    assert_eq!(by_key, vec![items[3].id, items[0].id]);
    let by_identity = ids(store
        .list_anomalies(&q(&|q| q.identity_id = Some(identity)))
        .await
        .unwrap());
    assert_eq!(by_identity.len(), 3);
    let by_kind = ids(store
        .list_anomalies(&q(&|q| q.kind = Some(AnomalyKind::DormantKeyUsed)))
        .await
        .unwrap());
    assert_eq!(by_kind, vec![items[3].id]);
    let by_sev = ids(store
        .list_anomalies(&q(&|q| q.severity = Some(Severity::Medium)))
        .await
        .unwrap());
    assert_eq!(by_sev, vec![items[1].id]);
    let since = ids(store
        .list_anomalies(&q(&|q| q.since = Some(t0 + Duration::seconds(2))))
        .await
        .unwrap());
    assert_eq!(since, vec![items[3].id, items[2].id]);
    // Pages of two.
    let page1 = store.list_anomalies(&q(&|q| q.limit = 2)).await.unwrap();
    let last = page1.last().unwrap();
    let before = Some((last.anomaly.at, last.id));
    let page2 = ids(store
        .list_anomalies(&q(&|q| {
            q.limit = 2;
            q.before = before
        }))
        .await
        .unwrap());
    assert_eq!(page2, vec![items[1].id, items[0].id]);
    // Retention keeps what is pending, removes old finished ones.
    let a = audit("anomaly.detected", items[0].id);
    assert!(
        store
            .finish_anomaly(items[0].id, "notified", &a)
            .await
            .unwrap()
    );
    let pruned = store
        .prune_anomalies(t0 + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(store.list_anomalies(&q(&|_| {})).await.unwrap().len(), 3);
}

/// The detectors read back exactly the usage events recorded, by time range.
pub async fn usage_events_read_back_in_time_order(store: &dyn Store) {
    let t0 = now() - Duration::minutes(5);
    let (key, identity) = (Uuid::now_v7(), Uuid::now_v7());
    let mut tags = UsageTags::new();
    tags.insert("route".into(), "/orders".into());
    let events: Vec<UsageEvent> = (0..10)
        .map(|i| UsageEvent {
            at: t0 + Duration::milliseconds(i * 100),
            key_id: (i % 2 == 0).then_some(key),
            identity_id: (i % 2 == 0).then_some(identity),
            code: if i % 2 == 0 {
                VerifyCode::Valid
            } else {
                VerifyCode::NotFound
            },
            ip: Some(
                if i % 3 == 0 {
                    "2001:db8::1"
                } else {
                    "198.51.100.7"
                }
                .parse()
                .unwrap(),
            ),
            scopes: if i % 2 == 0 {
                vec!["orders:read".into(), "orders:write".into()]
            } else {
                vec![]
            },
            latency_us: 17,
            tags: (i == 4).then(|| tags.clone()),
        })
        .collect();
    store.record_usage(&events).await.unwrap();
    let mut got = Vec::new();
    store
        .usage_events_after(
            t0 - Duration::seconds(1),
            t0 + Duration::seconds(10),
            100,
            &mut got,
        )
        .await
        .unwrap();
    assert_eq!(got, events);
    // `after` is exclusive, `until` inclusive, `limit` counts.
    // What `out` held before is replaced.
    store
        .usage_events_after(events[2].at, events[5].at, 100, &mut got)
        .await
        .unwrap();
    assert_eq!(got, events[3..=5].to_vec());
    store
        .usage_events_after(
            t0 - Duration::seconds(1),
            t0 + Duration::seconds(10),
            4,
            &mut got,
        )
        .await
        .unwrap();
    assert_eq!(got, events[..4].to_vec());
    let n = store
        .count_usage_events_after(events[2].at, events[5].at)
        .await
        .unwrap();
    assert_eq!(n, 3);
}

/// Paging as the tail does, through batches larger than any storage unit, spread over
/// many seconds, and a late batch of stragglers older than what came before: every
/// event comes back exactly once, in time order, and counts agree.
pub async fn usage_events_page_through_large_and_late_batches(store: &dyn Store) {
    let t0 = now() - Duration::minutes(30);
    let key = Uuid::now_v7();
    let event = |ms: i64, n: u32| UsageEvent {
        at: t0 + Duration::milliseconds(ms),
        key_id: Some(key),
        identity_id: Some(key),
        code: VerifyCode::Valid,
        ip: Some("192.0.2.9".parse().unwrap()),
        scopes: vec![],
        latency_us: n,
        tags: None,
    };
    // 9,000 events over 9 s, several to a millisecond, stored in an order not by time.
    let mut first: Vec<UsageEvent> = (0..9000u32)
        .map(|n| event(i64::from((n * 7) % 9000), n))
        .collect();
    first.reverse();
    store.record_usage(&first).await.unwrap();
    // Stragglers, stored later, from before and among the first batch.
    let late: Vec<UsageEvent> = (0..50u32)
        .map(|n| event(i64::from(n) * 200 - 3000, 100_000 + n))
        .collect();
    store.record_usage(&late).await.unwrap();

    let mut all: Vec<UsageEvent> = first.iter().chain(&late).cloned().collect();
    all.sort_by_key(|e| (e.at, e.latency_us));
    let (from, until) = (t0 - Duration::minutes(1), t0 + Duration::minutes(1));
    let mut seen = Vec::new();
    let mut after = from;
    loop {
        let mut page = Vec::new();
        store
            .usage_events_after(after, until, 1000, &mut page)
            .await
            .unwrap();
        assert!(page.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        let full = page.len() == 1000;
        let Some(last) = page.last().map(|e| e.at) else {
            break;
        };
        if full {
            // As the tail does: the page's last instant may continue on the next page.
            page.retain(|e| e.at < last);
            assert!(!page.is_empty());
        }
        after = page.last().unwrap().at;
        seen.extend(page);
        if !full {
            break;
        }
    }
    seen.sort_by_key(|e| (e.at, e.latency_us));
    assert_eq!(seen.len(), all.len());
    assert_eq!(seen, all);
    assert_eq!(
        store.count_usage_events_after(from, until).await.unwrap(),
        all.len() as u64
    );
    // A window inside: 2.5 s of the first batch and the stragglers among them.
    let (a, b) = (
        t0 + Duration::milliseconds(1500),
        t0 + Duration::milliseconds(4000),
    );
    let inside = all.iter().filter(|e| e.at > a && e.at <= b).count() as u64;
    assert_eq!(store.count_usage_events_after(a, b).await.unwrap(), inside);
    let mut page = Vec::new();
    store
        .usage_events_after(a, b, 100_000, &mut page)
        .await
        .unwrap();
    assert_eq!(page.len() as u64, inside);
}

/// A policy per identity, audit-logged; none set means none stored.
pub async fn policies_round_trip(store: &dyn Store) {
    let identity = Uuid::now_v7();
    assert_eq!(store.get_anomaly_policy(identity).await.unwrap(), None);
    let policy = AnomalyPolicy {
        action: ResponseAction::DisableKey,
        min_severity: Severity::Medium,
    };
    let before = audits(store, "identity.anomaly_policy").await;
    store
        .put_anomaly_policy(
            identity,
            &policy,
            now(),
            &audit("identity.anomaly_policy", identity),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_anomaly_policy(identity).await.unwrap(),
        Some(policy)
    );
    let notify = AnomalyPolicy::default();
    store
        .put_anomaly_policy(
            identity,
            &notify,
            now(),
            &audit("identity.anomaly_policy", identity),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_anomaly_policy(identity).await.unwrap(),
        Some(notify)
    );
    assert_eq!(audits(store, "identity.anomaly_policy").await, before + 2);
}
