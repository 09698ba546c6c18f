//! Rotations, told to the detectors: `OLD_KEY_UNEXPECTED_SOURCE` needs to know which keys
//! are in a rotation's grace period. Every rotation (by the API or by a rotation policy)
//! writes a `key.rotate` audit record on whichever node made it; the tail reads the new
//! ones each round, so the leader learns of rotations made anywhere in the cluster.

use keyward_core::model::AuditRecord;
use keyward_core::time::Timestamp;
use keyward_store::Store;
use keyward_store::console::AuditSearch;
use uuid::Uuid;

use super::Detect;

/// Rotation records read per round at most (newest first); more in one round than this
/// are rare, and the rest are read the next round.
const PAGE: u32 = 200;

/// Where the tail is in the `key.rotate` records.
#[derive(Debug, Default)]
pub(super) struct Rotations {
    /// The highest audit sequence number already fed.
    seen: Option<i64>,
}

impl Rotations {
    /// Feeds the detectors the rotations recorded since the last call, oldest first. At
    /// start (`still_in_grace_at`), only those whose grace has not ended by then.
    pub(super) async fn feed(
        &mut self,
        store: &dyn Store,
        detectors: &mut dyn Detect,
        still_in_grace_at: Option<Timestamp>,
    ) -> keyward_store::Result<()> {
        let search = AuditSearch {
            actions: vec!["key.rotate".into()],
            limit: PAGE,
            ..AuditSearch::default()
        };
        let records = store.search_audit(&search).await?;
        let Some(newest) = records.first().map(|r| r.seq) else {
            return Ok(());
        };
        for r in records.iter().rev() {
            if self.seen.is_some_and(|s| r.seq <= s) {
                continue;
            }
            let Some((old, new, at, grace_ends)) = rotation(r) else {
                continue;
            };
            if still_in_grace_at.is_some_and(|t| grace_ends <= t) {
                continue;
            }
            detectors.note_rotated(old, new, at, grace_ends);
        }
        self.seen = Some(self.seen.map_or(newest, |s| s.max(newest)));
        Ok(())
    }
}

/// Old key, new key, time and end of grace of a `key.rotate` record.
fn rotation(r: &AuditRecord) -> Option<(Uuid, Uuid, Timestamp, Timestamp)> {
    let old = r.entry.target.parse().ok()?;
    let new = r.entry.detail.get("new_key_id")?.as_str()?.parse().ok()?;
    let grace = r.entry.detail.get("grace_seconds")?.as_i64()?;
    let at = r.entry.at;
    Some((old, new, at, at + chrono::TimeDelta::seconds(grace.max(0))))
}
