//! `keyward gateway`: the settings of `serve` plus the gateway's own (keyward-server
//! `gateway/`). Each gateway flag also reads a `KEYWARD_*` variable and a key of the
//! settings file's `[gateway]` table; a flag wins, then the variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use keyward_server::gateway::{GatewayConfig, Rules};

use crate::error::CliError;
use crate::settings::{GatewayFile, Settings, parse_listen};

#[derive(Debug, Clone, Default, Args)]
pub struct GatewayArgs {
    /// The service to protect: http://host:port[/base] [env: KEYWARD_UPSTREAM]
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// A scope every request's key must hold; repeatable
    /// [env: KEYWARD_REQUIRE_SCOPE, comma-separated]
    #[arg(long = "require-scope", value_name = "SCOPE")]
    pub require_scope: Vec<String>,
    /// A route rule, '[METHODS] /PREFIX=REQUIREMENT', e.g. 'POST,PUT /orders=orders:write'
    /// or '/admin=admin AND (ops OR oncall)'; the longest prefix wins; repeatable
    #[arg(long, value_name = "RULE")]
    pub route: Vec<String>,
    /// A file of route rules, one per line, # comments [env: KEYWARD_ROUTES_FILE]
    #[arg(long, value_name = "FILE")]
    pub routes_file: Option<PathBuf>,
    /// Also read the key from this header (besides Authorization: Bearer)
    /// [env: KEYWARD_KEY_HEADER]
    #[arg(long, value_name = "NAME")]
    pub key_header: Option<String>,
    /// Serve Keyward's management API on this address too [env: KEYWARD_API_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// A proxy in front of the gateway whose X-Forwarded-For is believed (address or
    /// CIDR); repeatable [env: KEYWARD_TRUSTED_PROXIES, comma-separated]
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxy: Vec<String>,
    /// Seconds the upstream gets to start answering (504 after) [env:
    /// KEYWARD_UPSTREAM_TIMEOUT] [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub upstream_timeout: Option<String>,
    /// Check no keys at all: ONLY to benchmark the bare proxy
    #[arg(long, hide = true)]
    pub benchmark_without_checks: bool,
}

/// The gateway's configuration from flags, then the environment (read through `var`),
/// then the settings file's `[gateway]` table.
pub fn config(
    args: &GatewayArgs,
    var: impl Fn(&str) -> Option<String>,
    file: &GatewayFile,
) -> Result<GatewayConfig, CliError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let list = |flags: &[String], name: &str, in_file: &[String]| -> Vec<String> {
        if !flags.is_empty() {
            return flags.to_vec();
        }
        get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_else(|| in_file.to_vec())
    };
    let usage = |e: String| CliError::Usage(e);
    let upstream = args
        .upstream
        .clone()
        .or_else(|| get("KEYWARD_UPSTREAM"))
        .or_else(|| file.upstream.clone())
        .ok_or_else(|| usage("keyward gateway needs --upstream http://host:port".into()))?;
    let mut cfg = GatewayConfig::new(&upstream).map_err(usage)?;
    cfg.require_scopes = list(
        &args.require_scope,
        "KEYWARD_REQUIRE_SCOPE",
        &file.require_scope,
    );
    for (i, s) in cfg.require_scopes.iter().enumerate() {
        keyward_core::scope::validate(s)
            .map_err(|e| usage(format!("invalid --require-scope #{} {s:?}: {e}", i + 1)))?;
    }
    let routes_file = args
        .routes_file
        .clone()
        .or_else(|| get("KEYWARD_ROUTES_FILE").map(PathBuf::from))
        .or_else(|| file.routes_file.clone().map(PathBuf::from));
    if let Some(path) = routes_file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| usage(format!("cannot read --routes-file {}: {e}", path.display())))?;
        let rules = Rules::parse_file(&text)
            .map_err(|e| usage(format!("in --routes-file {}: {e}", path.display())))?;
        cfg.rules.extend(rules);
    }
    let routes = if args.route.is_empty() {
        &file.route
    } else {
        &args.route
    };
    cfg.rules
        .extend(Rules::parse_all(routes).map_err(|e| usage(format!("--route: {e}")))?);
    cfg.key_header = match args
        .key_header
        .clone()
        .or_else(|| get("KEYWARD_KEY_HEADER"))
        .or_else(|| file.key_header.clone())
    {
        None => None,
        Some(h) => Some(
            h.trim()
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| usage(format!("invalid --key-header {h:?}: not a header name")))?,
        ),
    };
    cfg.api_listen = match args
        .api_listen
        .clone()
        .or_else(|| get("KEYWARD_API_LISTEN"))
        .or_else(|| file.api_listen.clone())
    {
        None => None,
        Some(a) => Some(parse_listen(&a)?),
    };
    cfg.trusted_proxies = list(
        &args.trusted_proxy,
        "KEYWARD_TRUSTED_PROXIES",
        &file.trusted_proxy,
    )
    .iter()
    .map(|p| {
        p.parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| usage(format!("invalid --trusted-proxy {p:?}: an address or CIDR")))
    })
    .collect::<Result<_, _>>()?;
    if let Some(t) = args
        .upstream_timeout
        .clone()
        .or_else(|| get("KEYWARD_UPSTREAM_TIMEOUT"))
        .or_else(|| file.upstream_timeout.clone())
    {
        let secs = t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| (0.001..=3600.0).contains(s))
            .ok_or_else(|| {
                usage(format!(
                    "invalid --upstream-timeout {t:?}: seconds, above 0 and at most 3600"
                ))
            })?;
        cfg.upstream_timeout = Duration::from_secs_f64(secs);
    }
    cfg.checks = !args.benchmark_without_checks;
    Ok(cfg)
}

