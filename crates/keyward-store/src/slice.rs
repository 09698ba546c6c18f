//! Long jobs that share a core with request serving cut their work into short
//! stretches: [`Slice`] says when a stretch is used up. What to do then is the caller's:
//! a task yields to its runtime; a thread calls [`give_way`].

use std::time::{Duration, Instant};

/// A stretch of work of at most `length`, checked cheaply from a loop.
#[derive(Debug)]
pub struct Slice {
    length: Duration,
    /// The clock is read once per this many steps (a read is ~30 ns; a step is a row or
    /// an event of work).
    steps_per_look: u32,
    started: Instant,
    steps: u32,
}

impl Slice {
    /// A stretch of `length`, looking at the clock every `steps_per_look` steps.
    pub fn new(length: Duration, steps_per_look: u32) -> Slice {
        Slice {
            length,
            steps_per_look: steps_per_look.max(1),
            started: Instant::now(),
            steps: 0,
        }
    }

    /// Counts one step; true when the stretch is used up (the next one starts now).
    pub fn step(&mut self) -> bool {
        self.steps = self.steps.wrapping_add(1);
        self.steps.is_multiple_of(self.steps_per_look) && self.look()
    }

    /// Looks at the clock now (between larger steps); true when the stretch is used up
    /// (the next one starts now).
    pub fn look(&mut self) -> bool {
        if self.started.elapsed() >= self.length {
            self.started = Instant::now();
            true
        } else {
            false
        }
    }
}

/// Gives the core to whichever thread wants it, for about the kernel's timer slack
/// (~50 µs on Linux).
///
/// Why a sleep and not `sched_yield`: the kernel's fair scheduler only switches to a
/// thread that is owed time, and a thread that wakes for a job (after sleeping) is the
/// one owed. Its yields went unheeded while the request worker, runnable, waited up to a
/// tick, 4 ms here (`perf sched timehist` under verify load; BENCHMARKS.md, "Background
/// work on threads of its own"). A sleep always leaves the core. Where a core is free the
/// job loses the slack: a fifth of a 250-µs stretch, a twentieth of a 1-ms one.
pub fn give_way() {
    std::thread::sleep(Duration::from_micros(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_ends_after_its_length_and_only_when_the_clock_is_read() {
        let mut s = Slice::new(Duration::from_secs(3600), 1);
        assert!(
            !(0..100).any(|_| s.step()),
            "an hour's stretch used up at once"
        );
        let mut s = Slice::new(Duration::from_millis(50), 4);
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            !(0..3).any(|_| s.step()),
            "the clock read before the fourth step"
        );
        assert!(
            s.step(),
            "the fourth step reads the clock: the stretch is used up"
        );
        assert!(!s.look(), "the next stretch starts when one ends");
    }
}
