//! Lake files read back with a Parquet reader equal the records written; a crash between
//! writing an epoch and storing its checkpoint neither duplicates nor loses a row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bikeshare_lake::catalog::{decode_file, partitions, read_dataset};
use bikeshare_lake::staging::{Staging, encode_parquet};
use bikeshare_lake::{CuratedStatus, Dataset, EpochWriter, LakeConfig, LakeRecord, open_store};
use bikeshare_testkit::envelopes;
use bikeshare_types::contracts::{
    DeadLetter, Envelope, Event, FeatureSchemaId, FeatureVector, FeedHeartbeat, Label, Prediction,
    PredictionTrigger, ScoredBy, StationInfo, StationStatus, VehicleTypeCount, WeatherObs,
};
use bikeshare_types::{StationId, SystemId, Timestamp};

const T0: i64 = 1_772_431_200_000; // 2026-03-02T06:00:00Z

fn t(minutes: i64) -> Timestamp {
    Timestamp(T0).plus_minutes(minutes)
}

fn status(i: u32, minutes: i64) -> StationStatus {
    StationStatus {
        station_id: StationId::new(format!("st-{}", i % 7)),
        num_bikes_available: i % 5,
        num_ebikes_available: i.is_multiple_of(2).then_some(i % 3),
        num_bikes_disabled: Some(1),
        num_docks_available: (!i.is_multiple_of(3)).then_some(10 - i % 5),
        num_docks_disabled: None,
        is_installed: true,
        is_renting: !i.is_multiple_of(11),
        is_returning: true,
        last_reported: t(minutes),
        vehicle_types_available: if i.is_multiple_of(4) {
            vec![VehicleTypeCount {
                vehicle_type_id: "ebike".into(),
                count: i % 3,
            }]
        } else {
            vec![]
        },
    }
}

fn envelopes(n: u32) -> Vec<Envelope> {
    let sys = SystemId::new("demo");
    (0..n)
        .map(|i| {
            let m = i64::from(i) * 7;
            let event = match i % 5 {
                0 => Event::StationInfo(StationInfo {
                    station_id: StationId::new(format!("st-{i}")),
                    name: format!("Station \"{i}\" ünïcode"),
                    short_name: None,
                    lat: 42.35 + f64::from(i) * 1e-4,
                    lon: -71.06,
                    capacity: Some(15),
                    region_id: None,
                    is_virtual_station: false,
                }),
                1 => Event::Weather(WeatherObs {
                    weather_station: "72509".into(),
                    observed_at: t(m).floor_to(Timestamp::HOUR_MS),
                    temperature_c: Some(3.5),
                    precipitation_mm: None,
                    wind_speed_kmh: Some(11.0),
                    humidity_pct: None,
                    condition: Some(3),
                }),
                2 => Event::FeedHeartbeat(FeedHeartbeat {
                    feed: "station_status".into(),
                    last_updated: t(m),
                    period_s: Some(60),
                }),
                _ => Event::StationStatus(status(i, m)),
            };
            Envelope::new(sys.clone(), "simulator", t(m), t(m + 1), event)
        })
        .collect()
}

fn features(n: u32) -> Vec<FeatureVector> {
    (0..n)
        .map(|i| FeatureVector {
            system_id: SystemId::new("demo"),
            station_id: StationId::new(format!("st-{}", i % 9)),
            as_of: t(i64::from(i) * 5),
            schema_id: FeatureSchemaId("fs1-abc".into()),
            values: (0..75)
                .map(|k| (k % 7 != 3).then_some((i * 75 + k) as f32 * 0.25))
                .collect(),
        })
        .collect()
}

fn predictions(n: u32) -> Vec<Prediction> {
    (0..n)
        .map(|i| {
            let station = format!("st-{}", i % 9);
            let as_of = t(i64::from(i) * 5);
            let p_empty = i as f32 / n as f32;
            Prediction {
                feature_schema_id: FeatureSchemaId("fs1-abc".into()),
                trigger: if i % 2 == 0 {
                    PredictionTrigger::Tick
                } else {
                    PredictionTrigger::Update
                },
                scored_by: [ScoredBy::InProcess, ScoredBy::Endpoint, ScoredBy::Fallback]
                    [i as usize % 3],
                revision: i % 4 / 3,
                ..envelopes::prediction("demo", &station, as_of, p_empty, 1.0 - p_empty)
            }
        })
        .collect()
}

