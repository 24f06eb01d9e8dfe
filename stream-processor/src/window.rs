//! Per-station rolling windows in event time, over the *held* state.
//!
//! A station's state holds from one report to the next, so every statistic is a time
//! integral over the held state, not an average over reports. For each window length `w`
//! (5, 15, 30, 60 minutes by default) and the station's current time `a`, a [`WindowAgg`]
//! keeps exact integer sums over `(a − w, a]`:
//!
//! - `bikes_ms`, `docks_ms`: ∫ bikes dt and ∫ docks dt (bike-milliseconds), and the covered
//!   time (the part of the window after the station's first report);
//! - `empty_ms`, `full_ms`: time spent empty (no bike while renting) or full (no dock while
//!   returning);
//! - `reports`, `arrivals`, `departures`: reports inside the window, and the sums of their
//!   positive and negative changes in bikes (a net-flow estimate).
//!
//! [`StationHistory::advance_to`] moves `a` forward: it adds the latest state's share of the
//! new time at the head and removes, at the tail, the time and the reports that left the
//! window. Each report enters and leaves each window once, so the cost is O(1) amortised per
//! event and window. Sums are integers, so the incremental result is *exactly* the
//! brute-force one ([`brute_force`]), which the property tests check.
//!
//! The history also keeps the station's slow state, its demand profile by hour of week
//! ([`crate::profile`]), moved forward by the same [`StationHistory::advance_to`] and
//! [`StationHistory::apply`], so it is point-in-time correct wherever the windows are.
//!
//! Minimum and maximum bikes are read by scanning the reports of the window when features are
//! computed (a few reports per hour for real feeds: cheaper than keeping deques); all windows
//! share one backward pass ([`StationHistory::min_max_all`]), ~60 reports for a 60-minute
//! window at one report a minute.
//!
//! Reports have absolute indices (the n-th report ever applied), so a caller can keep a
//! cursor into the history ([`StationHistory::report`], [`StationHistory::first_index`]):
//! the processor's pending predictions are such a cursor.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::profile::DemandProfile;

/// One station report, reduced to what windows and labels need (16 bytes; serialised as a
/// tuple to keep checkpoints small).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReportTuple", into = "ReportTuple")]
pub struct Report {
    /// Event time, ms since the epoch.
    pub t: i64,
    pub bikes: u16,
    /// Docks available; meaningful only with [`Report::DOCKS_KNOWN`].
    pub docks: u16,
    /// Change in bikes from the previous report of the station (0 for the first).
    pub delta: i16,
    pub flags: u8,
}

type ReportTuple = (i64, u16, u16, i16, u8);

impl From<ReportTuple> for Report {
    fn from((t, bikes, docks, delta, flags): ReportTuple) -> Self {
        Self {
            t,
            bikes,
            docks,
            delta,
            flags,
        }
    }
}

impl From<Report> for ReportTuple {
    fn from(r: Report) -> Self {
        (r.t, r.bikes, r.docks, r.delta, r.flags)
    }
}

impl Report {
    pub const RENTING: u8 = 1;
    pub const RETURNING: u8 = 2;
    pub const INSTALLED: u8 = 4;
    pub const DOCKS_KNOWN: u8 = 8;

    pub fn new(
        t: i64,
        bikes: u16,
        docks: Option<u16>,
        renting: bool,
        returning: bool,
        installed: bool,
    ) -> Self {
        let mut flags = 0;
        if renting {
            flags |= Self::RENTING;
        }
        if returning {
            flags |= Self::RETURNING;
        }
        if installed {
            flags |= Self::INSTALLED;
        }
        if docks.is_some() {
            flags |= Self::DOCKS_KNOWN;
        }
        Self {
            t,
            bikes,
            docks: docks.unwrap_or(0),
            delta: 0,
            flags,
        }
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    /// No bike to rent while renting.
    pub fn is_empty(&self) -> bool {
        self.has(Self::RENTING) && self.bikes == 0
    }
    /// No dock to return to while returning.
    pub fn is_full(&self) -> bool {
        self.has(Self::RETURNING) && self.has(Self::DOCKS_KNOWN) && self.docks == 0
    }
    pub fn docks(&self) -> Option<u16> {
        self.has(Self::DOCKS_KNOWN).then_some(self.docks)
    }
    /// Same state (counts and flags), whatever the time.
    pub fn same_state(&self, other: &Self) -> bool {
        self.bikes == other.bikes && self.docks == other.docks && self.flags == other.flags
    }
}

/// Exact sums over one window `(a − len, a]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowAgg {
    pub len_ms: i64,
    pub bikes_ms: i64,
    pub docks_ms: i64,
    pub covered_ms: i64,
    pub docks_covered_ms: i64,
    pub empty_ms: i64,
    pub full_ms: i64,
    pub reports: u32,
    pub arrivals: u32,
    pub departures: u32,
    /// Absolute index of the report in force at the window start, if any.
    #[serde(default)]
    tail: Option<u64>,
}

