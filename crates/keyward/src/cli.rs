//! The command line (contract, "The binary").

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand};
use keyward_proto::{Meta, RateLimit};
use uuid::Uuid;

use crate::parse;
use crate::settings::Layer;

mod vault;
pub use vault::{RotationPolicyCmd, RunArgs, SecretCmd};

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "Keyward: API keys for non-human identities. Server and command-line client.",
    after_help = "Settings come from flags, then KEYWARD_* environment variables, then the \
                  TOML file given by --config (KEYWARD_CONFIG), then defaults.\n\
                  Exit status: 0 success, 1 refused or failed, 2 bad usage."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Address the server listens on [env: KEYWARD_LISTEN] [default: 127.0.0.1:7070]
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Folder of the embedded store [env: KEYWARD_DATA_DIR] [default: ./keyward-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Database (postgres://...) instead of the embedded store [env: KEYWARD_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Server to talk to [env: KEYWARD_URL] [default: http://127.0.0.1:7070]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Credential: a key with the scopes the command needs [env: KEYWARD_TOKEN]
    #[arg(long, global = true, value_name = "KEY")]
    pub token: Option<String>,
    /// Redis (redis://...) for rate limits shared by every node [env: KEYWARD_REDIS_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// While Redis is unreachable: per-node limits (local) or refuse rate-limited keys
    /// with 503 (closed) [env: KEYWARD_REDIS_FALLBACK] [default: local]
    #[arg(long, global = true, value_name = "local|closed")]
    pub redis_fallback: Option<String>,
    /// Each webhook delivery attempt's time limit (serve) [env: KEYWARD_WEBHOOK_TIMEOUT]
    /// [default: 10s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub webhook_timeout: Option<String>,
    /// Attempts per webhook delivery before giving up (serve)
    /// [env: KEYWARD_WEBHOOK_MAX_ATTEMPTS] [default: 8]
    #[arg(long, global = true, value_name = "N")]
    pub webhook_max_attempts: Option<String>,
    /// Wait after a failed delivery, doubled after each further failure, with jitter
    /// (serve) [env: KEYWARD_WEBHOOK_BACKOFF] [default: 10s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub webhook_backoff: Option<String>,
    /// Longest wait between delivery attempts (serve) [env: KEYWARD_WEBHOOK_BACKOFF_CAP]
    /// [default: 1h]
    #[arg(long, global = true, value_name = "DURATION")]
    pub webhook_backoff_cap: Option<String>,
    /// Refuse webhook destinations on loopback, private, link-local and other
    /// non-public addresses, checked on the resolved address at delivery time (serve)
    /// [env: KEYWARD_WEBHOOK_DENY_PRIVATE] [default: false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub webhook_deny_private: Option<String>,
    /// How long before a key expires `key.expiring` fires (serve)
    /// [env: KEYWARD_WEBHOOK_EXPIRING_BEFORE] [default: 7d]
    #[arg(long, global = true, value_name = "DURATION")]
    pub webhook_expiring_before: Option<String>,
    /// How long before an old key's grace ends `key.old_version_in_use` fires if it is
    /// still used; at most half the grace (serve)
    /// [env: KEYWARD_WEBHOOK_OLD_VERSION_BEFORE] [default: 1h]
    #[arg(long, global = true, value_name = "DURATION")]
    pub webhook_old_version_before: Option<String>,
    /// Days raw usage events are kept [env: KEYWARD_USAGE_RETENTION_DAYS] [default: 7]
    #[arg(long, global = true, value_name = "DAYS")]
    pub usage_retention_days: Option<String>,
    /// Days hourly and daily usage rollups are kept
    /// [env: KEYWARD_USAGE_ROLLUP_RETENTION_DAYS] [default: 400]
    #[arg(long, global = true, value_name = "DAYS")]
    pub usage_rollup_retention_days: Option<String>,
    /// Ed25519 key file that signs audit checkpoints; the same file on every node of a
    /// cluster [env: KEYWARD_AUDIT_SIGNING_KEY] [default: DIR/audit-signing.key for the
    /// embedded store]
    #[arg(long, global = true, value_name = "FILE")]
    pub audit_signing_key: Option<String>,
    /// Origins allowed to call the API from a browser, comma-separated (CORS is closed
    /// without) [env: KEYWARD_CORS_ORIGIN]
    #[arg(long, global = true, value_name = "ORIGINS")]
    pub cors_origin: Option<String>,
    /// PEM certificate chain: serve HTTPS (with --tls-key), and send HSTS [env: KEYWARD_TLS_CERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key of --tls-cert [env: KEYWARD_TLS_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Stream the audit log to this append-only JSON-lines file [env: KEYWARD_AUDIT_LOG_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub audit_log_file: Option<String>,
    /// Seconds between token signing-key rotations [env: KEYWARD_TOKEN_KEY_ROTATION]
    /// [default: 86400]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub token_key_rotation: Option<String>,
    /// Anomaly detection on the node that runs background jobs: on or off
    /// [env: KEYWARD_ANOMALY_DETECTION] [default: on]
    #[arg(long, global = true, value_name = "on|off")]
    pub anomaly_detection: Option<String>,
    /// TOML settings file (keys: listen, data_dir, database_url, url, token, redis_url,
    /// redis_fallback, webhook_timeout, webhook_max_attempts, webhook_backoff,
    /// webhook_backoff_cap, webhook_deny_private, webhook_expiring_before,
    /// webhook_old_version_before,
    /// usage_retention_days, usage_rollup_retention_days, audit_signing_key, cors_origin,
    /// tls_cert, tls_key, audit_log_file, token_key_rotation, anomaly_detection; values
    /// are strings; and a [gateway] table with the gateway flags' names)
    /// [env: KEYWARD_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// The vault's master key file (serve) [env: KEYWARD_MASTER_KEY_FILE]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "KEYWARD_MASTER_KEY_FILE",
        hide_env = true
    )]
    pub master_key_file: Option<PathBuf>,
}