fn labels(n: u32) -> Vec<Label> {
    predictions(n)
        .into_iter()
        .enumerate()
        .map(|(i, p)| Label {
            went_empty: i % 3 == 0,
            went_full: i % 4 == 0,
            empty_at_as_of: i % 6 == 0,
            ..envelopes::label(&p, i as u32 % 5)
        })
        .collect()
}

fn dead_letters(n: u32) -> Vec<DeadLetter> {
    (0..n)
        .map(|i| {
            DeadLetter::new(
                SystemId::new("demo"),
                format!("stream:shardId-0:{i}"),
                "gbfs.counts.negative",
                "num_bikes_available is -1",
                &format!(r#"{{"station_id":"{i}","num_bikes_available":-1}}"#),
                t(i64::from(i) * 13),
            )
        })
        .collect()
}

fn round_trip<T: LakeRecord + PartialEq + std::fmt::Debug>(rows: Vec<T>) {
    let bytes = encode_parquet(&rows).unwrap();
    let back: Vec<T> = decode_file(bytes.into()).unwrap();
    assert_eq!(back.len(), rows.len(), "{}", T::DATASET);
    for (i, (b, r)) in back.iter().zip(&rows).enumerate() {
        assert_eq!(b, r, "{} row {i}", T::DATASET);
    }
}

#[test]
fn every_dataset_reads_back_equal_to_the_records_written() {
    let env = envelopes(200);
    let curated: Vec<CuratedStatus> = env
        .iter()
        .filter_map(CuratedStatus::from_envelope)
        .collect();
    assert!(curated.len() > 50);
    round_trip(env);
    round_trip(curated);
    round_trip(features(100));
    round_trip(predictions(300));
    round_trip(labels(300));
    round_trip(dead_letters(50));
}

/// A predictions file written before schema version 3 has no `revision` column: its rows
/// read back as revision 0 (each id's first row; there were no corrections then).
#[test]
fn a_predictions_file_without_the_revision_column_reads_as_revision_0() {
    let rows = predictions(8);
    assert!(rows.iter().any(|p| p.revision > 0));
    let batch = Prediction::encode(&rows).unwrap();
    let at = batch.schema().index_of("revision").unwrap();
    let mut old = batch.clone();
    old.remove_column(at);
    let back = Prediction::decode(&old).unwrap();
    let want: Vec<Prediction> = rows
        .into_iter()
        .map(|p| Prediction { revision: 0, ..p })
        .collect();
    assert_eq!(back, want);
}

#[test]
fn files_match_the_declared_schema() {
    let bytes = encode_parquet(&predictions(3)).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap();
    assert_eq!(b.schema().fields(), Dataset::Predictions.schema().fields());
}

fn staging_of(env: &[Envelope], preds: &[Prediction]) -> Staging {
    let mut s = Staging::default();
    for e in env {
        s.push_event(e.clone());
    }
    s.predictions.push(preds.iter().cloned());
    s
}

/// Epochs 1 and 2 are committed (their checkpoints stored); epoch 3 wrote its files, then the
/// process died before checkpoint 3. The restart resumes from checkpoint 2, recovers, and
/// replays epoch 3's rows split differently (3 and 4): every row once.
#[tokio::test]
async fn an_epoch_written_but_not_checkpointed_is_replaced_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&LakeConfig::default(), dir.path()).unwrap();
    let w = EpochWriter::new(store.clone(), "processor");
    let env = envelopes(400);
    let preds = predictions(400);
    let (a, b) = (0..100, 100..250);
    w.recover(0).await.unwrap();
    w.commit(1, staging_of(&env[a.clone()], &preds[a]))
        .await
        .unwrap();
    w.commit(2, staging_of(&env[b.clone()], &preds[b]))
        .await
        .unwrap();
    // Epoch 3 covers rows 250..330 before the crash.
    w.commit(3, staging_of(&env[250..330], &preds[250..330]))
        .await
        .unwrap();
    let before: Vec<Prediction> = read_dataset(&store).await.unwrap();
    assert_eq!(before.len(), 330);

    // Restart from checkpoint 2.
    let w = EpochWriter::new(store.clone(), "processor");
    let r = w.recover(2).await.unwrap();
    assert_eq!(r.epochs_discarded, 1);
    assert!(r.files_deleted > 0);
    let mid = 250..290;
    w.commit(3, staging_of(&env[mid.clone()], &preds[mid]))
        .await
        .unwrap();
    w.commit(4, staging_of(&env[290..400], &preds[290..400]))
        .await
        .unwrap();

    let mut got: Vec<Prediction> = read_dataset(&store).await.unwrap();
    got.sort_by(|x, y| x.prediction_id.cmp(&y.prediction_id));
    let mut want = preds.clone();
    want.sort_by(|x, y| x.prediction_id.cmp(&y.prediction_id));
    assert_eq!(got, want);
    let mut raw: Vec<Envelope> = read_dataset(&store).await.unwrap();
    raw.sort_by(|x, y| x.event_id.cmp(&y.event_id));
    let mut want = env.clone();
    want.sort_by(|x, y| x.event_id.cmp(&y.event_id));
    assert_eq!(raw, want);

    // Only the last epoch's manifest remains; the catalog counts every row once.
    let manifests: Vec<_> = std::fs::read_dir(dir.path().join("lake/_epochs/processor"))
        .unwrap()
        .collect();
    assert_eq!(manifests.len(), 1);
    let parts = partitions(&store).await.unwrap();
    let rows = |d: Dataset| {
        parts
            .iter()
            .filter(|p| p.dataset == d)
            .map(|p| p.rows)
            .sum::<u64>()
    };
    assert_eq!(rows(Dataset::Predictions), 400);
    assert_eq!(rows(Dataset::RawEvents), 400);
    assert_eq!(
        rows(Dataset::StationStatus),
        env.iter().filter_map(CuratedStatus::from_envelope).count() as u64
    );
    // Partitions are hours of event time: 400 predictions 5 minutes apart span 34 hours.
    assert_eq!(
        parts
            .iter()
            .filter(|p| p.dataset == Dataset::Predictions)
            .count(),
        34
    );
}

