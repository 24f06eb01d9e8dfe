//! Simulated time: `start + (wall − wall_at_start) × time_scale`, never ahead of the wall.
//!
//! A simulation started in the past runs `time_scale` times faster than real time until it
//! catches up with the wall clock, then follows it in real time. One started in the future
//! starts now instead. The wall clock is injected, so tests drive it with a `ManualClock`.

use bikeshare_types::{Clock, SharedClock, Timestamp};

use super::SimulatorError;

/// The largest accepted time scale (a year per 30 seconds).
pub const MAX_TIME_SCALE: f64 = 1.0e6;

/// A [`Clock`] that runs `time_scale` times faster than `wall` until it reaches it.
#[derive(Debug, Clone)]
pub struct SimClock {
    wall: SharedClock,
    wall_at_start: Timestamp,
    start: Timestamp,
    time_scale: f64,
}

impl SimClock {
    /// Starts at `start` (the wall clock's now when `None` or in the future).
    pub fn new(
        wall: SharedClock,
        start: Option<Timestamp>,
        time_scale: f64,
    ) -> Result<Self, SimulatorError> {
        if !(time_scale.is_finite() && time_scale > 0.0 && time_scale <= MAX_TIME_SCALE) {
            return Err(SimulatorError::Config {
                field: "time_scale",
                message: format!("{time_scale} is not in (0, {MAX_TIME_SCALE}]"),
            });
        }
        let wall_at_start = wall.now();
        let start = start.map_or(wall_at_start, |s| s.min(wall_at_start));
        Ok(Self {
            wall,
            wall_at_start,
            start,
            time_scale,
        })
    }

    /// The simulated time at which the clock started.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Sim time and whether it has caught up with the wall clock (and so runs in real time).
    pub fn now_and_caught_up(&self) -> (Timestamp, bool) {
        let wall = self.wall.now();
        let elapsed = (wall.millis() - self.wall_at_start.millis()).max(0) as f64;
        let scaled = self.start.millis() as f64 + elapsed * self.time_scale;
        if scaled >= wall.millis() as f64 {
            (wall, true)
        } else {
            (Timestamp(scaled.floor() as i64), false)
        }
    }

    /// Whether sim time has caught up with the wall clock.
    pub fn caught_up(&self) -> bool {
        self.now_and_caught_up().1
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        self.now_and_caught_up().0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bikeshare_types::time::ManualClock;
    use proptest::prelude::*;

    use super::*;

    const T0: i64 = 1_717_000_000_000;

    #[test]
    fn runs_fast_then_in_real_time() {
        let wall = ManualClock::new(Timestamp(T0));
        let start = Timestamp(T0 - 10 * Timestamp::HOUR_MS);
        let c = SimClock::new(Arc::new(wall.clone()), Some(start), 60.0).unwrap();
        assert_eq!(c.now(), start);
        assert!(!c.caught_up());
        wall.advance_millis(60_000);
        assert_eq!(c.now(), start.plus_millis(Timestamp::HOUR_MS));
        wall.advance_millis(20 * 60_000);
        assert_eq!(c.now(), wall.now(), "clamped to the wall clock");
        assert!(c.caught_up());
        wall.advance_millis(5_000);
        assert_eq!(c.now(), wall.now(), "then real time");
    }

    #[test]
    fn future_start_and_bad_scales() {
        let wall: SharedClock = Arc::new(ManualClock::new(Timestamp(T0)));
        let c = SimClock::new(wall.clone(), Some(Timestamp(T0 + 1_000_000)), 2.0).unwrap();
        assert_eq!(c.now(), Timestamp(T0));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2.0e6] {
            assert!(SimClock::new(wall.clone(), None, bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_ahead_of_the_wall_and_monotonic(
            behind_ms in 0i64..10_000_000_000,
            scale in 0.01f64..100_000.0,
            steps in proptest::collection::vec(0i64..100_000_000, 1..30),
        ) {
            let wall = ManualClock::new(Timestamp(T0));
            let c = SimClock::new(Arc::new(wall.clone()), Some(Timestamp(T0 - behind_ms)), scale).unwrap();
            let mut prev = c.now();
            for s in steps {
                wall.advance_millis(s);
                let now = c.now();
                prop_assert!(now <= wall.now());
                prop_assert!(now >= prev);
                prev = now;
            }
        }
    }
}
