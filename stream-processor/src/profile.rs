//! Each station's demand profile by hour of week: slow state learned from the station's own
//! past, as the stream goes.
//!
//! For each of the 168 hours of the week the profile keeps what that hour looked like in the
//! station's recent weeks: departures and arrivals per hour, and how often the station was
//! empty (full) at some moment of the hour. An hour enters the profile when it is **over**
//! (the station's time has passed its end), so a feature at `as_of` reads only hours that
//! ended at or before `as_of`: point-in-time correct by construction, online and in backfill
//! alike (the same code runs in both, through [`crate::window::StationHistory`]).
//!
//! - **Which hours count.** Only hours the station's held state covers whole (it had reported
//!   before the hour began); the station's first, partial hour is left out, so a rate is
//!   never an hour's worth of reports squeezed into a few minutes.
//! - **How old hours fade.** The first [`FULL_WEIGHT_WEEKS`] observations of an hour are
//!   averaged plainly; after that each new week weighs `1 / FULL_WEIGHT_WEEKS` (an
//!   exponential average with a half-life of about four weeks), so the profile follows the
//!   season (Bluebikes' June has three times January's trips).
//! - **Hours are UTC hours of the week** (`⌊t / 1 h⌋ mod 168`), read back with the same
//!   function: the history does not know the system's time zone, and a fixed offset maps
//!   UTC hours one-to-one onto local ones. A daylight-saving change shifts the local hour of
//!   each bin by one; the averaging absorbs it within a few weeks.
//! - **Size.** 168 × 9 bytes per station once its first hour has ended (nothing before), as
//!   fixed point: flows in 1/256 of a bike per hour (up to 255 an hour), shares in 1/65535.

use serde::{Deserialize, Serialize};

use crate::window::Report;

const HOUR_MS: i64 = 3_600_000;
/// Hours in a week: the profile's bins.
pub const HOURS_OF_WEEK: usize = 168;
/// Observations of an hour averaged with equal weight before older weeks start to fade.
pub const FULL_WEIGHT_WEEKS: u8 = 6;
const FLOW_SCALE: f32 = 256.0;
const SHARE_SCALE: f32 = 65_535.0;

/// The hour being accumulated (not in the profile until it is over).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HourAcc {
    /// Hour index since the epoch (`⌊t / 1 h⌋`).
    hour: i64,
    covered_ms: i64,
    empty_ms: i64,
    full_ms: i64,
    arrivals: u32,
    departures: u32,
}

/// A station's profile by hour of week (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandProfile {
    acc: Option<HourAcc>,
    /// Per hour of week: departures and arrivals per hour (×256), and the shares of weeks
    /// with an empty / a full moment in that hour (×65535). Empty until an hour ended.
    bins: Vec<[u16; 4]>,
    /// Per hour of week: observations so far (saturating).
    weeks: Vec<u8>,
}

/// What the profile expects over an interval, from the bins of the hours it overlaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// Fewest observations among the overlapped hours that have any.
    pub weeks: u8,
    pub departures: f32,
    pub arrivals: f32,
    /// Overlap-weighted mean share of past weeks with an empty (full) moment in the hour.
    pub empty_share: f32,
    pub full_share: f32,
}

/// The bin of hour index `hour`.
fn bin_of(hour: i64) -> usize {
    hour.rem_euclid(HOURS_OF_WEEK as i64) as usize
}

impl DemandProfile {
    /// Adds the held state `held` over `[from, to)` (the history's time moving forward),
    /// folding every hour that ends at or before `to` into its bin.
    pub(crate) fn advance(&mut self, held: Option<&Report>, from: i64, to: i64) {
        let mut s = from;
        let mut acc = match self.acc {
            Some(a) => a,
            None => HourAcc {
                hour: from.div_euclid(HOUR_MS),
                ..HourAcc::default()
            },
        };
        while s < to {
            let hour_end = (acc.hour + 1) * HOUR_MS;
            let e = to.min(hour_end);
            if let Some(r) = held
                && e > s
            {
                acc.covered_ms += e - s;
                if r.is_empty() {
                    acc.empty_ms += e - s;
                }
                if r.is_full() {
                    acc.full_ms += e - s;
                }
            }
            s = s.max(e);
            if s >= hour_end {
                self.fold(&acc);
                acc = HourAcc {
                    hour: acc.hour + 1,
                    ..HourAcc::default()
                };
            }
        }
        self.acc = Some(acc);
    }

