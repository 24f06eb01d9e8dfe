//! The lake on S3 (moto server): written by the real epoch writer through `object_store`'s
//! S3 client, it reads back equal to the records written, in the Hive layout Athena projects
//! (`<dataset>/year=YYYY/month=MM/day=DD/hour=HH/<writer>-<epoch>.parquet` under the lake's
//! prefix); an epoch written but never checkpointed is deleted from the bucket on restart and
//! replayed once; and `bikeshare lake ls` configured with `s3://bucket/prefix` counts it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;

use bikeshare_lake::catalog::{partitions, read_dataset};
use bikeshare_lake::layout::{Hour, file_path};
use bikeshare_lake::staging::Staging;
use bikeshare_lake::{CuratedStatus, Dataset, EpochWriter};
use bikeshare_testkit::envelopes;
use bikeshare_types::contracts::{Envelope, Event, Label, Prediction, StationStatus};
use bikeshare_types::{StationId, SystemId, Timestamp};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use support::{TestEnv, bikeshare, emulator, ok};

const T0: i64 = 1_772_431_200_000; // 2026-03-02T06:00:00Z
const PREFIX: &str = "env/lake";

fn t(minutes: i64) -> Timestamp {
    Timestamp(T0).plus_minutes(minutes)
}

fn envelopes(n: u32) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            let m = i64::from(i) * 4;
            let s = StationStatus {
                station_id: StationId::new(format!("st-{}", i % 5)),
                num_bikes_available: i % 4,
                num_ebikes_available: None,
                num_bikes_disabled: Some(0),
                num_docks_available: Some(8 - i % 4),
                num_docks_disabled: None,
                is_installed: true,
                is_renting: true,
                is_returning: true,
                last_reported: t(m),
                vehicle_types_available: vec![],
            };
            Envelope::new(
                SystemId::new("demo"),
                "simulator",
                t(m),
                t(m + 1),
                Event::StationStatus(s),
            )
        })
        .collect()
}

fn predictions(n: u32) -> Vec<Prediction> {
    (0..n)
        .map(|i| {
            let station = format!("st-{}", i % 5);
            let as_of = t(i64::from(i) * 4);
            envelopes::prediction("demo", &station, as_of, i as f32 / n as f32, 0.25)
        })
        .collect()
}

fn labels(preds: &[Prediction]) -> Vec<Label> {
    preds
        .iter()
        .map(|p| Label {
            went_empty: (p.as_of.0 / 60_000) % 3 == 0,
            ..envelopes::label(p, 2)
        })
        .collect()
}

fn staging(env: &[Envelope], preds: &[Prediction]) -> Staging {
    let mut s = Staging::default();
    for e in env {
        s.push_event(e.clone());
    }
    s.predictions.push(preds.iter().cloned());
    s.labels.push(labels(preds));
    s
}

/// The bucket's keys under the lake's prefix, relative to it.
async fn keys(store: &Arc<dyn ObjectStore>) -> BTreeSet<String> {
    store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort_by_key(|x| key(x));
    v
}

