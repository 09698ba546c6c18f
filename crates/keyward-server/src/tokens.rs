//! Short-lived tokens: Ed25519 signing keys shared by the cluster through the store, the
//! JWKS that publishes them, and signing and checking of Keyward JWTs.
//!
//! Rotation keeps every issued token verifiable: a new key becomes current, and a
//! retired key stays published (and accepted) for [`MAX_TTL`] plus [`LEEWAY`] after its
//! retirement, longer than any token it signed can live. Nodes re-read the keys every
//! [`KEYS_FRESH_FOR`], and at once (throttled) when a token names a `kid` they do not
//! know, so a key made current on one node is soon used and accepted by all.
//!
//! With a master key, a private key is stored sealed (`SealedKind::SigningKey`, path
//! `keyward/signing-key/<kid>`), never in the clear, and opened only to sign; a key that
//! cannot be opened (a wrong master key) signs nothing: signing fails, it never falls
//! back to another key. Keys written in the clear (no master key, or before sealing
//! existed) are used as stored, and sealed when a server with a master key starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyward_core::model::AuditEntry;
use keyward_core::time::Timestamp;
use keyward_proto as proto;
use keyward_store::sealed_secrets::SealedKind;
use keyward_store::{SigningKeyRecord, Store, StoreError};
use parking_lot::Mutex;
use rand::TryRngCore;
use rand::rngs::OsRng;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::sealed_secrets;
use crate::vault::Vault;

/// Lifetime of a token when none is asked for, in seconds.
pub const DEFAULT_TTL: u64 = 300;
/// Longest lifetime a token may be given, in seconds.
pub const MAX_TTL: u64 = 3600;
/// Clock skew tolerated between nodes, in seconds: retired keys stay published this much
/// longer than [`MAX_TTL`].
pub const LEEWAY: u64 = 60;
/// How often the jobs leader makes a new signing key current, by default.
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(24 * 3600);
/// How long a node uses its copy of the signing keys before reading the store again.
pub const KEYS_FRESH_FOR: Duration = Duration::from_secs(2);
/// At most one forced re-read (for an unknown `kid`) this often, so tokens with made-up
/// `kid`s cannot hammer the store.
const UNKNOWN_KID_REREAD: Duration = Duration::from_secs(1);
/// Key digests kept for introspection.
const DIGESTS_CACHED: usize = 100_000;
/// The audit action of a signing-key rotation.
pub const ROTATE_ACTION: &str = "token.signing_key.rotate";

/// The signing keys as this node last read them.
struct Snapshot {
    loaded_at: Instant,
    /// The key that signs new tokens: `(kid, key, created_at)`; the key is an error
    /// (without secrets) if its private key could not be opened: then nothing signs.
    current: Option<(String, Result<EncodingKey, String>, Timestamp)>,
    /// Every published key by `kid`.
    verifying: HashMap<String, DecodingKey>,
    jwks: proto::Jwks,
}

pub struct SigningKeys {
    store: Arc<dyn Store>,
    /// Seals new private keys and opens sealed ones; `None`: keys are kept in the clear.
    vault: Option<Arc<Vault>>,
    /// Key id -> digest, for introspection (a key's digest never changes).
    digests: quick_cache::sync::Cache<Uuid, keyward_core::KeyDigest>,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    last_forced: Mutex<Option<Instant>>,
    /// One store read at a time; the others wait and use its result.
    reading: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    /// `vault`: the server's master keys, if it has any (new private keys are then
    /// stored sealed).
    pub fn new(store: Arc<dyn Store>, vault: Option<Arc<Vault>>) -> Arc<SigningKeys> {
        Arc::new(SigningKeys {
            store,
            vault,
            digests: quick_cache::sync::Cache::new(DIGESTS_CACHED),
            snapshot: Mutex::new(None),
            last_forced: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        })
    }

    /// The published public keys.
    pub async fn jwks(&self) -> Result<proto::Jwks, StoreError> {
        Ok(self.fresh().await?.jwks.clone())
    }

