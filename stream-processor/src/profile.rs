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
//! - **Hours are the system's local hours of the week** (Monday 00:00 local is bin 0), in
//!   the time zone of its `SystemInfo`, the one the local-time features use: the hour that
//!   starts at a UTC hour boundary goes to the bin of its local start. A daylight-saving
//!   change moves no bin: 08:00 local is the same bin in March as in February. On the night
//!   clocks go back, the repeated local hour is observed twice that week; on the night they go
//!   forward, the skipped one not at all. Zones with half-hour offsets (Newfoundland, India)
//!   bin each UTC-aligned hour by its local start (bin 05:00 covers 05:30–06:30). **Without a
//!   time zone** (no `SystemInfo` yet, or not an IANA name) no hour is learned and nothing is
//!   expected, like the local-time features: never silently UTC. A system whose time zone
//!   changes forgets its profiles ([`DemandProfile::forget`]): bins of another zone's hours
//!   would be read at the wrong hours.
//! - **Copies share the bins.** The learned bins sit behind an [`Arc`]: a copy of a station's
//!   history (the update trigger's early firing copies it for every buffered report) costs a
//!   reference count, and the hourly fold copies the bins only when a copy is still alive
//!   ([`Arc::make_mut`]).
//! - **Size.** 168 × 9 bytes per station once its first hour has ended (nothing before), as
//!   fixed point: flows in 1/256 of a bike per hour (up to 255 an hour), shares in 1/65535.

use std::sync::Arc;

use chrono::{Offset, TimeZone};
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
#[serde(from = "ProfileRecord", into = "ProfileRecord")]
pub struct DemandProfile {
    acc: Option<HourAcc>,
    /// `None` until an hour was folded.
    learned: Option<Arc<Bins>>,
}

/// The learned part of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bins {
    /// Per hour of week: departures and arrivals per hour (×256), and the shares of weeks
    /// with an empty / a full moment in that hour (×65535).
    bins: [[u16; 4]; HOURS_OF_WEEK],
    /// Per hour of week: observations so far (saturating).
    weeks: [u8; HOURS_OF_WEEK],
}

/// The bins' meaning in a checkpoint: 2 = local hours of the week (bin 0 = Monday 00:00 in
/// the system's time zone). Checkpoints from before (no number: UTC hours, bin 0 = Thursday
/// 00:00 UTC) restore with an empty profile, which learns again.
const BINS_LAYOUT: u8 = 2;

/// A profile as checkpoints hold it (the layout of schema 2's checkpoints, plus
/// `layout`).
#[derive(Serialize, Deserialize)]
struct ProfileRecord {
    acc: Option<HourAcc>,
    bins: Vec<[u16; 4]>,
    weeks: Vec<u8>,
    #[serde(default)]
    layout: u8,
}

impl From<ProfileRecord> for DemandProfile {
    fn from(r: ProfileRecord) -> Self {
        let learned = (r.layout == BINS_LAYOUT)
            .then(|| {
                Some(Arc::new(Bins {
                    bins: r.bins.try_into().ok()?,
                    weeks: r.weeks.try_into().ok()?,
                }))
            })
            .flatten();
        Self {
            acc: r.acc,
            learned,
        }
    }
}

