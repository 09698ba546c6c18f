//! Inputs: files, folders (parallel walk honouring `.gitignore`), readers (stdin), every
//! blob of a git history, and the added lines of the git index. Anything that cannot be
//! read is skipped with a note and counted; nothing here panics on bad input.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::engine::{Detector, Generic};
use crate::finding::{Finding, LeakedKey, fingerprint, redact};

/// Files from this size on are memory-mapped rather than read.
///
/// Only large files are mapped: a mapped file truncated by another process while it is
/// scanned raises SIGBUS, and the many small files of a source tree read as fast anyway.
pub const MMAP_MIN: u64 = 1 << 20;
/// How much of a file's start is checked for a NUL byte (git's binary heuristic).
const BINARY_PROBE: usize = 8000;

/// Lockfiles: full of hashes and integrity strings, never of hand-written secrets. The
/// generic detector is off in them; the specific rules still run.
pub(crate) const LOCKFILES: &[&str] = &[
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "Cargo.lock",
    "go.sum",
    "poetry.lock",
    "Pipfile.lock",
    "Gemfile.lock",
    "composer.lock",
    "flake.lock",
    "pdm.lock",
    "uv.lock",
    "bun.lock",
    "packages.lock.json",
    "mix.lock",
    "pubspec.lock",
];

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("invalid path glob {glob:?}: {error}")]
    Glob { glob: String, error: String },
    #[error("{0}")]
    Git(String),
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
}

/// Counters a progress display can poll while a scan runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Larger files are skipped with a note.
    pub max_file_size: u64,
    /// Follow symbolic links while walking folders (loops are detected and noted).
    pub follow_symlinks: bool,
    /// Path globs not to scan (matched against the path as reached and its file name).
    pub exclude: Vec<String>,
    /// Fingerprints of accepted findings.
    pub baseline: HashSet<String>,
    /// Keep the Keyward keys found ([`Report::keys`]), for reporting them to a server.
    pub keep_keys: bool,
    /// Worker threads; 0 for one per core.
    pub threads: usize,
    pub progress: Option<Arc<Progress>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_file_size: 10 << 20,
            follow_symlinks: false,
            exclude: Vec::new(),
            baseline: HashSet::new(),
            keep_keys: false,
            threads: 0,
            progress: None,
        }
    }
}

/// Why something was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum SkipReason {
    Binary,
    TooLarge(u64),
    NotRegularFile,
    Symlink,
    SymlinkLoop,
    Vanished,
    Unreadable(String),
    CorruptObject(String),
}

impl SkipReason {
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::Binary => "binary",
            SkipReason::TooLarge(_) => "too large",
            SkipReason::NotRegularFile => "not a regular file",
            SkipReason::Symlink => "symlink not followed",
            SkipReason::SymlinkLoop => "symlink loop",
            SkipReason::Vanished => "vanished",
            SkipReason::Unreadable(_) => "unreadable",
            SkipReason::CorruptObject(_) => "corrupt git object",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::TooLarge(n) => write!(f, "too large ({n} bytes)"),
            SkipReason::Unreadable(e) => write!(f, "unreadable: {e}"),
            SkipReason::CorruptObject(e) => write!(f, "corrupt git object: {e}"),
            other => f.write_str(other.kind()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: SkipReason,
}

/// The outcome of a scan: findings sorted by path, line, column.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// With [`Options::keep_keys`]: the Keyward keys found, each pointing at its finding.
    pub keys: Vec<LeakedKey>,
    pub skipped: Vec<Skipped>,
    pub files: u64,
    pub bytes: u64,
    /// Findings left out because the baseline accepts them.
    pub baselined: u64,
}

impl Report {
    /// Folds another report into this one (e.g. one per PATH given).
    pub fn merge(&mut self, mut other: Report) {
        let offset = self.findings.len();
        self.findings.append(&mut other.findings);
        self.keys.extend(other.keys.into_iter().map(|mut k| {
            k.finding += offset;
            k
        }));
        self.skipped.append(&mut other.skipped);
        self.files += other.files;
        self.bytes += other.bytes;
        self.baselined += other.baselined;
    }
}

