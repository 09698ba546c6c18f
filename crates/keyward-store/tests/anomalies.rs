//! The `AnomalyStore` conformance tests (`keyward_store::testkit::anomalies`) on both
//! stores: the embedded SQLite store in a temporary folder and PostgreSQL in a temporary
//! database, each test on a fresh store.

use keyward_store::testkit::{TempDatabase, anomalies};
use keyward_store::{PgStore, SqliteStore};

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("data")).await.unwrap();
                    super::anomalies::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TempDatabase::create().await;
                    let store = super::PgStore::open(&db.url).await.unwrap();
                    super::anomalies::$name(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

on_both_stores!(
    record_with_the_cursor_and_finish_once,
    list_filters_and_pages,
    usage_events_read_back_in_time_order,
    usage_events_page_through_large_and_late_batches,
    policies_round_trip,
);