    /// Signs `claims` with the current key, making the first key if there is none.
    pub async fn sign(&self, claims: &proto::TokenClaims) -> Result<(String, String), SignError> {
        let mut snap = self.fresh().await?;
        if snap.current.is_none() {
            // Another node (or the jobs leader) may make the first key at the same time:
            // exactly one wins, and everyone signs with that one.
            self.rotate_from(None, crate::now()).await?;
            snap = self.reread().await?;
        }
        let (kid, key, _) = snap
            .current
            .as_ref()
            .ok_or_else(|| SignError::Key("no current signing key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        // Fail closed: a key that cannot be opened signs nothing, and no other key is
        // used in its place.
        let key = key.as_ref().map_err(|why| {
            tracing::error!(kid = %kid, "cannot sign tokens: {why}");
            SignError::Key(why.clone())
        })?;
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| SignError::Key(format!("signing failed: {e}")))?;
        Ok((token, kid.clone()))
    }

    /// The claims of `token` if its signature is good under a published key and it has
    /// not expired (no leeway: an expired token is inactive). The audience is not checked
    /// here (introspection reports it). `None` for anything else.
    pub async fn decode(&self, token: &str) -> Result<Option<proto::TokenClaims>, StoreError> {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        let Some(kid) = header.kid.filter(|_| header.alg == Algorithm::EdDSA) else {
            return Ok(None);
        };
        let mut snap = self.fresh().await?;
        if !snap.verifying.contains_key(&kid) && self.may_force() {
            snap = self.reread().await?;
        }
        let Some(key) = snap.verifying.get(&kid) else {
            return Ok(None);
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(
            jsonwebtoken::decode::<proto::TokenClaims>(token, key, &validation)
                .ok()
                .map(|d| d.claims),
        )
    }

    /// Makes a fresh key pair current (retiring the current one), audit-logged as done
    /// by `system`. Returns the new `kid`.
    pub async fn rotate(&self, now: Timestamp) -> Result<String, StoreError> {
        loop {
            let keys = self.store.signing_keys(now).await?;
            let current = keys.iter().find(|k| k.retired_at.is_none());
            if let Some(kid) = self
                .rotate_from(current.map(|k| k.kid.as_str()), now)
                .await?
            {
                return Ok(kid);
            }
            // Another node rotated between the read and the write: retire its key.
        }
    }

    /// Makes a fresh key pair current if the current one is still `replacing` (`None`:
    /// there is none). Returns the new `kid`, or `None` if another node rotated first
    /// (its key is then current, and nothing was written).
    async fn rotate_from(
        &self,
        replacing: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        let mut record = generate(now);
        match self.vault.as_deref() {
            Some(vault) => {
                // Only the sealed form is stored; the plaintext is wiped when replaced.
                record.sealed_private_key = Some(sealed_secrets::seal(
                    vault,
                    SealedKind::SigningKey,
                    &record.kid,
                    &record.private_key,
                ));
                record.private_key = Zeroizing::new(Vec::new());
            }
            None => warn_unsealed(),
        }
        let audit = AuditEntry {
            at: now,
            actor: "system".into(),
            action: ROTATE_ACTION.into(),
            target: record.kid.clone(),
            request_id: None,
            source_ip: None,
            detail: serde_json::json!({"kid": record.kid}),
        };
        let rotated = self
            .store
            .rotate_signing_key(&record, replacing, now, &audit)
            .await?;
        *self.snapshot.lock() = None;
        if !rotated {
            return Ok(None);
        }
        tracing::info!(kid = %record.kid, "token signing key rotated");
        Ok(Some(record.kid.clone()))
    }

    /// Rotates when the current key is `every` old or there is none (the jobs leader
    /// calls this). Reads the store, not the cache, so two leaders in a row agree.
    pub async fn rotate_if_due(&self, now: Timestamp, every: Duration) -> Result<bool, StoreError> {
        let keys = self.store.signing_keys(now).await?;
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let current = keys.iter().find(|k| k.retired_at.is_none());
        let due = match current {
            None => true,
            Some(k) => k.created_at + every <= now,
        };
        if !due {
            return Ok(false);
        }
        // A node that made or rotated the key meanwhile has done the job.
        Ok(self
            .rotate_from(current.map(|k| k.kid.as_str()), now)
            .await?
            .is_some())
    }

    /// The digest of the key with this id (from the store once, then remembered);
    /// `None` if there is no such key.
    pub async fn key_digest(
        &self,
        key_id: Uuid,
    ) -> Result<Option<keyward_core::KeyDigest>, StoreError> {
        if let Some(d) = self.digests.get(&key_id) {
            return Ok(Some(d));
        }
        let Some(key) = self.store.get_key(key_id).await? else {
            return Ok(None);
        };
        self.digests.insert(key_id, key.digest);
        Ok(Some(key.digest))
    }

    fn may_force(&self) -> bool {
        let mut last = self.last_forced.lock();
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REREAD) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn fresh(&self) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(s) = self.snapshot.lock().clone()
            && s.loaded_at.elapsed() < KEYS_FRESH_FOR
        {
            return Ok(s);
        }
        self.reread().await
    }

    async fn reread(&self) -> Result<Arc<Snapshot>, StoreError> {
        let asked = Instant::now();
        let _one = self.reading.lock().await;
        // Someone else read the store while we waited: theirs is as fresh as ours.
        if let Some(s) = self.snapshot.lock().clone()
            && s.loaded_at >= asked
        {
            return Ok(s);
        }
        let now = crate::now();
        let published_after = now - chrono::Duration::seconds((MAX_TTL + LEEWAY) as i64);
        let records = self.store.signing_keys(published_after).await?;
        let snap = Arc::new(snapshot(&records, self.vault.as_deref())?);
        *self.snapshot.lock() = Some(snap.clone());
        Ok(snap)
    }
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Key(String),
}

/// Logs once per process that signing keys are stored in the clear (no master key).
fn warn_unsealed() {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "token signing keys are stored in the clear: the server has no master key to seal \
             them with (KEYWARD_MASTER_KEY or --master-key-file)"
        );
    }
}