    /// Starts the profile's clock at `t` when it has none (the station's first report).
    pub(crate) fn start(&mut self, t: i64) {
        if self.acc.is_none() {
            self.acc = Some(HourAcc {
                hour: t.div_euclid(HOUR_MS),
                ..HourAcc::default()
            });
        }
    }

    /// Counts a report's change in bikes into the current hour.
    pub(crate) fn count(&mut self, r: &Report) {
        if let Some(acc) = self.acc.as_mut() {
            if r.delta > 0 {
                acc.arrivals = acc.arrivals.saturating_add(r.delta.unsigned_abs().into());
            } else if r.delta < 0 {
                acc.departures = acc.departures.saturating_add(r.delta.unsigned_abs().into());
            }
        }
    }

    fn fold(&mut self, acc: &HourAcc) {
        if acc.covered_ms < HOUR_MS {
            return;
        }
        if self.bins.is_empty() {
            self.bins = vec![[0; 4]; HOURS_OF_WEEK];
            self.weeks = vec![0; HOURS_OF_WEEK];
        }
        let b = bin_of(acc.hour);
        let n = self.weeks[b].saturating_add(1);
        self.weeks[b] = n;
        let w = 1.0 / f32::from(n.min(FULL_WEIGHT_WEEKS));
        let x = [
            acc.departures as f32 * FLOW_SCALE,
            acc.arrivals as f32 * FLOW_SCALE,
            if acc.empty_ms > 0 { SHARE_SCALE } else { 0.0 },
            if acc.full_ms > 0 { SHARE_SCALE } else { 0.0 },
        ];
        for (v, x) in self.bins[b].iter_mut().zip(x) {
            let old = f32::from(*v);
            *v = (old + w * (x - old)).round().clamp(0.0, 65_535.0) as u16;
        }
    }

