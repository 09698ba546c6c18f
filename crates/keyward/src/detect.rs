//! `keyward detect --events FILE`: the server's own anomaly detectors, offline, over a
//! recorded event stream (contract), so operators can back-test settings on their own
//! history. Prints one JSON object a line per anomaly:
//! `{"at", "key_id", "identity_id", "kind", "severity", "detail"}` (+ `evidence` with
//! `--evidence`). A bad line is a usage error naming its number (exit 2).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use clap::Args;
use keyward_core::anomaly::Anomaly;
use keyward_detect::events::{Line, parse_line};
use keyward_detect::{DetectSettings, Detectors};

use crate::error::CliError;

#[derive(Debug, Clone, Args)]
pub struct DetectArgs {
    /// JSON-lines file of usage events in time order (`-` for stdin)
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// Detector settings: a JSON object of DetectSettings fields (others keep their
    /// defaults; see docs/anomalies.md)
    #[arg(long, value_name = "FILE.json")]
    pub settings: Option<PathBuf>,
    /// Also print each anomaly's structured evidence
    #[arg(long)]
    pub evidence: bool,
}

pub fn run(args: &DetectArgs) -> Result<(), CliError> {
    let settings = match &args.settings {
        None => DetectSettings::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!("cannot read --settings {}: {e}", path.display()))
            })?;
            let s: DetectSettings = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("--settings {}: {e}", path.display())))?;
            s.validate()
                .map_err(|e| CliError::Usage(format!("--settings {}: {e}", path.display())))?;
            s
        }
    };
    let input: Box<dyn BufRead> = if args.events.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = std::fs::File::open(&args.events).map_err(|e| {
            CliError::Usage(format!(
                "cannot read --events {}: {e}",
                args.events.display()
            ))
        })?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    match detect(input, &settings, args.evidence, &mut out) {
        Err(DetectError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(DetectError::Output(e)) => Err(CliError::Failed(e.into())),
        Err(DetectError::Input(msg)) => Err(CliError::Usage(msg)),
        Ok(()) => out.flush().or_else(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(CliError::Failed(e.into())),
        }),
    }
}

enum DetectError {
    Input(String),
    Output(std::io::Error),
}

fn detect(
    input: impl BufRead,
    settings: &DetectSettings,
    evidence: bool,
    out: &mut impl Write,
) -> Result<(), DetectError> {
    let mut detectors = Detectors::new(settings.clone());
    let mut found: Vec<Anomaly> = Vec::new();
    let mut previous = None;
    let mut warned = false;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| DetectError::Input(format!("--events line {n}: {e}")))?;
        match parse_line(&line)
            .map_err(|e| DetectError::Input(format!("--events line {n}: {e}")))?
        {
            Line::Blank => {}
            Line::Event(e) => {
                if previous.is_some_and(|p| e.at < p) && !warned {
                    eprintln!(
                        "warning: --events line {n} is earlier than the line before; events \
                         should be in time order (later ones are judged as of the latest time)"
                    );
                    warned = true;
                }
                previous =
                    Some(previous.map_or(e.at, |p: keyward_core::time::Timestamp| p.max(e.at)));
                detectors.observe(&e, &mut found);
            }
            Line::Rotated {
                old,
                new,
                at,
                grace_until,
            } => detectors.note_rotated(old, new, at, grace_until),
        }
        print(&mut found, evidence, out)?;
    }
    detectors.finish(&mut found);
    print(&mut found, evidence, out)
}

fn print(
    found: &mut Vec<Anomaly>,
    evidence: bool,
    out: &mut impl Write,
) -> Result<(), DetectError> {
    for a in found.drain(..) {
        let mut line = serde_json::json!({
            "at": a.at,
            "key_id": a.key_id,
            "identity_id": a.identity_id,
            "kind": a.kind,
            "severity": a.severity,
            "detail": a.detail,
        });
        if evidence {
            line["evidence"] = a.evidence;
        }
        serde_json::to_writer(&mut *out, &line).map_err(|e| DetectError::Output(e.into()))?;
        out.write_all(b"\n").map_err(DetectError::Output)?;
    }
    Ok(())
}
