//! Computing a station's feature vector at `as_of`, in the order of
//! [`crate::schema::FeatureSchema::current`].
//!
//! The same function serves the live processor and `backfill`, so training rows and online
//! rows cannot drift apart. Everything read here is as of `as_of` or earlier: the station's
//! history is at `as_of`, neighbours' latest reports were applied before it (the processor
//! applies events in event-time order), and a weather observation is used only once its hour
//! is over.
//!
//! Cost: this runs for every applied report and every tick row, so it allocates only the
//! output vector and reads nothing scattered: the local-time features come precomputed
//! ([`local_time`], cached per system for the last `as_of`), neighbours are read from the
//! system's dense [`Glance`] array (8 bytes per station, kept in step with every history
//! change) rather than from their histories, and the minimum and maximum of all windows come
//! from one pass over the station's reports ([`crate::window::StationHistory::min_max_all`]).
//! The demand profile is the station's own slow state ([`crate::profile`]), read from the
//! bins of the hours ahead.

use std::f32::consts::TAU;

use bikeshare_types::contracts::WeatherObs;
use chrono::{Datelike, TimeZone, Timelike};

use crate::station::Station;
use crate::window::{Report, StationHistory};

const MIN_MS: f32 = 60_000.0;

/// What a station's features read besides the station itself.
#[derive(Debug)]
pub(crate) struct FeatureContext<'a> {
    /// [`local_time`] of `as_of`.
    pub local_time: &'a [Option<f32>; 5],
    /// What neighbours show, by station index.
    pub glances: &'a [Glance],
    pub neighbours: &'a [u32],
    pub weather: Option<&'a WeatherObs>,
    /// The system's time zone: the hours of the demand profile.
    pub tz: Option<chrono_tz::Tz>,
    /// What the demand profile looks ahead over: the horizon of the labels.
    pub profile_span_ms: i64,
}

/// What a station shows its neighbours: its latest report's counts and flags and the bikes
/// held at the start of its trend window (the shortest of at least 15 minutes). 8 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Glance {
    bikes: u16,
    docks: u16,
    trend_start: u16,
    flags: u8,
    /// Bit 0: has a latest report; bit 1: `trend_start` is known.
    known: u8,
}

impl Glance {
    pub fn of(h: &StationHistory, trend_wi: Option<usize>) -> Self {
        let Some(r) = h.latest() else {
            return Self::default();
        };
        let start = trend_wi.and_then(|wi| h.bikes_at_start(wi));
        Self {
            bikes: r.bikes,
            docks: r.docks,
            trend_start: start.unwrap_or(0),
            flags: r.flags,
            known: 1 | (u8::from(start.is_some()) << 1),
        }
    }
    fn latest(&self) -> Option<Report> {
        (self.known & 1 != 0).then_some(Report {
            t: 0,
            bikes: self.bikes,
            docks: self.docks,
            delta: 0,
            flags: self.flags,
        })
    }
    fn trend_start(&self) -> Option<u16> {
        (self.known & 2 != 0).then_some(self.trend_start)
    }
}

/// Index of the trend window: the shortest of at least 15 minutes.
pub(crate) fn trend_window(window_minutes: &[u32]) -> Option<usize> {
    window_minutes
        .iter()
        .enumerate()
        .filter(|(_, m)| **m >= 15)
        .min_by_key(|(_, m)| **m)
        .map(|(i, _)| i)
}

/// The local-time features of `t` (ms) in the system's time zone `tz`: hour and
/// day-of-week on the circle, and the weekend flag. Without a time zone (no `SystemInfo`
/// seen, or a name that is not IANA) they are missing: hours in UTC would be shifted by the
/// system's offset, silently, for a model trained on local hours.
pub(crate) fn local_time(tz: Option<chrono_tz::Tz>, t: i64) -> [Option<f32>; 5] {
    let Some(tz) = tz else {
        return [None; 5];
    };
    let utc = bikeshare_types::Timestamp(t).to_datetime();
    let local = tz.from_utc_datetime(&utc.naive_utc());
    let hour = local.hour() as f32 + local.minute() as f32 / 60.0;
    let dow = local.weekday().num_days_from_monday();
    [
        Some((TAU * hour / 24.0).sin()),
        Some((TAU * hour / 24.0).cos()),
        Some((TAU * dow as f32 / 7.0).sin()),
        Some((TAU * dow as f32 / 7.0).cos()),
        b(dow >= 5),
    ]
}

