//! The scanner over real files, folders and git repositories.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_core::key::{KeyPrefix, mint};
use keyward_scan::{Options, Report, Scanner, SkipReason, format};

fn key() -> String {
    mint(&KeyPrefix::default()).plaintext.to_string()
}

fn scan(paths: &[&Path], opts: Options) -> Report {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    Scanner::new(opts).unwrap().scan_paths(&paths)
}

fn reasons(r: &Report) -> Vec<(String, &'static str)> {
    let mut v: Vec<_> = r
        .skipped
        .iter()
        .map(|s| {
            let name = Path::new(&s.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            (name.unwrap_or_default(), s.reason.kind())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn folders_honour_gitignore_and_skip_with_notes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let k1 = key();
    let k2 = key();
    fs::write(
        root.join("app.py"),
        format!("import os\nTOKEN = \"{k1}\"\n"),
    )
    .unwrap();
    fs::write(root.join(".gitignore"), "ignored.txt\nbuild/\n").unwrap();
    fs::write(root.join("ignored.txt"), format!("{k2}\n")).unwrap();
    fs::create_dir(root.join("build")).unwrap();
    fs::write(root.join("build/out.js"), format!("{k2}\n")).unwrap();
    fs::write(root.join(".env"), format!("KEYWARD_TOKEN={k2}\n")).unwrap();
    let mut bin = vec![0u8, 1, 2];
    bin.extend_from_slice(k2.as_bytes());
    fs::write(root.join("blob.bin"), bin).unwrap();
    fs::write(root.join("big.txt"), vec![b'a'; 2048]).unwrap();
    let mut bad = b"\xff\xfe broken utf-8 ".to_vec();
    bad.extend_from_slice(format!("key={k1}").as_bytes());
    fs::write(root.join("latin.txt"), bad).unwrap();
    std::os::unix::fs::symlink(root.join("app.py"), root.join("link.py")).unwrap();
    let fifo = root.join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    let r = scan(
        &[root],
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    );
    let found: Vec<(String, u64, bool)> = r
        .findings
        .iter()
        .map(|f| {
            (
                Path::new(&f.path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                f.line,
                f.keyward,
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (".env".into(), 1, true),
            ("app.py".into(), 2, true),
            ("latin.txt".into(), 1, true),
        ]
    );
    assert_eq!(
        reasons(&r),
        vec![
            ("big.txt".into(), "too large"),
            ("blob.bin".into(), "binary"),
            ("link.py".into(), "symlink not followed"),
            ("pipe".into(), "not a regular file"),
        ]
    );
    // Paths are as reached from the PATH given.
    assert!(r.findings[0].path.starts_with(&root.display().to_string()));
}

#[test]
fn symlink_loops_and_vanished_paths_are_notes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("a")).unwrap();
    std::os::unix::fs::symlink(root, root.join("a/loop")).unwrap();
    fs::write(root.join("a/x.txt"), "nothing").unwrap();
    let r = scan(
        &[root, &root.join("missing")],
        Options {
            follow_symlinks: true,
            ..Options::default()
        },
    );
    assert!(r.findings.is_empty());
    let kinds: HashSet<_> = r.skipped.iter().map(|s| s.reason.clone()).collect();
    assert!(kinds.contains(&SkipReason::SymlinkLoop), "{:?}", r.skipped);
    assert!(kinds.contains(&SkipReason::Vanished), "{:?}", r.skipped);
}

#[cfg(unix)]
#[test]
fn unreadable_files_are_notes() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe_is_root() {
        return; // root reads everything
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret.txt");
    fs::write(&p, key()).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    let r = scan(&[dir.path()], Options::default());
    assert_eq!(reasons(&r), vec![("secret.txt".into(), "unreadable")]);
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

#[test]
fn findings_never_hold_a_whole_secret() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let pw = "Hk8#vPq2$wLmZ";
    let gh = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5");
    fs::write(
        dir.path().join("config.yaml"),
        format!("keyward: {k}\ndb_password: \"{pw}\"\ngithub: {gh}\n"),
    )
    .unwrap();
    let r = scan(
        &[dir.path()],
        Options {
            keep_keys: true,
            ..Options::default()
        },
    );
    assert_eq!(r.findings.len(), 3, "{:?}", r.findings);
    for out in [
        format::json(&r),
        format::sarif(&r),
        format::human(&r),
        format!("{r:?}"),
    ] {
        for secret in [k.as_str(), pw, gh.as_str()] {
            assert!(!out.contains(secret), "{out}");
        }
    }
    // The key itself is kept only for --revoke, apart from the findings.
    assert_eq!(r.keys.len(), 1);
    assert_eq!(r.keys[0].key.as_str(), k);
    assert!(r.findings[r.keys[0].finding].keyward);
}

#[test]
fn baseline_and_exclude_globs() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("fixtures")).unwrap();
    fs::write(dir.path().join("fixtures/k.txt"), key()).unwrap();
    fs::write(dir.path().join("a.txt"), key()).unwrap();
    fs::write(dir.path().join("b.txt"), key()).unwrap();
    let first = scan(&[dir.path()], Options::default());
    assert_eq!(first.findings.len(), 3);
    let accepted: HashSet<String> = first
        .findings
        .iter()
        .filter(|f| f.path.ends_with("a.txt"))
        .map(|f| f.fingerprint.clone())
        .collect();
    let r = scan(
        &[dir.path()],
        Options {
            baseline: accepted,
            exclude: vec!["**/fixtures".into()],
            ..Options::default()
        },
    );
    assert_eq!(r.findings.len(), 1);
    assert!(r.findings[0].path.ends_with("b.txt"));
    assert_eq!(r.baselined, 1);
}

#[test]
fn readers_are_scanned_as_one_file() {
    let k = key();
    let s = Scanner::new(Options::default()).unwrap();
    let r = s.scan_reader("-", format!("x\n{k}\n").as_bytes());
    assert_eq!(r.findings.len(), 1);
    assert_eq!((r.findings[0].path.as_str(), r.findings[0].line), ("-", 2));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn git_history_reports_each_blob_once_with_the_commit_that_introduced_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    let k = key();
    fs::write(d.join("a.env"), "nothing here\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "one"]);
    fs::write(d.join("a.env"), format!("nothing here\nTOKEN={k}\n")).unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "two"]);
    let introduced = git(d, &["rev-parse", "HEAD"]);
    // The same content under another name, and the secret removed again: still once.
    fs::copy(d.join("a.env"), d.join("b.env")).unwrap();
    fs::write(d.join("a.env"), "nothing here\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "three"]);

    let s = Scanner::new(Options::default()).unwrap();
    let r = s.scan_git(d).unwrap();
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.path.as_str(), f.line), ("a.env", 2));
    assert_eq!(f.commit.as_deref(), Some(introduced.as_str()));
    assert!(format::json(&r).contains(&format!("\"commit\": \"{introduced}\"")));

    // Not a repository: an error, not a crash.
    let plain = tempfile::tempdir().unwrap();
    assert!(s.scan_git(plain.path()).is_err());
}

