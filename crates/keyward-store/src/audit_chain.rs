//! Storage of the audit log's hash chain and its signed checkpoints
//! (`keyward_core::audit_chain` defines both).
//!
//! The chain hash of each record is written by the stores' own audit insert, in the
//! transaction of the change it records (so every mutation chains, whoever wrote it).
//! This trait only reads the chain back and stores checkpoints.

use async_trait::async_trait;

use keyward_core::audit_chain::{
    AuditCheckpoint, ChainChecker, ChainVerdict, CheckpointSigner, StoredAudit, VerifyingKey,
};

use crate::Result;

/// Records read per page while verifying.
const PAGE: u32 = 1000;

#[async_trait]
pub trait AuditChainStore: Send + Sync {
    /// Audit records with `seq > after`, in `seq` order, at most `limit`, with their
    /// fields exactly as stored and their stored chain hash.
    async fn list_stored_audit(&self, after: i64, limit: u32) -> Result<Vec<StoredAudit>>;

    /// Every checkpoint, in `seq` order.
    async fn list_audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>>;

    /// The checkpoint with the highest `seq`, if any.
    async fn last_audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>>;

    /// Stores a checkpoint. Not audit-logged on purpose: it changes no record, and an
    /// audit entry for it would move the head it just signed.
    async fn add_audit_checkpoint(&self, cp: &AuditCheckpoint) -> Result<()>;
}

/// Recomputes the whole chain and checks every checkpoint (signatures too when `key` is
/// given).
pub async fn verify_chain<S: AuditChainStore + ?Sized>(
    store: &S,
    key: Option<&VerifyingKey>,
) -> Result<ChainVerdict> {
    let mut checker = ChainChecker::new(store.list_audit_checkpoints().await?, key);
    let mut after = 0;
    loop {
        let page = store.list_stored_audit(after, PAGE).await?;
        for r in &page {
            checker.push(r);
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = last.seq,
            _ => break,
        }
    }
    Ok(checker.finish())
}

/// What [`checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpointed {
    /// A new checkpoint of this head.
    Signed(AuditCheckpoint),
    /// Nothing was appended since the last checkpoint.
    Unchanged,
    /// The records since the last checkpoint do not chain: nothing was signed, so a
    /// tampered log is never vouched for.
    Refused(ChainVerdict),
}

/// Signs the current head of the log, after checking the records appended since the
/// last checkpoint (only those: the earlier ones are pinned by it).
pub async fn checkpoint<S: AuditChainStore + ?Sized>(
    store: &S,
    signer: &CheckpointSigner,
    at_micros: i64,
) -> Result<Checkpointed> {
    let last = store.last_audit_checkpoint().await?;
    let mut checker = match &last {
        Some(cp) => ChainChecker::resume_after(cp.seq, cp.hash),
        None => ChainChecker::new(vec![], None),
    };
    let mut after = last.as_ref().map_or(0, |cp| cp.seq);
    loop {
        let page = store.list_stored_audit(after, PAGE).await?;
        for r in &page {
            checker.push(r);
        }
        if checker.broken() {
            return Ok(Checkpointed::Refused(checker.finish()));
        }
        match page.last() {
            Some(r) if page.len() == PAGE as usize => after = r.seq,
            _ => break,
        }
    }
    let head = checker.head();
    match head {
        Some((seq, hash)) if last.as_ref().is_none_or(|cp| cp.seq < seq) => {
            let cp = signer.sign(seq, hash, at_micros);
            store.add_audit_checkpoint(&cp).await?;
            Ok(Checkpointed::Signed(cp))
        }
        _ => Ok(Checkpointed::Unchanged),
    }
}
