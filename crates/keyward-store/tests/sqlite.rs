//! The store conformance suite (`keyward_store::testkit`) on the embedded SQLite store,
//! each test on a fresh store in its own temporary folder; plus what only a store on
//! disk can show (reopening).

use std::sync::Arc;

use keyward_store::testkit;
use keyward_store::{SqliteStore, Store};

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    (dir, store)
}

/// A store on disk in a fresh folder holding one identity and some keys of it.
struct OnDisk {
    _dir: tempfile::TempDir,
    /// The store's folder, to open it again.
    data: std::path::PathBuf,
    store: SqliteStore,
    identity: uuid::Uuid,
    keys: Vec<uuid::Uuid>,
}

async fn on_disk(identity_name: &str, keys: usize) -> OnDisk {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open(&data).await.unwrap();
    let i = testkit::identity(identity_name);
    store
        .create_identity(&i, &testkit::audit("identity.create", i.id))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..keys {
        let k = testkit::key(i.id);
        store
            .create_key(&k, &testkit::audit("key.create", k.id))
            .await
            .unwrap();
        ids.push(k.id);
    }
    OnDisk {
        _dir: dir,
        data,
        store,
        identity: i.id,
        keys: ids,
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_dir, store) = fresh().await;
            testkit::$name(&store).await;
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
    let (_dir, store) = fresh().await;
    testkit::consume_remaining_concurrent(Arc::new(store)).await;
}

/// The whole suite in turn on one store: the tests must not depend on an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_store() {
    let (_dir, store) = fresh().await;
    testkit::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn run_all_in_memory() {
    let store = SqliteStore::open_url("sqlite::memory:").await.unwrap();
    testkit::run_all(Arc::new(store)).await;
}

/// Everything written is there after closing and reopening the store.
#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open(&data).await.unwrap();
    let i = testkit::identity("reopen");
    store
        .create_identity(&i, &testkit::audit("identity.create", i.id))
        .await
        .unwrap();
    let mut k = testkit::key(i.id);
    k.remaining = Some(2);
    store
        .create_key(&k, &testkit::audit("key.create", k.id))
        .await
        .unwrap();
    store.consume_remaining(k.id).await.unwrap();
    let audit = store.list_audit(None, 100).await.unwrap();
    store.close().await;
    drop(store);

    // Reopening runs the migrations again: a no-op.
    let store = SqliteStore::open(&data).await.unwrap();
    assert_eq!(store.get_identity(i.id).await.unwrap(), Some(i.clone()));
    let mut expected = k.clone();
    expected.remaining = Some(1);
    assert_eq!(store.get_key(k.id).await.unwrap(), Some(expected));
    assert_eq!(store.list_audit(None, 100).await.unwrap(), audit);
    assert_eq!(audit.len(), 2);
}

/// Two stores on one folder (the server and a CLI, say) write concurrently without
/// `SQLITE_BUSY` errors: write transactions take the lock up front and wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = Arc::new(SqliteStore::open(&data).await.unwrap());
    let b = Arc::new(SqliteStore::open(&data).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for store in [a.clone(), b.clone()] {
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..20 {
                let i = testkit::identity("two-stores");
                store
                    .create_identity(&i, &testkit::audit("identity.create", i.id))
                    .await
                    .unwrap();
                ids.push(i.id);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.unwrap());
    }
    for id in ids {
        assert!(a.get_identity(id).await.unwrap().is_some());
        assert!(b.get_identity(id).await.unwrap().is_some());
    }
    assert_eq!(b.list_audit(None, 100).await.unwrap().len(), 40);
}

/// Concurrent creations share commits (group commit); one that fails rolls back alone and
/// every acknowledged one is there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_share_commits_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let live = testkit::identity("live");
    store
        .create_identity(&live, &testkit::audit("identity.create", live.id))
        .await
        .unwrap();
    let mut tasks = vec![];
    for i in 0..200 {
        let store = store.clone();
        // Every tenth key names an identity that does not exist.
        let owner = if i % 10 == 0 {
            uuid::Uuid::now_v7()
        } else {
            live.id
        };
        tasks.push(tokio::spawn(async move {
            let key = testkit::minimal_key(owner);
            let r = store
                .create_key(&key, &testkit::audit("key.create", key.id))
                .await;
            (key.id, r.is_ok())
        }));
    }
    let mut created = vec![];
    for t in tasks {
        let (id, ok) = t.await.unwrap();
        if ok {
            created.push(id);
        }
    }
    assert_eq!(created.len(), 180);
    store.close().await;
    drop(store);
    let reopened = SqliteStore::open(&path).await.unwrap();
    for id in created {
        assert!(reopened.get_key(id).await.unwrap().is_some());
    }
    let audit = reopened.list_audit(None, 1000).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.entry.action == "key.create")
            .count(),
        180
    );
}