impl WindowAgg {
    fn new(len_ms: i64) -> Self {
        Self {
            len_ms,
            ..Self::default()
        }
    }

    fn add_held(&mut self, r: &Report, dt: i64, sign: i64) {
        let dt = dt * sign;
        self.covered_ms += dt;
        self.bikes_ms += i64::from(r.bikes) * dt;
        if let Some(d) = r.docks() {
            self.docks_ms += i64::from(d) * dt;
            self.docks_covered_ms += dt;
        }
        if r.is_empty() {
            self.empty_ms += dt;
        }
        if r.is_full() {
            self.full_ms += dt;
        }
    }

    fn count_report(&mut self, r: &Report, sign: i32) {
        let add = |v: &mut u32, x: u32| {
            *v = if sign > 0 {
                v.saturating_add(x)
            } else {
                v.saturating_sub(x)
            };
        };
        add(&mut self.reports, 1);
        if r.delta > 0 {
            add(&mut self.arrivals, r.delta.unsigned_abs().into());
        } else if r.delta < 0 {
            add(&mut self.departures, r.delta.unsigned_abs().into());
        }
    }

    /// Mean bikes over the covered part of the window.
    pub fn mean_bikes(&self) -> Option<f64> {
        (self.covered_ms > 0).then(|| self.bikes_ms as f64 / self.covered_ms as f64)
    }
    pub fn mean_docks(&self) -> Option<f64> {
        (self.docks_covered_ms > 0).then(|| self.docks_ms as f64 / self.docks_covered_ms as f64)
    }
}

/// Why a report was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Earlier than the station's current time: the caller routes it as late.
    OutOfOrder,
    /// Same time and same state as the latest report.
    Duplicate,
}

/// The reports of one station that its windows still need, and the windows themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationHistory {
    /// Reports in time order; `reports[0]` has absolute index `base`.
    reports: VecDeque<Report>,
    base: u64,
    windows: Vec<WindowAgg>,
    /// How many of `windows` are features; the rest only keep reports retained.
    visible: usize,
    /// The time the windows are computed at (`a`); `None` before anything happened.
    now: Option<i64>,
    /// The station's demand by hour of week, from the hours over by `now`.
    #[serde(default)]
    profile: DemandProfile,
}

impl StationHistory {
    /// Windows of the given lengths in ms (any order; kept in the given order).
    pub fn new(window_lengths_ms: &[i64]) -> Self {
        Self::with_retention(window_lengths_ms, 0)
    }

    /// Like [`Self::new`], and keeps at least `retention_ms` of reports before the current
    /// time (labels read them), whatever the longest window.
    pub fn with_retention(window_lengths_ms: &[i64], retention_ms: i64) -> Self {
        let mut windows: Vec<WindowAgg> = window_lengths_ms
            .iter()
            .map(|&l| WindowAgg::new(l))
            .collect();
        let visible = windows.len();
        if window_lengths_ms.iter().all(|&l| l < retention_ms) {
            windows.push(WindowAgg::new(retention_ms));
        }
        Self {
            reports: VecDeque::new(),
            base: 0,
            windows,
            visible,
            now: None,
            profile: DemandProfile::default(),
        }
    }

    /// The feature windows, in the order given.
    pub fn windows(&self) -> &[WindowAgg] {
        &self.windows[..self.visible]
    }

    /// The report in force at `t`: the last one at or before it, if still retained.
    pub fn report_at(&self, t: i64) -> Option<&Report> {
        let i = self.reports.partition_point(|r| r.t <= t);
        i.checked_sub(1).and_then(|i| self.reports.get(i))
    }

    /// Reports with time in `(from, to]`.
    pub fn reports_between(&self, from: i64, to: i64) -> impl Iterator<Item = &Report> {
        let start = self.reports.partition_point(|r| r.t <= from);
        self.reports.range(start..).take_while(move |r| r.t <= to)
    }

