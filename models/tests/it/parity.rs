//! The native evaluator is bit-identical to XGBoost's own prediction: a model trained by
//! XGBoost (through `xgboost-rs`) on rows with missing values, then predicted by both on
//! thousands of rows that include NaNs and values exactly equal to split conditions (ties).

#![allow(clippy::unwrap_used)] // test helpers: a malformed model JSON should fail loudly

use std::collections::HashMap;

use bikeshare_models::training::dmatrix;
use bikeshare_models::xgboost::XgbModel;
use bikeshare_types::splitmix::SplitMix64;
use xgboost_rs::Booster;

const FEATURES: usize = 12;

/// Features like ours: small counts (many exact ties, 0 is common), fractions, ~15 % missing.
fn rows(rng: &mut SplitMix64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut values = Vec::with_capacity(n * FEATURES);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let start = values.len();
        for f in 0..FEATURES {
            let v = if rng.unit_f32() < 0.15 {
                f32::NAN
            } else if f % 2 == 0 {
                (rng.next_u64() % 12) as f32
            } else {
                rng.unit_f32() * 4.0 - 1.0
            };
            values.push(v);
        }
        let r = &values[start..];
        let bikes = if r[0].is_nan() { 5.0 } else { r[0] };
        let flow = if r[1].is_nan() { 0.0 } else { r[1] };
        let risk = 2.5 - bikes + 1.5 * flow + if r[2].is_nan() { 1.0 } else { 0.0 };
        labels.push(if risk + rng.unit_f32() * 2.0 - 1.0 > 0.0 {
            1.0
        } else {
            0.0
        });
    }
    (values, labels)
}

/// Every (feature, split condition) of the model, to build rows that hit splits exactly.
fn split_points(json: &[u8]) -> Vec<(usize, f32)> {
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap();
    let trees = doc["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .unwrap();
    let mut points = Vec::new();
    for t in trees {
        let idx = t["split_indices"].as_array().unwrap();
        let cond = t["split_conditions"].as_array().unwrap();
        let left = t["left_children"].as_array().unwrap();
        for ((i, c), l) in idx.iter().zip(cond).zip(left) {
            if l.as_i64() != Some(-1) {
                points.push((i.as_u64().unwrap() as usize, c.as_f64().unwrap() as f32));
            }
        }
    }
    points
}

#[test]
fn native_predictions_are_bit_identical_to_xgboost() {
    let mut rng = SplitMix64::new(0x5EED);
    let (train, labels) = rows(&mut rng, 4000);
    let dtrain = dmatrix(&train, FEATURES, &labels, 1).unwrap();
    let config: HashMap<String, String> = [
        ("objective", "binary:logistic"),
        ("tree_method", "hist"),
        ("max_depth", "6"),
        ("eta", "0.3"),
        ("nthread", "1"),
        ("base_score", "0.37"),
        ("verbosity", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut booster = Booster::new_with_json_config(&[&dtrain], config).unwrap();
    for round in 0..60 {
        booster.update(&dtrain, round).unwrap();
    }
    let json = booster.save_to_buffer("json".into()).unwrap().into_bytes();
    let native = XgbModel::from_json(&json).unwrap();
    assert_eq!(native.num_trees(), 60);

    // Test rows: fresh rows, and rows with features set exactly to split conditions.
    let (mut test, _) = rows(&mut rng, 3000);
    let points = split_points(&json);
    assert!(points.len() > 500, "the model has {} splits", points.len());
    for k in 0..3000 {
        let (feature, cond) = points[k % points.len()];
        let mut row = test[(k % 3000) * FEATURES..][..FEATURES].to_vec();
        row[feature] = cond;
        // A second feature at its own split point in the same row, now and then.
        let (f2, c2) = points[(k * 7 + 3) % points.len()];
        if f2 != feature && k % 3 == 0 {
            row[f2] = c2;
        }
        test.extend(row);
    }
    let n = test.len() / FEATURES;
    assert!(n >= 5000);
    let dtest = dmatrix(&test, FEATURES, &vec![0.0; n], 1).unwrap();
    let expected = booster.predict(&dtest).unwrap();
    assert_eq!(expected.len(), n);

    let mut mismatches = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let got = native.predict(&test[i * FEATURES..][..FEATURES]);
        if got.to_bits() != want.to_bits() {
            mismatches.push((i, got, *want));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {n} rows differ, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    // The batch path gives the same bits as the row-by-row one.
    let mut batch = Vec::new();
    native.predict_rows(&test, FEATURES, &mut batch);
    assert_eq!(batch.len(), n);
    assert!(
        batch
            .iter()
            .zip(&expected)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "predict_rows differs from XGBoost"
    );
    // The rows really exercise missing values and ties.
    assert!(test.iter().filter(|v| v.is_nan()).count() > n);
}
