//! The tamper-evident audit log: a hash chain over the records as stored, and signed
//! checkpoints of its head. Pure computation; the stores and the server do the IO.
//!
//! **Chain.** Each record carries `hash = SHA-256(prev_hash ‖ canonical(record))`, where
//! `prev_hash` is the hash of the record before it (by `seq`), or [`GENESIS`] for the
//! first. Because the sequence number and the previous hash are inside what is hashed,
//! an edited, deleted, inserted or reordered record breaks the chain at that record or
//! the one after it.
//!
//! **Canonical encoding** (version 1), identical on every store because it is made of
//! the values as stored, never of re-encoded ones:
//!
//! ```text
//! "keyward.audit.v1\0"
//! seq            i64, big-endian
//! at             i64 microseconds since the Unix epoch (UTC), big-endian
//! actor, action, target            u64 big-endian byte length, then UTF-8 bytes
//! request_id, source_ip            0x00 when absent; 0x01, then as a string
//! detail         the JSON text exactly as stored, as a string
//! ```
//!
//! **Checkpoints.** A tail cut off after the last record cannot be seen by the chain
//! alone, and whoever can write the database can recompute a whole chain. So the head
//! is signed now and then with an Ed25519 key kept outside the database: a checkpoint
//! `(seq, hash, signature, key_id)` pins every record up to `seq`. The signed message is
//! `"keyward.audit.checkpoint.v1\0" ‖ seq (i64 BE) ‖ hash`.

use std::collections::BTreeMap;

/// The public half of a checkpoint key (re-exported so callers need no Ed25519 crate).
pub use ed25519_dalek::VerifyingKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use sha2::{Digest, Sha256};

/// A link of the chain: SHA-256, 32 bytes.
pub type ChainHash = [u8; 32];

/// The `prev_hash` of the first record.
pub const GENESIS: ChainHash = [0; 32];

const RECORD_TAG: &[u8] = b"keyward.audit.v1\0";
const CHECKPOINT_TAG: &[u8] = b"keyward.audit.checkpoint.v1\0";

/// An audit record's fields exactly as the store keeps them (the input of the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    pub seq: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub at_micros: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    /// The JSON text of `detail`, as stored.
    pub detail: String,
    /// The chain hash stored with the record (`None`: missing, or not 32 bytes).
    pub hash: Option<ChainHash>,
}

/// Borrowed fields of a record, to hash one before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct AuditFields<'a> {
    pub seq: i64,
    pub at_micros: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub request_id: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub detail: &'a str,
}

impl StoredAudit {
    pub fn fields(&self) -> AuditFields<'_> {
        AuditFields {
            seq: self.seq,
            at_micros: self.at_micros,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            request_id: self.request_id.as_deref(),
            source_ip: self.source_ip.as_deref(),
            detail: &self.detail,
        }
    }
}

/// The hash of a record that follows a record whose hash is `prev`.
pub fn link_hash(prev: &ChainHash, r: AuditFields<'_>) -> ChainHash {
    fn string(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    fn optional(h: &mut Sha256, s: Option<&str>) {
        match s {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                string(h, s);
            }
        }
    }
    let mut h = Sha256::new();
    h.update(RECORD_TAG);
    h.update(prev);
    h.update(r.seq.to_be_bytes());
    h.update(r.at_micros.to_be_bytes());
    string(&mut h, r.actor);
    string(&mut h, r.action);
    string(&mut h, r.target);
    optional(&mut h, r.request_id);
    optional(&mut h, r.source_ip);
    string(&mut h, r.detail);
    h.finalize().into()
}

/// Reads a stored hash column: exactly 32 bytes, or nothing.
pub fn hash_from_slice(b: &[u8]) -> Option<ChainHash> {
    b.try_into().ok()
}

// ---------------------------------------------------------------- checkpoints

/// A signed statement that the record `seq` has chain hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: ChainHash,
    /// Ed25519 signature (64 bytes) over [`checkpoint_message`].
    pub signature: Vec<u8>,
    /// Which key signed: see [`key_id`].
    pub key_id: String,
    pub at_micros: i64,
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(seq: i64, hash: &ChainHash) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 8 + 32);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// A short public name of a verifying key: the first 8 bytes of the SHA-256 of its
/// 32 bytes, in hex. Names the key; reveals nothing of the private half.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = Sha256::digest(key.as_bytes());
    hex::encode(&d[..8])
}

/// Signs checkpoints. The private key zeroizes itself on drop and never prints.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl CheckpointSigner {
    /// From the 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> CheckpointSigner {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        CheckpointSigner { key, key_id }
    }

    /// A new key from the OS CSPRNG; returns it with its seed (to be saved).
    pub fn generate() -> (CheckpointSigner, zeroize::Zeroizing<[u8; 32]>) {
        use rand::TryRngCore;
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed[..])
            .expect("the OS random number generator failed");
        (CheckpointSigner::from_seed(&seed), seed)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign(&self, seq: i64, hash: ChainHash, at_micros: i64) -> AuditCheckpoint {
        let signature = self.key.sign(&checkpoint_message(seq, &hash));
        AuditCheckpoint {
            seq,
            hash,
            signature: signature.to_bytes().to_vec(),
            key_id: self.key_id.clone(),
            at_micros,
        }
    }
}