#[test]
fn a_corrupt_object_is_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    let k = key();
    fs::write(d.join("good.env"), format!("TOKEN={k}\n")).unwrap();
    fs::write(d.join("bad.txt"), "this object will be damaged\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "one"]);
    let bad = git(d, &["rev-parse", "HEAD:bad.txt"]);
    let obj = d.join(".git/objects").join(&bad[..2]).join(&bad[2..]);
    let mut perms = fs::metadata(&obj).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&obj, perms).unwrap();
    fs::write(&obj, b"garbage, not zlib").unwrap();

    let r = Scanner::new(Options::default())
        .unwrap()
        .scan_git(d)
        .unwrap();
    assert!(
        r.skipped
            .iter()
            .any(|s| matches!(s.reason, SkipReason::CorruptObject(_))),
        "{:?}",
        r.skipped
    );
    // What could be read was still scanned (objects before the damaged one).
    let _ = r.findings;
}

#[test]
fn staged_reports_only_added_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    let old = key();
    fs::write(d.join("c.env"), format!("OLD={old}\n")).unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "one"]);
    let new = key();
    fs::write(d.join("c.env"), format!("OLD={old}\nx=1\nNEW={new}\n")).unwrap();
    fs::write(d.join("unstaged.env"), format!("U={}\n", key())).unwrap();
    git(d, &["add", "c.env"]);
    let r = Scanner::new(Options {
        keep_keys: true,
        ..Options::default()
    })
    .unwrap()
    .scan_staged(d)
    .unwrap();
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(
        (r.findings[0].path.as_str(), r.findings[0].line),
        ("c.env", 3)
    );
    assert_eq!(r.keys[0].key.as_str(), new);
}

#[test]
fn large_files_are_mapped_and_scanned_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let mut text = "filler line without secrets\n".repeat(60_000); // ~1.6 MiB
    text.push_str(&format!("TOKEN={k}\n"));
    assert!(text.len() as u64 > keyward_scan::scan::MMAP_MIN);
    fs::write(dir.path().join("big.log"), &text).unwrap();
    let r = scan(&[dir.path()], Options::default());
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].line, 60_001);
}
