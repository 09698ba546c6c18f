//! Episode grouping: one anomaly per ongoing episode, not one per event. An episode of a
//! kind stays open while qualifying events keep coming less than the episode gap apart.

use keyward_core::anomaly::AnomalyKind;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episodes {
    /// The last qualifying event per kind (index in `AnomalyKind::ALL`).
    last: [i64; 7],
}

impl Default for Episodes {
    fn default() -> Self {
        Episodes {
            last: [i64::MIN / 2; 7],
        }
    }
}

impl Episodes {
    /// Records a qualifying event at `now`; true when it opens a new episode (report
    /// it), false when it continues one.
    pub fn hit(&mut self, kind: AnomalyKind, now: i64, gap: i64) -> bool {
        let i = kind as usize;
        let opens = now.saturating_sub(self.last[i]) >= gap;
        self.last[i] = now;
        opens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_episode() {
        let mut e = Episodes::default();
        let k = AnomalyKind::TrafficSpike;
        assert!(e.hit(k, 0, 10));
        assert!(!e.hit(k, 9, 10));
        assert!(!e.hit(k, 18, 10));
        assert!(e.hit(k, 40, 10));
        assert!(e.hit(AnomalyKind::OldKeyUnexpectedSource, 40, 10));
    }
}
