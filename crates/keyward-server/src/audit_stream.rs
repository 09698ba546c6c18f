//! Streams the audit log to an append-only JSON-lines file (`--audit-log-file`), for a
//! log shipper or an external collector: one line per record (the `GET /v1/audit` item),
//! in sequence order, synced to disk each round.
//!
//! It tails the store by sequence number, so it carries every node's records; it picks
//! up after the last sequence number already in the file when it starts again.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often new records are looked for.
const EVERY: Duration = Duration::from_secs(1);
const BATCH: u32 = 1000;

/// The last sequence number in an existing file (0 if none).
fn last_seq(path: &Path) -> i64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok()?["seq"].as_i64())
        .last()
        .unwrap_or(0)
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Appends the records after `after`; returns the last sequence number written.
async fn drain(store: &dyn Store, file: &mut std::fs::File, mut after: i64) -> anyhow::Result<i64> {
    loop {
        let page = store.list_audit(Some(after), BATCH).await?;
        if page.is_empty() {
            return Ok(after);
        }
        let mut buf = Vec::new();
        for r in page {
            after = r.seq;
            serde_json::to_writer(&mut buf, &crate::convert::audit(r))?;
            buf.push(b'\n');
        }
        file.write_all(&buf)?;
        file.sync_data()?;
    }
}

/// Runs until `shutdown`, then writes what is left.
pub fn spawn(
    store: Arc<dyn Store>,
    path: PathBuf,
    // Set once every task that appends to the log has stopped: the last drain then
    // reaches the true end.
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut file = open_append(&path)
        .map_err(|e| anyhow::anyhow!("--audit-log-file {}: {e}", path.display()))?;
    let mut after = last_seq(&path);
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.wait_for(|s| *s) => true,
            };
            match drain(&*store, &mut file, after).await {
                Ok(last) => after = last,
                Err(e) => tracing::warn!(error = %e, "streaming the audit log failed; will retry"),
            }
            if stopping {
                break;
            }
        }
    }))
}
