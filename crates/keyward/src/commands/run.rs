//! `keyward run --secret ENV=PATH ... [--watch] -- CMD ARGS`: starts CMD with the
//! secrets in its environment (its alone: this process's environment is not changed,
//! and the child does not get `KEYWARD_TOKEN`), forwards SIGINT, SIGTERM and SIGHUP to
//! it, and exits with its exit status (128 + the signal if a signal ended it).
//!
//! `--watch` looks for new versions every `--interval` through the listing (which
//! reveals no value and writes no audit entry); on a change it waits [`DEBOUNCE`] for
//! related writes to land, fetches the values, and restarts CMD only if a value really
//! differs: SIGTERM, then SIGKILL after `--stop-timeout`.
//!
//! The child stays in keyward's process group, so a terminal's ctrl-c reaches it
//! directly as well as forwarded (most programs treat a repeated SIGINT like one).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use keyward_client::SecretListParams;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use zeroize::{Zeroize, Zeroizing};

use super::Ctx;
use crate::cli::RunArgs;
use crate::error::CliError;

/// How long to wait after seeing a change before reading the values.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// The secrets as fetched: `(env, path, version, value)`.
struct Fetched(Vec<(String, i64, Zeroizing<String>)>);

impl Fetched {
    fn versions(&self) -> Vec<i64> {
        self.0.iter().map(|(_, v, _)| *v).collect()
    }

    fn same_values(&self, other: &Fetched) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.0 == b.0 && a.2.as_bytes() == b.2.as_bytes())
    }
}

async fn fetch(ctx: &Ctx, secrets: &[(String, String)]) -> Result<Fetched, CliError> {
    let mut out = Vec::with_capacity(secrets.len());
    for (env, path) in secrets {
        let mut s = ctx
            .client
            .get_secret(path, None)
            .await
            .map_err(|e| ctx.api(e))?;
        out.push((env.clone(), s.version, Zeroizing::new(s.value.clone())));
        s.value.zeroize();
    }
    Ok(Fetched(out))
}

/// The latest version of each secret, from the listing (no value, no audit entry).
async fn latest_versions(
    ctx: &Ctx,
    secrets: &[(String, String)],
) -> Result<Vec<i64>, keyward_client::Error> {
    let mut out = Vec::with_capacity(secrets.len());
    for (_, path) in secrets {
        // The path itself sorts first among the paths it prefixes.
        let page = ctx
            .client
            .list_secrets(&SecretListParams {
                prefix: Some(path.clone()),
                limit: Some(1),
                cursor: None,
            })
            .await?;
        out.push(
            page.items
                .first()
                .filter(|s| &s.path == path)
                .map_or(0, |s| s.version),
        );
    }
    Ok(out)
}

fn spawn(command: &[String], secrets: &Fetched) -> Result<Child, CliError> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).env_remove("KEYWARD_TOKEN");
    for (env, _, value) in &secrets.0 {
        cmd.env(env, value.as_str());
    }
    cmd.spawn()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot start {:?}: {e}", command[0])))
}

fn send_signal(child: &Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// SIGTERM, then SIGKILL after `timeout`; waits for the child to be gone.
async fn stop(child: &mut Child, timeout: Duration) {
    send_signal(child, libc::SIGTERM);
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        eprintln!("keyward run: the command did not stop in time; killing it");
        let _ = child.kill().await;
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

enum Event {
    Exited(std::io::Result<ExitStatus>),
    Signal(i32),
    Check,
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<(), CliError> {
    let mut current = fetch(ctx, &args.secrets).await?;
    let io = |e: std::io::Error| CliError::Failed(anyhow::anyhow!("cannot watch signals: {e}"));
    let mut sigint = signal(SignalKind::interrupt()).map_err(io)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(io)?;
    let interval = Duration::from_secs(args.interval as u64);
    let stop_timeout = Duration::from_secs(args.stop_timeout as u64);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut versions = current.versions();
    let mut child = spawn(&args.command, &current)?;
    loop {
        let event = tokio::select! {
            status = child.wait() => Event::Exited(status),
            _ = sigint.recv() => Event::Signal(libc::SIGINT),
            _ = sigterm.recv() => Event::Signal(libc::SIGTERM),
            _ = sighup.recv() => Event::Signal(libc::SIGHUP),
            _ = check.tick(), if args.watch => Event::Check,
        };
        match event {
            Event::Exited(status) => {
                let status = status.map_err(|e| {
                    CliError::Failed(anyhow::anyhow!("cannot wait for the command: {e}"))
                })?;
                drop(current);
                std::process::exit(exit_code(status));
            }
            Event::Signal(sig) => send_signal(&child, sig),
            Event::Check => {
                match latest_versions(ctx, &args.secrets).await {
                    Err(e) => {
                        eprintln!("keyward run: cannot check for new versions (will retry): {e}");
                        continue;
                    }
                    Ok(v) if v == versions => continue,
                    Ok(_) => {}
                }
                tokio::time::sleep(DEBOUNCE).await;
                let fresh = match fetch(ctx, &args.secrets).await {
                    Ok(f) => f,
                    Err(e) => {
                        e.report();
                        eprintln!("keyward run: keeping the command running; will retry");
                        continue;
                    }
                };
                versions = fresh.versions();
                if fresh.same_values(&current) {
                    continue;
                }
                eprintln!("keyward run: a secret changed; restarting the command");
                stop(&mut child, stop_timeout).await;
                current = fresh;
                child = spawn(&args.command, &current)?;
            }
        }
    }
}
