//! Random draws and per-key rhythms of the synthetic fleet.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::Rng;
use rand::rngs::StdRng;

pub const SEC: i64 = 1_000_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

/// How a key is used over the day and week.
#[derive(Debug, Clone)]
pub enum Profile {
    /// Around the clock, with a mild daily swell.
    Steady { rate: f64, phase: f64 },
    /// Weekdays between two hours (UTC).
    Office { start_h: i64, end_h: i64, rate: f64 },
    /// Every night, a batch of `dur` minutes from `start` (minute of the day).
    Nightly { start: i64, dur: i64, rate: f64 },
    /// A trickle, plus bursts at random daytime moments.
    Bursty {
        background: f64,
        bursts: Vec<(i64, i64, f64)>,
    },
}

impl Profile {
    /// Requests per minute at `at` (before growth).
    pub fn rate(&self, at: i64) -> f64 {
        let day = at.div_euclid(DAY);
        let minute_of_day = at.rem_euclid(DAY) / MIN;
        let weekday = (day + 3).rem_euclid(7);
        match self {
            Profile::Steady { rate, phase } => {
                let x = (minute_of_day as f64 / 1440.0 + phase) * std::f64::consts::TAU;
                rate * (1.0 + 0.3 * x.sin())
            }
            Profile::Office {
                start_h,
                end_h,
                rate,
            } => {
                let h = minute_of_day / 60;
                if weekday < 5 && h >= *start_h && h < *end_h {
                    *rate
                } else {
                    0.0
                }
            }
            Profile::Nightly { start, dur, rate } => {
                if minute_of_day >= *start && minute_of_day < start + dur {
                    *rate
                } else {
                    0.0
                }
            }
            Profile::Bursty { background, bursts } => {
                let burst = bursts
                    .iter()
                    .find(|(s, e, _)| at >= *s && at < *e)
                    .map_or(0.0, |b| b.2);
                background + burst
            }
        }
    }

    /// A time (minute start) when the key is normally busy, on or after `from`.
    pub fn busy_time(&self, from: i64, rng: &mut StdRng) -> i64 {
        let mut t = from - from.rem_euclid(MIN);
        for _ in 0..(14 * 24 * 60) {
            if self.rate(t) >= self.typical() * 0.5 && rng.random_bool(0.02) {
                return t;
            }
            t += MIN;
        }
        from
    }

    /// The usual busy rate, per minute.
    pub fn typical(&self) -> f64 {
        match self {
            Profile::Steady { rate, .. } => *rate,
            Profile::Office { rate, .. } | Profile::Nightly { rate, .. } => *rate,
            Profile::Bursty { background, .. } => *background,
        }
    }
}

pub fn poisson(rng: &mut StdRng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut p = 1.0;
        let mut k = 0;
        loop {
            p *= rng.random::<f64>();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (lambda + lambda.sqrt() * z).round().max(0.0) as u32
}

pub fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// Fresh networks, never the same twice in one fleet.
#[derive(Default)]
pub struct Addresses {
    used: HashSet<u64>,
}

impl Addresses {
    /// A fresh network: an IPv4 /24 (or, with `v6`, an IPv6 /48) as a host maker.
    pub fn fresh(&mut self, rng: &mut StdRng, v6: bool) -> NetPlan {
        loop {
            let (a, b, c) = (
                rng.random_range(11u16..=200),
                rng.random_range(0u16..=255),
                rng.random_range(0u16..=255),
            );
            if a == 127
                || !self.used.insert(
                    u64::from(v6) << 40 | u64::from(a) << 16 | u64::from(b) << 8 | u64::from(c),
                )
            {
                continue;
            }
            return NetPlan { v6, a, b, c };
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NetPlan {
    v6: bool,
    a: u16,
    b: u16,
    c: u16,
}

impl NetPlan {
    pub fn host(&self, h: u8) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0x0db8 + self.a,
                self.b << 8 | self.c,
                1,
                0,
                0,
                0,
                u16::from(h),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.a as u8, self.b as u8, self.c as u8, h))
        }
    }

    /// The network's name as the detectors print it (default prefixes).
    pub fn name(&self) -> String {
        crate::net::Net::of(self.host(1), 24, 48).to_string()
    }
}
