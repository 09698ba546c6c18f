//! The tamper-evident audit log on both stores: a log altered by hand, in SQL, behind the
//! store's back (an edit, a deletion, an insertion, a reorder, a truncated tail, a forged
//! checkpoint) is caught by `verify_chain`, which names the first bad record.

use std::sync::Arc;

use keyward_core::audit_chain::{ChainVerdict, CheckpointSigner};
use keyward_store::audit_chain::{Checkpointed, checkpoint, verify_chain};
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::{PgStore, SqliteStore, Store};

/// A store, and a connection of our own to its database for tampering.
struct Fixture {
    store: Arc<dyn Store>,
    raw: Raw,
    reopen: Reopen,
    _dir: tempfile::TempDir,
    _db: Option<TempDatabase>,
}

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

enum Reopen {
    Sqlite(std::path::PathBuf),
    Pg(String),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Raw::Pg(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("tampering failed: {e}"));
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Pg,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let data = dir.path().join("data");
                let store = SqliteStore::open(&data).await.unwrap();
                let raw = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect(&format!(
                        "sqlite://{}",
                        data.join(keyward_store::sqlite::DB_FILE).display()
                    ))
                    .await
                    .unwrap();
                Fixture {
                    store: Arc::new(store),
                    raw: Raw::Sqlite(raw),
                    reopen: Reopen::Sqlite(data),
                    _dir: dir,
                    _db: None,
                }
            }
            Backend::Pg => {
                let db = TempDatabase::create().await;
                let store = PgStore::open(&db.url).await.unwrap();
                let raw = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&db.url)
                    .await
                    .unwrap();
                Fixture {
                    store: Arc::new(store),
                    raw: Raw::Pg(raw),
                    reopen: Reopen::Pg(db.url.clone()),
                    _dir: dir,
                    _db: Some(db),
                }
            }
        }
    }

    /// The same database, opened again (as after a restart).
    async fn reopened(&self) -> Arc<dyn Store> {
        match &self.reopen {
            Reopen::Sqlite(dir) => Arc::new(SqliteStore::open(dir).await.unwrap()),
            Reopen::Pg(url) => Arc::new(PgStore::open(url).await.unwrap()),
        }
    }

    /// Five audit records (seq 1..=5), through both kinds of writes (plain transactions
    /// and, on SQLite, the group commit of key creations).
    async fn five_records(&self) {
        let s = &*self.store;
        let i = testkit::identity("chain");
        s.create_identity(&i, &testkit::audit("identity.create", i.id))
            .await
            .unwrap();
        for _ in 0..3 {
            let k = testkit::key(i.id);
            s.create_key(&k, &testkit::audit("key.create", k.id))
                .await
                .unwrap();
        }
        let patch = keyward_core::model::IdentityPatch {
            owner: Some("someone-else@example.com".into()),
            ..Default::default()
        };
        s.update_identity(
            i.id,
            &patch,
            testkit::now(),
            &testkit::audit("identity.update", i.id),
        )
        .await
        .unwrap()
        .unwrap();
    }

    async fn verdict(&self, signer: &CheckpointSigner) -> ChainVerdict {
        verify_chain(&*self.store, Some(&signer.verifying_key()))
            .await
            .unwrap()
    }
}

/// Builds five records, checkpoints them, tampers with `sql`, and expects the first
/// bad record to be `bad`.
async fn caught(backend: Backend, sql: Vec<&'static str>, bad: i64) {
    let f = Fixture::new(backend).await;
    f.five_records().await;
    let (signer, _) = CheckpointSigner::generate();
    let cp = checkpoint(&*f.store, &signer, 0).await.unwrap();
    assert!(
        matches!(cp, Checkpointed::Signed(ref c) if c.seq == 5),
        "{cp:?}"
    );
    let v = f.verdict(&signer).await;
    assert!(v.ok, "untouched: {v:?}");
    for s in &sql {
        f.raw.exec(s).await;
    }
    let v = f.verdict(&signer).await;
    assert!(!v.ok, "tampering went unnoticed: {sql:?}");
    assert_eq!(v.first_bad_seq, Some(bad), "{sql:?}: {v:?}");
    // The store keeps working on a damaged log, and the damage stays reported.
    let i = testkit::identity("after");
    f.store
        .create_identity(&i, &testkit::audit("identity.create", i.id))
        .await
        .unwrap();
    assert_eq!(f.verdict(&signer).await.first_bad_seq, Some(bad));
}

/// Swaps every field of records 2 and 3 (their hashes included): the records now appear
/// in the other order.
const SWAP_2_AND_3: &[&str] = &[
    "CREATE TEMP TABLE swap AS SELECT * FROM audit_log WHERE seq IN (2, 3)",
    "UPDATE audit_log SET at = swap.at, actor = swap.actor, action = swap.action, \
     target = swap.target, request_id = swap.request_id, source_ip = swap.source_ip, \
     detail = swap.detail, hash = swap.hash \
     FROM swap WHERE audit_log.seq IN (2, 3) AND swap.seq = 5 - audit_log.seq",
];

