//! The drift check on a healthy simulated city: the baseline saved with a model (its
//! training rows) against six hours of the same city afterwards, through a fresh processor
//! as `up` runs it, checked like the job's drift task (the last hour of features after the
//! processor's warm-up, here every 10 minutes of event time). A healthy city must never
//! look drifted.

use bikeshare_models::bootstrap::BootstrapConfig;
use bikeshare_models::dataset::TrainingData;
use bikeshare_monitor::alerts::rules::default_rules;
use bikeshare_monitor::drift::DriftWindow;
use bikeshare_simulator::{CityConfig, history};
use bikeshare_stream_processor::ProcessorConfig;
use bikeshare_types::Timestamp;

/// Tuesday 2024-06-04 10:00 UTC, 06:00 in Toronto (the simulated city's zone): the six
/// live hours run through the morning rush.
const START: i64 = 1_717_495_200_000;

#[test]
fn six_healthy_hours_against_the_training_baseline_raise_no_drift() {
    let city = CityConfig {
        seed: 5,
        // The size `up` serves in its bootstrap test (a bootstrap simulates the served city).
        stations: 60,
        ..CityConfig::default()
    };
    // The bootstrap of `up`: eight simulated days before the live window.
    let mut boot = BootstrapConfig::small(&city, ProcessorConfig::default(), Timestamp(START));
    boot.days = 8;
    let from = Timestamp(START - i64::from(boot.days) * 24 * Timestamp::HOUR_MS);
    let (train, _) = TrainingData::from_events(
        boot.processor.clone(),
        history(&boot.city, from, Timestamp(START)).unwrap(),
    )
    .unwrap();
    let split = train.split(&boot.split).unwrap();
    let baseline = train.drift_baseline(split.train.clone());
    assert!(baseline.hourly.is_some(), "the baseline is kept per hour");
    // The training rows against their own baseline (sampled beyond the reservoirs): nothing.
    let mut same = DriftWindow::new(baseline.clone());
    for i in split.train.clone() {
        same.push_f32(&train.values(i).collect::<Vec<_>>());
    }
    let same = same.evaluate();
    assert!(
        same.violations.violations.is_empty(),
        "{:#?}",
        same.violations
    );

    // Six live hours through a fresh processor, as `up` starts one.
    let end = START + 6 * Timestamp::HOUR_MS;
    let (live, _) = TrainingData::from_events(
        boot.processor.clone(),
        // (rows are labelled: the history runs one horizon past the six hours)
        history(
            &boot.city,
            Timestamp(START),
            Timestamp(end + i64::from(boot.processor.horizon_minutes) * 60_000),
        )
        .unwrap(),
    )
    .unwrap();
    let rules = default_rules();
    let distance_alert = rules
        .iter()
        .find(|r| r.name == "feature_drift")
        .unwrap()
        .threshold;
    let mut checks = 0;
    let mut worst = (String::new(), 0.0, 0);
    // A fresh processor warms up for its longest window (until then the longer windows'
    // features are missing): the job's drift task checks only windows after that.
    let warm_up = i64::from(*boot.processor.window_minutes.iter().max().unwrap()) * 60_000;
    let mut t = START + warm_up + Timestamp::HOUR_MS;
    while t <= end {
        let mut w = DriftWindow::new(baseline.clone());
        for i in 0..live.len() {
            let as_of = live.meta(i).as_of.0;
            if as_of > t - Timestamp::HOUR_MS && as_of <= t {
                w.push_f32(&live.values(i).collect::<Vec<_>>());
            }
        }
        let r = w.evaluate();
        assert!(
            r.rows > 500,
            "{} rows in the hour to {}",
            r.rows,
            Timestamp(t)
        );
        assert!(
            r.violations.violations.is_empty(),
            "hour to {}: {:#?}",
            Timestamp(t),
            r.violations
        );
        for (f, d) in &r.distances {
            assert!(*d <= distance_alert, "hour to {}: {f} at {d}", Timestamp(t));
            if *d > worst.1 {
                worst = (f.clone(), *d, t);
            }
        }
        checks += 1;
        t += 10 * 60_000;
    }
    eprintln!(
        "{checks} checks; largest distance {:.3} ({} in the hour to {})",
        worst.1,
        worst.0,
        Timestamp(worst.2)
    );
    assert_eq!(checks, 25);

    // The same check does see a broken feed: every station stuck at the same count.
    let mut w = DriftWindow::new(baseline);
    let bikes = live
        .feature_names()
        .iter()
        .position(|n| n == "bikes")
        .unwrap();
    for i in 0..live.len() {
        let mut row: Vec<Option<f32>> = live.values(i).collect();
        row[bikes] = Some(0.0);
        w.push_f32(&row);
    }
    let r = w.evaluate();
    assert!(
        r.violations
            .violations
            .iter()
            .any(|v| v.feature_name == "bikes"),
        "{:#?}",
        r.violations
    );
}
