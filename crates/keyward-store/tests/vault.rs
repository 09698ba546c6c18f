//! The vault conformance suite (`keyward_store::testkit::vault`) on both stores, each
//! test on a fresh store; and, on SQLite, that deleted ciphertext leaves the file.

use keyward_store::SqliteStore;
use keyward_store::testkit;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = keyward_store::SqliteStore::open(&dir.path().join("data")).await.unwrap();
                    keyward_store::testkit::vault::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = keyward_store::testkit::TempDatabase::create().await;
                    let store = keyward_store::PgStore::open(&db.url).await.unwrap();
                    keyward_store::testkit::vault::$name(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

conformance!(
    secret_versions,
    secret_list_and_delete,
    secret_rewrap,
    rotation_policies,
    scheduled_rotation,
);

/// After a delete, the ciphertext bytes are gone from the database file and its WAL
/// (`secure_delete` overwrites freed pages).
#[tokio::test]
async fn deleted_ciphertext_leaves_the_sqlite_file() {
    use keyward_core::envelope::Sealed;
    use keyward_store::VaultStore;
    use keyward_store::vault::SecretVersion;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open(&data).await.unwrap();
    let marker = b"MARKER-ciphertext-bytes-0123456789".to_vec();
    let v = SecretVersion {
        path: "del/me".into(),
        version: 1,
        sealed: Sealed {
            ciphertext: marker.clone(),
            wrapped_key: b"MARKER-wrapped-key-bytes-987654".to_vec(),
            master_key_id: "k".into(),
        },
        meta: Default::default(),
        created_at: testkit::now(),
    };
    store
        .put_secret_version(&v, &testkit::audit("secret.write", "del/me"))
        .await
        .unwrap();
    let holds = |needle: &[u8]| {
        std::fs::read_dir(&data).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    };
    assert!(holds(&marker));
    store
        .delete_secret("del/me", &testkit::audit("secret.delete", "del/me"))
        .await
        .unwrap();
    store.close().await;
    // Reopen (checkpoints the WAL into the main file).
    let store = SqliteStore::open(&data).await.unwrap();
    store.close().await;
    assert!(
        !holds(&marker),
        "deleted ciphertext is still in the data folder"
    );
}
