//! Envelope encryption of secret values (no IO: the key ring is handed in, randomness
//! comes from the OS CSPRNG like key minting does).
//!
//! Each secret version gets a fresh random 256-bit *data key*. The value is sealed with
//! XChaCha20-Poly1305 under the data key; the data key is sealed (wrapped) with
//! XChaCha20-Poly1305 under the *master key*. Both use random 192-bit nonces, which
//! XChaCha makes safe to pick at random. Stored per version: `ciphertext` and
//! `wrapped_key` (each `nonce || AEAD output`) and the master key's id.
//!
//! Associated data binds each sealed blob to its place, so a blob copied to another
//! row does not open:
//!
//! * the value: `keyward/secret-value/v1 \0 <path> \0 <version>`;
//! * the data key: `keyward/secret-dek/v1 \0 <path> \0 <version> \0 <master key id>`.
//!
//! The value's data does not name the master key: master key rotation rewraps only the
//! data key (`rewrap`), the value's ciphertext stays as it is.
//!
//! A flipped byte, a blob moved to another path or version, or the wrong master key all
//! fail authentication: [`VaultError::Undecryptable`], never garbage.
//!
//! Master key ids are derived from the key (first 8 bytes of SHA-256 over a label and
//! the key, in hex), so an operator never has to name them and a wrong key can never
//! pass for the right id.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::{RngCore, TryRngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const MASTER_KEY_LEN: usize = 32;
const DATA_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The blob does not authenticate: tampered with, moved, or sealed under another key.
    #[error(
        "the secret does not decrypt: it was altered, moved, or sealed with another master key"
    )]
    Undecryptable,
    /// The data key was wrapped by a master key this process does not have.
    #[error("the secret is sealed with master key {0}, which is not loaded")]
    UnknownMasterKey(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    #[error("a master key must be standard base64 (with padding) of exactly 32 bytes")]
    BadEncoding,
    #[error("a master key must be 32 bytes, got {0}")]
    BadLength(usize),
}

/// A 256-bit master key and its id. `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, MasterKeyError> {
        let key: [u8; MASTER_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| MasterKeyError::BadLength(bytes.len()))?;
        let key = Zeroizing::new(key);
        let mut h = Sha256::new();
        h.update(b"keyward/master-key-id/v1\0");
        h.update(&key[..]);
        let id = hex::encode(&h.finalize()[..8]);
        Ok(MasterKey { id, key })
    }

    /// The encoding of `KEYWARD_MASTER_KEY` and of key files: standard base64 of 32
    /// bytes (`openssl rand -base64 32`); surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<MasterKey, MasterKeyError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| MasterKeyError::BadEncoding)?,
        );
        Self::from_bytes(&bytes)
    }

    /// A new random key from the OS CSPRNG.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        OsRng.unwrap_err().fill_bytes(&mut bytes[..]);
        Self::from_bytes(&bytes[..]).expect("32 bytes")
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(&self.key[..]))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        cipher_for(&self.key[..])
    }
}

/// The master keys a process holds: the current one (which seals) and older ones
/// (which only open, until every data key is rewrapped under the current one).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Keyring {
        let previous = previous
            .into_iter()
            .filter(|k| k.id != current.id)
            .collect();
        Keyring { current, previous }
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// Ids of the older keys (whose data keys the rewrap job moves to the current one).
    pub fn previous_ids(&self) -> Vec<String> {
        self.previous.iter().map(|k| k.id.clone()).collect()
    }
}

/// A sealed secret version as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub master_key_id: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("master_key_id", &self.master_key_id)
            .finish()
    }
}

fn value_aad(path: &str, version: i64) -> Vec<u8> {
    format!("keyward/secret-value/v1\0{path}\0{version}").into_bytes()
}

fn dek_aad(path: &str, version: i64, master_key_id: &str) -> Vec<u8> {
    format!("keyward/secret-dek/v1\0{path}\0{version}\0{master_key_id}").into_bytes()
}

/// An XChaCha20-Poly1305 instance for a 32-byte key (master or data key).
fn cipher_for(key: &[u8]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new_from_slice(key).expect("keys are 32 bytes")
}

fn seal_with(cipher: &XChaCha20Poly1305, msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.unwrap_err().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg, aad })
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open_with(
    cipher: &XChaCha20Poly1305,
    blob: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if blob.len() < NONCE_LEN {
        return Err(VaultError::Undecryptable);
    }
    let (nonce, msg) = blob.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg, aad })
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Undecryptable)
}

fn unwrap_data_key(
    ring: &Keyring,
    path: &str,
    version: i64,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let master = ring
        .get(&sealed.master_key_id)
        .ok_or_else(|| VaultError::UnknownMasterKey(sealed.master_key_id.clone()))?;
    let dek = open_with(
        &master.cipher(),
        &sealed.wrapped_key,
        &dek_aad(path, version, &sealed.master_key_id),
    )?;
    if dek.len() != DATA_KEY_LEN {
        return Err(VaultError::Undecryptable);
    }
    Ok(dek)
}

/// Seals `value` as version `version` of `path`, under a fresh data key wrapped by the
/// ring's current master key.
pub fn seal(ring: &Keyring, path: &str, version: i64, value: &[u8]) -> Sealed {
    let mut dek = Zeroizing::new([0u8; DATA_KEY_LEN]);
    OsRng.unwrap_err().fill_bytes(&mut dek[..]);
    let data_cipher = cipher_for(&dek[..]);
    let ciphertext = seal_with(&data_cipher, value, &value_aad(path, version));
    let master = ring.current();
    let wrapped_key = seal_with(
        &master.cipher(),
        &dek[..],
        &dek_aad(path, version, &master.id),
    );
    Sealed {
        ciphertext,
        wrapped_key,
        master_key_id: master.id.clone(),
    }
}

/// Opens version `version` of `path`. The plaintext is wiped when dropped.
pub fn open(
    ring: &Keyring,
    path: &str,
    version: i64,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let dek = unwrap_data_key(ring, path, version, sealed)?;
    let data_cipher = cipher_for(&dek);
    open_with(&data_cipher, &sealed.ciphertext, &value_aad(path, version))
}

/// Rewraps the data key under the ring's current master key; the value's ciphertext
/// is untouched. Returns the new `(wrapped_key, master_key_id)`.
pub fn rewrap(
    ring: &Keyring,
    path: &str,
    version: i64,
    sealed: &Sealed,
) -> Result<(Vec<u8>, String), VaultError> {
    let dek = unwrap_data_key(ring, path, version, sealed)?;
    let master = ring.current();
    let wrapped = seal_with(&master.cipher(), &dek, &dek_aad(path, version, &master.id));
    Ok((wrapped, master.id.clone()))
}