/// The embedded store counts usage (rollups, scope uses) a few seconds behind the events
/// (`sqlite/pending_rollups.rs`). Counts still pending when the process dies are counted
/// when the store is opened again, once; a second store opened on the folder meanwhile
/// (a CLI beside the server) counts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_lost_to_a_crash_are_recounted_on_opening() {
    use keyward_core::VerifyCode;
    use keyward_core::usage::{Bucket, UsageEvent};
    use keyward_store::UsageStore;
    use keyward_store::usage::UsageSubject;

    let OnDisk {
        _dir,
        data,
        store: first,
        identity: i,
        keys,
    } = on_disk("crash", 1).await;
    let k = keys[0];
    let now = keyward_core::time::truncate(chrono::Utc::now());
    let events: Vec<UsageEvent> = (0..30)
        .map(|_| UsageEvent {
            at: now,
            key_id: Some(k),
            identity_id: Some(i),
            code: VerifyCode::Valid,
            ip: Some("10.0.0.1".parse().unwrap()),
            scopes: vec!["orders:read".into()],
            latency_us: 5,
            tags: None,
        })
        .collect();
    for batch in events.chunks(10) {
        first.record_usage(batch).await.unwrap();
    }
    let (from, to) = (
        now - chrono::Duration::days(1),
        now + chrono::Duration::days(1),
    );
    let counted = |store: &SqliteStore, bucket: Bucket| {
        let store = store.clone();
        async move {
            store
                .usage_counts(UsageSubject::Key(k), bucket, from, to)
                .await
                .unwrap()
                .iter()
                .map(|c| c.count)
                .sum::<u64>()
        }
    };

    // The first store's counts are pending: another store on the folder neither sees
    // nor recounts them.
    let second = SqliteStore::open(&data).await.unwrap();
    assert_eq!(counted(&second, Bucket::Minute).await, 0);
    second.close().await;
    drop(second);

    // The first dies without writing them.
    drop(first);
    let reopened = SqliteStore::open(&data).await.unwrap();
    for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
        assert_eq!(counted(&reopened, bucket).await, 30, "{bucket:?}");
    }
    let posture = reopened.posture_inputs(Some(i), from).await.unwrap();
    assert!(posture[0].keys[0].1.exercised.contains("orders:read"));
    reopened.close().await;
    drop(reopened);

    // Counted once: opening again finds nothing beyond the watermark.
    let again = SqliteStore::open(&data).await.unwrap();
    assert_eq!(counted(&again, Bucket::Minute).await, 30);
}

