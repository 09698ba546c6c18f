//! Traffic volume against the key's learned baseline.
//!
//! - sudden: requests in the last minute (a decayed counter, tau 60 s) above
//!   `spike_sudden_factor` times the busiest minute of the previous seven days;
//! - sustained: requests in the last half hour (tau 30 min) above
//!   `spike_sustained_factor` times the larger of the usual half hour at this hour of
//!   the week (a per-hour-of-week mean, weekday and weekend apart, learned hour by hour)
//!   and half the busiest half hour of the previous seven days, for at least
//!   `spike_sustained_minutes` (a burst crosses that bar only briefly).
//!
//! The peaks are kept per day in an 8-day ring and today's slot is left out of the
//! comparison, so a ramping spike cannot raise its own bar.

use crate::clock::{HOUR, class_of_day, day_of, hour_of};
use crate::decay::Decayed;
use crate::settings::DetectSettings;

const FAST_TAU: f32 = 60.0;
const SLOW_TAU: f32 = 1800.0;
/// How fast the hour-of-week means follow change (per week of that hour).
const MEAN_ALPHA: f32 = 0.3;

#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    fast: Decayed,
    slow: Decayed,
    peak_fast: [f32; 8],
    peak_slow: [f32; 8],
    peak_day: i64,
    /// Mean requests per minute per (weekday/weekend, hour of day).
    hour_mean: [f32; 48],
    hour_learned: u64,
    hour: i64,
    hour_count: u32,
    /// Since when the half-hour count has been above its bar (a burst crosses it only
    /// briefly; a sustained rise stays).
    above_since: i64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            fast: Decayed::default(),
            slow: Decayed::default(),
            peak_fast: [0.0; 8],
            peak_slow: [0.0; 8],
            peak_day: i64::MIN,
            hour_mean: [0.0; 48],
            hour_learned: 0,
            hour: i64::MIN,
            hour_count: 0,
            above_since: i64::MIN,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    pub sustained: bool,
    /// Requests in the window (last minute, or last half hour).
    pub observed: f32,
    /// What the baseline allows for that window.
    pub baseline: f32,
}

fn bucket(hour_index: i64) -> usize {
    let at = hour_index * HOUR;
    class_of_day(day_of(at)) * 24 + hour_of(at)
}

impl Traffic {
    /// Counts one request at `now` and judges the traffic up to it.
    pub fn observe(&mut self, now: i64, warm: bool, s: &DetectSettings) -> Option<Spike> {
        self.roll(now);
        let fast = self.fast.add(now, FAST_TAU, 1.0);
        let slow = self.slow.add(now, SLOW_TAU, 1.0);
        self.hour_count = self.hour_count.saturating_add(1);
        let today = (day_of(now).rem_euclid(8)) as usize;
        let past_max = |ring: &[f32; 8]| {
            ring.iter()
                .enumerate()
                .filter(|(i, _)| *i != today)
                .map(|(_, v)| *v)
                .fold(0.0f32, f32::max)
        };
        let verdict = if !warm {
            None
        } else {
            let peak_fast = past_max(&self.peak_fast).max(1.0);
            let sudden_bar = s.spike_sudden_factor * peak_fast;
            let usual_slow = 30.0 * self.expected_per_minute(now);
            let slow_base = usual_slow.max(past_max(&self.peak_slow) / 2.0).max(1.0);
            let sustained_bar = s.spike_sustained_factor * slow_base;
            if fast >= s.spike_sudden_min && fast > sudden_bar {
                Some(Spike {
                    sustained: false,
                    observed: fast,
                    baseline: peak_fast,
                })
            } else if slow >= s.spike_sustained_min && slow > sustained_bar {
                if self.above_since == i64::MIN {
                    self.above_since = now;
                }
                let lasting = i64::from(s.spike_sustained_minutes) * 60 * crate::decay::SEC;
                (now - self.above_since >= lasting).then_some(Spike {
                    sustained: true,
                    observed: slow,
                    baseline: slow_base,
                })
            } else {
                self.above_since = i64::MIN;
                None
            }
        };
        self.peak_fast[today] = self.peak_fast[today].max(fast);
        self.peak_slow[today] = self.peak_slow[today].max(slow);
        verdict
    }

    /// The usual requests per minute around this hour of the week: the largest learned
    /// mean of the hour before, this one and the next (same class of day); where none
    /// is learned yet, the largest learned anywhere.
    fn expected_per_minute(&self, now: i64) -> f32 {
        let h = now.div_euclid(HOUR);
        let near = [h - 1, h, h + 1]
            .into_iter()
            .map(bucket)
            .filter(|b| self.hour_learned & (1 << b) != 0)
            .map(|b| self.hour_mean[b])
            .fold(None, |m: Option<f32>, v| Some(m.map_or(v, |m| m.max(v))));
        near.unwrap_or_else(|| self.hour_mean.iter().copied().fold(0.0, f32::max))
    }

    /// Closes the hours and days that ended before `now`.
    fn roll(&mut self, now: i64) {
        let h = now.div_euclid(HOUR);
        if self.hour == i64::MIN {
            self.hour = h;
        }
        // An hour's mean is learned when it ends; silent hours count as zero (at most
        // two weeks of them: older ones are already forgotten by the decay).
        let mut closing = self.hour;
        let mut count = self.hour_count;
        while closing < h && closing > h - 336 {
            let b = bucket(closing);
            let per_min = count as f32 / 60.0;
            if self.hour_learned & (1 << b) == 0 {
                self.hour_mean[b] = per_min;
                self.hour_learned |= 1 << b;
            } else {
                self.hour_mean[b] += MEAN_ALPHA * (per_min - self.hour_mean[b]);
            }
            count = 0;
            closing += 1;
        }
        if h > self.hour {
            self.hour = h;
            self.hour_count = 0;
        }
        let day = day_of(now);
        if self.peak_day == i64::MIN {
            self.peak_day = day;
        }
        let mut d = self.peak_day + 1;
        while d <= day && d <= self.peak_day + 8 {
            let slot = d.rem_euclid(8) as usize;
            self.peak_fast[slot] = 0.0;
            self.peak_slow[slot] = 0.0;
            d += 1;
        }
        self.peak_day = self.peak_day.max(day);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decay::SEC;

    #[test]
    fn a_tenfold_minute_is_sudden_and_steady_traffic_is_not() {
        let s = DetectSettings::default();
        let mut t = Traffic::default();
        let mut now = 0;
        // Four days of 3 requests a minute.
        while now < 4 * 24 * HOUR {
            assert!(t.observe(now, true, &s).is_none() || now < 24 * HOUR);
            now += 20 * SEC;
        }
        let mut spike = None;
        for _ in 0..200 {
            now += SEC / 2;
            spike = spike.or(t.observe(now, true, &s));
        }
        let spike = spike.expect("a spike");
        assert!(!spike.sustained);
        assert!(spike.observed > 4.0 * spike.baseline);
    }
}
