//! Training through XGBoost's external-memory matrix (decision 096): the rows live in cache
//! files while the booster trains, the model (missing values sent left, as they were
//! trained) is as good as XGBoost's in-memory training on the same rows with missing values
//! learned per split, the native validation log loss is XGBoost's own on rows with missing
//! values, and the cache is gone afterwards.

#![allow(clippy::unwrap_used)] // test helpers: XGBoost failing here should fail loudly

use bikeshare_models::dataset::{RowLabel, Target, TrainingData};
use bikeshare_models::external::bytes_under;
use bikeshare_models::training::{BLOCK_ROWS, TrainParams, TrainingMatrices, dmatrix};
use bikeshare_models::xgboost::XgbModel;
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::Timestamp;
use bikeshare_types::splitmix::SplitMix64;
use xgboost_rs::Booster;

/// `n` seeded rows over several pages: feature 0 always present (a column no page misses,
/// the case XGBoost 1.6.2's cache pages crash on), feature 1 missing for a third of the
/// rows (and its absence raises the risk), feature 2 exactly 0 for a tenth (0 is a value),
/// feature 3 noise.
fn rows(n: usize) -> TrainingData {
    let schema = FeatureSchema::current(&[5, 15, 30, 60]);
    let mut d = TrainingData::new(&schema, 30);
    let mut rng = SplitMix64::new(21);
    let mut u = || rng.unit_f32();
    for i in 0..n {
        let (a, b, c, noise) = (u(), u(), u(), u());
        let missing = b < 0.33;
        let zero = c < 0.1;
        let z = 3.0 * a - 2.5 + if missing { 1.0 } else { -b } + if zero { 0.8 } else { 0.0 };
        let p = 1.0 / (1.0 + (-z).exp());
        let label = RowLabel {
            went_empty: u() < p,
            ..RowLabel::default()
        };
        d.push(
            &format!("s{}", i % 100),
            Timestamp(i as i64 * 1_000),
            label,
            [
                Some(a),
                (!missing).then_some(b),
                Some(if zero { 0.0 } else { c }),
                Some(noise),
            ],
        );
    }
    d.finish();
    d
}

/// XGBoost's own log loss of `json`'s model on rows `valid` (an in-memory matrix).
fn xgboost_log_loss(json: &[u8], d: &TrainingData, valid: std::ops::Range<usize>) -> f64 {
    let booster = Booster::load_buffer(json).unwrap();
    let labels = d.labels(Target::WentEmpty, valid.clone());
    let m = dmatrix(d.rows(valid), d.num_features(), &labels, 2).unwrap();
    f64::from(booster.evaluate(&m, "valid").unwrap()["logloss"])
}

#[test]
fn external_memory_training_matches_in_memory_and_leaves_no_cache() {
    let n = 2 * BLOCK_ROWS + 40_000;
    let d = rows(n);
    let (train, valid) = (0..n - 60_000, n - 60_000..n);
    let params = TrainParams {
        max_rounds: 15,
        early_stopping_rounds: 0,
        max_depth: 4,
        nthread: 2,
        ..TrainParams::default()
    };
    let cache = tempfile::tempdir().unwrap();
    let mut cached = Vec::new();
    let b = {
        let mut matrices = TrainingMatrices::new(&d, train.clone(), &params, &[])
            .cache_in(cache.path())
            .in_memory_up_to(0);
        matrices
            .train(Target::WentEmpty, valid.clone(), &params, &mut |_| {
                cached.push(bytes_under(cache.path()));
            })
            .unwrap()
    };
    // While it trained, the rows were in cache files (at least a byte per value present),
    // not in XGBoost's memory; once done, nothing is left.
    assert_eq!(cached.len(), 15);
    let present = train.len() as u64 * 4;
    assert!(
        cached.iter().all(|&c| c >= present),
        "cache bytes {cached:?} for {present} values"
    );
    assert_eq!(bytes_under(cache.path()), 0, "the cache is left behind");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);

    // The log loss that early stopping read (native, tree by tree) is XGBoost's own.
    let own = xgboost_log_loss(&b.json, &d, valid.clone());
    assert!(
        (b.best_valid_log_loss - own).abs() < 1e-5,
        "native {} vs XGBoost {own}",
        b.best_valid_log_loss
    );

    // XGBoost's own predictor on the trained model (every split sends missing left, as
    // external-memory training saw it: `f32::MIN`): a missing value and `f32::MIN` take the
    // same path in every tree, row by row, and the native evaluator that serves the model
    // agrees with both.
    let nan_rows = d.rows(valid.clone()).to_vec();
    assert!(nan_rows.iter().any(|v| v.is_nan()));
    let min_rows: Vec<f32> = nan_rows
        .iter()
        .map(|&v| if v.is_nan() { f32::MIN } else { v })
        .collect();
    let valid_labels = d.labels(Target::WentEmpty, valid.clone());
    let own_model = Booster::load_buffer(&b.json).unwrap();
    let predict = |values: &[f32]| {
        let m = dmatrix(values, d.num_features(), &valid_labels, 2).unwrap();
        own_model.predict(&m).unwrap()
    };
    let (p_nan, p_min) = (predict(&nan_rows), predict(&min_rows));
    assert_eq!(
        p_nan, p_min,
        "NaN and f32::MIN part ways in XGBoost's predictor"
    );
    let mut p_native = Vec::new();
    XgbModel::from_json(&b.json)
        .unwrap()
        .predict_rows(&nan_rows, d.num_features(), &mut p_native);
    let worst = p_nan
        .iter()
        .zip(&p_native)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "native and XGBoost differ by up to {worst}");
    // The model does split on the feature that goes missing (else the above proves nothing).
    let split_on_1 = serde_json::from_slice::<serde_json::Value>(&b.json).unwrap()
        ["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["split_indices"].as_array().unwrap().iter().any(|i| i == 1));
    assert!(split_on_1, "no tree splits on feature 1");

    // XGBoost's in-memory training on the same rows and parameters (what training did
    // before) reaches the same validation log loss, within the difference of a quantile
    // sketch made page by page.
    let labels = d.labels(Target::WentEmpty, train.clone());
    let dtrain = dmatrix(d.rows(train), d.num_features(), &labels, 2).unwrap();
    let config: std::collections::HashMap<String, String> = [
        ("objective", "binary:logistic"),
        ("tree_method", "hist"),
        ("max_depth", "4"),
        ("eta", "0.1"),
        ("nthread", "2"),
        ("seed", "0"),
        ("verbosity", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("base_score".to_owned(), format!("{:.3}", b.base_score))])
    .collect();
    let mut booster = Booster::new_with_json_config(&[&dtrain], config).unwrap();
    for round in 0..15 {
        booster.update(&dtrain, round).unwrap();
    }
    let in_memory = xgboost_log_loss(
        booster.save_to_buffer("json".into()).unwrap().as_bytes(),
        &d,
        valid.clone(),
    );
    eprintln!(
        "validation log loss: external {own} (native {}), in memory {in_memory}",
        b.best_valid_log_loss
    );
    assert!(
        (own - in_memory).abs() < 0.002 * in_memory,
        "external {own} vs in-memory {in_memory}"
    );
    // And it learned: far below the log loss of the base rate alone.
    let rate = d
        .labels(Target::WentEmpty, valid.clone())
        .iter()
        .map(|&y| f64::from(y))
        .sum::<f64>()
        / valid.len() as f64;
    let base = -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln());
    assert!(own < 0.9 * base, "{own} vs base rate {base}");
}
