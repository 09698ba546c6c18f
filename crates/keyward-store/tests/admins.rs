//! `AdminStore` on both stores: creation, lookup, the one-time use of TOTP steps and
//! recovery codes when a session opens, and disabling.

use std::sync::Arc;

use keyward_store::admins::{AdminRecord, SecondFactor};
use keyward_store::testkit::{self, TempDatabase};
use keyward_store::{PgStore, SqliteStore, Store, StoreError};
use uuid::Uuid;

fn admin(identity_id: Uuid, username: &str) -> AdminRecord {
    AdminRecord {
        id: Uuid::now_v7(),
        username: username.into(),
        identity_id,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        totp_secret: "JBSWY3DPEHPK3PXP".into(),
        scopes: vec!["keyward:keys:read".into()],
        enabled: true,
        created_at: testkit::now(),
        last_totp_step: None,
        sealed_totp_secret: None,
    }
}

async fn admins_work(store: Arc<dyn Store>) {
    let s = &*store;
    let ident = testkit::identity("admin-alice");
    let a = admin(ident.id, &format!("alice-{}", Uuid::now_v7().simple()));
    s.create_admin(
        &a,
        &ident,
        &["h1".into(), "h2".into()],
        &testkit::audit("admin.create", a.id),
    )
    .await
    .unwrap();
    assert_eq!(
        s.admin_by_username(&a.username).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.admin_by_username("nobody").await.unwrap(), None);
    assert!(s.list_admins().await.unwrap().contains(&a));

    // The same username again: a conflict, and nothing written.
    let ident2 = testkit::identity("admin-alice-2");
    let dup = admin(ident2.id, &a.username);
    assert!(matches!(
        s.create_admin(&dup, &ident2, &[], &testkit::audit("admin.create", dup.id))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_identity(ident2.id).await.unwrap(), None);

    let open = |factor: SecondFactor| {
        let k = testkit::minimal_key(ident.id);
        async move {
            s.open_session(
                a.id,
                &factor,
                &k,
                testkit::now(),
                &testkit::audit("session.create", k.id),
            )
            .await
            .unwrap()
        }
    };
    // A TOTP step is used once; only later steps after it.
    assert!(open(SecondFactor::Totp { step: 100 }).await);
    assert!(
        !open(SecondFactor::Totp { step: 100 }).await,
        "replayed step"
    );
    assert!(!open(SecondFactor::Totp { step: 99 }).await, "earlier step");
    assert!(open(SecondFactor::Totp { step: 101 }).await);
    // A recovery code is used once; unknown codes never.
    assert!(
        open(SecondFactor::Recovery {
            code_hash: "h1".into()
        })
        .await
    );
    assert!(
        !open(SecondFactor::Recovery {
            code_hash: "h1".into()
        })
        .await
    );
    assert!(
        !open(SecondFactor::Recovery {
            code_hash: "nope".into()
        })
        .await
    );
    assert_eq!(
        s.admin_by_username(&a.username)
            .await
            .unwrap()
            .unwrap()
            .last_totp_step,
        Some(101)
    );

    // Disabled: no session, whatever the factor.
    let d = s
        .set_admin_enabled(a.id, false, &testkit::audit("admin.disable", a.id))
        .await
        .unwrap()
        .unwrap();
    assert!(!d.enabled);
    assert!(!open(SecondFactor::Totp { step: 200 }).await);
    assert!(
        !open(SecondFactor::Recovery {
            code_hash: "h2".into()
        })
        .await
    );
    assert_eq!(
        s.set_admin_enabled(Uuid::now_v7(), false, &testkit::audit("admin.disable", "x"))
            .await
            .unwrap(),
        None
    );
    // Every change was audit-logged, and the log still chains.
    let actions: Vec<String> = s
        .list_audit(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "session.create").count(), 3);
    assert!(actions.contains(&"admin.create".into()) && actions.contains(&"admin.disable".into()));
    assert!(
        keyward_store::audit_chain::verify_chain(s, None)
            .await
            .unwrap()
            .ok
    );
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    admins_work(Arc::new(SqliteStore::open(dir.path()).await.unwrap())).await;
}

#[tokio::test]
async fn postgres() {
    let db = TempDatabase::create().await;
    let store = Arc::new(PgStore::open(&db.url).await.unwrap());
    admins_work(store.clone()).await;
    store.close().await;
}
