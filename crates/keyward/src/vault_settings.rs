//! The vault's settings for `keyward serve`. Secrets stay out of flags: the master key
//! itself only comes from the environment or a file (keyward-server `vault.rs`).

use std::path::PathBuf;

use keyward_server::vault::{VALUE_MAX_BYTES, VaultConfig};
use zeroize::Zeroizing;

use crate::error::CliError;

/// Reads `KEYWARD_MASTER_KEY`, `KEYWARD_MASTER_KEY_PREVIOUS` (comma-separated) and
/// `KEYWARD_SECRET_MAX_BYTES` through `var`; an empty variable counts as unset.
pub fn vault_config(
    master_key_file: Option<PathBuf>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<VaultConfig, CliError> {
    let get = |name: &str| {
        var(name)
            .filter(|v| !v.trim().is_empty())
            .map(Zeroizing::new)
    };
    let previous_master_keys = get("KEYWARD_MASTER_KEY_PREVIOUS")
        .map(|all| {
            all.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| Zeroizing::new(k.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let value_max_bytes = match get("KEYWARD_SECRET_MAX_BYTES") {
        None => VALUE_MAX_BYTES,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=512 * 1024).contains(n))
            .ok_or_else(|| {
                CliError::Usage(
                    "KEYWARD_SECRET_MAX_BYTES must be a number of bytes, 1 to 524288".into(),
                )
            })?,
    };
    Ok(VaultConfig {
        master_key: get("KEYWARD_MASTER_KEY"),
        master_key_file,
        previous_master_keys,
        value_max_bytes,
    })
}