#[tokio::test]
async fn writers_do_not_touch_each_others_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        open_store(&LakeConfig::default(), dir.path()).unwrap();
    let p = EpochWriter::new(store.clone(), "processor");
    let a = EpochWriter::new(store.clone(), "archive");
    p.commit(5, staging_of(&[], &predictions(10)))
        .await
        .unwrap();
    a.commit(9, staging_of(&envelopes(10), &[])).await.unwrap();
    // The archiver restarts from 0: its epoch 9 goes, the processor's epoch 5 stays.
    a.recover(0).await.unwrap();
    assert_eq!(read_dataset::<Prediction>(&store).await.unwrap().len(), 10);
    assert!(read_dataset::<Envelope>(&store).await.unwrap().is_empty());
}

/// The lake's files are compact: every column chunk zstd-compressed, the repetitive string
/// columns dictionary-encoded, and the file well under what Snappy alone made of the same rows.
#[test]
fn files_are_zstd_with_dictionaries_and_smaller_than_snappy() {
    use parquet::basic::{Compression, Encoding};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let rows = predictions(20_000);
    let bytes = encode_parquet(&rows).unwrap();
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 20_000);
    for rg in meta.row_groups() {
        for c in rg.columns() {
            assert!(
                matches!(c.compression(), Compression::ZSTD(_)),
                "{}: {:?}",
                c.column_path(),
                c.compression()
            );
            let name = c.column_path().string();
            if ["system_id", "model_name", "trigger", "scored_by"].contains(&name.as_str()) {
                assert!(
                    c.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
                    "{name}: {:?}",
                    c.encodings().collect::<Vec<_>>()
                );
            }
        }
    }
    // The same rows with the former writer settings (Snappy, nothing else set).
    let batch = Prediction::encode(&rows).unwrap();
    let mut snappy = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut snappy, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let per_row = |n: usize| n as f64 / rows.len() as f64;
    eprintln!(
        "predictions: {:.1} B/row zstd, {:.1} B/row snappy",
        per_row(bytes.len()),
        per_row(snappy.len())
    );
    assert!(
        bytes.len() * 10 <= snappy.len() * 8,
        "zstd {} B vs snappy {} B",
        bytes.len(),
        snappy.len()
    );
}
