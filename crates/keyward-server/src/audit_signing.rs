//! The audit log's checkpoint key and the job that signs checkpoints.
//!
//! The Ed25519 key lives in a file, never in the database: whoever can rewrite the
//! database (and recompute the hash chain) still cannot sign a checkpoint. The file
//! holds the 32-byte seed in hex, mode 0600. By default the embedded store keeps it in
//! its data folder (`audit-signing.key`, created on first start); a cluster on
//! PostgreSQL needs `--audit-signing-key FILE`, the same file on every node (a node
//! without one signs nothing, and says so at start).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use keyward_core::audit_chain::CheckpointSigner;
use keyward_store::Store;
use keyward_store::audit_chain::{Checkpointed, checkpoint};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::ServerConfig;

/// The key file's name in the data folder (embedded store).
pub const KEY_FILE: &str = "audit-signing.key";
/// How often the job leader signs the head of the log (when it moved).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// The key file this configuration uses, if any: `--audit-signing-key`, else the data
/// folder's for the embedded store.
pub fn key_path(
    explicit: Option<&Path>,
    data_dir: &Path,
    database_url: Option<&str>,
) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None if database_url.is_none_or(str::is_empty) => Some(data_dir.join(KEY_FILE)),
        None => None,
    }
}

/// The signer for `cfg`: loaded from its key file, which is created (with a new key)
/// if missing. `None` when the configuration names no key file.
pub fn signer_for(cfg: &ServerConfig) -> anyhow::Result<Option<CheckpointSigner>> {
    let Some(path) = key_path(
        cfg.audit_signing_key.as_deref(),
        &cfg.data_dir,
        cfg.database_url.as_deref(),
    ) else {
        tracing::warn!(
            "no --audit-signing-key: audit checkpoints are not signed; the hash chain alone \
             cannot show a truncated log"
        );
        return Ok(None);
    };
    load_or_create(&path).map(Some)
}

/// Reads the key file, or creates it (mode 0600, never overwriting) with a new key.
pub fn load_or_create(path: &Path) -> anyhow::Result<CheckpointSigner> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            warn_if_readable_by_others(path);
            parse_key(&text).with_context(|| format!("audit signing key {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (signer, seed) = CheckpointSigner::generate();
            let text = Zeroizing::new(format!("{}\n", hex::encode(&seed[..])));
            write_private(path, text.as_bytes())
                .with_context(|| format!("creating audit signing key {}", path.display()))?;
            tracing::info!(path = %path.display(), key_id = signer.key_id(), "created the audit signing key");
            Ok(signer)
        }
        Err(e) => Err(e).with_context(|| format!("reading audit signing key {}", path.display())),
    }
}

/// Reads a key file (checkpoints are verified with its public half).
pub fn load(path: &Path) -> anyhow::Result<CheckpointSigner> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading audit signing key {}", path.display()))?,
    );
    parse_key(&text).with_context(|| format!("audit signing key {}", path.display()))
}

fn parse_key(text: &str) -> anyhow::Result<CheckpointSigner> {
    let mut seed = Zeroizing::new([0u8; 32]);
    // The error never quotes the file's content.
    hex::decode_to_slice(text.trim(), &mut seed[..])
        .map_err(|_| anyhow::anyhow!("not 64 hexadecimal digits"))?;
    Ok(CheckpointSigner::from_seed(&seed))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path)
            && md.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the audit signing key is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Signs the head of the audit log every [`CHECKPOINT_EVERY`] while this node leads
/// the background jobs, and once more at shutdown.
pub fn spawn_checkpoints(
    store: Arc<dyn Store>,
    signer: Arc<CheckpointSigner>,
    leader: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
    mut writers_stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // The embedded store has no election: its one process always signs.
    let alone = store.leadership().is_none();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: nothing to sign yet
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            };
            if alone || leader.load(Ordering::Relaxed) {
                sign_once(&*store, &signer).await;
            }
        }
        // Whether this node signs is decided now: the jobs task gives up leadership as
        // it stops. What it signs is the head once every writer has stopped (a record
        // appended after the last checkpoint would be an unsigned tail).
        let leads = alone || leader.load(Ordering::Relaxed);
        let _ = writers_stopped.wait_for(|s| *s).await;
        if leads {
            sign_once(&*store, &signer).await;
        }
    })
}

/// One checkpoint, logged.
pub async fn sign_once(store: &dyn Store, signer: &CheckpointSigner) {
    match checkpoint(store, signer, crate::now().timestamp_micros()).await {
        Ok(Checkpointed::Signed(cp)) => {
            tracing::debug!(seq = cp.seq, key_id = %cp.key_id, "signed an audit checkpoint");
        }
        Ok(Checkpointed::Unchanged) => {}
        Ok(Checkpointed::Refused(v)) => tracing::error!(
            first_bad_seq = ?v.first_bad_seq,
            reason = v.reason.as_deref().unwrap_or(""),
            "the audit log does not verify: no checkpoint signed"
        ),
        Err(e) => tracing::warn!(error = %e, "audit checkpoint failed; will retry"),
    }
}
