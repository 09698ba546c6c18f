//! Conformance tests of [`VaultStore`]: run on every store (tests/vault.rs).

use chrono::Duration;
use uuid::Uuid;

use keyward_core::envelope::Sealed;
use keyward_core::key::{KeyPrefix, mint};
use keyward_core::rotation::RotationPolicy;

use super::{audit, identity, key, now};
use crate::vault::{Rewrap, ScheduledRotation, SecretVersion};
use crate::{Store, StoreError};

fn unique_path(stem: &str) -> String {
    format!("{stem}-{}/db", Uuid::now_v7().simple())
}

fn version(path: &str, v: i64, key_id: &str) -> SecretVersion {
    SecretVersion {
        path: path.to_owned(),
        version: v,
        sealed: Sealed {
            ciphertext: vec![1, 2, 3, v as u8],
            wrapped_key: vec![9, 8, 7, v as u8],
            master_key_id: key_id.to_owned(),
        },
        meta: serde_json::json!({"owner": "team"})
            .as_object()
            .unwrap()
            .clone(),
        created_at: now(),
    }
}

pub async fn secret_versions(store: &dyn Store) {
    let path = unique_path("versions");
    assert_eq!(store.latest_secret_version(&path).await.unwrap(), None);
    assert_eq!(store.get_secret_version(&path, None).await.unwrap(), None);
    let v1 = version(&path, 1, "k1");
    store
        .put_secret_version(&v1, &audit("secret.write", &path))
        .await
        .unwrap();
    let v2 = version(&path, 2, "k1");
    store
        .put_secret_version(&v2, &audit("secret.write", &path))
        .await
        .unwrap();
    // The same version twice is a conflict, and writes nothing.
    let before = store.list_audit(None, 10_000).await.unwrap().len();
    let dup = store
        .put_secret_version(&version(&path, 2, "k1"), &audit("secret.write", &path))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(store.list_audit(None, 10_000).await.unwrap().len(), before);

    assert_eq!(store.latest_secret_version(&path).await.unwrap(), Some(2));
    assert_eq!(
        store.get_secret_version(&path, None).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        store.get_secret_version(&path, Some(1)).await.unwrap(),
        Some(v1)
    );
    assert_eq!(
        store.get_secret_version(&path, Some(3)).await.unwrap(),
        None
    );

    store
        .record_secret_access(&audit("secret.read", &path))
        .await
        .unwrap();
    let log = store.list_audit(None, 10_000).await.unwrap();
    assert_eq!(log.last().unwrap().entry.action, "secret.read");
}

