//! The store conformance suite (`keyward_store::testkit`) on PostgreSQL, each test in a
//! database of its own (created, then dropped), so they run in parallel; plus what only
//! a shared store can show: several stores (nodes) on one database, and the change feed.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::model::KeyPatch;
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::{Change, Consumed, PgStore, Store};

async fn fresh() -> (TempDatabase, PgStore) {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    (db, store)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_db, store) = fresh().await;
            testkit::$name(&store).await;
            store.close().await;
        }
    )*};
}

conformance!(
    bootstrap_once,
    ping,
    identity_roundtrip,
    identity_pagination,
    identity_name_conflict_and_reuse,
    identity_patch,
    key_roundtrip,
    key_create_conflicts,
    key_pagination,
    key_patch,
    revoke_key,
    delete_identity_revokes_keys,
    rotate_key_lineage,
    rotate_key_conflicts,
    consume_remaining,
    record_last_used,
    audit_log_order,
    sweep_expired,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consume_remaining_concurrent() {
    let (_db, store) = fresh().await;
    testkit::consume_remaining_concurrent(Arc::new(store)).await;
}

/// The whole suite in turn on one database: the tests must not depend on an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_store() {
    let (_db, store) = fresh().await;
    testkit::run_all(Arc::new(store)).await;
}

/// Opening runs the migrations again: a no-op; and several nodes opening an empty
/// database at once apply them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_open_one_database_together() {
    let db = TempDatabase::create().await;
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let url = db.url.clone();
        opens.spawn(async move { PgStore::open(&url).await.unwrap() });
    }
    let stores = opens.join_all().await;
    stores[0].ping().await.unwrap();
    let again = PgStore::open(&db.url).await.unwrap();
    again.ping().await.unwrap();
    for s in stores {
        s.close().await;
    }
    again.close().await;
}

/// A quota shared by three stores (three nodes): 200 concurrent takers of a quota of
/// 75 take exactly 75, whichever node they go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_is_strict_across_nodes() {
    const QUOTA: i64 = 75;
    let db = TempDatabase::create().await;
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(PgStore::open_with(&db.url, 8).await.unwrap()));
    }
    let i = testkit::identity("cluster-quota");
    nodes[0]
        .create_identity(&i, &testkit::audit("identity.create", i.id))
        .await
        .unwrap();
    let mut k = testkit::key(i.id);
    k.remaining = Some(QUOTA);
    nodes[1]
        .create_key(&k, &testkit::audit("key.create", k.id))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200 {
        let node = nodes[n % 3].clone();
        tasks.spawn(async move { node.consume_remaining(k.id).await.unwrap() });
    }
    let mut taken = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Consumed::Taken { .. } => taken += 1,
            Consumed::Exhausted => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(taken, QUOTA);
    assert_eq!(
        nodes[2].get_key(k.id).await.unwrap().unwrap().remaining,
        Some(0)
    );
}

/// Audit entries written concurrently through several nodes get one gap-free
/// sequence, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_audit_sequence_across_nodes() {
    let db = TempDatabase::create().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let url = db.url.clone();
        tasks.spawn(async move {
            let node = PgStore::open(&url).await.unwrap();
            for _ in 0..20 {
                let i = testkit::identity("audit-seq");
                node.create_identity(&i, &testkit::audit("identity.create", i.id))
                    .await
                    .unwrap();
            }
            node.close().await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let store = PgStore::open(&db.url).await.unwrap();
    let seqs: Vec<i64> = store
        .list_audit(None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
}

/// Changes made through one node reach another node's change feed, as the digests of
/// the keys they touched; the feed starts with a flush.
#[tokio::test]
async fn change_feed_reports_key_changes() {
    let (db, a) = fresh().await;
    let b = PgStore::open(&db.url).await.unwrap();
    let mut feed = b.change_feed().expect("PostgreSQL has a change feed");
    assert_eq!(next(&mut *feed).await, Change::Flush, "first: a flush");

    let i = testkit::identity("feed");
    a.create_identity(&i, &testkit::audit("identity.create", i.id))
        .await
        .unwrap();
    let k = testkit::key(i.id);
    a.create_key(&k, &testkit::audit("key.create", k.id))
        .await
        .unwrap();
    assert_eq!(next(&mut *feed).await, Change::Keys(vec![k.digest]));
    a.update_key(
        k.id,
        &KeyPatch::default(),
        testkit::now(),
        &testkit::audit("key.update", k.id),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut *feed).await, Change::Keys(vec![k.digest]));
    a.revoke_key(k.id, testkit::now(), &testkit::audit("key.revoke", k.id))
        .await
        .unwrap();
    assert_eq!(next(&mut *feed).await, Change::Keys(vec![k.digest]));

    // A refused change sends nothing: the next thing seen is the flush after it.
    let k2 = testkit::key(uuid::Uuid::now_v7());
    assert!(
        a.create_key(&k2, &testkit::audit("key.create", k2.id))
            .await
            .is_err()
    );
    a.publish_flush().await.unwrap();
    assert_eq!(next(&mut *feed).await, Change::Flush);

    // An identity with more keys than one notification holds.
    let many: Vec<_> = (0..150).map(|_| testkit::minimal_key(i.id)).collect();
    for k in &many {
        a.create_key(k, &testkit::audit("key.create", k.id))
            .await
            .unwrap();
    }
    for _ in 0..150 {
        next(&mut *feed).await;
    }
    a.delete_identity(
        i.id,
        testkit::now(),
        &testkit::audit("identity.delete", i.id),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 151 {
        match next(&mut *feed).await {
            Change::Keys(d) => seen.extend(d),
            Change::Flush => panic!("unexpected flush"),
        }
    }
    assert!(seen.contains(&k.digest));
    assert!(many.iter().all(|k| seen.contains(&k.digest)));
}

async fn next(feed: &mut dyn keyward_store::ChangeFeed) -> Change {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("a change within 10 s")
}

/// One leader at a time; when it goes (its session ends), another node takes over.
#[tokio::test]
async fn one_job_leader_and_takeover() {
    let (db, a) = fresh().await;
    let b = PgStore::open(&db.url).await.unwrap();
    let mut la = a.leadership().expect("PostgreSQL elects a leader");
    let mut lb = b.leadership().unwrap();
    assert!(la.lead().await, "the first to ask leads");
    assert!(!lb.lead().await, "only one leader");
    assert!(la.lead().await, "and it keeps the lead");
    assert!(!lb.lead().await);
    drop(la); // the leader dies: its session, and the lock, go with it
    let start = std::time::Instant::now();
    while !lb.lead().await {
        assert!(start.elapsed() < Duration::from_secs(5), "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