impl From<DemandProfile> for ProfileRecord {
    fn from(p: DemandProfile) -> Self {
        let (bins, weeks) = p.learned.map_or((Vec::new(), Vec::new()), |b| {
            (b.bins.to_vec(), b.weeks.to_vec())
        });
        Self {
            acc: p.acc,
            bins,
            weeks,
            layout: BINS_LAYOUT,
        }
    }
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

/// The bin of the hour that starts at UTC hour index `hour` (`⌊t / 1 h⌋`): its local start's
/// hour of the week in `tz`, Monday 00:00 = 0.
pub fn bin_of(tz: chrono_tz::Tz, hour: i64) -> usize {
    let start = hour.saturating_mul(3600);
    let offset_s = chrono::DateTime::from_timestamp(start, 0).map_or(0, |utc| {
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc()
    });
    // 1970-01-01 was a Thursday: Monday 00:00 is 72 hours before it.
    let local_hour = (start + i64::from(offset_s)).div_euclid(3600);
    (local_hour + 72).rem_euclid(HOURS_OF_WEEK as i64) as usize
}

impl DemandProfile {
    /// Adds the held state `held` over `[from, to)` (the history's time moving forward),
    /// folding every hour that ends at or before `to` into its bin of `tz`'s hours (into none
    /// without a time zone).
    pub(crate) fn advance(
        &mut self,
        held: Option<&Report>,
        from: i64,
        to: i64,
        tz: Option<chrono_tz::Tz>,
    ) {
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
                self.fold(&acc, tz);
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

    /// Forgets what was learned (the system's time zone changed); the hour being
    /// accumulated stays.
    pub(crate) fn forget(&mut self) {
        self.learned = None;
    }

    fn fold(&mut self, acc: &HourAcc, tz: Option<chrono_tz::Tz>) {
        let Some(tz) = tz else {
            return;
        };
        if acc.covered_ms < HOUR_MS {
            return;
        }
        let learned = Arc::make_mut(self.learned.get_or_insert_with(|| {
            Arc::new(Bins {
                bins: [[0; 4]; HOURS_OF_WEEK],
                weeks: [0; HOURS_OF_WEEK],
            })
        }));
        let b = bin_of(tz, acc.hour);
        let n = learned.weeks[b].saturating_add(1);
        learned.weeks[b] = n;
        let w = 1.0 / f32::from(n.min(FULL_WEIGHT_WEEKS));
        let x = [
            acc.departures as f32 * FLOW_SCALE,
            acc.arrivals as f32 * FLOW_SCALE,
            if acc.empty_ms > 0 { SHARE_SCALE } else { 0.0 },
            if acc.full_ms > 0 { SHARE_SCALE } else { 0.0 },
        ];
        for (v, x) in learned.bins[b].iter_mut().zip(x) {
            let old = f32::from(*v);
            *v = (old + w * (x - old)).round().clamp(0.0, 65_535.0) as u16;
        }
    }

    /// What the profile expects over `(t, t + len_ms]`: the overlapped hours' bins of `tz`,
    /// weighted by overlap (flows scaled to the interval). `None` when no overlapped hour was
    /// ever observed, or without a time zone.
    pub fn expected(&self, t: i64, len_ms: i64, tz: Option<chrono_tz::Tz>) -> Option<Expected> {
        let (Some(learned), Some(tz)) = (self.learned.as_deref(), tz) else {
            return None;
        };
        if len_ms <= 0 {
            return None;
        }
        let (mut weeks, mut dep, mut arr, mut empty, mut full, mut wsum) =
            (u8::MAX, 0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        let mut s = t;
        let end = t + len_ms;
        while s < end {
            let hour = s.div_euclid(HOUR_MS);
            let e = end.min((hour + 1) * HOUR_MS);
            let b = bin_of(tz, hour);
            if learned.weeks[b] > 0 {
                let share = (e - s) as f32 / HOUR_MS as f32;
                let [d, a, em, fu] = learned.bins[b].map(f32::from);
                weeks = weeks.min(learned.weeks[b]);
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

    /// The learned bins and their observation counts, by local hour of the week (empty
    /// before an hour was learned).
    pub fn learned(&self) -> (&[[u16; 4]], &[u8]) {
        self.learned
            .as_deref()
            .map_or((&[], &[]), |l| (&l.bins[..], &l.weeks[..]))
    }

    /// Observations of the bin of `t`'s hour in `tz` (0 when never observed).
    pub fn weeks_at(&self, t: i64, tz: chrono_tz::Tz) -> u8 {
        self.learned
            .as_deref()
            .map_or(0, |l| l.weeks[bin_of(tz, t.div_euclid(HOUR_MS))])
    }

    /// Whether `self` and `other` share their learned bins (one is a copy of the other, and
    /// neither folded an hour since): for tests of the copy's cost.
    pub fn shares_bins_with(&self, other: &Self) -> bool {
        match (&self.learned, &other.learned) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Recomputes the profile at time `a` from all reports (sorted by time, deltas set), hour by
/// hour, in `tz`'s hours: the reference the incremental profile must equal exactly.
pub fn brute_force(reports: &[Report], a: i64, tz: Option<chrono_tz::Tz>) -> DemandProfile {
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
        p.fold(&acc, tz);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const UTC: Option<chrono_tz::Tz> = Some(chrono_tz::UTC);

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
            p.advance(Some(&held_full), from, at(w, 0), UTC);
            for _ in 0..4 {
                let mut r = held_full;
                r.delta = -1;
                p.count(&r);
            }
            let held = if w < 2 { &held_empty } else { &held_full };
            p.advance(Some(held), at(w, 0), at(w, 30), UTC);
            assert_eq!(
                p.expected(at(w, 30), 30 * MIN, UTC).map(|e| e.weeks),
                (w > 0).then_some(w.min(255) as u8),
                "week {w}: this week's hour is not in the profile before it is over"
            );
            p.advance(Some(&held_full), at(w, 30), at(w, 60), UTC);
        }
        let e = p.expected(at(10, 0), 30 * MIN, UTC).unwrap();
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
        let quiet = p.expected(at(10, 60), 30 * MIN, UTC).unwrap();
        assert_eq!(quiet.departures, 0.0);
        assert!(
            DemandProfile::default()
                .expected(0, 30 * MIN, UTC)
                .is_none()
        );
        assert!(
            p.expected(at(10, 0), 30 * MIN, None).is_none(),
            "nothing is expected without a time zone"
        );
    }

    #[test]
    fn the_first_partial_hour_is_left_out() {
        let mut p = DemandProfile::default();
        let r = Report::new(0, 3, Some(3), true, true, true);
        p.start(30 * MIN);
        p.advance(Some(&r), 30 * MIN, HOUR_MS + 10 * MIN, UTC);
        assert_eq!(
            p.weeks_at(0, chrono_tz::UTC),
            0,
            "covered half an hour only"
        );
        p.advance(Some(&r), HOUR_MS + 10 * MIN, 2 * HOUR_MS, UTC);
        assert_eq!(p.weeks_at(HOUR_MS, chrono_tz::UTC), 1);
    }

    #[test]
    fn without_a_time_zone_no_hour_is_learned() {
        let mut p = DemandProfile::default();
        let r = Report::new(0, 3, Some(3), true, true, true);
        p.start(0);
        p.advance(Some(&r), 0, 5 * HOUR_MS, None);
        assert_eq!(p.learned().1.len(), 0);
        p.advance(Some(&r), 5 * HOUR_MS, 6 * HOUR_MS, UTC);
        assert_eq!(p.learned().1.iter().map(|&w| u32::from(w)).sum::<u32>(), 1);
    }

    const NEW_YORK: chrono_tz::Tz = chrono_tz::America::New_York;

    /// UTC ms of a local time in New York.
    fn ny(y: i32, mo: u32, d: u32, h: u32) -> i64 {
        NEW_YORK
            .with_ymd_and_hms(y, mo, d, h, 0, 0)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    /// Drives a profile hour by hour over `[from, to)` (whole UTC hours): 6 departures in
    /// every hour that starts at 08:00 local, none otherwise, never empty.
    fn drive(p: &mut DemandProfile, from: i64, to: i64) {
        use chrono::Timelike;
        let held = Report::new(0, 10, Some(10), true, true, true);
        p.start(from);
        let mut t = from;
        while t < to {
            let local = NEW_YORK.timestamp_millis_opt(t).unwrap();
            if local.hour() == 8 {
                let mut r = held;
                r.delta = -6;
                p.count(&r);
            }
            p.advance(Some(&held), t, t + HOUR_MS, Some(NEW_YORK));
            t += HOUR_MS;
        }
    }

    /// The hour after 08:00 local on the Monday after a daylight-saving change reads the
    /// three Mondays before it at 08:00 local (6 departures each), although that hour is at
    /// another UTC hour now; the hour before it stays quiet.
    fn reads_the_same_local_hour_across_the_change(p: &DemandProfile, monday_8am: i64) {
        let e = p.expected(monday_8am, HOUR_MS, Some(NEW_YORK)).unwrap();
        assert_eq!(e.weeks, 3, "{e:?}");
        assert!((e.departures - 6.0).abs() < 0.01, "{e:?}");
        let before = p
            .expected(monday_8am - HOUR_MS, HOUR_MS, Some(NEW_YORK))
            .unwrap();
        assert_eq!(before.departures, 0.0, "07:00 local is quiet: {before:?}");
    }

    #[test]
    fn local_hours_hold_across_the_march_change_in_new_york() {
        // Monday 19 February 2024 00:00 EST to Monday 11 March 12:00 EDT; clocks went
        // forward on Sunday 10 March at 02:00 (no 02:00 that day).
        let mut p = DemandProfile::default();
        let monday_8am = ny(2024, 3, 11, 8);
        assert_eq!(monday_8am - ny(2024, 3, 4, 8), 7 * 24 * HOUR_MS - HOUR_MS);
        drive(&mut p, ny(2024, 2, 19, 0), monday_8am);
        reads_the_same_local_hour_across_the_change(&p, monday_8am);
        // Sundays 25 February, 3 and 10 March: 01:00 and 03:00 three times, 02:00 twice.
        // (Bins read at a Sunday that had all three hours.)
        let weeks = |h: u32| p.weeks_at(ny(2024, 3, 3, h), NEW_YORK);
        assert_eq!((weeks(1), weeks(2), weeks(3)), (3, 2, 3));
    }

    #[test]
    fn local_hours_hold_across_the_november_change_in_new_york() {
        // Monday 14 October 2024 00:00 EDT to Monday 4 November 12:00 EST; clocks went back
        // on Sunday 3 November at 02:00 (01:00 twice that day).
        let mut p = DemandProfile::default();
        let monday_8am = ny(2024, 11, 4, 8);
        assert_eq!(monday_8am - ny(2024, 10, 28, 8), 7 * 24 * HOUR_MS + HOUR_MS);
        drive(&mut p, ny(2024, 10, 14, 0), monday_8am);
        reads_the_same_local_hour_across_the_change(&p, monday_8am);
        // Sundays 20 and 27 October and 3 November: 01:00 observed 4 times (twice on the
        // 3rd), 00:00 and 02:00 three times.
        let sunday = ny(2024, 10, 27, 0);
        let weeks = |h: i64| p.weeks_at(sunday + h * HOUR_MS, NEW_YORK);
        assert_eq!((weeks(0), weeks(1), weeks(2)), (3, 4, 3));
    }

    #[test]
    fn bins_start_on_monday_midnight_local() {
        assert_eq!(bin_of(NEW_YORK, ny(2024, 3, 11, 0) / HOUR_MS), 0);
        assert_eq!(bin_of(NEW_YORK, ny(2024, 3, 10, 23) / HOUR_MS), 167);
        assert_eq!(bin_of(NEW_YORK, ny(2024, 11, 4, 8) / HOUR_MS), 8);
        // UTC: Thursday 1 January 1970 00:00 is hour 72 of the week.
        assert_eq!(bin_of(chrono_tz::UTC, 0), 72);
    }

    #[test]
    fn a_copy_shares_the_bins_until_it_folds_an_hour() {
        let mut p = DemandProfile::default();
        let r = Report::new(0, 3, Some(3), true, true, true);
        p.start(0);
        p.advance(Some(&r), 0, 2 * HOUR_MS, UTC);
        let mut copy = p.clone();
        assert!(copy.shares_bins_with(&p));
        copy.advance(Some(&r), 2 * HOUR_MS, 2 * HOUR_MS + 10 * MIN, UTC);
        assert!(copy.shares_bins_with(&p), "no hour ended");
        copy.advance(Some(&r), 2 * HOUR_MS + 10 * MIN, 3 * HOUR_MS, UTC);
        assert!(!copy.shares_bins_with(&p));
        assert_eq!(
            p.weeks_at(2 * HOUR_MS, chrono_tz::UTC),
            0,
            "the original is unchanged"
        );
        assert_eq!(copy.weeks_at(2 * HOUR_MS, chrono_tz::UTC), 1);
    }

    #[test]
    fn checkpoints_round_trip_and_utc_bins_of_old_ones_are_dropped() {
        let mut p = DemandProfile::default();
        let r = Report::new(0, 3, Some(3), true, true, true);
        p.start(0);
        p.advance(Some(&r), 0, 30 * HOUR_MS, UTC);
        let bytes = rmp_serde::to_vec_named(&p).unwrap();
        let back: DemandProfile = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, p);
        #[derive(Serialize)]
        struct Old {
            acc: Option<HourAcc>,
            bins: Vec<[u16; 4]>,
            weeks: Vec<u8>,
        }
        let old = Old {
            acc: p.acc,
            bins: vec![[1; 4]; HOURS_OF_WEEK],
            weeks: vec![1; HOURS_OF_WEEK],
        };
        let back: DemandProfile =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        assert_eq!(back.acc, p.acc);
        assert_eq!(
            back.learned().1.len(),
            0,
            "UTC bins are not read as local ones"
        );
    }
}