    /// Time of the oldest retained report.
    pub fn oldest(&self) -> Option<i64> {
        self.reports.front().map(|r| r.t)
    }
    pub fn latest(&self) -> Option<&Report> {
        self.reports.back()
    }
    pub fn now(&self) -> Option<i64> {
        self.now
    }
    /// The station's demand profile by hour of week, as of [`Self::now`].
    pub fn profile(&self) -> &DemandProfile {
        &self.profile
    }
    /// Reports still held (for memory accounting and tests).
    pub fn retained(&self) -> usize {
        self.reports.len()
    }

    fn get(&self, abs: u64) -> Option<&Report> {
        abs.checked_sub(self.base)
            .and_then(|i| self.reports.get(usize::try_from(i).ok()?))
    }

    /// The retained report with absolute index `abs` (the n-th report ever applied, from 0).
    pub fn report(&self, abs: u64) -> Option<&Report> {
        self.get(abs)
    }
    /// Absolute index of the oldest retained report (of the next one when none is).
    pub fn first_index(&self) -> u64 {
        self.base
    }
    /// Absolute index the next applied report will get.
    pub fn end_index(&self) -> u64 {
        self.base + self.reports.len() as u64
    }

    /// Forgets the learned demand profile (the system's time zone changed).
    pub fn forget_profile(&mut self) {
        self.profile.forget();
    }

    /// Moves the windows' time forward to `t` (no-op if `t` is not after the current time);
    /// the profile learns the hours that end by then as hours of `tz` (none without one).
    pub fn advance_to(&mut self, t: i64, tz: Option<chrono_tz::Tz>) {
        let Some(a) = self.now else {
            self.now = Some(t);
            self.profile.start(t);
            return;
        };
        if t <= a {
            return;
        }
        let latest = self.reports.back().copied();
        self.profile.advance(latest.as_ref(), a, t, tz);
        let last_abs = self.base + self.reports.len() as u64;
        for wi in 0..self.windows.len() {
            let mut w = self.windows[wi];
            if let Some(r) = latest {
                w.add_held(&r, t - a, 1);
            }
            // Tail: the window start moves from a - len to t - len.
            let (mut s, s_new) = (a - w.len_ms, t - w.len_ms);
            loop {
                let next_abs = w.tail.map_or(self.base, |x| x + 1);
                let next = (next_abs < last_abs)
                    .then(|| self.get(next_abs).copied())
                    .flatten();
                let seg_end = match next {
                    Some(n) if n.t <= s_new => n.t,
                    _ => s_new,
                };
                if seg_end > s
                    && let Some(cur) = w.tail.and_then(|x| self.get(x).copied())
                {
                    w.add_held(&cur, seg_end - s, -1);
                }
                s = s.max(seg_end);
                match next {
                    Some(n) if n.t <= s_new => {
                        // Report `n` was inside the window (every report after the tail
                        // is) and leaves it now: its time is no longer after the start.
                        w.count_report(&n, -1);
                        w.tail = Some(next_abs);
                    }
                    _ => break,
                }
            }
            self.windows[wi] = w;
        }
        self.now = Some(t);
        self.trim();
    }

    /// Applies a report at its time (advancing the windows to it first, see
    /// [`Self::advance_to`]).
    pub fn apply(&mut self, mut r: Report, tz: Option<chrono_tz::Tz>) -> Result<(), Rejected> {
        if let Some(last) = self.reports.back() {
            if r.t < last.t {
                return Err(Rejected::OutOfOrder);
            }
            if r.t == last.t && r.same_state(last) {
                return Err(Rejected::Duplicate);
            }
            r.delta = (i32::from(r.bikes) - i32::from(last.bikes)).clamp(-32768, 32767) as i16;
        }
        if self.now.is_some_and(|a| r.t < a) {
            return Err(Rejected::OutOfOrder);
        }
        self.advance_to(r.t, tz); // sets `now` (and starts the profile) on the first report
        self.reports.push_back(r);
        self.profile.count(&r);
        for w in &mut self.windows {
            w.count_report(&r, 1);
        }
        Ok(())
    }

    /// Drops reports no window needs: everything before the oldest tail (keeping the report
    /// in force at the longest window's start).
    fn trim(&mut self) {
        let keep_from = self
            .windows
            .iter()
            .map(|w| w.tail.unwrap_or(self.base))
            .min()
            .unwrap_or(self.base);
        while self.base < keep_from && self.reports.len() > 1 {
            self.reports.pop_front();
            self.base += 1;
        }
    }

