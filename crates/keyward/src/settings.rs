//! The binary's settings (contract, "The binary"): flags, then `KEYWARD_*` environment
//! variables, then an optional TOML file (`--config` / `KEYWARD_CONFIG`), then defaults.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_DATA_DIR: &str = "./keyward-data";
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";
pub const DEFAULT_REDIS_FALLBACK: &str = "local";

/// One source of settings: each field is set or not. Also the TOML file's schema.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub url: Option<String>,
    pub token: Option<String>,
    pub redis_url: Option<String>,
    /// `local` or `closed`.
    pub redis_fallback: Option<String>,
    /// Webhook delivery (`serve`): each a string, validated when `serve` needs it.
    pub webhook_timeout: Option<String>,
    pub webhook_max_attempts: Option<String>,
    pub webhook_backoff: Option<String>,
    pub webhook_backoff_cap: Option<String>,
    pub webhook_deny_private: Option<String>,
    pub webhook_expiring_before: Option<String>,
    pub webhook_old_version_before: Option<String>,
    /// Days raw usage events (and per-minute rollups) are kept.
    pub usage_retention_days: Option<String>,
    /// Days per-hour and per-day usage rollups are kept.
    pub usage_rollup_retention_days: Option<String>,
    /// The Ed25519 key file that signs audit checkpoints.
    pub audit_signing_key: Option<String>,
    /// Comma-separated origins allowed to call the API from a browser.
    pub cors_origin: Option<String>,
    /// PEM certificate chain and private key files: serve HTTPS.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Append-only JSON-lines file the audit log is streamed to.
    pub audit_log_file: Option<String>,
    /// Seconds between token signing-key rotations.
    pub token_key_rotation: Option<String>,
    /// Anomaly detection on the jobs leader: "on" or "off".
    pub anomaly_detection: Option<String>,
    /// `keyward gateway`'s own settings: a `[gateway]` table of the file only (flags and
    /// `KEYWARD_*` variables are read by `gateway::config`).
    #[serde(default)]
    pub gateway: GatewayFile,
}

/// The `[gateway]` table of a settings file: the gateway flags' names, with `_` for `-`;
/// the repeatable ones as lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub upstream: Option<String>,
    #[serde(default)]
    pub require_scope: Vec<String>,
    #[serde(default)]
    pub route: Vec<String>,
    pub routes_file: Option<String>,
    pub key_header: Option<String>,
    pub api_listen: Option<String>,
    #[serde(default)]
    pub trusted_proxy: Vec<String>,
    /// Seconds: a number (`30`, `2.5`) or a string.
    #[serde(default, deserialize_with = "seconds_text")]
    pub upstream_timeout: Option<String>,
}

fn seconds_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(f64),
        Text(String),
    }
    Ok(Option::<Seconds>::deserialize(d)?.map(|s| match s {
        Seconds::Number(n) => n.to_string(),
        Seconds::Text(t) => t,
    }))
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_fallback", &self.redis_fallback)
            .field("usage_retention_days", &self.usage_retention_days)
            .field(
                "usage_rollup_retention_days",
                &self.usage_rollup_retention_days,
            )
            .field("audit_signing_key", &self.audit_signing_key)
            .field("cors_origin", &self.cors_origin)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("audit_log_file", &self.audit_log_file)
            .field("token_key_rotation", &self.token_key_rotation)
            .field("anomaly_detection", &self.anomaly_detection)
            .finish()
    }
}

