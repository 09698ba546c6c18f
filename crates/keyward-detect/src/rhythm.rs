//! The weekly rhythm of a key: how often it was used in each hour of the week (168
//! counters), and how many weekdays and weekend days it has lived through. A use at an
//! hour of the day where the key has never been active (nor in the hour before or
//! after), on that class of day (weekday or weekend, once it has lived through two of
//! them), is UNUSUAL_HOUR.

use crate::clock::{self, class_of_day, day_of, hour_of, weekday_of_day};

#[derive(Debug, Clone, PartialEq)]
pub struct Rhythm {
    /// Per class of day (0 weekday, 1 weekend), bit `h` set when some day of that class
    /// has a use in hour `h`: what `judge` asks on every event, in one word instead of
    /// 21 counters spread over `counts` (each a likely cache miss with many keys).
    active: [u32; 2],
    counts: [u32; 168],
    /// Day boundaries crossed, per class (0 weekday, 1 weekend).
    days: [u16; 2],
    last_day: i64,
    total: u32,
}

impl Default for Rhythm {
    fn default() -> Self {
        Rhythm {
            active: [0; 2],
            counts: [0; 168],
            days: [0; 2],
            last_day: i64::MIN,
            total: 0,
        }
    }
}

/// What an unusual-hour finding says.
#[derive(Debug, Clone, PartialEq)]
pub struct UnusualHour {
    pub hour: usize,
    pub weekday: &'static str,
    /// The hours (UTC) the key is usually active in, on that class of day.
    pub usual_hours: String,
    /// True when the hour is usual on the other class of day (weekday vs weekend).
    pub other_class_usual: bool,
}

impl Rhythm {
    pub fn days_lived(&self) -> u32 {
        u32::from(self.days[0]) + u32::from(self.days[1])
    }

    /// Judges a use at `at` against the rhythm learned so far.
    pub fn judge(&self, at: i64) -> Option<UnusualHour> {
        let day = day_of(at);
        let class = class_of_day(day);
        let hour = hour_of(at);
        let by_class = self.days[class] >= 2;
        let near = |c: Option<usize>| {
            let active = match c {
                Some(c) => self.active[c],
                None => self.active[0] | self.active[1],
            };
            [23, 0, 1]
                .iter()
                .any(|d| active & (1 << ((hour + d) % 24)) != 0)
        };
        let class_filter = by_class.then_some(class);
        if near(class_filter) {
            return None;
        }
        Some(UnusualHour {
            hour,
            weekday: clock::WEEKDAYS[weekday_of_day(day)],
            usual_hours: self.usual_hours(class_filter),
            other_class_usual: by_class && near(Some(1 - class)),
        })
    }

    pub fn record(&mut self, at: i64) {
        let day = day_of(at);
        if self.last_day == i64::MIN {
            self.last_day = day;
        }
        // Count each day boundary crossed (at most two weeks' worth in one jump: beyond
        // that every class is long known).
        let mut d = self.last_day + 1;
        while d <= day && d <= self.last_day + 14 {
            let c = class_of_day(d);
            self.days[c] = self.days[c].saturating_add(1);
            d += 1;
        }
        self.last_day = self.last_day.max(day);
        let hour = hour_of(at);
        let slot = weekday_of_day(day) * 24 + hour;
        self.counts[slot] = self.counts[slot].saturating_add(1);
        self.active[class_of_day(day)] |= 1 << hour;
        self.total = self.total.saturating_add(1);
        // Keep proportions, not totals, once counts get large.
        if self.total >= 1 << 30 {
            self.counts.iter_mut().for_each(|c| *c /= 2);
            self.total /= 2;
            for class in 0..2 {
                self.active[class] = (0..24)
                    .filter(|h| self.hour_total(*h, Some(class)) > 0)
                    .fold(0, |m, h| m | 1 << h);
            }
        }
    }

    /// Uses in `hour` of the day, over the days of `class` (all days when `None`).
    fn hour_total(&self, hour: usize, class: Option<usize>) -> u32 {
        (0..7)
            .filter(|wd| class.is_none_or(|c| usize::from(*wd >= 5) == c))
            .map(|wd| self.counts[wd * 24 + hour])
            .fold(0u32, u32::saturating_add)
    }

    /// "08-17h" style list of the active hours, for explanations.
    fn usual_hours(&self, class: Option<usize>) -> String {
        let active: Vec<bool> = (0..24).map(|h| self.hour_total(h, class) > 0).collect();
        let mut runs = Vec::new();
        let mut h = 0;
        while h < 24 {
            if active[h] {
                let start = h;
                while h + 1 < 24 && active[h + 1] {
                    h += 1;
                }
                runs.push(if start == h {
                    format!("{start:02}h")
                } else {
                    format!("{start:02}-{h:02}h")
                });
            }
            h += 1;
        }
        if runs.is_empty() {
            "none".into()
        } else {
            runs.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{DAY, HOUR};
    use proptest::prelude::*;

    proptest! {
        /// The hour masks `judge` reads say what the counters say, also after the
        /// counters are halved (which can empty an hour).
        #[test]
        fn the_hour_masks_match_the_counters(
            mut seconds in prop::collection::vec(0i64..40 * 86_400, 1..200),
            halve in any::<bool>(),
        ) {
            seconds.sort_unstable();
            let mut r = Rhythm::default();
            let start = day_of(1_767_571_200_000_000) * DAY;
            let last = seconds.pop().unwrap();
            for s in seconds {
                r.record(start + s * crate::decay::SEC);
            }
            if halve {
                r.total = (1 << 30) - 1;
            }
            r.record(start + last * crate::decay::SEC);
            for class in 0..2 {
                for h in 0..24 {
                    prop_assert_eq!(
                        r.active[class] & (1 << h) != 0,
                        r.hour_total(h, Some(class)) > 0
                    );
                }
            }
        }
    }

    #[test]
    fn office_hours_make_the_night_unusual() {
        let mut r = Rhythm::default();
        // 2026-01-05 is a Monday.
        let monday = day_of(1_767_571_200_000_000) * DAY;
        for d in 0..5 {
            for h in 9..17 {
                r.record(monday + d * DAY + h * HOUR);
            }
        }
        assert!(r.judge(monday + 7 * DAY + 10 * HOUR).is_none());
        assert!(
            r.judge(monday + 7 * DAY + 8 * HOUR).is_none(),
            "one hour of slack"
        );
        let u = r.judge(monday + 7 * DAY + 3 * HOUR).unwrap();
        assert_eq!(u.hour, 3);
        assert_eq!(u.usual_hours, "09-16h");
        // Weekend days lived through: a Saturday at 10:00 is unusual for this key.
        r.record(monday + 7 * DAY + 10 * HOUR);
        let sat = monday + 12 * DAY + 10 * HOUR;
        let u = r.judge(sat).unwrap();
        assert!(u.other_class_usual);
        assert_eq!(u.weekday, "Sat");
    }
}