/// The key `r` signs with: its private key opened from the sealed form, or as stored on a
/// row written in the clear. An error (naming the kid, never a secret) if it cannot be
/// opened: no master key, or not the one it was sealed under.
fn encoding_key(vault: Option<&Vault>, r: &SigningKeyRecord) -> Result<EncodingKey, String> {
    let Some(sealed) = &r.sealed_private_key else {
        if r.private_key.is_empty() {
            return Err(format!("signing key {} has no private key", r.kid));
        }
        return Ok(EncodingKey::from_ed_der(&r.private_key));
    };
    let vault = vault.ok_or_else(|| {
        format!(
            "signing key {} is sealed and this server has no master key to open it",
            r.kid
        )
    })?;
    // Wiped when dropped.
    let der = sealed_secrets::open(vault, SealedKind::SigningKey, &r.kid, sealed).map_err(|e| {
        format!(
            "cannot open the sealed signing key {} (not the master key it was sealed under?): {e}",
            r.kid
        )
    })?;
    Ok(EncodingKey::from_ed_der(&der))
}

fn snapshot(records: &[SigningKeyRecord], vault: Option<&Vault>) -> Result<Snapshot, StoreError> {
    let mut verifying = HashMap::new();
    let mut jwks = proto::Jwks::default();
    let mut current = None;
    for r in records {
        let x = URL_SAFE_NO_PAD.encode(&r.public_key);
        let key = DecodingKey::from_ed_components(&x)
            .map_err(|e| StoreError::Corrupt(format!("signing key {}: {e}", r.kid)))?;
        verifying.insert(r.kid.clone(), key);
        jwks.keys.push(proto::Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x,
            kid: r.kid.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        });
        // Newest first: the first key not retired signs.
        if current.is_none() && r.retired_at.is_none() {
            current = Some((r.kid.clone(), encoding_key(vault, r), r.created_at));
        }
    }
    Ok(Snapshot {
        loaded_at: Instant::now(),
        current,
        verifying,
        jwks,
    })
}

/// A fresh Ed25519 key pair from the OS CSPRNG.
fn generate(now: Timestamp) -> SigningKeyRecord {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(&mut seed[..])
        .expect("the OS random number generator failed");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = key
        .to_pkcs8_der()
        .expect("an Ed25519 key always encodes as PKCS#8");
    SigningKeyRecord {
        kid: Uuid::now_v7().simple().to_string(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        private_key: Zeroizing::new(der.as_bytes().to_vec()),
        sealed_private_key: None,
        created_at: now,
        retired_at: None,
    }
}