    /// What the profile expects over `(t, t + len_ms]`: the overlapped hours' bins, weighted
    /// by overlap (flows scaled to the interval). `None` when no overlapped hour was ever
    /// observed.
    pub fn expected(&self, t: i64, len_ms: i64) -> Option<Expected> {
        if self.bins.is_empty() || len_ms <= 0 {
            return None;
        }
        let (mut weeks, mut dep, mut arr, mut empty, mut full, mut wsum) =
            (u8::MAX, 0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        let mut s = t;
        let end = t + len_ms;
        while s < end {
            let hour = s.div_euclid(HOUR_MS);
            let e = end.min((hour + 1) * HOUR_MS);
            let b = bin_of(hour);
            if self.weeks[b] > 0 {
                let share = (e - s) as f32 / HOUR_MS as f32;
                let [d, a, em, fu] = self.bins[b].map(f32::from);
                weeks = weeks.min(self.weeks[b]);
                dep += share * d / FLOW_SCALE;
                arr += share * a / FLOW_SCALE;
                empty += share * em / SHARE_SCALE;
                full += share * fu / SHARE_SCALE;
                wsum += share;
            }
            s = e;
        }
        (wsum > 0.0).then(|| {
            // Hours never observed are left out: scale the flows up to the whole interval.
            let whole = len_ms as f32 / HOUR_MS as f32;
            Expected {
                weeks,
                departures: dep * whole / wsum,
                arrivals: arr * whole / wsum,
                empty_share: empty / wsum,
                full_share: full / wsum,
            }
        })
    }

    /// The learned bins and their observation counts (empty before an hour ended).
    pub fn learned(&self) -> (&[[u16; 4]], &[u8]) {
        (&self.bins, &self.weeks)
    }

    /// Observations of the bin of `t`'s hour (0 when never observed).
    pub fn weeks_at(&self, t: i64) -> u8 {
        self.weeks
            .get(bin_of(t.div_euclid(HOUR_MS)))
            .copied()
            .unwrap_or(0)
    }
}

/// Recomputes the profile at time `a` from all reports (sorted by time, deltas set), hour by
/// hour: the reference the incremental profile must equal exactly.
pub fn brute_force(reports: &[Report], a: i64) -> DemandProfile {
    let mut p = DemandProfile::default();
    let Some(first) = reports.first() else {
        return p;
    };
    let first_hour = first.t.div_euclid(HOUR_MS);
    let last_hour = a.div_euclid(HOUR_MS);
    for hour in first_hour..last_hour {
        let (h0, h1) = (hour * HOUR_MS, (hour + 1) * HOUR_MS);
        let mut acc = HourAcc {
            hour,
            ..HourAcc::default()
        };
        for (i, r) in reports.iter().enumerate() {
            let end = reports.get(i + 1).map_or(h1, |n| n.t).min(h1);
            let start = r.t.max(h0);
            if end > start {
                acc.covered_ms += end - start;
                if r.is_empty() {
                    acc.empty_ms += end - start;
                }
                if r.is_full() {
                    acc.full_ms += end - start;
                }
            }
            if r.t >= h0 && r.t < h1 {
                if r.delta > 0 {
                    acc.arrivals += u32::from(r.delta.unsigned_abs());
                } else if r.delta < 0 {
                    acc.departures += u32::from(r.delta.unsigned_abs());
                }
            }
        }
        p.fold(&acc);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn hours_enter_when_over_and_fade_after_the_full_weight_weeks() {
        let mut p = DemandProfile::default();
        let week = HOURS_OF_WEEK as i64 * HOUR_MS;
        // Monday-ish hour 10 of each week: 4 departures, and an empty moment in weeks 0-1.
        let at = |w: i64, m: i64| w * week + 10 * HOUR_MS + m * MIN;
        let held_full = Report::new(0, 5, Some(5), true, true, true);
        let held_empty = Report::new(0, 0, Some(10), true, true, true);
        p.start(at(0, -60));
        for w in 0..10 {
            let from = if w == 0 { at(0, -60) } else { at(w - 1, 60) };
            p.advance(Some(&held_full), from, at(w, 0));
            for _ in 0..4 {
                let mut r = held_full;
                r.delta = -1;
                p.count(&r);
            }
            let held = if w < 2 { &held_empty } else { &held_full };
            p.advance(Some(held), at(w, 0), at(w, 30));
            assert_eq!(
                p.expected(at(w, 30), 30 * MIN).map(|e| e.weeks),
                (w > 0).then_some(w.min(255) as u8),
                "week {w}: this week's hour is not in the profile before it is over"
            );
            p.advance(Some(&held_full), at(w, 30), at(w, 60));
        }
        let e = p.expected(at(10, 0), 30 * MIN).unwrap();
        assert_eq!(e.weeks, 10);
        assert!(
            (e.departures - 2.0).abs() < 0.01,
            "{e:?}: 4 an hour, half an hour"
        );
        assert_eq!(e.arrivals, 0.0);
        // Two empty weeks out of ten, the first six averaged, then fading by 1/6 a week.
        let mut share = 2.0f32 / 6.0;
        for _ in 6..10 {
            share *= 5.0 / 6.0;
        }
        assert!((e.empty_share - share).abs() < 0.001, "{e:?} vs {share}");
        // Other hours were observed as quiet, never-seen ones are missing.
        let quiet = p.expected(at(10, 60), 30 * MIN).unwrap();
        assert_eq!(quiet.departures, 0.0);
        assert!(DemandProfile::default().expected(0, 30 * MIN).is_none());
    }

    #[test]
    fn the_first_partial_hour_is_left_out() {
        let mut p = DemandProfile::default();
        let r = Report::new(0, 3, Some(3), true, true, true);
        p.start(30 * MIN);
        p.advance(Some(&r), 30 * MIN, HOUR_MS + 10 * MIN);
        assert_eq!(p.weeks_at(0), 0, "covered half an hour only");
        p.advance(Some(&r), HOUR_MS + 10 * MIN, 2 * HOUR_MS);
        assert_eq!(p.weeks_at(HOUR_MS), 1);
    }
}