/// `keyward gateway`: `serve`'s settings, with the main listener proxying.
pub async fn run(
    settings: &Settings,
    master_key_file: Option<PathBuf>,
    args: &GatewayArgs,
) -> Result<(), CliError> {
    let gateway = config(args, |k| std::env::var(k).ok(), &settings.gateway)?;
    if !gateway.checks {
        eprintln!("warning: --benchmark-without-checks: no key is checked; benchmarks only");
    }
    let mut cfg = crate::server::config(settings)?;
    cfg.gateway = Some(gateway);
    crate::server::serve_config(cfg, master_key_file).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = GatewayArgs {
            upstream: Some("http://127.0.0.1:9000".into()),
            route: vec!["POST /orders=orders:write".into()],
            trusted_proxy: vec!["10.0.0.1".into()],
            ..Default::default()
        };
        let cfg = config(
            &args,
            env(&[
                ("KEYWARD_UPSTREAM", "http://127.0.0.1:1"),
                ("KEYWARD_REQUIRE_SCOPE", "a, b"),
                ("KEYWARD_TRUSTED_PROXIES", "10.9.0.0/16"),
                ("KEYWARD_KEY_HEADER", "X-Api-Key"),
                ("KEYWARD_UPSTREAM_TIMEOUT", "2.5"),
            ]),
            &GatewayFile {
                upstream: Some("http://127.0.0.1:2".into()),
                key_header: Some("X-From-File".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.upstream.to_string(), "http://127.0.0.1:9000/");
        assert_eq!(cfg.require_scopes, vec!["a", "b"]);
        assert_eq!(cfg.trusted_proxies, vec!["10.0.0.1/32".parse().unwrap()]);
        assert_eq!(cfg.key_header.unwrap().as_str(), "x-api-key");
        assert_eq!(cfg.upstream_timeout, Duration::from_millis(2500));
        assert!(!cfg.rules.is_empty() && cfg.checks);
    }

    #[test]
    fn bad_settings_are_usage_errors_naming_the_flag() {
        let bad = |args: GatewayArgs| match config(&args, env(&[]), &GatewayFile::default()) {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        };
        let up = || Some("http://127.0.0.1:9".to_string());
        assert!(bad(GatewayArgs::default()).contains("--upstream"));
        let m = bad(GatewayArgs {
            upstream: Some("https://x".into()),
            ..Default::default()
        });
        assert!(m.contains("--upstream"));
        let m = bad(GatewayArgs {
            upstream: up(),
            route: vec!["GET /a".into()],
            ..Default::default()
        });
        assert!(m.contains("--route"));
        let m = bad(GatewayArgs {
            upstream: up(),
            trusted_proxy: vec!["x".into()],
            ..Default::default()
        });
        assert!(m.contains("--trusted-proxy"));
        let m = bad(GatewayArgs {
            upstream: up(),
            upstream_timeout: Some("0".into()),
            ..Default::default()
        });
        assert!(m.contains("--upstream-timeout"));
    }

    #[test]
    fn the_settings_file_gateway_table_applies_after_flags_and_environment() {
        let file = crate::settings::Layer::from_toml(
            r#"
            listen = "127.0.0.1:8443"
            [gateway]
            upstream = "http://127.0.0.1:9000/api"
            require_scope = ["orders:read"]
            route = ["POST /orders=orders:write", "/admin=admin AND (ops OR oncall)"]
            key_header = "X-Api-Key"
            api_listen = "127.0.0.1:7071"
            trusted_proxy = ["10.0.0.0/8"]
            upstream_timeout = 2.5
            "#,
        )
        .unwrap()
        .gateway;
        let cfg = config(&GatewayArgs::default(), env(&[]), &file).unwrap();
        assert_eq!(cfg.upstream.to_string(), "http://127.0.0.1:9000/api");
        assert_eq!(cfg.require_scopes, vec!["orders:read"]);
        assert!(cfg.rules.matching("POST", "/orders/7").is_some());
        assert!(cfg.rules.matching("GET", "/admin").is_some());
        assert_eq!(cfg.key_header.unwrap().as_str(), "x-api-key");
        assert_eq!(cfg.api_listen, Some("127.0.0.1:7071".parse().unwrap()));
        assert_eq!(cfg.trusted_proxies, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(cfg.upstream_timeout, Duration::from_millis(2500));
        // Whole seconds may be written as an integer; the environment wins over the file.
        let file = crate::settings::Layer::from_toml("[gateway]\nupstream_timeout = 7\n")
            .unwrap()
            .gateway;
        let cfg = config(
            &GatewayArgs::default(),
            env(&[
                ("KEYWARD_UPSTREAM", "http://127.0.0.1:1"),
                ("KEYWARD_REQUIRE_SCOPE", "a"),
            ]),
            &file,
        )
        .unwrap();
        assert_eq!(cfg.upstream_timeout, Duration::from_secs(7));
        assert_eq!(cfg.upstream.to_string(), "http://127.0.0.1:1/");
        assert_eq!(cfg.require_scopes, vec!["a"]);
        // A misspelt key is refused, not ignored.
        assert!(crate::settings::Layer::from_toml("[gateway]\nupstreams = \"x\"\n").is_err());
    }
}