#[derive(Default)]
struct Acc {
    found: Vec<(Finding, Option<Zeroizing<String>>)>,
    skipped: Vec<Skipped>,
    files: u64,
    bytes: u64,
    baselined: u64,
}

impl Acc {
    fn into_report(mut self) -> Report {
        self.found.sort_by(|a, b| {
            (&a.0.path, a.0.line, a.0.column, &a.0.commit).cmp(&(
                &b.0.path,
                b.0.line,
                b.0.column,
                &b.0.commit,
            ))
        });
        self.skipped.sort_by(|a, b| a.path.cmp(&b.path));
        let mut report = Report {
            skipped: self.skipped,
            files: self.files,
            bytes: self.bytes,
            baselined: self.baselined,
            ..Report::default()
        };
        for (i, (finding, key)) in self.found.into_iter().enumerate() {
            report.findings.push(finding);
            if let Some(key) = key {
                report.keys.push(LeakedKey { key, finding: i });
            }
        }
        report
    }
}

/// Bytes to scan: read into memory or mapped.
enum Content {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Content {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Content::Owned(v) => v,
            Content::Mapped(m) => m,
        }
    }
}

pub struct Scanner {
    detector: Detector,
    opts: Options,
    exclude: GlobSet,
}

impl Scanner {
    pub fn new(opts: Options) -> Result<Scanner, ScanError> {
        let mut b = GlobSetBuilder::new();
        for g in &opts.exclude {
            b.add(Glob::new(g).map_err(|e| ScanError::Glob {
                glob: g.clone(),
                error: e.to_string(),
            })?);
        }
        let exclude = b.build().map_err(|e| ScanError::Glob {
            glob: opts.exclude.join(","),
            error: e.to_string(),
        })?;
        Ok(Scanner {
            detector: Detector::new(),
            opts,
            exclude,
        })
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    fn threads(&self) -> usize {
        if self.opts.threads > 0 {
            self.opts.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn excluded(&self, path: &Path) -> bool {
        !self.exclude.is_empty()
            && (self.exclude.is_match(path)
                || path.file_name().is_some_and(|n| self.exclude.is_match(n)))
    }

    /// Scans one buffer and records its findings.
    fn scan_buffer(&self, path: &str, data: &[u8], commit: Option<&str>, acc: &Mutex<Acc>) {
        if let Some(p) = &self.opts.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
            p.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let probe = &data[..data.len().min(BINARY_PROBE)];
        if memchr::memchr(0, probe).is_some() {
            lock(acc).skipped.push(Skipped {
                path: path.to_owned(),
                reason: SkipReason::Binary,
            });
            return;
        }
        let hits = self.detector.detect(data, Generic::for_path(path));
        let mut found = Vec::with_capacity(hits.len());
        let mut baselined = 0;
        for h in hits {
            let fp = fingerprint(h.rule, path, &h.secret);
            if self.opts.baseline.contains(&fp) {
                baselined += 1;
                continue;
            }
            let finding = Finding {
                path: path.to_owned(),
                line: h.line,
                column: h.column,
                rule: h.rule.to_owned(),
                keyward: h.keyward,
                redacted: redact(&h.secret, h.keyward),
                fingerprint: fp,
                commit: commit.map(str::to_owned),
            };
            let key = (h.keyward && self.opts.keep_keys).then_some(h.secret);
            found.push((finding, key));
        }
        let mut acc = lock(acc);
        acc.files += 1;
        acc.bytes += data.len() as u64;
        acc.baselined += baselined;
        acc.found.extend(found);
    }

    fn skip(&self, acc: &Mutex<Acc>, path: impl Into<String>, reason: SkipReason) {
        lock(acc).skipped.push(Skipped {
            path: path.into(),
            reason,
        });
    }

    /// Scans files and folders; `-` is standard input.
    pub fn scan_paths(&self, paths: &[PathBuf]) -> Report {
        let acc = Mutex::new(Acc::default());
        for p in paths {
            if p.as_os_str() == "-" {
                let stdin = std::io::stdin();
                self.scan_reader_into("-", stdin.lock(), &acc);
                continue;
            }
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => self.walk(p, &acc),
                // A file named explicitly is scanned even if ignored or a symlink.
                Ok(_) => self.scan_file(p, true, &acc),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.skip(&acc, p.display().to_string(), SkipReason::Vanished)
                }
                Err(e) => self.skip(
                    &acc,
                    p.display().to_string(),
                    SkipReason::Unreadable(e.to_string()),
                ),
            }
        }
        acc.into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_report()
    }

    /// Scans everything a reader yields, up to the size limit, as one file named `name`.
    pub fn scan_reader(&self, name: &str, reader: impl Read) -> Report {
        let acc = Mutex::new(Acc::default());
        self.scan_reader_into(name, reader, &acc);
        acc.into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_report()
    }

    fn scan_reader_into(&self, name: &str, reader: impl Read, acc: &Mutex<Acc>) {
        let mut data = Vec::new();
        match reader
            .take(self.opts.max_file_size + 1)
            .read_to_end(&mut data)
        {
            Ok(n) if n as u64 > self.opts.max_file_size => {
                self.skip(acc, name, SkipReason::TooLarge(n as u64))
            }
            Ok(_) => self.scan_buffer(name, &data, None, acc),
            Err(e) => self.skip(acc, name, SkipReason::Unreadable(e.to_string())),
        }
    }

    fn walk(&self, root: &Path, acc: &Mutex<Acc>) {
        let mut b = ignore::WalkBuilder::new(root);
        b.hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .require_git(false)
            .follow_links(self.opts.follow_symlinks)
            .threads(self.threads());
        b.filter_entry(|e| e.file_name() != ".git");
        b.build_parallel().run(|| {
            Box::new(|entry| {
                match entry {
                    Ok(e) => {
                        let path = e.path();
                        if self.excluded(path) {
                            return if e.file_type().is_some_and(|t| t.is_dir()) {
                                ignore::WalkState::Skip
                            } else {
                                ignore::WalkState::Continue
                            };
                        }
                        match e.file_type() {
                            Some(t) if t.is_dir() => {}
                            Some(t) if t.is_symlink() => {
                                self.skip(acc, path.display().to_string(), SkipReason::Symlink)
                            }
                            _ => self.scan_file(path, self.opts.follow_symlinks, acc),
                        }
                    }
                    Err(err) => {
                        let (path, reason) = walk_error(&err);
                        self.skip(acc, path, reason);
                    }
                }
                ignore::WalkState::Continue
            })
        });
    }

    fn scan_file(&self, path: &Path, follow: bool, acc: &Mutex<Acc>) {
        let shown = path.display().to_string();
        match self.read(path, follow) {
            Ok(data) => self.scan_buffer(&shown, &data, None, acc),
            Err(reason) => self.skip(acc, shown, reason),
        }
    }

    fn read(&self, path: &Path, follow: bool) -> Result<Content, SkipReason> {
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
        .map_err(io_reason)?;
        if meta.file_type().is_symlink() {
            return Err(SkipReason::Symlink);
        }
        if !meta.is_file() {
            return Err(SkipReason::NotRegularFile);
        }
        if meta.len() > self.opts.max_file_size {
            return Err(SkipReason::TooLarge(meta.len()));
        }
        let file = File::open(path).map_err(io_reason)?;
        // What was opened may not be what was looked at: check again.
        let meta = file.metadata().map_err(io_reason)?;
        if !meta.is_file() {
            return Err(SkipReason::NotRegularFile);
        }
        if meta.len() > self.opts.max_file_size {
            return Err(SkipReason::TooLarge(meta.len()));
        }
        if meta.len() >= MMAP_MIN {
            // SAFETY: the map is read-only and dropped at the end of this file's scan. A
            // concurrent truncation could fault (see MMAP_MIN): only large files take this
            // path.
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                return Ok(Content::Mapped(map));
            }
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.take(self.opts.max_file_size + 1)
            .read_to_end(&mut data)
            .map_err(io_reason)?;
        if data.len() as u64 > self.opts.max_file_size {
            return Err(SkipReason::TooLarge(data.len() as u64));
        }
        Ok(Content::Owned(data))
    }

    // ------------------------------------------------------------ git

    /// Scans every blob reachable from any ref, once, attributing each to the commit that
    /// introduced it (parents before children; first parent for merges).
    pub fn scan_git(&self, repo: &Path) -> Result<Report, ScanError> {
        git_check(repo)?;
        let mut log = git(repo)
            .args([
                "log",
                "--all",
                "--topo-order",
                "--reverse",
                "--no-renames",
                "--raw",
                "--no-abbrev",
                "--root",
                "--diff-merges=first-parent",
                "--format=commit %H",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io_err("cannot run git", e))?;
        let stdout = log.stdout.take().expect("piped");
        let mut seen: HashSet<String> = HashSet::new();
        let mut blobs: Vec<(String, String, String)> = Vec::new();
        let mut commit = String::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let line = line.map_err(|e| io_err("reading git log", e))?;
            let line = String::from_utf8_lossy(&line);
            if let Some(c) = line.strip_prefix("commit ") {
                commit = c.trim().to_owned();
            } else if let Some(raw) = line.strip_prefix(':') {
                // :<old mode> <new mode> <old sha> <new sha> <status>\t<path>
                let Some((meta, path)) = raw.split_once('\t') else {
                    continue;
                };
                let f: Vec<&str> = meta.split(' ').collect();
                if f.len() < 5 || f[4].starts_with('D') || f[1] == "160000" {
                    continue;
                }
                let sha = f[3];
                if sha.bytes().all(|b| b == b'0') || !seen.insert(sha.to_owned()) {
                    continue;
                }
                blobs.push((sha.to_owned(), commit.clone(), unquote(path)));
            }
        }
        let out = log.wait_with_output().map_err(|e| io_err("git log", e))?;
        if !out.status.success() {
            return Err(ScanError::Git(format!(
                "git log failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let acc = Mutex::new(Acc::default());
        let requests: Vec<String> = blobs.iter().map(|b| b.0.clone()).collect();
        self.cat_blobs(
            repo,
            &requests,
            &acc,
            |i, data, acc| {
                let (_, commit, path) = &blobs[i];
                self.scan_buffer(path, data, Some(commit), acc);
            },
            |i| blobs[i].2.clone(),
        )?;
        Ok(acc
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_report())
    }

    /// Scans the lines the index adds over `HEAD` (a pre-commit check): each staged file's
    /// content is scanned whole, so multi-line secrets are seen, and findings outside the
    /// added lines are dropped.
    pub fn scan_staged(&self, repo: &Path) -> Result<Report, ScanError> {
        git_check(repo)?;
        let out = git(repo)
            .args([
                "diff",
                "--cached",
                "-U0",
                "--no-color",
                "--no-ext-diff",
                "--no-renames",
                "--diff-filter=ACMR",
            ])
            .output()
            .map_err(|e| io_err("cannot run git", e))?;
        if !out.status.success() {
            return Err(ScanError::Git(format!(
                "git diff --cached failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let added = added_lines(&out.stdout);
        let paths: Vec<String> = added.keys().cloned().collect();
        let requests: Vec<String> = paths.iter().map(|p| format!(":{p}")).collect();
        let acc = Mutex::new(Acc::default());
        self.cat_blobs(
            repo,
            &requests,
            &acc,
            |i, data, acc| {
                let path = &paths[i];
                let local = Mutex::new(Acc::default());
                self.scan_buffer(path, data, None, &local);
                let mut local = local.into_inner().unwrap_or_else(|e| e.into_inner());
                let ranges = &added[path];
                local
                    .found
                    .retain(|(f, _)| ranges.iter().any(|&(a, b)| f.line >= a && f.line < b));
                let mut acc = lock(acc);
                acc.found.append(&mut local.found);
                acc.skipped.append(&mut local.skipped);
                acc.files += local.files;
                acc.bytes += local.bytes;
                acc.baselined += local.baselined;
            },
            |i| paths[i].clone(),
        )?;
        Ok(acc
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_report())
    }

    /// Streams objects out of `git cat-file --batch` and scans them on all cores.
    fn cat_blobs(
        &self,
        repo: &Path,
        requests: &[String],
        acc: &Mutex<Acc>,
        scan: impl Fn(usize, &[u8], &Mutex<Acc>) + Sync,
        name: impl Fn(usize) -> String,
    ) -> Result<(), ScanError> {
        if requests.is_empty() {
            return Ok(());
        }
        let mut child = git(repo)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io_err("cannot run git cat-file", e))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
        let max = self.opts.max_file_size;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads())
            .build()
            .map_err(|e| ScanError::Git(format!("cannot start threads: {e}")))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(64);
        let read_outcome = std::thread::scope(|s| {
            s.spawn(move || {
                // Ends early, harmlessly, if git exits.
                let _ = stdin.write_all(input.as_bytes());
            });
            let err_reader = s.spawn(move || {
                let mut e = String::new();
                let _ = stderr.read_to_string(&mut e);
                e
            });
            let reader = s.spawn(move || -> (usize, Vec<(usize, SkipReason)>) {
                let mut out = BufReader::with_capacity(1 << 20, stdout);
                let mut notes = Vec::new();
                let mut done = 0;
                let mut header = Vec::new();
                for i in 0..requests.len() {
                    header.clear();
                    match out.read_until(b'\n', &mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let h = String::from_utf8_lossy(&header);
                    let f: Vec<&str> = h.trim_end().split(' ').collect();
                    done = i + 1;
                    if f.len() != 3 {
                        notes.push((i, SkipReason::CorruptObject(h.trim_end().to_owned())));
                        continue;
                    }
                    let Ok(size) = f[2].parse::<u64>() else {
                        notes.push((i, SkipReason::CorruptObject(h.trim_end().to_owned())));
                        break;
                    };
                    if f[1] != "blob" || size > max {
                        let _ = std::io::copy(&mut (&mut out).take(size + 1), &mut std::io::sink());
                        if f[1] == "blob" {
                            notes.push((i, SkipReason::TooLarge(size)));
                        }
                        continue;
                    }
                    let mut data = vec![0u8; size as usize];
                    let mut nl = [0u8; 1];
                    if out.read_exact(&mut data).is_err() || out.read_exact(&mut nl).is_err() {
                        done = i;
                        break;
                    }
                    if tx.send((i, data)).is_err() {
                        break;
                    }
                }
                (done, notes)
            });
            pool.install(|| {
                rx.into_iter()
                    .par_bridge()
                    .for_each(|(i, data)| scan(i, &data, acc));
            });
            let outcome = reader.join().unwrap_or((0, Vec::new()));
            let err = err_reader.join().unwrap_or_default();
            (outcome, err)
        });
        let _ = child.wait();
        let ((done, notes), err) = read_outcome;
        for (i, reason) in notes {
            self.skip(acc, name(i), reason);
        }
        if done < requests.len() {
            let why = err
                .lines()
                .next()
                .unwrap_or("git cat-file stopped")
                .to_owned();
            for i in done..requests.len() {
                self.skip(acc, name(i), SkipReason::CorruptObject(why.clone()));
            }
        }
        Ok(())
    }
}

fn lock(acc: &Mutex<Acc>) -> std::sync::MutexGuard<'_, Acc> {
    acc.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_reason(e: std::io::Error) -> SkipReason {
    match e.kind() {
        std::io::ErrorKind::NotFound => SkipReason::Vanished,
        _ if e.raw_os_error() == Some(40) => SkipReason::SymlinkLoop, // ELOOP
        _ => SkipReason::Unreadable(e.to_string()),
    }
}

fn io_err(context: &str, error: std::io::Error) -> ScanError {
    ScanError::Io {
        context: context.to_owned(),
        error,
    }
}

fn walk_error(err: &ignore::Error) -> (String, SkipReason) {
    match err {
        ignore::Error::WithPath { path, err } => {
            let (_, reason) = walk_error(err);
            (path.display().to_string(), reason)
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            walk_error(err)
        }
        ignore::Error::Loop { child, .. } => (child.display().to_string(), SkipReason::SymlinkLoop),
        ignore::Error::Io(e) => (
            String::from("?"),
            io_reason(std::io::Error::new(e.kind(), e.to_string())),
        ),
        other => (String::from("?"), SkipReason::Unreadable(other.to_string())),
    }
}

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(repo)
        .args(["-c", "core.quotePath=false"])
        .stdin(Stdio::null());
    c
}

fn git_check(repo: &Path) -> Result<(), ScanError> {
    let out = git(repo)
        .args(["rev-parse", "--git-dir"])
        .output()
        .map_err(|e| io_err("cannot run git", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ScanError::Git(format!(
            "{} is not a git repository: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Git quotes paths with unusual bytes (`"a\tb"`); undo the common escapes.
fn unquote(path: &str) -> String {
    let Some(inner) = path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) else {
        return path.to_owned();
    };
    let mut out = Vec::new();
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(d @ b'0'..=b'7') => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    if let Some(d) = bytes.next() {
                        v = v * 8 + u32::from(d.wrapping_sub(b'0') & 7);
                    }
                }
                out.push(v as u8);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// From a `git diff -U0` output: each file's added lines, as half-open ranges.
fn added_lines(diff: &[u8]) -> HashMap<String, Vec<(u64, u64)>> {
    let mut map: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in diff.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        if let Some(p) = line.strip_prefix("+++ ") {
            current = p.strip_prefix("b/").map(|p| unquote(p.trim_end()));
            if current.is_none() {
                current = unquote(p.trim_end()).strip_prefix("b/").map(str::to_owned);
            }
        } else if let (Some(rest), Some(path)) = (line.strip_prefix("@@ "), &current) {
            // @@ -a[,b] +c[,d] @@
            let Some(plus) = rest.split(' ').find(|t| t.starts_with('+')) else {
                continue;
            };
            let plus = &plus[1..];
            let (start, count) = match plus.split_once(',') {
                Some((s, c)) => (s.parse().unwrap_or(0), c.parse().unwrap_or(0)),
                None => (plus.parse().unwrap_or(0), 1),
            };
            if count > 0 {
                map.entry(path.clone())
                    .or_default()
                    .push((start, start + count));
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_lines_from_a_diff() {
        let diff = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,0 +2,3 @@\n+a\n@@ -9 +12 @@\n-b\n+c\n@@ -20,2 +22,0 @@\ndiff --git a/n b/n\nnew file mode 100644\n--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n";
        let m = added_lines(diff);
        assert_eq!(m["x"], vec![(2, 5), (12, 13)]);
        assert_eq!(m["n"], vec![(1, 2)]);
    }

    #[test]
    fn unquotes_git_paths() {
        assert_eq!(unquote("plain/path"), "plain/path");
        assert_eq!(unquote("\"a\\tb\""), "a\tb");
        assert_eq!(unquote("\"caf\\303\\251\""), "café");
    }
}
