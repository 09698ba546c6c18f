//! Envelope encryption: round trips, and every tampering fails with an error.

use keyward_core::envelope::{self, Keyring, MasterKey, MasterKeyError, Sealed, VaultError};
use proptest::prelude::*;

fn ring() -> Keyring {
    Keyring::new(MasterKey::generate(), vec![])
}

#[test]
fn round_trip() {
    let ring = ring();
    for value in [
        &b""[..],
        b"x",
        b"postgres://user:pw@db/app",
        &[0u8; 65536][..],
    ] {
        let sealed = envelope::seal(&ring, "payments/db", 3, value);
        assert_eq!(
            &envelope::open(&ring, "payments/db", 3, &sealed).unwrap()[..],
            value
        );
        assert_eq!(sealed.master_key_id, ring.current().id());
    }
}

#[test]
fn same_value_seals_differently() {
    let ring = ring();
    let a = envelope::seal(&ring, "a", 1, b"same");
    let b = envelope::seal(&ring, "a", 1, b"same");
    assert_ne!(a.ciphertext, b.ciphertext);
    assert_ne!(a.wrapped_key, b.wrapped_key);
}

#[test]
fn ciphertext_holds_no_plaintext() {
    let ring = ring();
    let value = b"a-very-recognisable-secret-value";
    let s = envelope::seal(&ring, "a", 1, value);
    assert!(!s.ciphertext.windows(value.len()).any(|w| w == value));
}

#[test]
fn flipped_bytes_fail() {
    let ring = ring();
    let sealed = envelope::seal(&ring, "p", 1, b"secret value");
    for i in 0..sealed.ciphertext.len() {
        let mut bad = sealed.clone();
        bad.ciphertext[i] ^= 0x01;
        assert_eq!(
            envelope::open(&ring, "p", 1, &bad),
            Err(VaultError::Undecryptable)
        );
    }
    for i in 0..sealed.wrapped_key.len() {
        let mut bad = sealed.clone();
        bad.wrapped_key[i] ^= 0x80;
        assert_eq!(
            envelope::open(&ring, "p", 1, &bad),
            Err(VaultError::Undecryptable)
        );
    }
    let mut short = sealed.clone();
    short.ciphertext.truncate(10);
    assert_eq!(
        envelope::open(&ring, "p", 1, &short),
        Err(VaultError::Undecryptable)
    );
    let mut empty = sealed;
    empty.wrapped_key.clear();
    assert_eq!(
        envelope::open(&ring, "p", 1, &empty),
        Err(VaultError::Undecryptable)
    );
}

#[test]
fn moved_blobs_fail() {
    let ring = ring();
    let a1 = envelope::seal(&ring, "a", 1, b"value of a1");
    let a2 = envelope::seal(&ring, "a", 2, b"value of a2");
    // Another path, another version.
    assert_eq!(
        envelope::open(&ring, "b", 1, &a1),
        Err(VaultError::Undecryptable)
    );
    assert_eq!(
        envelope::open(&ring, "a", 2, &a1),
        Err(VaultError::Undecryptable)
    );
    // A row's value with another row's wrapped key.
    let mixed = Sealed {
        ciphertext: a1.ciphertext.clone(),
        wrapped_key: a2.wrapped_key.clone(),
        master_key_id: a1.master_key_id.clone(),
    };
    assert_eq!(
        envelope::open(&ring, "a", 1, &mixed),
        Err(VaultError::Undecryptable)
    );
    assert_eq!(
        envelope::open(&ring, "a", 2, &mixed),
        Err(VaultError::Undecryptable)
    );
}

#[test]
fn wrong_master_key_fails() {
    let sealed = envelope::seal(&ring(), "a", 1, b"v");
    let other = ring();
    assert_eq!(
        envelope::open(&other, "a", 1, &sealed),
        Err(VaultError::UnknownMasterKey(sealed.master_key_id.clone()))
    );
    // Even when the id is forged to the other key's.
    let forged = Sealed {
        master_key_id: other.current().id().to_owned(),
        ..sealed
    };
    assert_eq!(
        envelope::open(&other, "a", 1, &forged),
        Err(VaultError::Undecryptable)
    );
}

#[test]
fn rewrap_moves_to_the_new_key_and_keeps_the_value() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let sealed = envelope::seal(&Keyring::new(old.clone(), vec![]), "a", 7, b"value");
    let both = Keyring::new(new.clone(), vec![old]);
    // Reads work before the rewrap (old key still loaded) ...
    assert_eq!(
        &envelope::open(&both, "a", 7, &sealed).unwrap()[..],
        b"value"
    );
    let (wrapped_key, id) = envelope::rewrap(&both, "a", 7, &sealed).unwrap();
    assert_eq!(id, new.id());
    let rewrapped = Sealed {
        wrapped_key,
        master_key_id: id,
        ciphertext: sealed.ciphertext.clone(),
    };
    // ... and after it, with the new key alone.
    let only_new = Keyring::new(new, vec![]);
    assert_eq!(
        &envelope::open(&only_new, "a", 7, &rewrapped).unwrap()[..],
        b"value"
    );
    assert!(envelope::open(&only_new, "a", 7, &sealed).is_err());
}

#[test]
fn master_key_encoding() {
    let k = MasterKey::generate();
    let again = MasterKey::from_base64(&format!("  {}\n", k.to_base64().as_str())).unwrap();
    assert_eq!(again.id(), k.id());
    assert_eq!(k.id().len(), 16);
    assert_eq!(
        MasterKey::from_base64("not base64!").unwrap_err(),
        MasterKeyError::BadEncoding
    );
    assert_eq!(
        MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
        MasterKeyError::BadLength(5)
    );
    assert!(!format!("{k:?}").contains(k.to_base64().as_str()));
}

proptest! {
    #[test]
    fn any_value_round_trips(value in prop::collection::vec(any::<u8>(), 0..2048), version in 1i64..1_000_000) {
        let ring = ring();
        let s = envelope::seal(&ring, "x/y", version, &value);
        prop_assert_eq!(&envelope::open(&ring, "x/y", version, &s).unwrap()[..], &value[..]);
    }
}