/// Whether `cp` was signed by `key` over its own seq and hash.
pub fn checkpoint_signed_by(cp: &AuditCheckpoint, key: &VerifyingKey) -> bool {
    let Ok(sig) = Signature::from_slice(&cp.signature) else {
        return false;
    };
    cp.key_id == key_id(key)
        && key
            .verify(&checkpoint_message(cp.seq, &cp.hash), &sig)
            .is_ok()
}

// ---------------------------------------------------------------- verification

/// The outcome of checking the whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerdict {
    pub ok: bool,
    /// Records read.
    pub checked: u64,
    /// Checkpoints whose record was reached and matched.
    pub checkpoints: u64,
    /// The first record that is not what the chain says (or, for a truncated tail, the
    /// first missing sequence number).
    pub first_bad_seq: Option<i64>,
    /// Why, in words (no record content).
    pub reason: Option<String>,
}

/// Checks records fed in `seq` order against the chain and the checkpoints.
///
/// With a verifying key, a checkpoint must carry that key's id and a valid signature
/// (a checkpoint from another key fails: fail closed). Without one, checkpoints still
/// pin hashes to sequence numbers, but their signatures are not checked.
pub struct ChainChecker {
    prev: ChainHash,
    last_seq: Option<i64>,
    checked: u64,
    matched: u64,
    checkpoints: BTreeMap<i64, AuditCheckpoint>,
    bad: Option<(i64, String)>,
}

impl ChainChecker {
    pub fn new(checkpoints: Vec<AuditCheckpoint>, key: Option<&VerifyingKey>) -> Self {
        let mut c = ChainChecker {
            prev: GENESIS,
            last_seq: None,
            checked: 0,
            matched: 0,
            checkpoints: BTreeMap::new(),
            bad: None,
        };
        for cp in checkpoints {
            if let Some(k) = key
                && !checkpoint_signed_by(&cp, k)
            {
                c.fail(cp.seq, "a checkpoint's signature does not verify");
            }
            // Two checkpoints of one seq must agree; keep the first, compare the other.
            if let Some(other) = c.checkpoints.get(&cp.seq) {
                if other.hash != cp.hash {
                    c.fail(cp.seq, "two checkpoints disagree");
                }
            } else {
                c.checkpoints.insert(cp.seq, cp);
            }
        }
        c
    }

    /// Starts the chain after a record already known good (a checkpoint), to check only
    /// what follows it.
    pub fn resume_after(seq: i64, hash: ChainHash) -> ChainChecker {
        ChainChecker {
            prev: hash,
            last_seq: Some(seq),
            checked: 0,
            matched: 0,
            checkpoints: BTreeMap::new(),
            bad: None,
        }
    }

    fn fail(&mut self, seq: i64, why: &str) {
        // Keep the earliest.
        if self.bad.as_ref().is_none_or(|(s, _)| seq < *s) {
            self.bad = Some((seq, why.to_owned()));
        }
    }

    /// Whether a problem was found already (callers may stop reading).
    pub fn broken(&self) -> bool {
        self.bad.is_some()
    }

    /// The head so far: last sequence number and its hash.
    pub fn head(&self) -> Option<(i64, ChainHash)> {
        self.last_seq.map(|s| (s, self.prev))
    }

    /// Checks the next record (records must come in ascending `seq`).
    pub fn push(&mut self, r: &StoredAudit) {
        self.checked += 1;
        if self.last_seq.is_some_and(|last| r.seq <= last) {
            self.fail(r.seq, "records out of sequence order");
            return;
        }
        // Checkpoints between the previous record and this one pin records that are gone.
        // A checkpoint between the previous record and this one pins records that are
        // gone: report the first place one could have been.
        let from = self.last_seq.map_or(i64::MIN, |s| s.saturating_add(1));
        if self.checkpoints.range(from..r.seq).next().is_some() {
            let first_missing = self.last_seq.map_or(1, |s| s + 1);
            self.fail(first_missing, "a checkpointed record is missing");
        }
        let expected = link_hash(&self.prev, r.fields());
        if r.hash != Some(expected) {
            self.fail(r.seq, "the record does not match the hash chain");
        }
        if let Some(cp) = self.checkpoints.get(&r.seq) {
            if cp.hash == expected {
                self.matched += 1;
            } else {
                self.fail(r.seq, "the record does not match its checkpoint");
            }
        }
        // Carry on from the stored hash, so one bad record is reported once, and an
        // untouched record after it does not look bad as well.
        self.prev = r.hash.unwrap_or(expected);
        self.last_seq = Some(r.seq);
    }

