//! The `keyward` binary: the server (`serve`, `init`) and the command-line client
//! (`identity`, `key`, `audit`) and the leak scanner (`scan`). See the contract, "The binary".

mod admin;
mod anomalies;
mod audit_verify;
mod cli;
mod commands;
mod detect;
mod error;
mod gateway;
mod output;
mod parse;
mod scan;
mod server;
mod settings;
mod tokens;
mod usage;
mod vault_settings;
mod webhook_settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{AuditCmd, Cli, Command};
use crate::error::CliError;

/// mimalloc: the server allocates small, short-lived buffers on every request, where
/// glibc's allocator showed up at ~9% of a verify-load profile (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any thread exists (see the function's safety note).
    keyward_server::allocator::configure();
    // Usage errors exit 2, --help and --version 0 (clap's defaults).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let settings = settings::resolve(&cli.global.layer(), cli.global.config.as_deref(), |k| {
        std::env::var(k).ok()
    })?;
    let json = cli.global.json;
    match cli.command {
        Command::Serve => server::serve(&settings, cli.global.master_key_file.clone()).await,
        Command::Init => server::init(&settings, json).await,
        Command::Gateway(args) => {
            gateway::run(&settings, cli.global.master_key_file.clone(), &args).await
        }
        Command::Identity(cmd) => {
            commands::identity(&commands::Ctx::new(&settings, json)?, cmd).await
        }
        Command::Key(cmd) => commands::key(&commands::Ctx::new(&settings, json)?, cmd).await,
        Command::Audit(AuditCmd::Verify) => audit_verify::run(&settings, json).await,
        Command::Audit(cmd) => commands::audit(&commands::Ctx::new(&settings, json)?, cmd).await,
        Command::Admin(cmd) => admin::run(&commands::Ctx::new(&settings, json)?, cmd).await,
        Command::Token(cmd) => tokens::run(&commands::Ctx::new(&settings, json)?, cmd).await,
        Command::Scan(args) => scan::run(&settings, json, args).await,
        Command::Webhook(cmd) => {
            commands::webhook::run(&commands::Ctx::new(&settings, json)?, cmd).await
        }
        Command::Secret(cmd) => commands::secret(&commands::Ctx::new(&settings, json)?, cmd).await,
        Command::Run(args) => commands::run(&commands::Ctx::new(&settings, json)?, args).await,
        Command::Usage(args) => usage::usage(&commands::Ctx::new(&settings, json)?, args).await,
        Command::Report(cmd) => usage::report(&commands::Ctx::new(&settings, json)?, cmd).await,
        Command::Detect(args) => detect::run(&args),
        Command::Anomalies(args) => {
            anomalies::list(&commands::Ctx::new(&settings, json)?, args).await
        }
    }
}