impl Layer {
    /// The `KEYWARD_*` variables, read through `var` (`std::env::var` in the binary).
    /// An empty variable counts as unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Layer {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        Layer {
            listen: get("KEYWARD_LISTEN"),
            data_dir: get("KEYWARD_DATA_DIR"),
            database_url: get("KEYWARD_DATABASE_URL"),
            url: get("KEYWARD_URL"),
            token: get("KEYWARD_TOKEN"),
            redis_url: get("KEYWARD_REDIS_URL"),
            redis_fallback: get("KEYWARD_REDIS_FALLBACK"),
            webhook_timeout: get("KEYWARD_WEBHOOK_TIMEOUT"),
            webhook_max_attempts: get("KEYWARD_WEBHOOK_MAX_ATTEMPTS"),
            webhook_backoff: get("KEYWARD_WEBHOOK_BACKOFF"),
            webhook_backoff_cap: get("KEYWARD_WEBHOOK_BACKOFF_CAP"),
            webhook_deny_private: get("KEYWARD_WEBHOOK_DENY_PRIVATE"),
            webhook_expiring_before: get("KEYWARD_WEBHOOK_EXPIRING_BEFORE"),
            webhook_old_version_before: get("KEYWARD_WEBHOOK_OLD_VERSION_BEFORE"),
            usage_retention_days: get("KEYWARD_USAGE_RETENTION_DAYS"),
            usage_rollup_retention_days: get("KEYWARD_USAGE_ROLLUP_RETENTION_DAYS"),
            audit_signing_key: get("KEYWARD_AUDIT_SIGNING_KEY"),
            cors_origin: get("KEYWARD_CORS_ORIGIN"),
            tls_cert: get("KEYWARD_TLS_CERT"),
            tls_key: get("KEYWARD_TLS_KEY"),
            audit_log_file: get("KEYWARD_AUDIT_LOG_FILE"),
            token_key_rotation: get("KEYWARD_TOKEN_KEY_ROTATION"),
            anomaly_detection: get("KEYWARD_ANOMALY_DETECTION"),
            gateway: GatewayFile::default(),
        }
    }

    /// Parses a settings file. Unknown keys are an error.
    pub fn from_toml(text: &str) -> Result<Layer, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn from_file(path: &Path) -> Result<Layer, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Layer::from_toml(&text).map_err(|e| {
            CliError::Usage(format!(
                "invalid config file {}: {}",
                path.display(),
                e.trim()
            ))
        })
    }
}

/// The settings in force.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Validated when `serve` needs it, so a bad value does not break client commands.
    pub listen: String,
    pub data_dir: PathBuf,
    /// `None`: the embedded store in `data_dir`.
    pub database_url: Option<String>,
    pub url: String,
    pub token: Option<String>,
    /// `None`: rate limits per node.
    pub redis_url: Option<String>,
    /// While Redis is unreachable: `local` (per-node limits, the default) or `closed`.
    /// Validated when `serve` needs it.
    pub redis_fallback: String,
    /// Webhook delivery (`serve`): each a string, validated when `serve` needs it.
    pub webhook_timeout: Option<String>,
    pub webhook_max_attempts: Option<String>,
    pub webhook_backoff: Option<String>,
    pub webhook_backoff_cap: Option<String>,
    pub webhook_deny_private: Option<String>,
    pub webhook_expiring_before: Option<String>,
    pub webhook_old_version_before: Option<String>,
    /// Usage retention in days (`None`: the server's defaults, 7 and 400). Validated when
    /// `serve` needs them.
    pub usage_retention_days: Option<String>,
    pub usage_rollup_retention_days: Option<String>,
    /// The audit checkpoint key file (`None`: the data folder's, for the embedded store).
    pub audit_signing_key: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origin: Option<String>,
    /// PEM certificate chain and private key files: serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Append-only JSON-lines file the audit log is streamed to.
    pub audit_log_file: Option<PathBuf>,
    /// Seconds between token signing-key rotations (`None`: the server's default, 24 h).
    /// Validated when `serve` needs it.
    pub token_key_rotation: Option<String>,
    /// Anomaly detection on the jobs leader ("on" or "off"; `None`: on). Validated when
    /// `serve` needs it.
    pub anomaly_detection: Option<String>,
    /// The `[gateway]` table of the settings file, if any.
    pub gateway: GatewayFile,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_fallback", &self.redis_fallback)
            .field("usage_retention_days", &self.usage_retention_days)
            .field(
                "usage_rollup_retention_days",
                &self.usage_rollup_retention_days,
            )
            .field("audit_signing_key", &self.audit_signing_key)
            .field("cors_origin", &self.cors_origin)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("audit_log_file", &self.audit_log_file)
            .field("token_key_rotation", &self.token_key_rotation)
            .field("anomaly_detection", &self.anomaly_detection)
            .finish()
    }
}