    /// The verdict, once every record was pushed.
    pub fn finish(mut self) -> ChainVerdict {
        let from = self.last_seq.map_or(i64::MIN, |s| s.saturating_add(1));
        if self.checkpoints.range(from..).next().is_some() {
            let first_missing = self.last_seq.map_or(1, |s| s + 1);
            self.fail(
                first_missing,
                "records after the last one were removed (a checkpoint covers them)",
            );
        }
        let (first_bad_seq, reason) = match self.bad {
            Some((s, why)) => (Some(s), Some(why)),
            None => (None, None),
        };
        ChainVerdict {
            ok: first_bad_seq.is_none(),
            checked: self.checked,
            checkpoints: self.matched,
            first_bad_seq,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredAudit> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let mut r = StoredAudit {
                    seq,
                    at_micros: 1_700_000_000_000_000 + seq,
                    actor: "system".into(),
                    action: "key.create".into(),
                    target: format!("t{seq}"),
                    request_id: (seq % 2 == 0).then(|| "r".into()),
                    source_ip: None,
                    detail: r#"{"a":1}"#.into(),
                    hash: None,
                };
                let h = link_hash(&prev, r.fields());
                r.hash = Some(h);
                prev = h;
                r
            })
            .collect()
    }

    fn check(
        records: &[StoredAudit],
        cps: Vec<AuditCheckpoint>,
        key: Option<&VerifyingKey>,
    ) -> ChainVerdict {
        let mut c = ChainChecker::new(cps, key);
        for r in records {
            c.push(r);
        }
        c.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = check(&chain(5), vec![], None);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 5);
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = chain(1).remove(0);
        a.request_id = None;
        let mut b = a.clone();
        b.request_id = Some(String::new());
        assert_ne!(
            link_hash(&GENESIS, a.fields()),
            link_hash(&GENESIS, b.fields())
        );
        // Moving a byte from one field to the next changes the hash (length prefixes).
        let mut c = a.clone();
        c.actor = "systemk".into();
        c.action = "ey.create".into();
        assert_ne!(
            link_hash(&GENESIS, a.fields()),
            link_hash(&GENESIS, c.fields())
        );
    }

    #[test]
    fn edits_deletions_insertions_and_reorders_are_caught() {
        let mut edited = chain(5);
        edited[2].detail = r#"{"a":2}"#.into();
        assert_eq!(check(&edited, vec![], None).first_bad_seq, Some(3));

        let mut deleted = chain(5);
        deleted.remove(2);
        assert_eq!(check(&deleted, vec![], None).first_bad_seq, Some(4));

        let mut inserted = chain(5);
        let mut extra = inserted[1].clone();
        extra.seq = 10;
        inserted.push(extra);
        assert_eq!(check(&inserted, vec![], None).first_bad_seq, Some(10));

        let mut swapped = chain(5);
        let (a, b) = (swapped[1].seq, swapped[2].seq);
        swapped[1].seq = b;
        swapped[2].seq = a;
        swapped.swap(1, 2);
        assert_eq!(check(&swapped, vec![], None).first_bad_seq, Some(2));
    }

    #[test]
    fn a_truncated_tail_is_caught_by_a_checkpoint() {
        let records = chain(5);
        let (signer, _) = CheckpointSigner::generate();
        let cp = signer.sign(5, records[4].hash.unwrap(), 0);
        let key = signer.verifying_key();
        assert!(check(&records, vec![cp.clone()], Some(&key)).ok);
        let v = check(&records[..3], vec![cp.clone()], Some(&key));
        assert_eq!(v.first_bad_seq, Some(4), "{v:?}");
        assert_eq!(check(&[], vec![cp], Some(&key)).first_bad_seq, Some(1));
    }

    #[test]
    fn forged_or_foreign_checkpoints_fail() {
        let records = chain(3);
        let (signer, _) = CheckpointSigner::generate();
        let (other, _) = CheckpointSigner::generate();
        let key = signer.verifying_key();
        let mut forged = signer.sign(3, records[2].hash.unwrap(), 0);
        forged.seq = 2;
        assert_eq!(
            check(&records, vec![forged], Some(&key)).first_bad_seq,
            Some(2)
        );
        let foreign = other.sign(3, records[2].hash.unwrap(), 0);
        assert!(!check(&records, vec![foreign.clone()], Some(&key)).ok);
        // Without a key, only the hash pinning is checked.
        assert!(check(&records, vec![foreign], None).ok);
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_an_earlier_checkpoint() {
        let records = chain(4);
        let (signer, _) = CheckpointSigner::generate();
        let cp = signer.sign(3, records[2].hash.unwrap(), 0);
        // Record 2 edited and every hash after it recomputed: the chain holds, the
        // checkpoint does not.
        let mut forged = records.clone();
        forged[1].target = "other".into();
        let mut prev = forged[0].hash.unwrap();
        for r in &mut forged[1..] {
            let h = link_hash(&prev, r.fields());
            r.hash = Some(h);
            prev = h;
        }
        let key = signer.verifying_key();
        assert_eq!(check(&forged, vec![cp], Some(&key)).first_bad_seq, Some(3));
    }
}