    /// Bikes held at the start of window `wi` (`None` before the first report).
    pub fn bikes_at_start(&self, wi: usize) -> Option<u16> {
        let w = self.windows.get(wi)?;
        w.tail.and_then(|x| self.get(x)).map(|r| r.bikes)
    }

    /// Minimum and maximum bikes held at any instant of window `wi`.
    pub fn min_max_bikes(&self, wi: usize) -> Option<(u16, u16)> {
        let w = self.windows.get(wi)?;
        let from = w.tail.unwrap_or(self.base);
        let start = usize::try_from(from.checked_sub(self.base)?).ok()?;
        let mut it = self.reports.range(start..).map(|r| r.bikes);
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), b| (lo.min(b), hi.max(b))))
    }
}

impl StationHistory {
    /// [`Self::min_max_bikes`] of every feature window at once, into `out` (one entry per
    /// window of [`Self::windows`]; `out` longer than that is left alone): one backward pass
    /// over the longest window's reports instead of one pass per window.
    pub fn min_max_all(&self, out: &mut [Option<(u16, u16)>]) {
        const MAX_WINDOWS: usize = 16;
        let n = self.visible.min(out.len());
        if n > MAX_WINDOWS {
            for (wi, o) in out.iter_mut().enumerate().take(n) {
                *o = self.min_max_bikes(wi);
            }
            return;
        }
        // Each window's first report (relative index), visited from the latest start back.
        let mut starts = [(0usize, 0usize); MAX_WINDOWS];
        let mut k = 0;
        for (wi, w) in self.windows[..n].iter().enumerate() {
            let from = w.tail.unwrap_or(self.base);
            match from
                .checked_sub(self.base)
                .and_then(|s| usize::try_from(s).ok())
            {
                Some(s) if s < self.reports.len() => {
                    starts[k] = (s, wi);
                    k += 1;
                }
                _ => out[wi] = None,
            }
        }
        let starts = &mut starts[..k];
        // Insertion sort, latest start first (a handful of windows).
        for j in 1..starts.len() {
            let mut m = j;
            while m > 0 && starts[m - 1].0 < starts[m].0 {
                starts.swap(m - 1, m);
                m -= 1;
            }
        }
        let (mut lo, mut hi) = (u16::MAX, u16::MIN);
        let mut i = self.reports.len();
        for &(s, wi) in starts.iter() {
            if s < i {
                let (front, back) = self.reports.as_slices();
                let fl = front.len();
                let a = &front[s.min(fl)..i.min(fl)];
                let b = &back[s.saturating_sub(fl)..i.saturating_sub(fl)];
                for r in a.iter().chain(b) {
                    lo = lo.min(r.bikes);
                    hi = hi.max(r.bikes);
                }
                i = s;
            }
            // `s < len`, so the window holds at least one report.
            out[wi] = Some((lo, hi));
        }
    }
}

