//! `ConsoleStore` conformance, on SQLite and on PostgreSQL.

use keyward_store::testkit::{TempDatabase, console};
use keyward_store::{PgStore, SqliteStore};

#[tokio::test]
async fn sqlite_search_audit_filters_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    console::search_audit_filters_newest_first(&store).await;
}

#[tokio::test]
async fn postgres_search_audit_filters_newest_first() {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    console::search_audit_filters_newest_first(&store).await;
}

#[tokio::test]
async fn sqlite_usage_counts_overall_sums_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    console::usage_counts_overall_sums_every_key(&store).await;
}

#[tokio::test]
async fn postgres_usage_counts_overall_sums_every_key() {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    console::usage_counts_overall_sums_every_key(&store).await;
}