fn b(x: bool) -> Option<f32> {
    Some(if x { 1.0 } else { 0.0 })
}

/// "Not within a day": the cap of the minutes-to features.
const A_DAY_MIN: f32 = 1440.0;

/// Minutes until `left` (bikes or docks) runs out at `per_minute` leaving: 0 when none is
/// left, a day when nothing leaves, capped at a day.
fn minutes_to(left: f32, per_minute: f32) -> f32 {
    if left <= 0.0 {
        0.0
    } else if per_minute > 0.0 {
        (left / per_minute).min(A_DAY_MIN)
    } else {
        A_DAY_MIN
    }
}

fn fill(bikes: f32, docks: Option<f32>) -> Option<f32> {
    let d = docks?;
    (bikes + d > 0.0).then(|| bikes / (bikes + d))
}

/// The feature values of `st` at time `t` (ms); `len` is the schema's length.
pub(crate) fn compute(
    st: &Station,
    ctx: &FeatureContext<'_>,
    t: i64,
    len: usize,
) -> Vec<Option<f32>> {
    let mut v = Values::missing(len);
    let latest: Option<Report> = st.history.latest().copied();

    // Current state.
    let bikes = latest.map(|r| f32::from(r.bikes));
    let docks = latest.and_then(|r| r.docks()).map(f32::from);
    v.push(bikes);
    v.push(docks);
    v.push(st.capacity.map(f32::from));
    v.push(bikes.and_then(|bk| fill(bk, docks)));
    v.push(st.ebikes.map(f32::from));
    v.push(st.bikes_disabled.map(f32::from));
    v.push(st.docks_disabled.map(f32::from));
    v.push(latest.and_then(|r| b(r.has(Report::RENTING))));
    v.push(latest.and_then(|r| b(r.has(Report::RETURNING))));
    v.push(latest.and_then(|r| b(r.is_empty())));
    v.push(latest.and_then(|r| b(r.is_full())));
    v.push(latest.map(|r| (t - r.t) as f32 / MIN_MS));
    let since = |now_in_state: bool, ended: Option<i64>| {
        if now_in_state {
            Some(0.0)
        } else {
            ended.map(|e| (t - e) as f32 / MIN_MS)
        }
    };
    v.push(since(latest.is_some_and(|r| r.is_empty()), st.empty_ended));
    v.push(since(latest.is_some_and(|r| r.is_full()), st.full_ended));

    // Windows.
    let mut min_max = [None; 8];
    let many;
    let min_max: &[Option<(u16, u16)>] = if st.history.windows().len() <= min_max.len() {
        st.history.min_max_all(&mut min_max);
        &min_max
    } else {
        many = {
            let mut v = vec![None; st.history.windows().len()];
            st.history.min_max_all(&mut v);
            v
        };
        &many
    };
    for (wi, w) in st.history.windows().iter().enumerate() {
        let minutes = w.len_ms as f32 / MIN_MS;
        let mean_bikes = w.mean_bikes().map(|x| x as f32);
        let mean_docks = w.mean_docks().map(|x| x as f32);
        let (lo, hi) = min_max[wi].map_or((None, None), |(l, h)| {
            (Some(f32::from(l)), Some(f32::from(h)))
        });
        let delta = match (bikes, st.history.bikes_at_start(wi)) {
            (Some(now), Some(start)) => Some(now - f32::from(start)),
            _ => None,
        };
        let covered = w.covered_ms > 0;
        v.push(mean_bikes);
        v.push(mean_bikes.and_then(|mb| fill(mb, mean_docks)));
        v.push(lo);
        v.push(hi);
        v.push(delta);
        // Net outflow per minute over the window: bikes now minus at its start.
        let outflow = delta.map(|d| -d / minutes);
        v.push(bikes.zip(outflow).map(|(bk, r)| minutes_to(bk, r)));
        v.push(docks.zip(outflow).map(|(dk, r)| minutes_to(dk, -r)));
        v.push(covered.then(|| w.empty_ms as f32 / MIN_MS));
        v.push(covered.then(|| w.full_ms as f32 / MIN_MS));
        v.push(Some(w.reports as f32));
        v.push(Some(w.arrivals as f32));
        v.push(Some(w.departures as f32));
    }

    // Local time.
    v.extend_from_slice(ctx.local_time);

    // Neighbours (missing, not zero, for a station without coordinates).
    if st.coords.is_none() {
        v.skip(7);
    } else {
        let (mut n, mut fills, mut nb_bikes, mut nb_docks, mut empty, mut full, mut trend) =
            (0u32, 0.0f32, 0.0f32, 0.0f32, 0u32, 0u32, 0.0f32);
        let mut n_fill = 0u32;
        for &j in ctx.neighbours {
            let Some(nb) = ctx.glances.get(j as usize) else {
                continue;
            };
            let Some(r) = nb.latest() else {
                continue;
            };
            n += 1;
            nb_bikes += f32::from(r.bikes);
            if let Some(d) = r.docks() {
                nb_docks += f32::from(d);
                if let Some(f) = fill(f32::from(r.bikes), Some(f32::from(d))) {
                    fills += f;
                    n_fill += 1;
                }
            }
            empty += u32::from(r.is_empty());
            full += u32::from(r.is_full());
            if let Some(start) = nb.trend_start() {
                trend += f32::from(r.bikes) - f32::from(start);
            }
        }
        v.push(Some(n as f32));
        v.push((n_fill > 0).then(|| fills / n_fill as f32));
        v.push((n > 0).then_some(nb_bikes));
        v.push((n > 0).then_some(nb_docks));
        v.push((n > 0).then_some(empty as f32));
        v.push((n > 0).then_some(full as f32));
        v.push((n > 0).then_some(trend));
    }

    // The demand profile by local hour of week, over the horizon.
    let span = ctx.profile_span_ms;
    match st.history.profile().expected(t, span, ctx.tz) {
        None => v.skip(9),
        Some(e) => {
            let net = e.arrivals - e.departures;
            let outflow = -net / (span as f32 / MIN_MS);
            v.push(Some(f32::from(e.weeks)));
            v.push(Some(e.departures));
            v.push(Some(e.arrivals));
            v.push(Some(e.empty_share));
            v.push(Some(e.full_share));
            v.push(bikes.map(|bk| bk + net));
            v.push(docks.map(|dk| dk - net));
            v.push(bikes.map(|bk| minutes_to(bk, outflow)));
            v.push(docks.map(|dk| minutes_to(dk, -outflow)));
        }
    }

    // Weather.
    let w = ctx.weather;
    v.push(w.and_then(|w| w.temperature_c).map(|x| x as f32));
    v.push(w.and_then(|w| w.precipitation_mm).map(|x| x as f32));
    v.push(w.and_then(|w| w.wind_speed_kmh).map(|x| x as f32));
    v.push(w.and_then(|w| w.humidity_pct).map(|x| x as f32));
    v.push(w.map(|w| (t - w.observed_at.millis()) as f32 / MIN_MS));

    debug_assert_eq!(v.at, len, "feature vector length differs from the schema");
    v.values
}

