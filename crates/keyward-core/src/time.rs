//! Time as Keyward stores it: UTC, microsecond precision (what PostgreSQL keeps), so a
//! value read back from any store compares equal to the value written.

use chrono::{DateTime, SubsecRound, Utc};

pub type Timestamp = DateTime<Utc>;

/// Truncates to whole microseconds.
pub fn truncate(t: Timestamp) -> Timestamp {
    t.trunc_subsecs(6)
}
