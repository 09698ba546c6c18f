//! `keyward serve` and `keyward init`: the server side of the binary.

use std::io::IsTerminal;

use keyward_server::ServerConfig;
use tracing_subscriber::EnvFilter;

use crate::error::CliError;
use crate::output;
use crate::settings::{Settings, parse_listen};

/// The server's configuration from the settings in force.
pub fn config(settings: &Settings) -> Result<ServerConfig, CliError> {
    Ok(ServerConfig {
        listen: parse_listen(&settings.listen)?,
        data_dir: settings.data_dir.clone(),
        database_url: settings.database_url.clone(),
        redis_url: settings.redis_url.clone(),
        redis_down: settings
            .redis_fallback
            .parse()
            .map_err(|e| CliError::Usage(format!("invalid --redis-fallback {e}")))?,
        webhooks: crate::webhook_settings::from(settings)?,
        vault: Default::default(),
        usage: usage_settings(settings)?,
        audit_signing_key: settings.audit_signing_key.clone(),
        cors_origins: settings
            .cors_origin
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect(),
        tls_cert: settings.tls_cert.clone(),
        tls_key: settings.tls_key.clone(),
        audit_log_file: settings.audit_log_file.clone(),
        token_key_rotation: match settings.token_key_rotation.as_deref() {
            None => keyward_server::tokens::DEFAULT_ROTATION,
            Some(s) => parse_rotation(s)?,
        },
        anomalies: keyward_server::anomalies::AnomalySettings {
            enabled: match settings.anomaly_detection.as_deref().map(str::trim) {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(CliError::Usage(format!(
                        "invalid --anomaly-detection {other:?}: on or off"
                    )));
                }
            },
            ..Default::default()
        },
        gateway: None,
    })
}

/// Usage retention from the settings, over the server's defaults.
fn usage_settings(settings: &Settings) -> Result<keyward_server::usage::UsageSettings, CliError> {
    let days = |v: &Option<String>, flag: &str, default: u32| match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=36_600).contains(d))
            .ok_or_else(|| CliError::Usage(format!("invalid --{flag} {s:?}: days, 1 or more"))),
    };
    let d = keyward_server::usage::UsageSettings::default();
    Ok(keyward_server::usage::UsageSettings {
        raw_retention_days: days(
            &settings.usage_retention_days,
            "usage-retention-days",
            d.raw_retention_days,
        )?,
        rollup_retention_days: days(
            &settings.usage_rollup_retention_days,
            "usage-rollup-retention-days",
            d.rollup_retention_days,
        )?,
        // Measurement only (bench/usage-cost.sh), hence not a documented setting: a
        // server in service always records every verification.
        record: std::env::var("KEYWARD_BENCH_USAGE_RECORDING").as_deref() != Ok("off"),
        ..d
    })
}

/// `--token-key-rotation`: whole seconds, from a minute to a year.
fn parse_rotation(s: &str) -> Result<std::time::Duration, CliError> {
    match s.trim().parse::<u64>() {
        Ok(n) if (60..=366 * 86400).contains(&n) => Ok(std::time::Duration::from_secs(n)),
        _ => Err(CliError::Usage(format!(
            "invalid --token-key-rotation {s:?}: seconds between 60 and 31622400"
        ))),
    }
}

/// Logs to stderr, filtered by `KEYWARD_LOG`, else `RUST_LOG`, else `info`.
pub fn init_logging() -> Result<(), CliError> {
    let (var, spec) = match (std::env::var("KEYWARD_LOG"), std::env::var("RUST_LOG")) {
        (Ok(v), _) if !v.is_empty() => ("KEYWARD_LOG", v),
        (_, Ok(v)) if !v.is_empty() => ("RUST_LOG", v),
        _ => ("default", "info".to_string()),
    };
    let filter = EnvFilter::try_new(&spec)
        .map_err(|e| CliError::Usage(format!("invalid log filter in {var}: {e}")))?;
    // `try_init` fails only if a subscriber is already set, which is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init();
    Ok(())
}

/// `keyward serve`, with the vault's settings: `--master-key-file` (or
/// `KEYWARD_MASTER_KEY_FILE`), `KEYWARD_MASTER_KEY`, `KEYWARD_MASTER_KEY_PREVIOUS`
/// (comma-separated), `KEYWARD_SECRET_MAX_BYTES` (keyward-server `vault.rs`).
pub async fn serve(
    settings: &Settings,
    master_key_file: Option<std::path::PathBuf>,
) -> Result<(), CliError> {
    serve_config(config(settings)?, master_key_file).await
}

/// Serves `cfg` (`serve`, or `gateway` with its part set) until SIGTERM or ctrl-c.
pub async fn serve_config(
    mut cfg: ServerConfig,
    master_key_file: Option<std::path::PathBuf>,
) -> Result<(), CliError> {
    cfg.vault = crate::vault_settings::vault_config(master_key_file, |k| std::env::var(k).ok())?;
    init_logging()?;
    // Install the handlers before starting, so a signal during startup is not fatal.
    let shutdown =
        shutdown_signal().map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    keyward_server::serve(cfg, shutdown).await?;
    Ok(())
}

/// A future that resolves on SIGTERM or ctrl-c (SIGINT).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        let term = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("ctrl-c: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
    })
}

pub async fn init(settings: &Settings, json: bool) -> Result<(), CliError> {
    let cfg = config(settings)?;
    init_logging()?;
    let store = keyward_server::open_store(&cfg).await?;
    match keyward_server::bootstrap(&*store).await? {
        Some(key) => {
            if json {
                let out = keyward_proto::InitOutput {
                    root_key: key.to_string(),
                };
                println!("{}", output::json(&out));
            } else {
                println!("root key: {}", &*key);
                eprintln!("warning: the root key is shown only once; store it now.");
            }
            Ok(())
        }
        None => {
            eprintln!(
                "error: the store is already initialised; its root key was shown when it was created"
            );
            Err(CliError::Reported)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Layer, resolve};

    fn detection(value: Option<&str>) -> Result<bool, CliError> {
        let flags = Layer {
            anomaly_detection: value.map(str::to_owned),
            ..Layer::default()
        };
        let settings = resolve(&flags, None, |_| None)?;
        Ok(config(&settings)?.anomalies.enabled)
    }

    #[test]
    fn anomaly_detection_is_on_unless_turned_off() {
        assert!(detection(None).unwrap());
        assert!(detection(Some("on")).unwrap());
        assert!(!detection(Some("off")).unwrap());
        let err = detection(Some("maybe")).unwrap_err();
        assert!(
            matches!(&err, CliError::Usage(m) if m.contains("--anomaly-detection")),
            "{err:?}"
        );
    }
}