impl Global {
    /// The settings given as flags.
    pub fn layer(&self) -> Layer {
        Layer {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            url: self.url.clone(),
            token: self.token.clone(),
            redis_url: self.redis_url.clone(),
            redis_fallback: self.redis_fallback.clone(),
            webhook_timeout: self.webhook_timeout.clone(),
            webhook_max_attempts: self.webhook_max_attempts.clone(),
            webhook_backoff: self.webhook_backoff.clone(),
            webhook_backoff_cap: self.webhook_backoff_cap.clone(),
            webhook_deny_private: self.webhook_deny_private.clone(),
            webhook_expiring_before: self.webhook_expiring_before.clone(),
            webhook_old_version_before: self.webhook_old_version_before.clone(),
            usage_retention_days: self.usage_retention_days.clone(),
            usage_rollup_retention_days: self.usage_rollup_retention_days.clone(),
            audit_signing_key: self.audit_signing_key.clone(),
            cors_origin: self.cors_origin.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            audit_log_file: self.audit_log_file.clone(),
            token_key_rotation: self.token_key_rotation.clone(),
            anomaly_detection: self.anomaly_detection.clone(),
            gateway: Default::default(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. On an empty store, prints the bootstrap root key once, to stderr
    Serve,
    /// Initialise a store without serving; prints the bootstrap root key once
    Init,
    /// Run as a verifying reverse proxy in front of --upstream (the API only on
    /// --api-listen); takes serve's settings too
    Gateway(crate::gateway::GatewayArgs),
    /// Manage non-human identities
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Manage keys
    #[command(subcommand)]
    Key(KeyCmd),
    /// Read the audit log
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Manage human administrators (password + TOTP; sessions via POST /v1/sessions)
    #[command(subcommand)]
    Admin(crate::admin::AdminCmd),
    /// Short-lived tokens exchanged for keys
    #[command(subcommand)]
    Token(crate::tokens::TokenCmd),
    /// Find leaked secrets in files, folders and git history; exits 1 when any is found
    Scan(ScanArgs),
    /// Manage webhooks: signed POSTs of key events to a URL
    #[command(subcommand)]
    Webhook(crate::commands::webhook::WebhookCmd),
    /// The secrets vault
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Run a command with secrets in its environment; exits with its exit status
    Run(RunArgs),
    /// Verifications of a key or identity per minute, hour or day, with a chart
    Usage(crate::usage::UsageArgs),
    /// Reports: `report posture`
    #[command(subcommand)]
    Report(crate::usage::ReportCmd),
    /// Run the anomaly detectors offline over a file of usage events (JSON lines)
    Detect(crate::detect::DetectArgs),
    /// Anomalies the detectors raised from usage, newest first
    Anomalies(crate::anomalies::AnomaliesArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Items per page (with --all: the page size)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Start at this page (a previous page's next_cursor)
    #[arg(long, conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Fetch every page
    #[arg(long)]
    pub all: bool,
}

// ---------------------------------------------------------------- identities

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Create an identity
    Create {
        #[arg(long)]
        name: String,
        /// The accountable human or team
        #[arg(long)]
        owner: String,
        #[arg(long)]
        description: Option<String>,
        /// A JSON object
        #[arg(long, value_name = "JSON", value_parser = parse::meta)]
        meta: Option<Meta>,
        /// Create it disabled (its keys fail verification)
        #[arg(long)]
        disabled: bool,
    },
    /// List identities
    List(ListArgs),
    /// Show one identity
    Show { id: Uuid },
    /// Change an identity
    #[command(group(ArgGroup::new("state").args(["enable", "disable"])))]
    Update {
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// A JSON object; replaces the current one
        #[arg(long, value_name = "JSON", value_parser = parse::meta)]
        meta: Option<Meta>,
        #[arg(long)]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete an identity; revokes all its keys
    Delete { id: Uuid },
    /// Show or set the automatic response to anomalies of its keys
    AnomalyPolicy(crate::anomalies::PolicyArgs),
}

// ---------------------------------------------------------------- keys

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a key; the key is shown once
    #[command(group(ArgGroup::new("expiry").args(["expires_at", "ttl"])))]
    Create {
        /// The identity the key belongs to
        #[arg(long, value_name = "ID")]
        identity: Uuid,
        #[arg(long)]
        name: Option<String>,
        /// Key prefix, e.g. kw_live (default kw)
        #[arg(long)]
        prefix: Option<String>,
        /// A scope to grant (repeatable)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Expiry time, RFC 3339
        #[arg(long, value_name = "TIME", value_parser = parse::rfc3339)]
        expires_at: Option<DateTime<Utc>>,
        /// Lifetime: seconds or e.g. 30d, 12h, 1h30m
        #[arg(long, value_name = "DURATION", value_parser = parse::ttl)]
        ttl: Option<i64>,
        /// An address or CIDR the key may be used from (repeatable)
        #[arg(long = "allow-ip", value_name = "CIDR", value_parser = parse::ip_entry)]
        allow_ips: Vec<String>,
        /// A rate limit name:limit/window_seconds, e.g. default:100/60 (repeatable)
        #[arg(long = "rate-limit", value_name = "SPEC", value_parser = parse::rate_limit)]
        rate_limits: Vec<RateLimit>,
        /// Number of verifications allowed (default unlimited)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
        remaining: Option<i64>,
        /// A JSON object
        #[arg(long, value_name = "JSON", value_parser = parse::meta)]
        meta: Option<Meta>,
        /// Create it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// List keys
    List {
        /// Only the keys of this identity
        #[arg(long, value_name = "ID")]
        identity: Option<Uuid>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one key (never the key itself)
    Show { id: Uuid },
    /// Change a key
    #[command(group(ArgGroup::new("expiry").args(["expires_at", "ttl", "clear_expiry"])))]
    #[command(group(ArgGroup::new("quota").args(["remaining", "clear_remaining"])))]
    #[command(group(ArgGroup::new("state").args(["enable", "disable"])))]
    Update {
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        /// Replace the scopes with these (repeatable)
        #[arg(long = "scope", value_name = "SCOPE", conflicts_with = "clear_scopes")]
        scopes: Vec<String>,
        /// Remove every scope
        #[arg(long)]
        clear_scopes: bool,
        /// New expiry time, RFC 3339
        #[arg(long, value_name = "TIME", value_parser = parse::rfc3339)]
        expires_at: Option<DateTime<Utc>>,
        /// New lifetime from now: seconds or e.g. 30d, 12h
        #[arg(long, value_name = "DURATION", value_parser = parse::ttl)]
        ttl: Option<i64>,
        /// Make the key never expire
        #[arg(long)]
        clear_expiry: bool,
        /// Replace the IP allowlist with these (repeatable)
        #[arg(long = "allow-ip", value_name = "CIDR", value_parser = parse::ip_entry, conflicts_with = "clear_allow_ips")]
        allow_ips: Vec<String>,
        /// Remove the IP allowlist
        #[arg(long)]
        clear_allow_ips: bool,
        /// Replace the rate limits with these (repeatable)
        #[arg(long = "rate-limit", value_name = "SPEC", value_parser = parse::rate_limit, conflicts_with = "clear_rate_limits")]
        rate_limits: Vec<RateLimit>,
        /// Remove every rate limit
        #[arg(long)]
        clear_rate_limits: bool,
        /// Verifications left
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
        remaining: Option<i64>,
        /// Make verifications unlimited
        #[arg(long)]
        clear_remaining: bool,
        #[arg(long)]
        enable: bool,
        #[arg(long)]
        disable: bool,
        /// A JSON object; replaces the current one
        #[arg(long, value_name = "JSON", value_parser = parse::meta)]
        meta: Option<Meta>,
    },
    /// Replace a key with a new one; the new key is shown once
    Rotate {
        id: Uuid,
        /// How long the old key keeps working: seconds or e.g. 1h (0: stops at once)
        #[arg(long, value_name = "DURATION", value_parser = parse::grace, default_value = "0")]
        grace: i64,
    },
    /// Revoke a key: it fails every verification from now on
    Revoke { id: Uuid },
    /// Rotate a key automatically on a schedule
    #[command(subcommand, name = "rotation-policy")]
    RotationPolicy(RotationPolicyCmd),
    /// Who still uses the older keys of a key's rotation lineage, and until when
    #[command(name = "rotation-status")]
    RotationStatus { id: Uuid },
    /// Check a key; exits 1 when it is not valid
    Verify {
        /// The key, or - to read it from stdin (keeps it out of the process list)
        #[arg(value_name = "KEY|-")]
        key: String,
        /// A scope the key must have (repeatable)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// A query over scopes, e.g. 'orders:read AND (billing:read OR billing:admin)'
        #[arg(long, value_name = "QUERY")]
        permission: Option<String>,
        /// The address the key was presented from
        #[arg(long, value_name = "ADDR", value_parser = parse::ip_addr)]
        ip: Option<String>,
    },
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit records
    List {
        /// Start after this sequence number (a previous page's next_cursor)
        #[arg(long, alias = "cursor", value_name = "SEQ", conflicts_with = "all")]
        after: Option<String>,
        /// Records per page
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Fetch every page
        #[arg(long)]
        all: bool,
    },
    /// Check the audit log's hash chain and signed checkpoints, reading the store
    /// directly (--data-dir or --database-url); exits 1 when it is broken
    Verify,
}

// ---------------------------------------------------------------- scan

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Human,
    Json,
    Sarif,
}

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Exit status: 0 nothing found, 1 something found, 2 error.\n\
                  A line holding `keyward:allow` is not reported. Findings never show a whole secret."
)]
pub struct ScanArgs {
    #[command(subcommand)]
    pub command: Option<ScanCmd>,
    /// Files or folders to scan, - for stdin; with --git or --staged, repositories [default: .]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Scan every blob in the repository's history, once, with the commit that introduced it
    #[arg(long, conflicts_with = "staged")]
    pub git: bool,
    /// Scan the lines staged in the index (a pre-commit check)
    #[arg(long)]
    pub staged: bool,
    /// Output format (--json means --format json)
    #[arg(long, value_enum, default_value = "human")]
    pub format: ScanFormat,
    /// Report the Keyward keys found to the server, which revokes those that are its own
    /// (needs a credential with keyward:leaks:report)
    #[arg(long)]
    pub revoke: bool,
    /// Accepted findings: a previous --format json output, or one fingerprint a line
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Do not scan paths matching this glob (repeatable), e.g. '**/testdata/**'
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Skip files larger than this many bytes
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    pub max_file_size: u64,
    /// Follow symbolic links while walking folders
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Worker threads (default: one per core)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ScanCmd {
    /// Install a git pre-commit hook that runs `keyward scan --staged`
    InstallHook {
        /// The repository [default: .]
        #[arg(value_name = "REPO")]
        repo: Option<PathBuf>,
        /// Replace an existing pre-commit hook that is not Keyward's
        #[arg(long)]
        force: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("keyward").chain(args.iter().copied()))
    }

    const ID: &str = "0190f5a0-0000-7000-8000-000000000001";

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["key", "list", "--url", "http://x:1", "--json"]).unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("http://x:1"));
        assert!(cli.global.json);
        let cli = parse(&["--token", "t", "identity", "list"]).unwrap();
        assert_eq!(cli.global.layer().token.as_deref(), Some("t"));
    }