macro_rules! on_both {
    ($($name:ident => $body:expr;)*) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                ($body)(Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                ($body)(Backend::Pg).await;
            }
        }
    )*};
}

on_both! {
    an_edited_actor_is_caught => |b| caught(b, vec!["UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"], 3);
    an_edited_detail_is_caught => |b| caught(b, vec![r#"UPDATE audit_log SET detail = '{"n":2}' WHERE seq = 2"#], 2);
    an_edited_time_is_caught => |b| caught(b, vec!["UPDATE audit_log SET at = (SELECT at FROM audit_log WHERE seq = 1) WHERE seq = 4"], 4);
    a_deleted_record_is_caught => |b| caught(b, vec!["DELETE FROM audit_log WHERE seq = 3"], 4);
    a_removed_hash_is_caught => |b| caught(b, vec!["UPDATE audit_log SET hash = NULL WHERE seq = 2"], 2);
    a_reorder_is_caught => |b| caught(b, SWAP_2_AND_3.to_vec(), 2);
    a_truncated_tail_is_caught => |b| caught(b, vec!["DELETE FROM audit_log WHERE seq >= 4"], 4);
    a_moved_checkpoint_is_caught => |b| caught(b, vec!["UPDATE audit_checkpoints SET seq = 4"], 4);
    an_inserted_record_is_caught => |b| caught(b, vec![
        "CREATE TEMP TABLE copy AS SELECT * FROM audit_log WHERE seq = 2",
        "UPDATE copy SET seq = 6",
        match b {
            Backend::Sqlite => "INSERT INTO audit_log SELECT * FROM copy",
            Backend::Pg => "INSERT INTO audit_log OVERRIDING SYSTEM VALUE SELECT * FROM copy",
        },
    ], 6);
    checkpoints_only_sign_an_intact_log => |b| async move {
        let f = Fixture::new(b).await;
        let (signer, _) = CheckpointSigner::generate();
        // An empty log: nothing to sign.
        assert_eq!(checkpoint(&*f.store, &signer, 0).await.unwrap(), Checkpointed::Unchanged);
        f.five_records().await;
        assert!(matches!(checkpoint(&*f.store, &signer, 0).await.unwrap(), Checkpointed::Signed(_)));
        assert_eq!(checkpoint(&*f.store, &signer, 0).await.unwrap(), Checkpointed::Unchanged);
        f.five_records().await;
        f.raw.exec("UPDATE audit_log SET target = 'x' WHERE seq = 7").await;
        match checkpoint(&*f.store, &signer, 0).await.unwrap() {
            Checkpointed::Refused(v) => assert_eq!(v.first_bad_seq, Some(7)),
            other => panic!("signed a tampered log: {other:?}"),
        }
        let v = f.verdict(&signer).await;
        assert_eq!((v.checked, v.checkpoints, v.first_bad_seq), (10, 1, Some(7)));
        // A checkpoint from a key that is not ours fails verification.
        let (other, _) = CheckpointSigner::generate();
        assert!(!verify_chain(&*f.store, Some(&other.verifying_key())).await.unwrap().ok);
    };
    records_written_before_the_chain_are_chained_once => |b| async move {
        let f = Fixture::new(b).await;
        f.five_records().await;
        // As migration 0040 leaves a log written by an older Keyward.
        f.raw.exec("UPDATE audit_log SET hash = NULL").await;
        f.raw.exec("INSERT INTO settings (key, value) VALUES ('audit_chain_backfill', 'pending')").await;
        let store = f.reopened().await;
        let v = verify_chain(&*store, None).await.unwrap();
        assert!(v.ok && v.checked == 5, "{v:?}");
        // Once only: a hash removed later is reported, not silently restored.
        f.raw.exec("UPDATE audit_log SET hash = NULL WHERE seq = 5").await;
        let store = f.reopened().await;
        assert_eq!(verify_chain(&*store, None).await.unwrap().first_bad_seq, Some(5));
    };
}

/// Several nodes appending at once still make one chain (appends are serialised by the
/// audit lock, and sequence numbers follow it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_appending_together_make_one_chain() {
    let db = TempDatabase::create().await;
    let a = Arc::new(PgStore::open(&db.url).await.unwrap());
    let b = Arc::new(PgStore::open(&db.url).await.unwrap());
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let i = testkit::identity("node");
                store
                    .create_identity(&i, &testkit::audit("identity.create", i.id))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = verify_chain(&*a, None).await.unwrap();
    assert!(v.ok && v.checked == 40, "{v:?}");
    a.close().await;
    b.close().await;
}
