//! `keyward scan` and `keyward scan install-hook`: the command-line face of `keyward-scan`,
//! plus `--revoke`, which reports the Keyward keys found to the server (`POST /v1/leaks`).
//!
//! Exit status (contract, "Leaks"): 0 nothing found, 1 something found, 2 error.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keyward_proto::LeakReport;
use keyward_scan::{Options, Progress, Report, Scanner, format};
use serde_json::{Value, json};

use crate::cli::{ScanArgs, ScanCmd, ScanFormat};
use crate::commands::Ctx;
use crate::error::CliError;
use crate::settings::Settings;

/// Skip notes printed in full under the human format; the rest are counted.
const NOTES_SHOWN: usize = 20;

pub async fn run(settings: &Settings, json: bool, args: ScanArgs) -> Result<(), CliError> {
    if let Some(ScanCmd::InstallHook { repo, force }) = args.command {
        return install_hook(repo.as_deref().unwrap_or(Path::new(".")), force);
    }
    let format = if json { ScanFormat::Json } else { args.format };
    // Resolve the client first: a bad --url should fail before a long scan.
    let ctx = if args.revoke {
        Some(Ctx::new(settings, json)?)
    } else {
        None
    };
    let baseline = match &args.baseline {
        Some(p) => load_baseline(p)?,
        None => HashSet::new(),
    };
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Arc::new(Progress::default()));
    let opts = Options {
        max_file_size: args.max_file_size,
        follow_symlinks: args.follow_symlinks,
        exclude: args.exclude.clone(),
        baseline,
        keep_keys: args.revoke,
        threads: args.threads.unwrap_or(0) as usize,
        progress: progress.clone(),
    };
    let scanner = Scanner::new(opts).map_err(|e| CliError::Usage(e.to_string()))?;
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let (git, staged) = (args.git, args.staged);
    let bar = progress.as_ref().map(|p| spinner(p.clone()));
    let report = tokio::task::spawn_blocking(move || scan(&scanner, &paths, git, staged))
        .await
        .map_err(|e| CliError::Usage(format!("the scan stopped: {e}")))?;
    if let Some((bar, stop)) = bar {
        stop.store(true, Ordering::Relaxed);
        bar.finish_and_clear();
    }
    let report = report?;

    let revocations = match &ctx {
        Some(ctx) => Some(revoke(ctx, &report).await),
        None => None,
    };

    match format {
        ScanFormat::Human => {
            print!("{}", format::human(&report));
            for s in report.skipped.iter().take(NOTES_SHOWN) {
                eprintln!("skipped {}: {}", s.path, s.reason);
            }
            if report.skipped.len() > NOTES_SHOWN {
                eprintln!(
                    "... and {} more skipped (--format json lists them all)",
                    report.skipped.len() - NOTES_SHOWN
                );
            }
            if let Some(r) = &revocations {
                for line in &r.lines {
                    eprintln!("{line}");
                }
            }
        }
        ScanFormat::Json => {
            let mut v: Value = serde_json::from_str(&format::json(&report))
                .map_err(|e| CliError::Usage(format!("internal: {e}")))?;
            if let Some(r) = &revocations {
                v["revocations"] = Value::Array(r.json.clone());
            }
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        ScanFormat::Sarif => println!("{}", format::sarif(&report)),
    }
    if let Some(r) = &revocations
        && r.failed > 0
    {
        eprintln!(
            "error: {} key(s) could not be reported to the server",
            r.failed
        );
    }
    if report.findings.is_empty() {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

fn scan(scanner: &Scanner, paths: &[PathBuf], git: bool, staged: bool) -> Result<Report, CliError> {
    if !git && !staged {
        return Ok(scanner.scan_paths(paths));
    }
    let mut report = Report::default();
    for p in paths {
        let r = if git {
            scanner.scan_git(p)
        } else {
            scanner.scan_staged(p)
        };
        report.merge(r.map_err(|e| CliError::Usage(e.to_string()))?);
    }
    Ok(report)
}

/// A spinner on stderr, fed from the scan's counters until `stop` is set.
fn spinner(p: Arc<Progress>) -> (indicatif::ProgressBar, Arc<std::sync::atomic::AtomicBool>) {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, s) = (bar.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let files = p.files.load(Ordering::Relaxed);
            let mib = p.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
            b.set_message(format!("scanned {files} files, {mib:.1} MiB"));
            b.tick();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (bar, stop)
}

/// A baseline is a previous `--format json` output, or one fingerprint a line (`#`
/// comments allowed).
fn load_baseline(path: &Path) -> Result<HashSet<String>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Usage(format!("cannot read the baseline {}: {e}", path.display()))
    })?;
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        let findings = v.get("findings").and_then(Value::as_array).ok_or_else(|| {
            CliError::Usage(format!(
                "baseline {}: JSON without a findings list",
                path.display()
            ))
        })?;
        return Ok(findings
            .iter()
            .filter_map(|f| f.get("fingerprint")?.as_str().map(str::to_owned))
            .collect());
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

