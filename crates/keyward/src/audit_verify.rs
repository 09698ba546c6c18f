//! `keyward audit verify`: checks the audit log's hash chain and signed checkpoints by
//! reading the store directly (`--data-dir` or `--database-url`), so it needs no
//! running server and trusts nothing a server says. Exit 1 when the log is broken.

use keyward_server::audit_signing;
use keyward_store::audit_chain::verify_chain;

use crate::error::CliError;
use crate::output;
use crate::server;
use crate::settings::Settings;

pub async fn run(settings: &Settings, json: bool) -> Result<(), CliError> {
    let cfg = server::config(settings)?;
    if cfg.database_url.as_deref().is_none_or(str::is_empty)
        && !cfg.data_dir.join(keyward_store::sqlite::DB_FILE).is_file()
    {
        return Err(CliError::Usage(format!(
            "no Keyward store in {} (give --data-dir or --database-url)",
            cfg.data_dir.display()
        )));
    }
    // The checkpoint key: the one named, else the data folder's if it is there. Without
    // one, checkpoints still pin hashes but their signatures go unchecked (and we say so).
    let key = match audit_signing::key_path(
        cfg.audit_signing_key.as_deref(),
        &cfg.data_dir,
        cfg.database_url.as_deref(),
    ) {
        Some(path) if cfg.audit_signing_key.is_some() || path.is_file() => {
            Some(audit_signing::load(&path).map_err(|e| CliError::Usage(format!("{e:#}")))?)
        }
        _ => None,
    };
    let store = keyward_server::open_store(&cfg).await?;
    let verdict = verify_chain(&*store, key.as_ref().map(|k| k.verifying_key()).as_ref())
        .await
        .map_err(anyhow::Error::from)?;
    let out = keyward_server::routes::audit_verify::to_wire(verdict, key.is_some());
    if json {
        println!("{}", output::json(&out));
    } else if out.ok {
        println!(
            "audit log intact: {} records, {} checkpoints{}",
            out.checked,
            out.checkpoints,
            if out.signatures_checked {
                " (signatures checked)"
            } else {
                " (signatures NOT checked: no --audit-signing-key)"
            }
        );
    } else {
        println!(
            "audit log BROKEN at seq {}: {}",
            out.first_bad_seq.map_or("?".into(), |s| s.to_string()),
            out.reason.as_deref().unwrap_or("")
        );
    }
    if out.ok {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}