/// Usage events stored one row each by versions before event blocks (migration 0140)
/// move into blocks when the store opens: none lost, none counted twice, those whose
/// counts a crash lost counted once, and every read finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_rows_of_an_earlier_version_move_into_blocks() {
    use keyward_core::usage::Bucket;
    use keyward_store::UsageStore;
    use keyward_store::anomalies::AnomalyStore;
    use keyward_store::usage::UsageSubject;

    let OnDisk {
        _dir,
        data,
        store,
        identity: i,
        keys,
    } = on_disk("legacy", 1).await;
    let k = keys[0];
    store.close().await;
    drop(store);

    // What the earlier version left: 10 rows, the first 6 counted (rollups written,
    // the watermark on row 6), the last 4 not (it crashed before counting them).
    let now = keyward_core::time::truncate(chrono::Utc::now());
    let at = now.timestamp_micros();
    {
        let db = rusqlite::Connection::open(data.join("keyward.db")).unwrap();
        for n in 0..10i64 {
            db.execute(
                "INSERT INTO usage_events (at, key_id, identity_id, code, ip, scopes, \
                 latency_us, tags) VALUES (?1, ?2, ?3, 'VALID', '10.9.8.7', 'orders:read', \
                 ?4, ?5)",
                rusqlite::params![
                    at - 1000 * n,
                    k.to_string(),
                    i.to_string(),
                    n,
                    (n == 3).then_some(r#"{"job":"nightly"}"#),
                ],
            )
            .unwrap();
        }
        for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
            db.execute(
                "INSERT INTO usage_rollups (granularity, start, key_id, identity_id, code, \
                 count) VALUES (?1, ?2, ?3, ?4, 'VALID', 6)",
                rusqlite::params![
                    bucket.as_str(),
                    bucket.start_micros(at),
                    k.to_string(),
                    i.to_string()
                ],
            )
            .unwrap();
        }
        db.execute(
            "UPDATE usage_rollup_watermark SET through_rowid = 6 WHERE id = 1",
            [],
        )
        .unwrap();
    }

    let store = SqliteStore::open(&data).await.unwrap();
    let (from, to) = (
        now - chrono::Duration::days(1),
        now + chrono::Duration::days(1),
    );
    for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
        let counts = store
            .usage_counts(UsageSubject::Key(k), bucket, from, to)
            .await
            .unwrap();
        assert_eq!(
            counts.iter().map(|c| c.count).sum::<u64>(),
            10,
            "{bucket:?}"
        );
    }
    let mut events = Vec::new();
    store
        .usage_events_after(from, to, 100, &mut events)
        .await
        .unwrap();
    assert_eq!(events.len(), 10);
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(events[9].at.timestamp_micros(), at);
    assert_eq!(events[6].tags.as_ref().unwrap()["job"], "nightly");
    assert_eq!(events[0].scopes, vec!["orders:read".to_string()]);
    let top = store.top_sources(None, from, to, 5).await.unwrap();
    assert_eq!((top[0].ip.as_str(), top[0].count), ("10.9.8.7", 10));
    let sources = store.key_sources_since(k, from, 10).await.unwrap();
    assert_eq!(sources.iter().map(|s| s.count).sum::<u64>(), 10);
    store.close().await;
    drop(store);

    // Nothing left to move, nothing counted again.
    let db = rusqlite::Connection::open(data.join("keyward.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM usage_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    drop(db);
    let store = SqliteStore::open(&data).await.unwrap();
    let counts = store
        .usage_counts(UsageSubject::Key(k), Bucket::Day, from, to)
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 10);
}

/// Last-use times stored in `keys` by versions before migration 0150 move to their own
/// table when the store opens, and writes after that find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_times_of_an_earlier_version_move_to_their_own_table() {
    let OnDisk {
        _dir,
        data,
        store,
        keys,
        ..
    } = on_disk("legacy", 2).await;
    let (used, unused) = (keys[0], keys[1]);
    store.close().await;
    drop(store);

    // The schema as migration 0140 left it, with one key's last use in its row.
    let at = keyward_core::time::truncate(chrono::Utc::now()) - chrono::Duration::hours(2);
    {
        let db = rusqlite::Connection::open(data.join("keyward.db")).unwrap();
        db.execute_batch(
            "DROP TABLE key_last_used; \
             ALTER TABLE keys ADD COLUMN last_used_at INTEGER; \
             DELETE FROM _sqlx_migrations WHERE version = 150;",
        )
        .unwrap();
        db.execute(
            "UPDATE keys SET last_used_at = ?1 WHERE id = ?2",
            rusqlite::params![at.timestamp_micros(), used.to_string()],
        )
        .unwrap();
    }

    let store = SqliteStore::open(&data).await.unwrap();
    let last_used = |k: uuid::Uuid| {
        let store = &store;
        async move { store.get_key(k).await.unwrap().unwrap().last_used_at }
    };
    assert_eq!(last_used(used).await, Some(at));
    assert_eq!(last_used(unused).await, None);
    // Later uses move it on; earlier ones do not move it back.
    let later = at + chrono::Duration::minutes(5);
    store
        .record_last_used(&[(used, later), (unused, at)])
        .await
        .unwrap();
    store.record_last_used(&[(used, at)]).await.unwrap();
    assert_eq!(last_used(used).await, Some(later));
    assert_eq!(last_used(unused).await, Some(at));
}
