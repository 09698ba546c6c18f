//! The vault's master keys: where they come from, and sealing/opening secret versions
//! with them (the cryptography itself is `keyward_core::envelope`).
//!
//! Where the current master key comes from, first match wins:
//!
//! 1. `KEYWARD_MASTER_KEY`: standard base64 of 32 random bytes (`openssl rand -base64 32`);
//! 2. `--master-key-file` / `KEYWARD_MASTER_KEY_FILE`: a file holding that text;
//! 3. the embedded store with neither: `<data dir>/master.key`, created (mode 0600) with
//!    a loud warning the first time: the key then sits next to the data it protects,
//!    which is only as good as the folder's permissions;
//! 4. PostgreSQL (or a `sqlite:` URL) with neither: the vault is **off** (fail closed):
//!    secret calls answer 503 and rotations that deliver to the vault wait. Nodes of a
//!    cluster must share one key, so none may invent its own.
//!
//! Master key rotation: start every node with the new key as the current one and the
//! old one(s) in `KEYWARD_MASTER_KEY_PREVIOUS` (comma-separated base64). Reads open data
//! keys with whichever key wrapped them; the jobs leader rewraps every data key under
//! the new key in batches (`vault_jobs.rs`), each row atomically (wrapped key and key id
//! change together). When no row is left under an old key (the log says so), drop it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use keyward_core::envelope::{self, Keyring, MasterKey, Sealed, VaultError};
use keyward_store::vault::SecretVersion;
use zeroize::Zeroizing;

/// Largest secret value accepted by default, in bytes.
pub const VALUE_MAX_BYTES: usize = 64 * 1024;
/// The master key file created in the data folder of the embedded store.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where the master keys come from (see the module docs).
#[derive(Clone)]
pub struct VaultConfig {
    /// Base64 of the current master key (`KEYWARD_MASTER_KEY`).
    pub master_key: Option<Zeroizing<String>>,
    /// A file holding the current master key (`--master-key-file`).
    pub master_key_file: Option<PathBuf>,
    /// Older master keys, base64 (`KEYWARD_MASTER_KEY_PREVIOUS`), for the rewrap.
    pub previous_master_keys: Vec<Zeroizing<String>>,
    /// Largest secret value, in bytes.
    pub value_max_bytes: usize,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            master_key: None,
            master_key_file: None,
            previous_master_keys: vec![],
            value_max_bytes: VALUE_MAX_BYTES,
        }
    }
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultConfig")
            .field("master_key", &self.master_key.as_ref().map(|_| "<set>"))
            .field("master_key_file", &self.master_key_file)
            .field("previous_master_keys", &self.previous_master_keys.len())
            .field("value_max_bytes", &self.value_max_bytes)
            .finish()
    }
}

/// The master keys in memory, and the vault's limits.
#[derive(Debug)]
pub struct Vault {
    ring: Keyring,
    pub value_max_bytes: usize,
}

impl Vault {
    pub fn new(ring: Keyring, value_max_bytes: usize) -> Vault {
        Vault {
            ring,
            value_max_bytes,
        }
    }

    pub fn ring(&self) -> &Keyring {
        &self.ring
    }

    pub fn seal(&self, path: &str, version: i64, value: &[u8]) -> Sealed {
        envelope::seal(&self.ring, path, version, value)
    }

    /// The plaintext of a stored version, wiped when dropped.
    pub fn open(&self, v: &SecretVersion) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        envelope::open(&self.ring, &v.path, v.version, &v.sealed)
    }
}

fn parse_key(what: &str, text: &str) -> anyhow::Result<MasterKey> {
    // The error never shows the text: it may be a real key with a typo.
    MasterKey::from_base64(text).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the master key file {}", path.display()))?,
    );
    warn_if_shared(path);
    parse_key(&format!("master key file {}", path.display()), &text)
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(md) = std::fs::metadata(path)
        && md.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(),
            "the master key file is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

/// Creates `path` with a new random key, readable by its owner only. Fails if it exists.
fn create_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    use std::io::Write;
    let key = MasterKey::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating the master key file {}", path.display()))?;
    f.write_all(key.to_base64().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(key)
}

/// Loads the master keys as the module docs say. `embedded_data_dir` is the data folder
/// of the embedded store, `None` for a shared store. `Ok(None)`: the vault is off.
pub fn load(cfg: &VaultConfig, embedded_data_dir: Option<&Path>) -> anyhow::Result<Option<Vault>> {
    let current = match (&cfg.master_key, &cfg.master_key_file) {
        (Some(_), Some(_)) => {
            bail!(
                "give the master key either in KEYWARD_MASTER_KEY or in --master-key-file, not both"
            )
        }
        (Some(text), None) => parse_key("KEYWARD_MASTER_KEY", text)?,
        (None, Some(path)) => read_key_file(path)?,
        (None, None) => match embedded_data_dir {
            Some(dir) => {
                let path = dir.join(MASTER_KEY_FILE);
                if path.exists() {
                    read_key_file(&path)?
                } else {
                    let key = create_key_file(&path)?;
                    let msg = format!(
                        "WARNING: no master key was given (KEYWARD_MASTER_KEY or --master-key-file), \
                         so a new one was created in {}. It protects every secret in the vault: \
                         back it up, and prefer keeping it outside the data folder.",
                        path.display()
                    );
                    eprintln!("{msg}");
                    tracing::warn!("{msg}");
                    key
                }
            }
            None => {
                tracing::warn!(
                    "the secrets vault is OFF: a shared store needs a master key given to every \
                     node (KEYWARD_MASTER_KEY or --master-key-file)"
                );
                return Ok(None);
            }
        },
    };
    let previous = cfg
        .previous_master_keys
        .iter()
        .enumerate()
        .map(|(i, t)| parse_key(&format!("KEYWARD_MASTER_KEY_PREVIOUS (key {})", i + 1), t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(
        master_key_id = current.id(),
        previous = previous.len(),
        "vault ready"
    );
    Ok(Some(Vault::new(
        Keyring::new(current, previous),
        cfg.value_max_bytes,
    )))
}

/// [`load`], shared.
pub fn load_shared(
    cfg: &VaultConfig,
    embedded_data_dir: Option<&Path>,
) -> anyhow::Result<Option<Arc<Vault>>> {
    Ok(load(cfg, embedded_data_dir)?.map(Arc::new))
}
