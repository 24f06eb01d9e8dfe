//! One station's state inside a system: its retained reports and windows, what is waiting
//! for a label, its metadata. The processor keeps it; the featurizer reads it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::window::StationHistory;

/// One station's state (its id is in the system's `StationIds` at the same index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Station {
    pub coords: Option<(f64, f64)>,
    pub history: StationHistory,
    /// When the station last stopped being empty / full.
    pub empty_ended: Option<i64>,
    pub full_ended: Option<i64>,
    /// Absolute index of the first report whose update row is not labelled yet.
    pub labelled: u64,
    /// `as_of` of tick rows not yet labelled, oldest first.
    pub pending_ticks: VecDeque<i64>,
    pub capacity: Option<u16>,
    pub ebikes: Option<u16>,
    pub bikes_disabled: Option<u16>,
    pub docks_disabled: Option<u16>,
    /// `(as_of, p_empty, p_full)` of the station's scored predictions waiting for their
    /// label, oldest first ([`crate::Processor::record_prediction`]).
    #[serde(default)]
    pub scores: VecDeque<(i64, f32, f32)>,
}

impl Station {
    pub(crate) fn new(lens: &[i64], retention: i64) -> Self {
        Self {
            coords: None,
            history: StationHistory::with_retention(lens, retention),
            empty_ended: None,
            full_ended: None,
            labelled: 0,
            pending_ticks: VecDeque::new(),
            capacity: None,
            ebikes: None,
            bikes_disabled: None,
            docks_disabled: None,
            scores: VecDeque::new(),
        }
    }

    /// The latest `as_of` of an unlabelled prediction.
    pub(crate) fn last_pending(&self) -> Option<i64> {
        let report = (self.labelled < self.history.end_index())
            .then(|| self.history.latest().map(|r| r.t))
            .flatten();
        match (report, self.pending_ticks.back().copied()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the oldest unlabelled prediction if it is due (`as_of + horizon <= t`).
    pub(crate) fn pop_due(&mut self, horizon_ms: i64, t: i64) -> Option<i64> {
        if self.labelled < self.history.first_index() {
            // Reports trimmed before their label was due (only after `drain` jumped past
            // ticks): their state is gone, so is their label.
            self.labelled = self.history.first_index();
        }
        let report = self.history.report(self.labelled).map(|r| r.t);
        let tick = self.pending_ticks.front().copied();
        let (as_of, from_report) = match (report, tick) {
            (Some(r), Some(k)) if k < r => (k, false),
            (Some(r), _) => (r, true),
            (None, Some(k)) => (k, false),
            (None, None) => return None,
        };
        if as_of + horizon_ms > t {
            return None;
        }
        if from_report {
            self.labelled += 1;
        } else {
            self.pending_ticks.pop_front();
        }
        Some(as_of)
    }
}