/// The feature vector being written: all missing at first, filled in schema order by a
/// cursor (a store and a bounds check a value, where `Vec::push` also checks capacity and
/// keeps the length in memory). Values past the schema's length are dropped and values not
/// written stay missing, as `Vec::resize(len, None)` after pushing did.
struct Values {
    values: Vec<Option<f32>>,
    at: usize,
}

impl Values {
    fn missing(len: usize) -> Self {
        Self {
            values: vec![None; len],
            at: 0,
        }
    }
    fn push(&mut self, x: Option<f32>) {
        if let Some(slot) = self.values.get_mut(self.at) {
            *slot = x;
        }
        self.at += 1;
    }
    fn extend_from_slice(&mut self, xs: &[Option<f32>]) {
        for &x in xs {
            self.push(x);
        }
    }
    /// `n` missing values (already missing: only the cursor moves).
    fn skip(&mut self, n: usize) {
        self.at += n;
    }
}

#[cfg(test)]
mod values_tests {
    use super::Values;

    /// The cursor keeps what `push` then `resize(len, None)` gave: extra values dropped,
    /// values not written missing, skipped ones missing.
    #[test]
    fn values_past_the_length_are_dropped_and_unwritten_ones_stay_missing() {
        let mut long = Values::missing(3);
        for x in [1.0, 2.0, 3.0, 4.0] {
            long.push(Some(x));
        }
        assert_eq!(long.values, vec![Some(1.0), Some(2.0), Some(3.0)]);

        let mut short = Values::missing(4);
        short.push(Some(1.0));
        short.skip(1);
        short.extend_from_slice(&[Some(3.0)]);
        assert_eq!(short.values, vec![Some(1.0), None, Some(3.0), None]);
    }
}
