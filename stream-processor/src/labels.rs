//! Self-labelling: what really happened in the 30 minutes after a prediction.
//!
//! A station's state holds from one report to the next. It *went empty* in `(t, t + h]` if at
//! some instant of that interval its state (the last report at or before the instant) had no
//! bike while renting. The state at `t` holds just after `t`, so a station empty at `t`
//! counts; a report exactly at `t + h` counts, a report exactly at `t` is the state at `t`.
//! *Went full* is the same with docks while returning.

use crate::window::StationHistory;

/// The observed outcome in `(as_of, as_of + horizon]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub went_empty: bool,
    pub went_full: bool,
    pub empty_at_as_of: bool,
    pub full_at_as_of: bool,
    pub observations: u32,
}

/// The outcome from the station's history, or `None` when the state at `as_of` is unknown
/// (no report at or before it is retained). Call it once the station's time has passed
/// `as_of + horizon_ms`.
pub fn outcome(history: &StationHistory, as_of: i64, horizon_ms: i64) -> Option<Outcome> {
    let at = history.report_at(as_of)?;
    let (mut went_empty, mut went_full) = (at.is_empty(), at.is_full());
    let mut observations = 0;
    for r in history.reports_between(as_of, as_of + horizon_ms) {
        observations += 1;
        went_empty |= r.is_empty();
        went_full |= r.is_full();
    }
    Some(Outcome {
        went_empty,
        went_full,
        empty_at_as_of: at.is_empty(),
        full_at_as_of: at.is_full(),
        observations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Report;

    const MIN: i64 = 60_000;
    const H: i64 = 30 * MIN;

    fn history(reports: &[(i64, u16, u16, bool)]) -> StationHistory {
        let mut h = StationHistory::with_retention(&[5 * MIN], 120 * MIN);
        for &(m, bikes, docks, renting) in reports {
            h.apply(
                Report::new(m * MIN, bikes, Some(docks), renting, true, true),
                None,
            )
            .unwrap();
        }
        h
    }

    #[test]
    fn empty_exactly_at_the_horizon_counts() {
        let h = history(&[(0, 3, 7), (30, 0, 10)].map(|(m, b, d)| (m, b, d, true)));
        let o = outcome(&h, 0, H).unwrap();
        assert!(o.went_empty);
        assert_eq!(o.observations, 1);
    }

    #[test]
    fn empty_just_after_the_horizon_does_not() {
        let h = history(&[(0, 3, 7), (31, 0, 10)].map(|(m, b, d)| (m, b, d, true)));
        assert!(!outcome(&h, 0, H).unwrap().went_empty);
    }

    #[test]
    fn a_report_exactly_at_as_of_is_the_state_at_as_of() {
        // Empty before, refilled exactly at as_of: the state after as_of is not empty.
        let h = history(&[(0, 0, 10), (10, 5, 5)].map(|(m, b, d)| (m, b, d, true)));
        let o = outcome(&h, 10 * MIN, H).unwrap();
        assert!(!o.went_empty && !o.empty_at_as_of);
        assert_eq!(o.observations, 0);
    }

    #[test]
    fn already_empty_and_staying_empty_counts_with_no_observations() {
        let h = history(&[(0, 0, 10, true)]);
        let o = outcome(&h, 5 * MIN, H).unwrap();
        assert!(o.went_empty && o.empty_at_as_of);
        assert_eq!(o.observations, 0, "no report in the window");
    }

    #[test]
    fn a_closed_station_is_neither_empty_nor_full() {
        let h = history(&[(0, 0, 0, false)]);
        let mut closed = StationHistory::with_retention(&[5 * MIN], 120 * MIN);
        closed
            .apply(Report::new(0, 0, Some(0), false, false, true), None)
            .unwrap();
        let o = outcome(&closed, 0, H).unwrap();
        assert!(!o.went_empty && !o.went_full);
        assert!(
            !outcome(&h, 0, H).unwrap().went_empty,
            "not renting is not empty"
        );
    }

    #[test]
    fn full_in_the_middle_then_recovered_counts() {
        let h = history(&[(0, 5, 5), (12, 10, 0), (14, 8, 2)].map(|(m, b, d)| (m, b, d, true)));
        let o = outcome(&h, 0, H).unwrap();
        assert!(o.went_full && !o.went_empty);
        assert_eq!(o.observations, 2);
    }

    #[test]
    fn unknown_state_at_as_of_gives_no_label() {
        let h = history(&[(10, 5, 5, true)]);
        assert!(outcome(&h, 0, H).is_none());
    }
}
