//! The rotation status conformance tests (`keyward_store::testkit::rotation_status`) on
//! both stores: the embedded SQLite store in a temporary folder and PostgreSQL in a
//! temporary database.

use keyward_store::testkit::{TempDatabase, rotation_status};
use keyward_store::{PgStore, SqliteStore};

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("data")).await.unwrap();
                    super::rotation_status::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TempDatabase::create().await;
                    let store = super::PgStore::open(&db.url).await.unwrap();
                    super::rotation_status::$name(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

on_both_stores!(key_sources_since, old_version_notice_once);