/// Equal as sets of rows (every row once), reporting the first difference only.
fn assert_same_rows<T: Clone + PartialEq + std::fmt::Debug, K: Ord>(
    what: &str,
    got: &[T],
    want: &[T],
    key: impl Fn(&T) -> K + Copy,
) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let (got, want) = (sorted(got, key), sorted(want, key));
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: row {i} differs:\n got {:?}\nwant {:?}",
            got[i], want[i]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_on_s3_reads_back_in_the_athena_layout_and_recovers_unfinished_epochs() {
    let test = "lake_on_s3_reads_back_in_the_athena_layout_and_recovers_unfinished_epochs";
    let Some(moto) = emulator("BIKESHARE_TEST_MOTO_ENDPOINT", test) else {
        return;
    };
    let bucket = format!("bikeshare-lake-{}", std::process::id());
    // moto's S3 takes an unsigned CreateBucket (object_store cannot create buckets).
    let r = reqwest::Client::new()
        .put(format!("{moto}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());

    // The client `open_store` builds for `s3://<bucket>/env/lake` with an endpoint:
    // path-style, plain HTTP to the emulator, the prefix as a PrefixStore.
    let s3 = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_endpoint(&moto)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let bucket_store: Arc<dyn ObjectStore> = Arc::new(s3);
    let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(bucket_store.clone(), PREFIX));

    let env = envelopes(300); // 20 hours, 4 minutes apart
    let preds = predictions(300);
    let w = EpochWriter::new(store.clone(), "processor-0");
    w.recover(0).await.unwrap();
    w.commit(1, staging(&env[..100], &preds[..100]))
        .await
        .unwrap();
    w.commit(2, staging(&env[100..200], &preds[100..200]))
        .await
        .unwrap();
    let committed = keys(&store).await;
    // Epoch 3 reaches rows 200..260, then the process dies before checkpoint 3.
    w.commit(3, staging(&env[200..260], &preds[200..260]))
        .await
        .unwrap();
    let crashed: BTreeSet<String> = keys(&store).await.difference(&committed).cloned().collect();
    assert!(crashed.iter().any(|k| k.ends_with("-000000000003.parquet")));
    assert!(crashed.contains("_epochs/processor-0/epoch-000000000003.json"));

    // Restart from checkpoint 2: epoch 3's files leave the bucket.
    let w = EpochWriter::new(store.clone(), "processor-0");
    let report = w.recover(2).await.unwrap();
    assert_eq!(report.epochs_discarded, 1);
    let after = keys(&store).await;
    assert!(
        after.intersection(&crashed).next().is_none(),
        "left behind: {:?}",
        after.intersection(&crashed).collect::<Vec<_>>()
    );
    let files_of_3 = crashed.iter().filter(|k| k.ends_with(".parquet")).count();
    assert_eq!(report.files_deleted, files_of_3);
    // The replay cuts the epochs differently: 3 is shorter, 4 finishes.
    w.commit(3, staging(&env[200..230], &preds[200..230]))
        .await
        .unwrap();
    w.commit(4, staging(&env[230..], &preds[230..]))
        .await
        .unwrap();

    // Read back: every row exactly once, equal to what was written.
    let got: Vec<Prediction> = read_dataset(&store).await.unwrap();
    let by_id = |p: &Prediction| p.prediction_id.as_str().to_owned();
    assert_same_rows("predictions", &got, &preds, by_id);
    let got: Vec<Envelope> = read_dataset(&store).await.unwrap();
    let by_event = |e: &Envelope| e.event_id.as_str().to_owned();
    assert_same_rows("raw_events", &got, &env, by_event);
    let got: Vec<CuratedStatus> = read_dataset(&store).await.unwrap();
    let want: Vec<CuratedStatus> = env
        .iter()
        .filter_map(CuratedStatus::from_envelope)
        .collect();
    let by_status = |s: &CuratedStatus| s.event_id.as_str().to_owned();
    assert_same_rows("station_status", &got, &want, by_status);
    let got: Vec<Label> = read_dataset(&store).await.unwrap();
    let by_label = |l: &Label| l.prediction_id.as_str().to_owned();
    assert_same_rows("labels", &got, &labels(&preds), by_label);

    // The layout: exactly the files the epochs' rows call for, under the prefix, and only
    // the last manifest.
    let ranges = [(1u64, 0..100), (2, 100..200), (3, 200..230), (4, 230..300)];
    let mut want: BTreeSet<String> = BTreeSet::new();
    for (epoch, range) in ranges {
        for e in &env[range.clone()] {
            let h = Hour::of(e.event_time);
            want.insert(file_path(Dataset::RawEvents, h, "processor-0", epoch));
            want.insert(file_path(Dataset::StationStatus, h, "processor-0", epoch));
        }
        for p in &preds[range] {
            let h = Hour::of(p.as_of);
            want.insert(file_path(Dataset::Predictions, h, "processor-0", epoch));
            want.insert(file_path(Dataset::Labels, h, "processor-0", epoch));
        }
    }
    want.insert("_epochs/processor-0/epoch-000000000004.json".into());
    assert_eq!(keys(&store).await, want);
    let in_bucket: BTreeSet<String> = bucket_store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let prefixed: BTreeSet<String> = want.iter().map(|k| format!("{PREFIX}/{k}")).collect();
    assert_eq!(in_bucket, prefixed, "everything under the lake's prefix");
    assert!(prefixed.contains(&format!(
        "{PREFIX}/predictions/year=2026/month=03/day=02/hour=06/processor-0-000000000001.parquet"
    )));
    let p = bucket_store
        .head(&Path::from(format!(
            "{PREFIX}/predictions/year=2026/month=03/day=03/hour=01/processor-0-000000000004.parquet"
        )))
        .await
        .unwrap();
    assert!(p.size > 0);

    // `bikeshare lake ls` through the configured S3 URL and endpoint (open_store's S3 path).
    let dir = tempfile::tempdir().unwrap();
    let out = ok(bikeshare(dir.path())
        .args(["lake", "ls"])
        .env("BIKESHARE_LAKE__URL", format!("s3://{bucket}/{PREFIX}"))
        .env("BIKESHARE_LAKE__ENDPOINT", &moto)
        .emulator_credentials());
    let parts = partitions(&store).await.unwrap();
    let hours = parts
        .iter()
        .filter(|p| p.dataset == Dataset::Predictions)
        .count();
    assert_eq!(hours, 20);
    assert!(
        out.contains(&format!("predictions: {hours} partitions, ")) && out.contains(" 300 rows"),
        "{out}"
    );
    assert!(out.contains("dead_letters: 0 partitions"), "{out}");
}