/// Merges the layers: flags > env > file > default. Empty values count as unset.
pub fn merge(flags: &Layer, env: &Layer, file: &Layer) -> Settings {
    fn pick(f: impl Fn(&Layer) -> &Option<String>, layers: [&Layer; 3]) -> Option<String> {
        layers
            .into_iter()
            .filter_map(|l| f(l).as_ref())
            .find(|v| !v.is_empty())
            .cloned()
    }
    let layers = [flags, env, file];
    Settings {
        listen: pick(|l| &l.listen, layers).unwrap_or_else(|| DEFAULT_LISTEN.into()),
        data_dir: pick(|l| &l.data_dir, layers)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
            .into(),
        database_url: pick(|l| &l.database_url, layers),
        url: pick(|l| &l.url, layers).unwrap_or_else(|| DEFAULT_URL.into()),
        token: pick(|l| &l.token, layers),
        redis_url: pick(|l| &l.redis_url, layers),
        redis_fallback: pick(|l| &l.redis_fallback, layers)
            .unwrap_or_else(|| DEFAULT_REDIS_FALLBACK.into()),
        webhook_timeout: pick(|l| &l.webhook_timeout, layers),
        webhook_max_attempts: pick(|l| &l.webhook_max_attempts, layers),
        webhook_backoff: pick(|l| &l.webhook_backoff, layers),
        webhook_backoff_cap: pick(|l| &l.webhook_backoff_cap, layers),
        webhook_deny_private: pick(|l| &l.webhook_deny_private, layers),
        webhook_expiring_before: pick(|l| &l.webhook_expiring_before, layers),
        webhook_old_version_before: pick(|l| &l.webhook_old_version_before, layers),
        usage_retention_days: pick(|l| &l.usage_retention_days, layers),
        usage_rollup_retention_days: pick(|l| &l.usage_rollup_retention_days, layers),
        audit_signing_key: pick(|l| &l.audit_signing_key, layers).map(PathBuf::from),
        cors_origin: pick(|l| &l.cors_origin, layers),
        tls_cert: pick(|l| &l.tls_cert, layers).map(PathBuf::from),
        tls_key: pick(|l| &l.tls_key, layers).map(PathBuf::from),
        audit_log_file: pick(|l| &l.audit_log_file, layers).map(PathBuf::from),
        token_key_rotation: pick(|l| &l.token_key_rotation, layers),
        anomaly_detection: pick(|l| &l.anomaly_detection, layers),
        gateway: file.gateway.clone(),
    }
}

