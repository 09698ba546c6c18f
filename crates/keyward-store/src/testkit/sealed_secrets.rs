//! Conformance tests of [`SealedSecretStore`] for token signing keys and administrator
//! TOTP secrets (tests/sealed_secrets.rs runs them on every store): a sealed secret is
//! stored without its plaintext, rows written in the clear are found, sealed once and
//! cleared, and rewraps apply only over the master key id they read.

use uuid::Uuid;
use zeroize::Zeroizing;

use keyward_core::envelope::Sealed;
use keyward_core::model::Identity;

use super::{audit, identity, now};
use crate::Store;
use crate::admins::AdminRecord;
use crate::sealed_secrets::{SealedKind, SealedRewrap, SealedSecret};
use crate::tokens::SigningKeyRecord;

fn sealed(tag: u8, key_id: &str) -> Sealed {
    Sealed {
        ciphertext: vec![0xc1, tag, 0xc3],
        wrapped_key: vec![0x77, tag],
        master_key_id: key_id.to_owned(),
    }
}

fn signing_key(private_key: &[u8], sealed: Option<Sealed>) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: Uuid::now_v7().simple().to_string(),
        public_key: vec![7; 32],
        private_key: Zeroizing::new(private_key.to_vec()),
        sealed_private_key: sealed,
        created_at: now(),
        retired_at: None,
    }
}

