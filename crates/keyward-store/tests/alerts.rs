//! `AlertStore` conformance, on SQLite and on PostgreSQL: one alert per key, kind and
//! window, its audit record written with the window, and never two when racing.

use std::sync::Arc;

use chrono::Duration;
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::{PgStore, SqliteStore, Store};
use uuid::Uuid;

async fn alerts_with(store: &dyn Store, action: &str) -> usize {
    store
        .list_audit(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == action)
        .count()
}

async fn one_alert_per_key_kind_and_window(store: &dyn Store) {
    let window = Duration::minutes(5);
    let (key, other) = (Uuid::now_v7(), Uuid::now_v7());
    let t0 = testkit::now();
    let raise = |key: Uuid, kind: &'static str, at| {
        let audit = testkit::audit(kind, key);
        async move {
            store
                .raise_key_alert(key, kind, at, at - window, &audit)
                .await
                .unwrap()
        }
    };
    assert!(raise(key, "key.rate_limited", t0).await);
    // Same window: nothing more, and no audit record.
    assert!(!raise(key, "key.rate_limited", t0 + Duration::seconds(1)).await);
    assert!(!raise(key, "key.rate_limited", t0 + Duration::seconds(299)).await);
    // Another kind, another key: windows of their own.
    assert!(raise(key, "key.usage_exceeded", t0).await);
    assert!(raise(other, "key.rate_limited", t0).await);
    assert_eq!(alerts_with(store, "key.rate_limited").await, 2);
    // The window over: one more, which opens the next window.
    assert!(raise(key, "key.rate_limited", t0 + window).await);
    assert!(!raise(key, "key.rate_limited", t0 + window + Duration::seconds(10)).await);
    assert_eq!(alerts_with(store, "key.rate_limited").await, 3);
    assert_eq!(alerts_with(store, "key.usage_exceeded").await, 1);
}

/// Many writers (two stores on PostgreSQL: two nodes) raise the same alert at once.
async fn racing_writers_write_one_alert(stores: Vec<Arc<dyn Store>>) {
    let key = Uuid::now_v7();
    let now = testkit::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let audit = testkit::audit("key.rate_limited", key);
            store
                .raise_key_alert(
                    key,
                    "key.rate_limited",
                    now,
                    now - Duration::minutes(5),
                    &audit,
                )
                .await
                .unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += usize::from(t.await.unwrap());
    }
    assert_eq!(written, 1);
    assert_eq!(alerts_with(&*stores[0], "key.rate_limited").await, 1);
}

#[tokio::test]
async fn sqlite_one_alert_per_key_kind_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    one_alert_per_key_kind_and_window(&store).await;
}

#[tokio::test]
async fn postgres_one_alert_per_key_kind_and_window() {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    one_alert_per_key_kind_and_window(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_writers_write_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("data")).await.unwrap());
    racing_writers_write_one_alert(vec![store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_racing_nodes_write_one_alert() {
    let db = TempDatabase::create().await;
    let a: Arc<dyn Store> = Arc::new(PgStore::open(&db.url).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::open(&db.url).await.unwrap());
    racing_writers_write_one_alert(vec![a, b]).await;
}
