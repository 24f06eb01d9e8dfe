//! The baseline per hour of the week: compare a window with the baseline's rows of the same
//! local hours.
//!
//! A station's bikes, fill, arrivals and departures follow the clock: the morning rush is
//! not the night. A window of an hour compared with a baseline of whole days therefore
//! "drifts" every hour on a healthy system. When the rows carry the local hour (`hour_sin`,
//! `hour_cos`) and optionally `is_weekend`, the baseline also keeps each feature's bucket
//! counts per *slot* (local hour × weekday/weekend, 48 slots), in
//! `statistics_by_hour.json` beside Model Monitor's files, at the same bucket edges. A
//! window then compares its CDF with the mixture of the slots' CDFs weighted by its own
//! rows per slot: the baseline as it would look over exactly the hours the window covers.
//! Rows without the hour (or a slot the baseline never saw) compare with the whole
//! baseline.

use serde::{Deserialize, Serialize};

/// Slots: 24 local hours × {weekday, weekend}.
pub const SLOTS: usize = 48;
/// Values kept per slot and feature (bucket counts are exact up to this many).
pub const SLOT_RESERVOIR: usize = 2_048;
/// The file beside `statistics.json`.
pub const FILE: &str = "statistics_by_hour.json";

/// Which features give the slot of a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotFeatures {
    pub hour_sin: String,
    pub hour_cos: String,
    /// 1 on weekends; without it, every row is a weekday.
    pub weekend: Option<String>,
}

/// The feature indexes of [`SlotFeatures`] in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotIndex {
    sin: usize,
    cos: usize,
    weekend: Option<usize>,
}

impl SlotFeatures {
    /// `hour_sin`, `hour_cos` and `is_weekend` when `names` has the first two.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Option<Self> {
        let has = |n: &str| names.clone().into_iter().any(|x| x == n);
        (has("hour_sin") && has("hour_cos")).then(|| Self {
            hour_sin: "hour_sin".into(),
            hour_cos: "hour_cos".into(),
            weekend: has("is_weekend").then(|| "is_weekend".into()),
        })
    }

    pub(crate) fn index<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<SlotIndex> {
        let pos = |n: &str| names.clone().position(|x| x == n);
        Some(SlotIndex {
            sin: pos(&self.hour_sin)?,
            cos: pos(&self.hour_cos)?,
            weekend: match &self.weekend {
                Some(w) => Some(pos(w)?),
                None => None,
            },
        })
    }
}

impl SlotIndex {
    /// The slot of a row: its local hour (from the angle of `hour_sin`, `hour_cos`), plus 24
    /// on weekends; `None` when the hour is missing.
    pub(crate) fn slot(&self, row: &[Option<f64>]) -> Option<usize> {
        let get = |i: usize| row.get(i).copied().flatten().filter(|v| v.is_finite());
        let (s, c) = (get(self.sin)?, get(self.cos)?);
        let turns = s.atan2(c) / std::f64::consts::TAU;
        // Round to a minute first, so 13:00 computed as 12:59.99999 is still 13.
        let minutes = (turns.rem_euclid(1.0) * 24.0 * 60.0).round() as usize % (24 * 60);
        let weekend = self.weekend.and_then(get).is_some_and(|w| w >= 0.5);
        Some(minutes / 60 + if weekend { 24 } else { 0 })
    }
}

/// `statistics_by_hour.json`: per slot, its rows and each feature's bucket counts at the
/// edges of `statistics.json` (empty for a feature without buckets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourlyStatistics {
    pub slot_features: SlotFeatures,
    pub slots: Vec<SlotStatistics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStatistics {
    /// Local hour (0–23), plus 24 on weekends.
    pub slot: usize,
    pub rows: u64,
    /// Per feature, in the order of `statistics.json`: counts per bucket.
    pub bucket_counts: Vec<Vec<f64>>,
}

/// One slot's values while the baseline is built.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotAcc {
    pub rows: u64,
    /// Per feature: present values seen, and a reservoir of them.
    pub present: Vec<u64>,
    pub reservoir: Vec<Vec<f64>>,
}

impl SlotAcc {
    pub(crate) fn new(features: usize) -> Self {
        Self {
            rows: 0,
            present: vec![0; features],
            reservoir: vec![Vec::new(); features],
        }
    }

    /// A present value of feature `i`; `r` is a fresh random number.
    pub(crate) fn push(&mut self, i: usize, v: f64, r: u64) {
        self.present[i] += 1;
        let res = &mut self.reservoir[i];
        if res.len() < SLOT_RESERVOIR {
            res.push(v);
        } else {
            let j = (r % self.present[i]) as usize;
            if j < SLOT_RESERVOIR {
                res[j] = v;
            }
        }
    }
}
