//! `keyward token create` and `keyward token introspect`: short-lived tokens.

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use comfy_table::{ContentArrangement, Table, presets};
use keyward_proto::{CreateToken, TokenIntrospection};

use crate::commands::Ctx;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Exchange the key in --token for a short-lived signed token (JWT)
    Create {
        /// A scope for the token, a subset of the key's (repeat; default: all the key's)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// The service the token is meant for (its `aud`)
        #[arg(long)]
        audience: Option<String>,
        /// Lifetime in seconds (default 300, at most 3600)
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        ttl: Option<u64>,
    },
    /// Ask the server whether a token is active now (needs keyward:verify); exits 1 when
    /// it is not
    Introspect {
        /// The token (`-` reads it from stdin). Not named `token`: that id is the global
        /// `--token` credential's.
        #[arg(value_name = "TOKEN")]
        jwt: String,
    },
}

pub async fn run(ctx: &Ctx, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create {
            scopes,
            audience,
            ttl,
        } => {
            let body = CreateToken {
                scopes: (!scopes.is_empty()).then_some(scopes),
                audience,
                ttl_seconds: ttl,
            };
            let created = ctx
                .client
                .create_token(&body)
                .await
                .map_err(|e| ctx.api(e))?;
            ctx.print(&created, |c| {
                format!("\n    {}\n\nexpires at {}", c.token, time(&c.expires_at))
            });
        }
        TokenCmd::Introspect { jwt } => {
            let token = if jwt == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
                    CliError::Usage(format!("cannot read the token from stdin: {e}"))
                })?;
                s.trim().to_owned()
            } else {
                jwt
            };
            let answer = ctx
                .client
                .introspect_token(&token)
                .await
                .map_err(|e| ctx.api(e))?;
            ctx.print(&answer, introspection);
            if !answer.active {
                return Err(CliError::Reported);
            }
        }
    }
    Ok(())
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn epoch(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| time(&t))
        .unwrap_or_else(|| secs.to_string())
}

fn introspection(i: &TokenIntrospection) -> String {
    if !i.active {
        return "not active".into();
    }
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut row = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            t.add_row(vec![name.to_owned(), v]);
        }
    };
    row("identity (sub)", i.sub.clone());
    row("key_id", i.key_id.map(|k| k.to_string()));
    row("scope", i.scope.clone());
    row("audience", i.aud.clone());
    row("issued_at", i.iat.map(epoch));
    row("expires_at", i.exp.map(epoch));
    row("jti", i.jti.clone());
    format!("active\n{t}")
}
