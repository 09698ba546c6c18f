//! Short-lived tokens: Ed25519 signing keys shared by the cluster through the store, the
//! JWKS that publishes them, and signing and checking of Keyward JWTs.
//!
//! Rotation keeps every issued token verifiable: a new key becomes current, and a
//! retired key stays published (and accepted) for [`MAX_TTL`] plus [`LEEWAY`] after its
//! retirement, longer than any token it signed can live. Nodes re-read the keys every
//! [`KEYS_FRESH_FOR`], and at once (throttled) when a token names a `kid` they do not
//! know, so a key made current on one node is soon used and accepted by all.

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
use keyward_store::{SigningKeyRecord, Store, StoreError};
use parking_lot::Mutex;
use rand::TryRngCore;
use rand::rngs::OsRng;
use uuid::Uuid;
use zeroize::Zeroizing;

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
    /// The key that signs new tokens: `(kid, key, created_at)`.
    current: Option<(String, EncodingKey, Timestamp)>,
    /// Every published key by `kid`.
    verifying: HashMap<String, DecodingKey>,
    jwks: proto::Jwks,
}

pub struct SigningKeys {
    store: Arc<dyn Store>,
    /// Key id -> digest, for introspection (a key's digest never changes).
    digests: quick_cache::sync::Cache<Uuid, keyward_core::KeyDigest>,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    last_forced: Mutex<Option<Instant>>,
    /// One store read at a time; the others wait and use its result.
    reading: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    pub fn new(store: Arc<dyn Store>) -> Arc<SigningKeys> {
        Arc::new(SigningKeys {
            store,
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
            self.rotate(crate::now()).await?;
            snap = self.reread().await?;
        }
        let (kid, key, _) = snap
            .current
            .as_ref()
            .ok_or_else(|| SignError::Key("no current signing key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
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
        let record = generate(now);
        let audit = AuditEntry {
            at: now,
            actor: "system".into(),
            action: ROTATE_ACTION.into(),
            target: record.kid.clone(),
            request_id: None,
            source_ip: None,
            detail: serde_json::json!({"kid": record.kid}),
        };
        self.store.rotate_signing_key(&record, now, &audit).await?;
        *self.snapshot.lock() = None;
        tracing::info!(kid = %record.kid, "token signing key rotated");
        Ok(record.kid)
    }

    /// Rotates when the current key is `every` old or there is none (the jobs leader
    /// calls this). Reads the store, not the cache, so two leaders in a row agree.
    pub async fn rotate_if_due(&self, now: Timestamp, every: Duration) -> Result<bool, StoreError> {
        let keys = self.store.signing_keys(now).await?;
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let due = match keys.iter().find(|k| k.retired_at.is_none()) {
            None => true,
            Some(k) => k.created_at + every <= now,
        };
        if due {
            self.rotate(now).await?;
        }
        Ok(due)
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
        let snap = Arc::new(snapshot(&records)?);
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

fn snapshot(records: &[SigningKeyRecord]) -> Result<Snapshot, StoreError> {
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
            current = Some((
                r.kid.clone(),
                EncodingKey::from_ed_der(&r.private_key),
                r.created_at,
            ));
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
        created_at: now,
        retired_at: None,
    }
}
