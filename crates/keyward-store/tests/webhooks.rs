//! The webhook conformance tests (`keyward_store::testkit::webhooks`) on both stores:
//! SQLite in a temporary folder, PostgreSQL in a database of its own.

use std::sync::Arc;

use keyward_store::testkit::{TempDatabase, webhooks};
use keyward_store::{PgStore, SqliteStore, Store};

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    (dir, Arc::new(store))
}

async fn postgres() -> (TempDatabase, Arc<dyn Store>) {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    (db, Arc::new(store))
}

/// `name::sqlite` and `name::postgres` for each test; `arc` tests take the store shared.
macro_rules! on_both_stores {
    ($($name:ident $(($arc:ident))?),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (_dir, store) = super::sqlite().await;
                on_both_stores!(@call $name store $($arc)?);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (_db, store) = super::postgres().await;
                on_both_stores!(@call $name store $($arc)?);
            }
        }
    )*};
    (@call $name:ident $store:ident) => { webhooks::$name(&*$store).await };
    (@call $name:ident $store:ident arc) => { webhooks::$name($store.clone()).await };
}

on_both_stores!(
    webhook_roundtrip,
    webhook_fan_out_is_idempotent,
    webhook_claims_and_attempts,
    webhook_concurrent_claims(arc),
    notify_expiring_keys,
);
