//! The scanner alone, as `keyward scan PATH... --format json|human` runs it, without the
//! rest of the binary: for the evaluation and the throughput benchmark (a release build of
//! this example is much lighter than one of the whole `keyward` binary).
//!
//! `cargo run --release -p keyward-scan --example kwscan -- [--human] [--git] [--threads N] PATH...`

use std::path::PathBuf;

use keyward_scan::{Options, Scanner, format};

fn main() {
    let mut human = false;
    let mut git = false;
    let mut threads = 0;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--human" => human = true,
            "--git" => git = true,
            "--threads" => threads = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let scanner = Scanner::new(Options {
        threads,
        ..Options::default()
    })
    .expect("default options are valid");
    let report = if git {
        let mut report = keyward_scan::Report::default();
        for p in &paths {
            match scanner.scan_git(p) {
                Ok(r) => report.merge(r),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
        }
        report
    } else {
        scanner.scan_paths(&paths)
    };
    if human {
        print!("{}", format::human(&report));
    } else {
        println!("{}", format::json(&report));
    }
    eprintln!("{}", format::summary(&report));
    std::process::exit(i32::from(!report.findings.is_empty()));
}
