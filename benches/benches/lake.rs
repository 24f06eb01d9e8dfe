//! The lake writer's cost: Parquet encoding of the datasets the processor writes for each
//! prediction (the prediction, its feature vector, and later its label), by
//! `Staging::encode`, the step `EpochWriter::commit` runs before uploading.
//!
//! - `lake/encode_predictions`, `lake/encode_features`, `lake/encode_labels`: one dataset,
//!   10,000 rows (1,000 stations × 10 minutes, one hour partition), rows/s.
//! - `lake/encode_per_prediction`: a prediction + its 75-value feature vector + its label,
//!   10,000 of each in one epoch: the writer's CPU cost per prediction.
//!
//! The encoded bytes per row are printed once, so rows/s converts to MB/s.

#![allow(clippy::expect_used)]

use bikeshare_lake::staging::Staging;
use bikeshare_testkit::envelopes;
use bikeshare_types::contracts::{FeatureSchemaId, FeatureVector, Label, ModelRef, Prediction};
use bikeshare_types::{StationId, SystemId, Timestamp};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const STATIONS: u32 = 1000;
const MINUTES: u32 = 10;
const N: u32 = STATIONS * MINUTES;
const START: i64 = 1_717_560_000_000;

fn key(i: u32) -> (SystemId, StationId, Timestamp) {
    (
        SystemId::new("bench"),
        StationId::new(format!("S{:06}", i % STATIONS)),
        Timestamp(START + i64::from(i / STATIONS) * 60_000),
    )
}

fn predictions() -> Vec<Prediction> {
    (0..N)
        .map(|i| {
            let (sys, st, as_of) = key(i);
            let (p_empty, p_full) = ((i % 997) as f32 / 997.0, (i % 991) as f32 / 991.0);
            Prediction {
                schema_version: 2,
                model: ModelRef {
                    name: "bikeshare-stockout".into(),
                    version: "7".into(),
                },
                feature_schema_id: FeatureSchemaId("fs1-0123456789abcdef".into()),
                ..envelopes::prediction(sys.as_str(), st.as_str(), as_of, p_empty, p_full)
            }
        })
        .collect()
}

fn features() -> Vec<FeatureVector> {
    (0..N)
        .map(|i| {
            let (system_id, station_id, as_of) = key(i);
            FeatureVector {
                system_id,
                station_id,
                as_of,
                schema_id: FeatureSchemaId("fs1-0123456789abcdef".into()),
                // Counts, fractions and a few missing values (3 %), as the processor emits.
                values: (0..75u32)
                    .map(|k| {
                        let x = i.wrapping_mul(2_654_435_761).wrapping_add(k * 40_503);
                        (x % 33 != 0).then(|| {
                            if k % 2 == 0 {
                                (x % 40) as f32
                            } else {
                                (x % 1000) as f32 / 1000.0
                            }
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

fn labels(preds: &[Prediction]) -> Vec<Label> {
    preds
        .iter()
        .enumerate()
        .map(|(i, p)| Label {
            went_empty: i % 17 == 0,
            went_full: i % 23 == 0,
            empty_at_as_of: i % 31 == 0,
            ..envelopes::label(p, 1 + i as u32 % 30)
        })
        .collect()
}

fn encoded_bytes(s: &Staging) -> usize {
    s.encode("bench", 1)
        .expect("encode")
        .iter()
        .map(|f| f.bytes.len())
        .sum()
}

fn lake(c: &mut Criterion) {
    let preds = predictions();
    let feats = features();
    let labs = labels(&preds);
    let mut only_preds = Staging::default();
    only_preds.predictions.push(preds.iter().cloned());
    let mut only_feats = Staging::default();
    only_feats.features.push(feats.iter().cloned());
    let mut only_labels = Staging::default();
    only_labels.labels.push(labs.iter().cloned());
    let mut all = Staging::default();
    all.predictions.push(preds.iter().cloned());
    all.features.push(feats.iter().cloned());
    all.labels.push(labs.iter().cloned());
    for (name, s) in [
        ("predictions", &only_preds),
        ("features", &only_feats),
        ("labels", &only_labels),
        ("per_prediction", &all),
    ] {
        eprintln!(
            "lake/encode_{name}: {} bytes for {N} rows = {:.1} bytes per row",
            encoded_bytes(s),
            encoded_bytes(s) as f64 / f64::from(N)
        );
    }

    let mut g = c.benchmark_group("lake");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.sample_size(20);
    for (name, s) in [
        ("encode_predictions", &only_preds),
        ("encode_features", &only_feats),
        ("encode_labels", &only_labels),
        ("encode_per_prediction", &all),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || (),
                |()| black_box(s.encode("bench", 1).expect("encode").len()),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, lake);
criterion_main!(benches);