struct Revocations {
    lines: Vec<String>,
    json: Vec<Value>,
    failed: usize,
}

/// Reports each distinct Keyward key found once; the server revokes the ones it owns.
async fn revoke(ctx: &Ctx, report: &Report) -> Revocations {
    let mut out = Revocations {
        lines: Vec::new(),
        json: Vec::new(),
        failed: 0,
    };
    let mut done: HashSet<&str> = HashSet::new();
    for k in &report.keys {
        if !done.insert(k.key.as_str()) {
            continue;
        }
        let f = &report.findings[k.finding];
        let mut source = format!("{}:{}", f.path, f.line);
        if let Some(c) = &f.commit {
            source = format!("{c}:{source}");
        }
        let body = LeakReport {
            key: k.key.to_string(),
            source: Some(source.clone()),
        };
        match ctx.client.report_leak(&body).await {
            Ok(r) => {
                out.lines.push(match (r.revoked, r.key_id) {
                    (true, Some(id)) => {
                        format!("revoked {} (key {id}) found at {source}", f.redacted)
                    }
                    (true, None) => format!("revoked {} found at {source}", f.redacted),
                    (false, _) => format!(
                        "not revoked: {} found at {source} is not an active key of this server",
                        f.redacted
                    ),
                });
                out.json.push(json!({
                    "fingerprint": f.fingerprint,
                    "revoked": r.revoked,
                    "key_id": r.key_id,
                }));
            }
            Err(e) => {
                out.failed += 1;
                out.lines.push(format!(
                    "error: reporting {} found at {source}: {e}",
                    f.redacted
                ));
                out.json.push(json!({
                    "fingerprint": f.fingerprint,
                    "revoked": false,
                    "error": e.to_string(),
                }));
            }
        }
    }
    out
}

const HOOK_MARKER: &str = "# keyward-scan pre-commit hook";

/// Writes `<hooks>/pre-commit` running `keyward scan --staged`. An existing hook that is
/// not Keyward's is kept unless `force`.
fn install_hook(repo: &Path, force: bool) -> Result<(), CliError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .map_err(|e| CliError::Usage(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Usage(format!(
            "{} is not a git repository: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let hooks = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let hooks = if hooks.is_absolute() {
        hooks
    } else {
        repo.join(hooks)
    };
    std::fs::create_dir_all(&hooks)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", hooks.display())))?;
    let hook = hooks.join("pre-commit");
    if let Ok(existing) = std::fs::read_to_string(&hook)
        && !existing.contains(HOOK_MARKER)
        && !force
    {
        return Err(CliError::Usage(format!(
            "{} exists and is not Keyward's; add `keyward scan --staged .` to it, or use --force",
            hook.display()
        )));
    }
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string().replace('\'', "'\\''"))
        .unwrap_or_else(|| "keyward".into());
    let script = format!(
        "#!/bin/sh\n{HOOK_MARKER} (installed by `keyward scan install-hook`).\n\
         # Blocks a commit whose staged lines hold a secret. Mark a false positive with\n\
         # `keyward:allow` on its line; bypass once with `git commit --no-verify`.\n\
         if command -v keyward >/dev/null 2>&1; then\n  exec keyward scan --staged .\nfi\n\
         exec '{exe}' scan --staged .\n"
    );
    std::fs::write(&hook, script)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", hook.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).map_err(|e| {
            CliError::Usage(format!("cannot make {} executable: {e}", hook.display()))
        })?;
    }
    println!("installed {}", hook.display());
    Ok(())
}
