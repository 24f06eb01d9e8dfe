//! The simulated city stocks out like real ones: at default settings, the share of
//! 5-minute station ticks that go empty / full within the label horizon lies within the
//! range of the recorded real systems (Bluebikes, Boston: January 2021 3.4 % / 1.2 %,
//! June 2021 9.5 % / 6.7 %; see the README for how they were measured). Rates are computed
//! the way the processor labels a history: the simulated day goes through the stream
//! processor's own `Backfill`, and only tick rows are counted.

// Helpers outside #[test] functions expect too (clippy.toml allows it in tests).
#![allow(clippy::expect_used)]

use bikeshare_simulator::{CityConfig, history};
use bikeshare_stream_processor::backfill::Backfill;
use bikeshare_stream_processor::{Processor, ProcessorConfig};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::PredictionTrigger;

/// Went-empty and went-full shares of the 5-minute ticks, with the tick count.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub ticks: u64,
    pub went_empty: f64,
    pub went_full: f64,
}

/// Simulates `config` from `from` for `hours` and labels it with the processor's backfill.
pub fn tick_rates(config: &CityConfig, from: Timestamp, hours: i64) -> Rates {
    let to = from.plus_millis(hours * Timestamp::HOUR_MS);
    let mut backfill = Backfill::new(Processor::new(ProcessorConfig::default()));
    let (mut ticks, mut empty, mut full) = (0u64, 0u64, 0u64);
    let mut count = |row: bikeshare_stream_processor::backfill::TrainingRow| {
        if row.row.trigger == PredictionTrigger::Tick {
            ticks += 1;
            empty += u64::from(row.label.went_empty);
            full += u64::from(row.label.went_full);
        }
    };
    for env in history(config, from, to).expect("a valid city") {
        backfill.push(env, &mut count);
    }
    backfill.finish(&mut count);
    assert!(ticks > 0, "no tick was labelled");
    Rates {
        ticks,
        went_empty: empty as f64 / ticks as f64,
        went_full: full as f64 / ticks as f64,
    }
}

/// Bluebikes (Boston), January and June 2021: the quietest and the busiest month recorded.
const REAL_EMPTY: std::ops::RangeInclusive<f64> = 0.034..=0.095;
const REAL_FULL: std::ops::RangeInclusive<f64> = 0.012..=0.067;

/// Local midnight at the start of `date` in Toronto (the default city's time zone), UTC.
fn midnight(y: i32, m: u32, d: u32) -> Timestamp {
    use chrono::TimeZone;
    let t = chrono_tz::America::Toronto
        .with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("an unambiguous local midnight");
    Timestamp::from_datetime(t.with_timezone(&chrono::Utc))
}

#[test]
fn a_default_day_stocks_out_within_the_range_of_real_systems() {
    // A June weekday and a January weekday: the busiest and the quietest season.
    for (name, from) in [
        ("June weekday", midnight(2024, 6, 5)),
        ("January weekday", midnight(2025, 1, 15)),
    ] {
        let r = tick_rates(&CityConfig::default(), from, 24);
        eprintln!(
            "{name}: {} ticks, went empty {:.2} %, went full {:.2} %",
            r.ticks,
            100.0 * r.went_empty,
            100.0 * r.went_full
        );
        assert!(
            REAL_EMPTY.contains(&r.went_empty) && REAL_FULL.contains(&r.went_full),
            "{name}: went empty {:.4} (real {REAL_EMPTY:?}), went full {:.4} (real {REAL_FULL:?})",
            r.went_empty,
            r.went_full
        );
    }
}
