//! Exponentially decayed counters: a sliding count of recent events in O(1) memory.
//! With time constant `tau`, a steady rate of `r` events per second reads `r * tau`,
//! so a counter with `tau` = 60 s reads about "events in the last minute".

/// Microseconds in a second.
pub const SEC: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decayed {
    value: f32,
    at: i64,
}

impl Decayed {
    /// The value at `now` (which is never before the last update: events come in order;
    /// an earlier `now` reads the last value).
    pub fn get(&self, now: i64, tau_secs: f32) -> f32 {
        if now <= self.at || self.value == 0.0 {
            return self.value;
        }
        let dt = (now - self.at) as f32 / SEC as f32;
        self.value * (-dt / tau_secs).exp()
    }

    pub fn add(&mut self, now: i64, tau_secs: f32, w: f32) -> f32 {
        self.value = self.get(now, tau_secs) + w;
        self.at = self.at.max(now);
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_reads_rate_times_tau() {
        let mut d = Decayed::default();
        let mut v = 0.0;
        for i in 0..3600 {
            v = d.add(i * SEC, 60.0, 1.0);
        }
        assert!((58.0..62.0).contains(&v), "{v}");
        assert!(d.get(3599 * SEC + 600 * SEC, 60.0) < 0.01);
    }
}