pub async fn secret_list_and_delete(store: &dyn Store) {
    let stem = format!("list-{}", Uuid::now_v7().simple());
    for p in ["a/x", "a/y", "a/y", "ab/z", "b/w"] {
        let path = format!("{stem}/{p}");
        let next = store
            .latest_secret_version(&path)
            .await
            .unwrap()
            .unwrap_or(0)
            + 1;
        store
            .put_secret_version(&version(&path, next, "k1"), &audit("secret.write", &path))
            .await
            .unwrap();
    }
    let all = store
        .list_secrets(&format!("{stem}/"), None, 100)
        .await
        .unwrap();
    let paths: Vec<_> = all.iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        ["a/x", "a/y", "ab/z", "b/w"].map(|p| format!("{stem}/{p}"))
    );
    assert_eq!(all[1].version, 2);
    let a = store
        .list_secrets(&format!("{stem}/a/"), None, 100)
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    // A prefix is literal: `_` and `%` are not wildcards.
    assert!(
        store
            .list_secrets(&format!("{stem}/_"), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_secrets(&format!("{stem}/%"), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Pages.
    let first = store
        .list_secrets(&format!("{stem}/"), None, 2)
        .await
        .unwrap();
    let rest = store
        .list_secrets(&format!("{stem}/"), Some(&first[1].path), 10)
        .await
        .unwrap();
    assert_eq!(first.len() + rest.len(), 4);

    let ay = format!("{stem}/a/y");
    assert_eq!(
        store
            .delete_secret(&ay, &audit("secret.delete", &ay))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.get_secret_version(&ay, Some(1)).await.unwrap(), None);
    assert_eq!(store.latest_secret_version(&ay).await.unwrap(), None);
    let before = store.list_audit(None, 10_000).await.unwrap().len();
    assert_eq!(
        store
            .delete_secret(&ay, &audit("secret.delete", &ay))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.list_audit(None, 10_000).await.unwrap().len(), before);
}

pub async fn secret_rewrap(store: &dyn Store) {
    let path = unique_path("rewrap");
    store
        .put_secret_version(&version(&path, 1, "old-key"), &audit("secret.write", &path))
        .await
        .unwrap();
    let todo = store.secrets_to_rewrap("new-key", 10_000).await.unwrap();
    let mine = todo.iter().find(|v| v.path == path).unwrap();
    let rewrap = Rewrap {
        path: path.clone(),
        version: 1,
        old_master_key_id: mine.sealed.master_key_id.clone(),
        wrapped_key: vec![4, 4, 4],
        master_key_id: "new-key".into(),
    };
    let n = store
        .rewrap_secrets(
            std::slice::from_ref(&rewrap),
            &audit("vault.rewrap", "new-key"),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let got = store
        .get_secret_version(&path, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.sealed.wrapped_key, vec![4, 4, 4]);
    assert_eq!(got.sealed.master_key_id, "new-key");
    assert_eq!(got.sealed.ciphertext, vec![1, 2, 3, 1]);
    // Applying it again changes nothing: the row no longer has the old key id.
    let n = store
        .rewrap_secrets(&[rewrap], &audit("vault.rewrap", "new-key"))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        !store
            .secrets_to_rewrap("new-key", 10_000)
            .await
            .unwrap()
            .iter()
            .any(|v| v.path == path)
    );
}

pub async fn rotation_policies(store: &dyn Store) {
    let i = identity("policy");
    store
        .create_identity(&i, &audit("identity.create", i.id))
        .await
        .unwrap();
    let k = key(i.id);
    store
        .create_key(&k, &audit("key.create", k.id))
        .await
        .unwrap();
    let t = now();
    let p = RotationPolicy {
        key_id: k.id,
        max_age_seconds: 3600,
        grace_seconds: 60,
        deliver_to: Some("svc/key".into()),
        created_at: t,
        updated_at: t,
    };
    assert!(
        store
            .put_rotation_policy(&p, &audit("key.rotation_policy.set", k.id))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_rotation_policy(k.id).await.unwrap(),
        Some(p.clone())
    );
    let p2 = RotationPolicy {
        grace_seconds: 0,
        deliver_to: None,
        updated_at: t + Duration::seconds(1),
        ..p.clone()
    };
    assert!(
        store
            .put_rotation_policy(&p2, &audit("key.rotation_policy.set", k.id))
            .await
            .unwrap()
    );
    let got = store.get_rotation_policy(k.id).await.unwrap().unwrap();
    assert_eq!(got.grace_seconds, 0);
    assert_eq!(got.deliver_to, None);
    assert_eq!(got.created_at, p.created_at);
    // No such key.
    let missing = RotationPolicy {
        key_id: Uuid::now_v7(),
        ..p.clone()
    };
    assert!(
        !store
            .put_rotation_policy(&missing, &audit("key.rotation_policy.set", "x"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_rotation_policy(k.id, &audit("key.rotation_policy.delete", k.id))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_rotation_policy(k.id, &audit("key.rotation_policy.delete", k.id))
            .await
            .unwrap()
    );
    assert_eq!(store.get_rotation_policy(k.id).await.unwrap(), None);
}

pub async fn scheduled_rotation(store: &dyn Store) {
    let i = identity("scheduled");
    store
        .create_identity(&i, &audit("identity.create", i.id))
        .await
        .unwrap();
    let mut old = key(i.id);
    let t = now();
    old.created_at = t - Duration::seconds(100);
    old.expires_at = None;
    old.revoked_at = None;
    store
        .create_key(&old, &audit("key.create", old.id))
        .await
        .unwrap();
    let deliver_to = unique_path("rotated");
    let p = RotationPolicy {
        key_id: old.id,
        max_age_seconds: 60,
        grace_seconds: 10,
        deliver_to: Some(deliver_to.clone()),
        created_at: t,
        updated_at: t,
    };
    store
        .put_rotation_policy(&p, &audit("key.rotation_policy.set", old.id))
        .await
        .unwrap();
    let due = store.due_rotations(t, 10_000).await.unwrap();
    assert!(due.iter().any(|(pol, k)| k.id == old.id && pol == &p));
    // Not due an instant before its age.
    let early = store
        .due_rotations(old.created_at + Duration::seconds(59), 10_000)
        .await
        .unwrap();
    assert!(!early.iter().any(|(_, k)| k.id == old.id));

    let minted = mint(&KeyPrefix::default());
    let new = keyward_core::model::KeyRecord {
        id: Uuid::now_v7(),
        digest: minted.digest,
        start: minted.start.clone(),
        created_at: t,
        updated_at: t,
        rotated_from: Some(old.id),
        ..old.clone()
    };
    let delivery = version(&deliver_to, 1, "k1");
    let r = ScheduledRotation {
        old_id: old.id,
        new: new.clone(),
        old_revoked_at: t + Duration::seconds(10),
        now: t,
        delivery: Some(delivery.clone()),
        audit: vec![
            audit("key.rotate", old.id),
            audit("secret.write", &deliver_to),
        ],
    };
    let updated = store.rotate_on_schedule(&r).await.unwrap().unwrap();
    assert_eq!(updated.rotated_to, Some(new.id));
    assert_eq!(updated.revoked_at, Some(t + Duration::seconds(10)));
    assert_eq!(
        store.get_key(new.id).await.unwrap().unwrap().rotated_from,
        Some(old.id)
    );
    assert_eq!(
        store.get_secret_version(&deliver_to, None).await.unwrap(),
        Some(delivery)
    );
    // The policy moved to the new key.
    assert_eq!(store.get_rotation_policy(old.id).await.unwrap(), None);
    assert_eq!(
        store
            .get_rotation_policy(new.id)
            .await
            .unwrap()
            .unwrap()
            .max_age_seconds,
        60
    );
    let log = store.list_audit(None, 10_000).await.unwrap();
    let actions: Vec<_> = log
        .iter()
        .rev()
        .take(2)
        .map(|r| r.entry.action.clone())
        .collect();
    assert_eq!(actions, ["secret.write", "key.rotate"]);
    assert!(
        !store
            .due_rotations(t, 10_000)
            .await
            .unwrap()
            .iter()
            .any(|(_, k)| k.id == old.id)
    );

    // Twice: a conflict, and nothing written (the delivery's version is free again
    // for nobody: the new key is not stored twice).
    let again = store.rotate_on_schedule(&r).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    // A delivery whose version was taken meanwhile rolls the whole rotation back.
    let mut other = key(i.id);
    other.created_at = t - Duration::seconds(100);
    other.revoked_at = None;
    other.expires_at = None;
    store
        .create_key(&other, &audit("key.create", other.id))
        .await
        .unwrap();
    let minted = mint(&KeyPrefix::default());
    let new2 = keyward_core::model::KeyRecord {
        id: Uuid::now_v7(),
        digest: minted.digest,
        start: minted.start.clone(),
        ..other.clone()
    };
    let clash = ScheduledRotation {
        old_id: other.id,
        new: new2.clone(),
        old_revoked_at: t,
        now: t,
        delivery: Some(version(&deliver_to, 1, "k1")),
        audit: vec![audit("key.rotate", other.id)],
    };
    let res = store.rotate_on_schedule(&clash).await;
    assert!(matches!(res, Err(StoreError::Conflict(_))), "{res:?}");
    assert_eq!(store.get_key(new2.id).await.unwrap(), None);
    assert_eq!(
        store.get_key(other.id).await.unwrap().unwrap().rotated_to,
        None
    );
}
