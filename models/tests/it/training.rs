//! Training on a simulated history: the models beat the baselines on held-out days, and the
//! model directory round-trips into the processor's scorer.

use bikeshare_models::bootstrap::{BootstrapConfig, train_bootstrap};
use bikeshare_models::eval::render;
use bikeshare_models::model_dir::{self, read_card};
use bikeshare_simulator::CityConfig;
use bikeshare_stream_processor::{FeatureSchema, ProcessorConfig, Scorer};
use bikeshare_types::Timestamp;

const END: i64 = 1_717_804_800_000; // 2024-06-08 00:00 UTC

#[test]
fn models_trained_on_simulated_days_beat_the_baselines_on_later_days() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m1");
    let city = CityConfig {
        seed: 11,
        // The size `up` serves in its bootstrap test (a bootstrap simulates the served city).
        stations: 60,
        ..CityConfig::default()
    };
    let config = BootstrapConfig::small(&city, ProcessorConfig::default(), Timestamp(END));
    let started = std::time::Instant::now();
    let mut rounds = 0;
    let b = train_bootstrap(
        &config,
        &out,
        "test-model",
        "1",
        Timestamp(END),
        &mut |_| rounds += 1,
    )
    .unwrap();
    eprintln!("trained in {:?}; {:?}", started.elapsed(), b.backfill);
    let card = &b.card;
    eprintln!("{}", render(&card.evaluation));
    assert!(rounds > 0, "progress is reported");
    assert!(card.data.train > card.data.test && card.data.test > 0);
    assert!(card.split.valid_start < card.split.test_start);
    for (what, v) in [
        ("empty", &card.evaluation.empty),
        ("full", &card.evaluation.full),
    ] {
        assert!(v.beats_baselines, "{what}: {}", v.summary);
    }
    // The directory holds the three files and the drift baseline, and loads as the
    // processor's scorer.
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    // A calibrator ships exactly when a target's validation reliability was off. (Whether
    // it helps on held-out rows is `calibration`'s unit test: here the simulated test day
    // differs from the validation days more than any map fitted on them can fix.)
    let calibrated = card.empty.calibrator.is_some() || card.full.calibrator.is_some();
    for t in [&card.empty, &card.full] {
        let off = t.calibration.as_ref().unwrap().off;
        assert_eq!(t.calibrator.is_some(), off, "{:?}", t.calibration);
    }
    let mut want = vec![
        "card.json",
        "constraints.json",
        "empty.json",
        "full.json",
        "statistics.json",
        "statistics_by_hour.json",
    ];
    if calibrated {
        want.insert(0, "calibrator.json");
    }
    assert_eq!(files, want);
    // The drift baseline saved with the model is that of its training rows.
    let saved = model_dir::read_drift_baseline(&out).unwrap().unwrap();
    let train = b.data.split(&config.split).unwrap().train;
    assert_eq!(saved.statistics.dataset.item_count, train.len() as u64);
    assert_eq!(saved.constraints, b.data.drift_baseline(train).constraints);
    assert_eq!(&read_card(&out).unwrap(), card);
    let schema = FeatureSchema::current(&ProcessorConfig::default().window_minutes);
    let scorer = model_dir::load(&out, &schema).unwrap();
    assert_eq!(scorer.model().name, "test-model");
    assert_eq!(scorer.calibrator().is_some(), calibrated);
    // The card's test measures (the raw scores calibrated, each row scored once) are those
    // of the scorer the directory ships, scoring the rows itself.
    let split = b.data.split(&config.split).unwrap();
    let shipped = bikeshare_models::eval::evaluate_on_split(&scorer, &b.data, &split);
    let mut reported = card.evaluation.model.clone();
    reported.scorer = shipped.scorer.clone();
    assert_eq!(reported, shipped);
    let other = FeatureSchema::current(&[5, 15]);
    assert!(
        model_dir::load(&out, &other).is_err(),
        "another feature schema is refused"
    );
}