/// The config file to read: `--config`, else `KEYWARD_CONFIG`, else none.
pub fn config_path(flag: Option<&Path>, var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| {
        var("KEYWARD_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// All of it: the file named by `config` (or `KEYWARD_CONFIG`), the environment, the flags.
pub fn resolve(
    flags: &Layer,
    config: Option<&Path>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Settings, CliError> {
    let file = match config_path(config, &var) {
        Some(path) => Layer::from_file(&path)?,
        None => Layer::default(),
    };
    Ok(merge(flags, &Layer::from_env(&var), &file))
}

/// The listen address: `IP:PORT`, or `HOST:PORT` resolved now.
pub fn parse_listen(s: &str) -> Result<SocketAddr, CliError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| CliError::Usage(format!("invalid listen address {s:?}: {why}"));
    let mut addrs = s.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("the name has no addresses".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn layer(tag: &str) -> Layer {
        Layer {
            listen: Some(format!("127.0.0.1:{}", tag.len() + 1000)),
            data_dir: Some(format!("/data/{tag}")),
            database_url: Some(format!("postgres://{tag}")),
            url: Some(format!("http://{tag}:1")),
            token: Some(format!("token-{tag}")),
            redis_url: Some(format!("redis://{tag}")),
            redis_fallback: Some("closed".into()),
            audit_signing_key: Some(format!("/keys/{tag}")),
            cors_origin: None,
            tls_cert: None,
            tls_key: None,
            audit_log_file: None,
            token_key_rotation: None,
            ..Layer::default()
        }
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let s = merge(&Layer::default(), &Layer::default(), &Layer::default());
        assert_eq!(s.listen, "127.0.0.1:7070");
        assert_eq!(s.data_dir, PathBuf::from("./keyward-data"));
        assert_eq!(s.database_url, None);
        assert_eq!(s.url, "http://127.0.0.1:7070");
        assert_eq!(s.token, None);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let (f, e, c) = (layer("flag"), layer("env"), layer("file"));
        let s = merge(&f, &e, &c);
        assert_eq!(s.url, "http://flag:1");
        assert_eq!(s.token.as_deref(), Some("token-flag"));
        assert_eq!(s.data_dir, PathBuf::from("/data/flag"));

        let s = merge(&Layer::default(), &e, &c);
        assert_eq!(s.url, "http://env:1");
        assert_eq!(s.database_url.as_deref(), Some("postgres://env"));

        let s = merge(&Layer::default(), &Layer::default(), &c);
        assert_eq!(s.url, "http://file:1");
        assert_eq!(s.listen, "127.0.0.1:1004");
    }

    #[test]
    fn each_setting_merges_on_its_own() {
        let flags = Layer {
            url: Some("http://flag:1".into()),
            ..Layer::default()
        };
        let env = Layer {
            token: Some("env-token".into()),
            url: Some("http://env:1".into()),
            ..Layer::default()
        };
        let file = Layer {
            listen: Some("0.0.0.0:9".into()),
            token: Some("file-token".into()),
            ..Layer::default()
        };
        let s = merge(&flags, &env, &file);
        assert_eq!(s.url, "http://flag:1");
        assert_eq!(s.token.as_deref(), Some("env-token"));
        assert_eq!(s.listen, "0.0.0.0:9");
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let flags = Layer {
            token: Some(String::new()),
            ..Layer::default()
        };
        let file = Layer {
            token: Some("file-token".into()),
            ..Layer::default()
        };
        assert_eq!(
            merge(&flags, &Layer::default(), &file).token.as_deref(),
            Some("file-token")
        );
        let vars: HashMap<&str, &str> = [("KEYWARD_URL", ""), ("KEYWARD_TOKEN", "t")].into();
        let env = Layer::from_env(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(env.url, None);
        assert_eq!(env.token.as_deref(), Some("t"));
    }

    #[test]
    fn env_layer_reads_the_keyward_variables() {
        let vars: HashMap<&str, &str> = [
            ("KEYWARD_LISTEN", "0.0.0.0:1"),
            ("KEYWARD_DATA_DIR", "/d"),
            ("KEYWARD_DATABASE_URL", "postgres://x"),
            ("KEYWARD_URL", "http://u"),
            ("KEYWARD_TOKEN", "tok"),
            ("KEYWARD_REDIS_URL", "redis://r"),
            ("KEYWARD_REDIS_FALLBACK", "closed"),
            ("LISTEN", "ignored"),
        ]
        .into();
        let env = Layer::from_env(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(
            env,
            Layer {
                listen: Some("0.0.0.0:1".into()),
                data_dir: Some("/d".into()),
                database_url: Some("postgres://x".into()),
                url: Some("http://u".into()),
                token: Some("tok".into()),
                redis_url: Some("redis://r".into()),
                redis_fallback: Some("closed".into()),
                audit_signing_key: None,
                cors_origin: None,
                tls_cert: None,
                tls_key: None,
                audit_log_file: None,
                token_key_rotation: None,
                ..Layer::default()
            }
        );
    }

    #[test]
    fn toml_file_keys_and_unknown_keys() {
        let l = Layer::from_toml(
            "listen = \"0.0.0.0:80\"\ndata_dir = \"/srv\"\ndatabase_url = \"postgres://db\"\nurl = \"http://k\"\ntoken = \"t\"\n",
        )
        .unwrap();
        assert_eq!(l.listen.as_deref(), Some("0.0.0.0:80"));
        assert_eq!(l.data_dir.as_deref(), Some("/srv"));
        assert_eq!(l.token.as_deref(), Some("t"));
        assert_eq!(Layer::from_toml("").unwrap(), Layer::default());
        let err = Layer::from_toml("lisen = \"x\"").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        assert!(Layer::from_toml("listen = 7070").is_err());
    }

    #[test]
    fn config_flag_beats_config_variable() {
        let var = |k: &str| (k == "KEYWARD_CONFIG").then(|| "/env.toml".to_string());
        assert_eq!(
            config_path(Some(Path::new("/flag.toml")), var),
            Some(PathBuf::from("/flag.toml"))
        );
        assert_eq!(config_path(None, var), Some(PathBuf::from("/env.toml")));
        assert_eq!(config_path(None, |_| None), None);
    }

    #[test]
    fn resolve_reads_the_file_and_reports_bad_ones_as_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "url = \"http://file:1\"\ntoken = \"file-token\"\n").unwrap();
        let vars: HashMap<&str, String> = [("KEYWARD_CONFIG", good.display().to_string())].into();
        let s = resolve(&Layer::default(), None, |k| vars.get(k).cloned()).unwrap();
        assert_eq!(s.url, "http://file:1");
        assert_eq!(s.token.as_deref(), Some("file-token"));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "colour = \"red\"\n").unwrap();
        assert!(matches!(
            resolve(&Layer::default(), Some(&bad), |_| None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            resolve(
                &Layer::default(),
                Some(&dir.path().join("missing.toml")),
                |_| None
            ),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn debug_hides_the_token() {
        let s = merge(&layer("secret"), &Layer::default(), &Layer::default());
        let dbg = format!("{s:?} {:?}", layer("secret"));
        assert!(!dbg.contains("token-secret"), "{dbg}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:7070").unwrap(),
            "127.0.0.1:7070".parse().unwrap()
        );
        assert!(parse_listen("[::1]:0").is_ok());
        assert!(parse_listen("localhost:7070").is_ok());
        assert!(matches!(parse_listen("nope"), Err(CliError::Usage(_))));
        assert!(matches!(
            parse_listen("127.0.0.1:99999"),
            Err(CliError::Usage(_))
        ));
    }
}