    #[test]
    fn key_create_flags() {
        let cli = parse(&[
            "key",
            "create",
            "--identity",
            ID,
            "--scope",
            "a:read",
            "--scope",
            "b:*",
            "--ttl",
            "30d",
            "--allow-ip",
            "10.0.0.0/8",
            "--rate-limit",
            "default:100/60",
            "--remaining",
            "5",
            "--meta",
            r#"{"k":"v"}"#,
        ])
        .unwrap();
        let Command::Key(KeyCmd::Create {
            scopes,
            ttl,
            rate_limits,
            remaining,
            ..
        }) = cli.command
        else {
            panic!("not key create")
        };
        assert_eq!(scopes, ["a:read", "b:*"]);
        assert_eq!(ttl, Some(2_592_000));
        assert_eq!(rate_limits[0].limit, 100);
        assert_eq!(remaining, Some(5));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["key", "create", "--identity", "nope"][..],
            &["key", "create", "--identity", ID, "--ttl", "soon"],
            &["key", "create", "--identity", ID, "--rate-limit", "x"],
            &["key", "create", "--identity", ID, "--remaining", "-1"],
            &["key", "create", "--identity", ID, "--meta", "[]"],
            &[
                "key",
                "create",
                "--identity",
                ID,
                "--allow-ip",
                "10.0.0.0/99",
            ],
            &[
                "key",
                "create",
                "--identity",
                ID,
                "--expires-at",
                "tomorrow",
            ],
            &[
                "key",
                "create",
                "--identity",
                ID,
                "--ttl",
                "1d",
                "--expires-at",
                "2030-01-01T00:00:00Z",
            ],
            &["key", "update", ID, "--remaining", "1", "--clear-remaining"],
            &["key", "update", ID, "--enable", "--disable"],
            &["key", "update", ID, "--ttl", "1d", "--clear-expiry"],
            &["key", "rotate", ID, "--grace", "later"],
            &["key", "verify", "k", "--ip", "10.0.0.0/8"],
            &["identity", "list", "--limit", "0"],
            &["identity", "list", "--all", "--cursor", "c"],
            &["identity", "create", "--name", "x"],
            &["key", "frobnicate"],
        ] {
            let err = parse(args).unwrap_err();
            assert_ne!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn rotate_grace_defaults_to_zero() {
        let cli = parse(&["key", "rotate", ID]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Key(KeyCmd::Rotate { grace: 0, .. })
        ));
        let cli = parse(&["key", "rotate", ID, "--grace", "1h"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Key(KeyCmd::Rotate { grace: 3600, .. })
        ));
    }

    #[test]
    fn scan_takes_paths_flags_and_install_hook() {
        let cli = parse(&["scan", "a", "-", "--git", "--format", "sarif", "--revoke"]).unwrap();
        let Command::Scan(args) = cli.command else {
            panic!("not scan")
        };
        assert_eq!(args.paths, [PathBuf::from("a"), PathBuf::from("-")]);
        assert!(args.git && args.revoke && args.command.is_none());
        assert_eq!(args.format, ScanFormat::Sarif);
        let cli = parse(&["scan", "install-hook", "--force"]).unwrap();
        let Command::Scan(args) = cli.command else {
            panic!("not scan")
        };
        assert!(matches!(
            args.command,
            Some(ScanCmd::InstallHook { force: true, .. })
        ));
        assert!(parse(&["scan", "--git", "--staged"]).is_err());
        assert!(parse(&["scan", "--format", "xml"]).is_err());
    }

    #[test]
    fn audit_list_takes_cursor_as_after() {
        let cli = parse(&["audit", "list", "--cursor", "41"]).unwrap();
        let Command::Audit(AuditCmd::List { after, .. }) = cli.command else {
            panic!("not audit list")
        };
        assert_eq!(after.as_deref(), Some("41"));
    }
}
