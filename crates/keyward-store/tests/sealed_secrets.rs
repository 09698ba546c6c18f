//! The sealed-secret conformance suite (`keyward_store::testkit::sealed_secrets`) on
//! both stores, each test on a fresh store: token signing keys and administrator TOTP
//! secrets sealed on write, plaintext rows sealed once, rewraps.

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = keyward_store::SqliteStore::open(&dir.path().join("data")).await.unwrap();
                    keyward_store::testkit::sealed_secrets::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = keyward_store::testkit::TempDatabase::create().await;
                    let store = keyward_store::PgStore::open(&db.url).await.unwrap();
                    keyward_store::testkit::sealed_secrets::$name(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

conformance!(signing_keys_sealed, admin_totp_sealed);