/// Recomputes window `len_ms` at time `a` from all reports (sorted by time), by direct
/// integration: the reference the incremental windows must equal exactly.
pub fn brute_force(reports: &[Report], len_ms: i64, a: i64) -> WindowAgg {
    let mut w = WindowAgg::new(len_ms);
    let start = a - len_ms;
    for (i, r) in reports.iter().enumerate() {
        if r.t > a {
            break;
        }
        let end = reports.get(i + 1).map_or(a, |n| n.t.min(a));
        let seg_start = r.t.max(start);
        if end > seg_start {
            w.add_held(r, end - seg_start, 1);
        }
        if r.t > start {
            w.count_report(r, 1);
        }
    }
    w.tail = None;
    w
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIN: i64 = 60_000;
    const UTC: Option<chrono_tz::Tz> = Some(chrono_tz::UTC);

    fn strip(mut w: WindowAgg) -> WindowAgg {
        w.tail = None;
        w
    }

    fn rep(t_min: i64, bikes: u16, docks: u16) -> Report {
        Report::new(t_min * MIN, bikes, Some(docks), true, true, true)
    }

    #[test]
    fn held_state_is_time_weighted() {
        let mut h = StationHistory::new(&[10 * MIN]);
        h.apply(rep(0, 4, 6), UTC).unwrap();
        h.apply(rep(8, 0, 10), UTC).unwrap();
        h.advance_to(10 * MIN, UTC);
        let w = h.windows()[0];
        // 4 bikes for 8 min, 0 bikes for 2 min.
        assert_eq!(w.bikes_ms, 4 * 8 * MIN);
        assert_eq!(w.empty_ms, 2 * MIN);
        assert_eq!(w.covered_ms, 10 * MIN);
        assert_eq!(w.departures, 4);
        assert_eq!(h.min_max_bikes(0), Some((0, 4)));
        h.advance_to(20 * MIN, UTC);
        let w = h.windows()[0];
        assert_eq!(w.bikes_ms, 0);
        assert_eq!(w.empty_ms, 10 * MIN);
        assert_eq!(w.reports, 0, "both reports left the window");
        assert_eq!(h.bikes_at_start(0), Some(0));
        assert_eq!(h.min_max_bikes(0), Some((0, 0)));
    }

    #[test]
    fn duplicates_and_out_of_order_are_refused() {
        let mut h = StationHistory::new(&[5 * MIN]);
        h.apply(rep(10, 3, 7), UTC).unwrap();
        assert_eq!(h.apply(rep(10, 3, 7), UTC), Err(Rejected::Duplicate));
        assert_eq!(h.apply(rep(9, 3, 7), UTC), Err(Rejected::OutOfOrder));
        assert!(
            h.apply(rep(10, 2, 8), UTC).is_ok(),
            "a correction at the same time applies"
        );
    }

    #[test]
    fn history_is_trimmed_to_what_windows_need() {
        let mut h = StationHistory::new(&[5 * MIN, 60 * MIN]);
        for m in 0..600 {
            h.apply(rep(m, (m % 10) as u16, 10 - (m % 10) as u16), UTC)
                .unwrap();
        }
        assert!(h.retained() <= 62, "retained {}", h.retained());
    }

    fn arb_reports() -> impl Strategy<Value = Vec<(i64, u16, Option<u16>, u8)>> {
        prop::collection::vec(
            (
                0i64..20 * MIN,
                0u16..30,
                prop::option::of(0u16..30),
                0u8..16,
            ),
            1..60,
        )
    }

    proptest! {
        #[test]
        fn incremental_equals_brute_force(
            raw in arb_reports(),
            lens in prop::collection::vec(1i64..90 * MIN, 1..4),
            probes in prop::collection::vec(0i64..30 * MIN, 0..20),
        ) {
            // Build an event-time ordered sequence with gaps, ties and duplicates.
            let mut t = 1_600_000_000_000i64;
            let mut seq = Vec::new();
            for (gap, bikes, docks, flags) in raw {
                t += if flags & 1 == 0 { gap } else { 0 };
                let mut r = Report::new(t, bikes, docks, flags & 2 == 0, flags & 4 == 0, true);
                if flags == 15 { r = seq.last().copied().unwrap_or(r); }
                seq.push(r);
            }
            let mut probes: Vec<i64> = probes.into_iter().map(|p| seq[0].t + p).collect();
            probes.sort_unstable();
            let mut h = StationHistory::new(&lens);
            let mut applied: Vec<Report> = Vec::new();
            let mut pi = 0;
            for r in seq {
                while pi < probes.len() && probes[pi] < r.t {
                    h.advance_to(probes[pi], UTC);
                    let a = h.now().unwrap();
                    for (wi, &len) in lens.iter().enumerate() {
                        prop_assert_eq!(strip(h.windows()[wi]), brute_force(&applied, len, a));
                    }
                    pi += 1;
                }
                let mut with_delta = r;
                if let Some(last) = applied.last() {
                    with_delta.delta = (i32::from(r.bikes) - i32::from(last.bikes)) as i16;
                }
                if h.apply(r, UTC).is_ok() {
                    applied.push(with_delta);
                }
                let a = h.now().unwrap();
                for (wi, &len) in lens.iter().enumerate() {
                    prop_assert_eq!(strip(h.windows()[wi]), brute_force(&applied, len, a));
                    let bf_minmax = applied.iter().enumerate()
                        .filter(|(i, x)| x.t > a - len || applied.get(i + 1).is_none_or(|n| n.t > a - len))
                        .map(|(_, x)| x.bikes)
                        .fold(None, |acc: Option<(u16, u16)>, b| Some(acc.map_or((b, b), |(lo, hi)| (lo.min(b), hi.max(b)))));
                    prop_assert_eq!(h.min_max_bikes(wi), bf_minmax);
                }
                let reference = crate::profile::brute_force(&applied, a, UTC);
                prop_assert_eq!(h.profile().learned(), reference.learned());
                let mut all = vec![Some((u16::MAX, 0)); lens.len()];
                h.min_max_all(&mut all);
                for (wi, mm) in all.iter().enumerate() {
                    prop_assert_eq!(*mm, h.min_max_bikes(wi));
                }
            }
        }
    }
}