/// Signing keys: sealed on write, plaintext rows sealed once, rewrapped.
pub async fn signing_keys_sealed(store: &dyn Store) {
    let kind = SealedKind::SigningKey;
    // An old row, in the clear (bytes that are not valid UTF-8: a DER key is binary).
    let old = signing_key(&[0x30, 0xff, 0x00, 0x80], None);
    store
        .rotate_signing_key(
            &old,
            None,
            now(),
            &audit("token.signing_key.rotate", &old.kid),
        )
        .await
        .unwrap();
    // A new row, sealed: the plaintext handed in is not stored.
    let new = signing_key(&[0x30, 0x01], Some(sealed(1, "mk-a")));
    store
        .rotate_signing_key(
            &new,
            Some(&old.kid),
            now(),
            &audit("token.signing_key.rotate", &new.kid),
        )
        .await
        .unwrap();
    let keys = store
        .signing_keys(now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let got = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap().clone();
    assert!(
        got(&new.kid).private_key.is_empty(),
        "no plaintext once sealed"
    );
    assert_eq!(got(&new.kid).sealed_private_key, Some(sealed(1, "mk-a")));
    assert_eq!(&got(&old.kid).private_key[..], &[0x30, 0xff, 0x00, 0x80]);
    assert_eq!(got(&old.kid).sealed_private_key, None);

    // Only the old row is in the clear, with its exact bytes.
    let plain = store.plaintext_secrets(kind, 10).await.unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].id, old.kid);
    assert_eq!(&plain[0].plaintext[..], &[0x30, 0xff, 0x00, 0x80]);
    let seal = [SealedSecret {
        id: old.kid.clone(),
        sealed: sealed(2, "mk-a"),
    }];
    seals_once(store, kind, &seal).await;
    assert!(store.plaintext_secrets(kind, 10).await.unwrap().is_empty());
    let keys = store
        .signing_keys(now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let old_now = keys.iter().find(|k| k.kid == old.kid).unwrap();
    assert!(old_now.private_key.is_empty(), "the plaintext is cleared");
    assert_eq!(old_now.sealed_private_key, Some(sealed(2, "mk-a")));
    assert_eq!(old_now.public_key, vec![7; 32]);

    // The rewrap: both rows are under another key; a stale old id changes nothing.
    let due = store
        .sealed_secrets_to_rewrap(kind, "mk-b", 10)
        .await
        .unwrap();
    let mut ids: Vec<_> = due.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    let mut want = vec![old.kid.clone(), new.kid.clone()];
    want.sort();
    assert_eq!(ids, want);
    let rewrap = |old_id: &str| SealedRewrap {
        id: new.kid.clone(),
        old_master_key_id: old_id.to_owned(),
        wrapped_key: vec![0x55],
        master_key_id: "mk-b".into(),
    };
    let audit_rewrap = audit("vault.rewrap", kind.as_str());
    assert_eq!(
        store
            .rewrap_sealed_secrets(kind, &[rewrap("mk-x")], &audit_rewrap)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .rewrap_sealed_secrets(kind, &[rewrap("mk-a")], &audit_rewrap)
            .await
            .unwrap(),
        1
    );
    let keys = store
        .signing_keys(now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let s = keys
        .iter()
        .find(|k| k.kid == new.kid)
        .unwrap()
        .sealed_private_key
        .clone()
        .unwrap();
    assert_eq!(s.wrapped_key, vec![0x55]);
    assert_eq!(s.master_key_id, "mk-b");
    assert_eq!(s.ciphertext, sealed(1, "mk-a").ciphertext);
    let due = store
        .sealed_secrets_to_rewrap(kind, "mk-b", 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, old.kid);
}

fn admin(totp_secret: &str, sealed: Option<Sealed>) -> (AdminRecord, Identity) {
    let ident = identity("admin-sealed");
    let a = AdminRecord {
        id: Uuid::now_v7(),
        username: format!("adm-{}", Uuid::now_v7().simple()),
        identity_id: ident.id,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        totp_secret: totp_secret.into(),
        sealed_totp_secret: sealed,
        scopes: vec!["keyward:keys:read".into()],
        enabled: true,
        created_at: now(),
        last_totp_step: None,
    };
    (a, ident)
}

/// Administrator TOTP secrets: sealed on write, plaintext rows sealed once, rewrapped.
pub async fn admin_totp_sealed(store: &dyn Store) {
    let kind = SealedKind::AdminTotp;
    let (old, ident) = admin("JBSWY3DPEHPK3PXP", None);
    store
        .create_admin(&old, &ident, &[], &audit("admin.create", old.id))
        .await
        .unwrap();
    let (new, ident) = admin("KRSXG5CTMVRXEZLU", Some(sealed(3, "mk-a")));
    store
        .create_admin(&new, &ident, &[], &audit("admin.create", new.id))
        .await
        .unwrap();
    let got = store
        .admin_by_username(&new.username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.totp_secret, "", "no plaintext once sealed");
    assert_eq!(got.sealed_totp_secret, Some(sealed(3, "mk-a")));
    let got_old = store
        .admin_by_username(&old.username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got_old, old);

    let plain = store.plaintext_secrets(kind, 10).await.unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].id, old.id.to_string());
    assert_eq!(&plain[0].plaintext[..], b"JBSWY3DPEHPK3PXP");
    let seal = [SealedSecret {
        id: old.id.to_string(),
        sealed: sealed(4, "mk-a"),
    }];
    seals_once(store, kind, &seal).await;
    assert!(store.plaintext_secrets(kind, 10).await.unwrap().is_empty());
    let got_old = store
        .admin_by_username(&old.username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got_old.totp_secret, "", "the plaintext is cleared");
    assert_eq!(got_old.sealed_totp_secret, Some(sealed(4, "mk-a")));
    // The rest of the row is untouched, in lists too.
    assert!(
        store
            .list_admins()
            .await
            .unwrap()
            .iter()
            .any(|a| a.id == old.id && a.sealed_totp_secret == Some(sealed(4, "mk-a")))
    );

    let due = store
        .sealed_secrets_to_rewrap(kind, "mk-b", 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    let rewrap = SealedRewrap {
        id: old.id.to_string(),
        old_master_key_id: "mk-a".into(),
        wrapped_key: vec![0x66],
        master_key_id: "mk-b".into(),
    };
    assert_eq!(
        store
            .rewrap_sealed_secrets(kind, &[rewrap], &audit("vault.rewrap", kind.as_str()))
            .await
            .unwrap(),
        1
    );
    let got_old = store
        .admin_by_username(&old.username)
        .await
        .unwrap()
        .unwrap();
    let s = got_old.sealed_totp_secret.unwrap();
    assert_eq!(
        (s.wrapped_key, s.master_key_id),
        (vec![0x66], "mk-b".into())
    );
    // Disabling returns the sealed form too (RETURNING).
    let disabled = store
        .set_admin_enabled(new.id, false, &audit("admin.disable", new.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.sealed_totp_secret, Some(sealed(3, "mk-a")));
}

/// Sealing a plaintext row takes once: the second time the row is already sealed and
/// left alone.
async fn seals_once(store: &dyn Store, kind: SealedKind, seal: &[SealedSecret]) {
    let upgrade = audit("vault.seal_plaintext", kind.as_str());
    for expected in [1, 0] {
        assert_eq!(
            store
                .seal_plaintext_secrets(kind, seal, &upgrade)
                .await
                .unwrap(),
            expected
        );
    }
}
