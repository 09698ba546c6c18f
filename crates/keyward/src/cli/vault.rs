//! `keyward secret ...`, `keyward run ...` and `keyward key rotation-policy ...`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyward_proto::Meta;
use uuid::Uuid;

use crate::parse;

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a new version of a secret. The value comes from stdin (one trailing
    /// newline removed) or --from-file; never from the command line unless forced,
    /// as arguments leak into process lists and shell history
    Put {
        /// The secret's path, e.g. payments/db
        path: String,
        /// Read the value from this file (one trailing newline removed)
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        from_file: Option<PathBuf>,
        /// The value itself; needs --allow-argv (visible to other users in `ps`)
        #[arg(long, requires = "allow_argv")]
        value: Option<String>,
        /// Accept --value despite the leak
        #[arg(long)]
        allow_argv: bool,
        /// A JSON object stored with the version (not encrypted)
        #[arg(long, value_name = "JSON", value_parser = parse::meta)]
        meta: Option<Meta>,
    },
    /// Print a secret's value (with --json: path, version, value, created_at)
    Get {
        path: String,
        /// A version number (default: the latest)
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        version: Option<i64>,
    },
    /// List the secrets you may read
    List {
        /// Only paths starting with this
        #[arg(long)]
        prefix: Option<String>,
        /// Items per page
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Start at this page (a previous page's next_cursor)
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Delete every version of a secret
    Delete { path: String },
}

#[derive(Debug, Subcommand)]
pub enum RotationPolicyCmd {
    /// Rotate the key automatically when it is --max-age old
    Set {
        id: Uuid,
        /// Rotate at this age: seconds or e.g. 30d, 12h
        #[arg(long, value_name = "DURATION", value_parser = parse::ttl)]
        max_age: i64,
        /// How long the old key keeps working after a rotation (at most --max-age)
        #[arg(long, value_name = "DURATION", value_parser = parse::grace, default_value = "0")]
        grace: i64,
        /// Write each new key to this secret path
        #[arg(long, value_name = "PATH")]
        deliver_to: Option<String>,
    },
    /// Show the key's rotation policy
    Show { id: Uuid },
    /// Remove the key's rotation policy
    Clear { id: Uuid },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// ENV=PATH: set variable ENV to the secret at PATH (repeatable)
    #[arg(long = "secret", value_name = "ENV=PATH", value_parser = parse_env_secret)]
    pub secrets: Vec<(String, String)>,
    /// Restart the command when a secret changes
    #[arg(long)]
    pub watch: bool,
    /// With --watch: how often to look for new versions
    #[arg(long, value_name = "DURATION", value_parser = parse::ttl, default_value = "5")]
    pub interval: i64,
    /// With --watch: how long the command may take to stop on SIGTERM before SIGKILL
    #[arg(long, value_name = "DURATION", value_parser = parse::grace, default_value = "10")]
    pub stop_timeout: i64,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `ENV=PATH`, with ENV a portable variable name.
fn parse_env_secret(s: &str) -> Result<(String, String), String> {
    let (env, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ENV=PATH"))?;
    let ok_name = !env.is_empty()
        && !env.starts_with(|c: char| c.is_ascii_digit())
        && env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_name {
        return Err(format!(
            "{env:?} is not a variable name (letters, digits and _)"
        ));
    }
    keyward_core::secret::validate_path("PATH", path).map_err(|e| e.to_string())?;
    Ok((env.to_owned(), path.to_owned()))
}
