//! Calendar arithmetic on event times (microseconds since the epoch, UTC).

use crate::decay::SEC;

pub const HOUR: i64 = 3600 * SEC;
pub const DAY: i64 = 24 * HOUR;

pub fn day_of(at: i64) -> i64 {
    at.div_euclid(DAY)
}

/// Monday = 0 ... Sunday = 6 (1970-01-01 was a Thursday).
pub fn weekday_of_day(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

pub fn hour_of(at: i64) -> usize {
    (at.rem_euclid(DAY) / HOUR) as usize
}

/// 0 for Monday-Friday, 1 for the weekend.
pub fn class_of_day(day: i64) -> usize {
    usize::from(weekday_of_day(day) >= 5)
}

pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
