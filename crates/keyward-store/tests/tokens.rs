//! `TokenStore` conformance, on SQLite and on PostgreSQL: signing keys rotate with the
//! old ones kept until asked for no more, each change with its audit record.

use chrono::Duration;
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::{PgStore, SigningKeyRecord, SqliteStore, Store};
use zeroize::Zeroizing;

fn record(kid: &str, at: keyward_core::time::Timestamp) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        public_key: vec![7; 32],
        private_key: Zeroizing::new(vec![1, 2, 3]),
        created_at: at,
        retired_at: None,
        sealed_private_key: None,
    }
}

async fn rotation_keeps_old_keys_until_their_window_ends(store: &dyn Store) {
    let t0 = testkit::now();
    assert!(store.signing_keys(t0).await.unwrap().is_empty());
    store
        .rotate_signing_key(
            &record("k1", t0),
            None,
            t0,
            &testkit::audit("token.signing_key.rotate", "k1"),
        )
        .await
        .unwrap();
    let t1 = t0 + Duration::seconds(10);
    store
        .rotate_signing_key(
            &record("k2", t1),
            Some("k1"),
            t1,
            &testkit::audit("token.signing_key.rotate", "k2"),
        )
        .await
        .unwrap();

    // Newest first; k1 retired when k2 came.
    let keys = store.signing_keys(t0).await.unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k2", "k1"]);
    assert_eq!(keys[0].retired_at, None);
    assert_eq!(keys[1].retired_at, Some(t1));
    assert_eq!(keys[1].public_key, vec![7; 32]);
    assert_eq!(&keys[1].private_key[..], &[1, 2, 3]);
    assert_eq!(keys[1].created_at, t0);

    // Retired at t1: not returned to a caller that wants keys retired after t1.
    let keys = store.signing_keys(t1).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, "k2");

    // A kid is never reused.
    assert!(
        store
            .rotate_signing_key(
                &record("k2", t1),
                Some("k2"),
                t1,
                &testkit::audit("x", "k2")
            )
            .await
            .is_err()
    );
    // A rotation from a key that is no longer current changes nothing.
    assert!(
        !store
            .rotate_signing_key(
                &record("k3", t1),
                Some("k1"),
                t1,
                &testkit::audit("x", "k3")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .rotate_signing_key(&record("k3", t1), None, t1, &testkit::audit("x", "k3"))
            .await
            .unwrap()
    );
    assert_eq!(store.signing_keys(t0).await.unwrap().len(), 2);

    store
        .record_token_issue(&testkit::audit("token.issue", "jti-1"))
        .await
        .unwrap();
    let actions: Vec<String> = store
        .list_audit(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    let rotations = actions
        .iter()
        .filter(|a| *a == "token.signing_key.rotate")
        .count();
    assert_eq!(rotations, 2, "{actions:?}");
    assert!(actions.iter().any(|a| a == "token.issue"));
    assert!(
        !actions.iter().any(|a| a == "x"),
        "the failed rotation left no record"
    );
}

/// Nodes racing to make the first key, then to rotate the same key: one wins each
/// race, and exactly one key is current.
async fn racing_rotations_leave_one_current_key(store: std::sync::Arc<dyn Store>) {
    let t0 = testkit::now();
    let race = |replacing: Option<String>, round: &'static str| {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let replacing = replacing.clone();
                tokio::spawn(async move {
                    let kid = format!("{round}-{i}");
                    let won = store
                        .rotate_signing_key(
                            &record(&kid, t0),
                            replacing.as_deref(),
                            t0,
                            &testkit::audit("token.signing_key.rotate", &kid),
                        )
                        .await
                        .unwrap();
                    won.then_some(kid)
                })
            })
            .collect();
        async move {
            let mut winners = Vec::new();
            for t in tasks {
                winners.extend(t.await.unwrap());
            }
            winners
        }
    };
    let first = race(None, "first").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let current = |keys: Vec<SigningKeyRecord>| -> Vec<String> {
        keys.into_iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.kid)
            .collect()
    };
    assert_eq!(
        current(store.signing_keys(t0 - Duration::seconds(1)).await.unwrap()),
        first
    );

    let second = race(Some(first[0].clone()), "second").await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(
        current(store.signing_keys(t0 - Duration::seconds(1)).await.unwrap()),
        second
    );
    assert_eq!(
        store
            .signing_keys(t0 - Duration::seconds(1))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_rotations_leave_one_current_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    racing_rotations_leave_one_current_key(std::sync::Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_racing_rotations_leave_one_current_key() {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    racing_rotations_leave_one_current_key(std::sync::Arc::new(store)).await;
}

#[tokio::test]
async fn sqlite_rotation_keeps_old_keys_until_their_window_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    rotation_keeps_old_keys_until_their_window_ends(&store).await;
}

#[tokio::test]
async fn postgres_rotation_keeps_old_keys_until_their_window_ends() {
    let db = TempDatabase::create().await;
    let store = PgStore::open(&db.url).await.unwrap();
    rotation_keeps_old_keys_until_their_window_ends(&store).await;
}
