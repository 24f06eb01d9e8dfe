//! Model Monitor's files through the processor's lake sink: the capture is sampled by
//! prediction id, and `catalog::monitor_partitions` (what `bikeshare lake ls` prints) lists
//! every captured line and every ground-truth line with its hour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bikeshare_lake::catalog::{MonitorTree, monitor_partitions};
use bikeshare_lake::model_monitor::{ModelMonitorConfig, Target};
use bikeshare_lake::sinks::{LakeOutputs, LakeSinks};
use bikeshare_lake::{LakeConfig, open_store};
use bikeshare_stream::sink::{ShardOutputs, Sinks};
use bikeshare_testkit::envelopes;
use bikeshare_types::contracts::{FeatureSchemaId, FeatureVector, Label, Prediction};
use bikeshare_types::{StationId, SystemId, Timestamp};

const T0: i64 = 1_772_431_200_000; // 2026-03-02T06:00:00Z

/// `n` predictions with their feature rows and labels through the lake's sink, Model
/// Monitor sampling `percent`: as the runner hands them over (one shard's outputs at a
/// time, committed), or with `one_kind_at_a_time` through the single-kind methods (flushed).
fn run(
    percent: u8,
    n: u32,
    one_kind_at_a_time: bool,
) -> (
    Vec<Prediction>,
    Vec<bikeshare_lake::catalog::MonitorPartitionSummary>,
) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = open_store(&LakeConfig::default(), dir.path()).unwrap();
        let config = ModelMonitorConfig {
            sampling_percentage: percent,
            ..ModelMonitorConfig::default()
        };
        let sinks = LakeSinks::new(
            store.clone(),
            "processor",
            LakeOutputs {
                features: true,
                dead_letters: false,
            },
        )
        .with_model_monitor(config.clone());
        let mut preds = Vec::new();
        // Stations report every minute for two hours: predictions in hours 06 and 07.
        for i in 0..n {
            let as_of = Timestamp(T0 + i64::from(i) * 60_000 / 8);
            let station = format!("st-{}", i % 8);
            let p = envelopes::prediction("demo", &station, as_of, 0.25, 0.5);
            let label: Label = envelopes::label(&p, 3);
            let outputs = ShardOutputs {
                features: vec![FeatureVector {
                    system_id: SystemId::new("demo"),
                    station_id: StationId::new(station),
                    as_of,
                    schema_id: FeatureSchemaId("fs".into()),
                    values: vec![Some(1.0), None, Some(0.5)],
                }],
                predictions: vec![p.clone()],
                labels: vec![label],
                ..ShardOutputs::default()
            };
            if one_kind_at_a_time {
                sinks.features(outputs.features).await.unwrap();
                sinks.predictions(outputs.predictions).await.unwrap();
                sinks.labels(outputs.labels).await.unwrap();
            } else {
                sinks.shard_outputs("shardId-0", outputs).await.unwrap();
            }
            preds.push(p);
        }
        if one_kind_at_a_time {
            sinks.flush().await.unwrap();
        } else {
            sinks.commit(&[("shardId-0".to_owned(), 1)]).await.unwrap();
        }
        let listed = monitor_partitions(&store, &config).await.unwrap();
        (preds, listed)
    })
}

fn rows(listed: &[bikeshare_lake::catalog::MonitorPartitionSummary], tree: MonitorTree) -> u64 {
    listed
        .iter()
        .filter(|p| p.tree == tree)
        .map(|p| p.rows)
        .sum()
}

#[test]
fn lake_ls_lists_the_sampled_capture_and_its_ground_truth() {
    let n = 960;
    let (preds, listed) = run(100, n, false);
    assert_eq!(preds.len(), n as usize);
    for tree in MonitorTree::ALL {
        assert_eq!(rows(&listed, tree), u64::from(n), "{tree}");
    }
    let hours: Vec<u32> = listed
        .iter()
        .filter(|p| p.tree == MonitorTree::DataCapture)
        .map(|p| p.hour.hour)
        .collect();
    assert_eq!(hours, [6, 7]);
    assert!(listed.iter().all(|p| p.files == 1 && p.bytes > 0));

    let config = ModelMonitorConfig {
        sampling_percentage: 10,
        ..ModelMonitorConfig::default()
    };
    let sampled = preds
        .iter()
        .filter(|p| config.samples(p.prediction_id.as_str()))
        .count() as u64;
    assert!((48..=144).contains(&sampled), "{sampled} of {n}");
    let (_, listed) = run(10, n, false);
    assert_eq!(rows(&listed, MonitorTree::DataCapture), sampled);
    assert_eq!(
        rows(&listed, MonitorTree::GroundTruth(Target::Empty)),
        sampled
    );
    assert_eq!(
        rows(&listed, MonitorTree::GroundTruth(Target::Full)),
        sampled
    );

    let (_, listed) = run(0, n, false);
    assert!(listed.is_empty(), "{listed:?}");
}

/// Feature rows, predictions and labels handed to the lake one kind per call (the sink
/// trait's single-kind methods, what a wrapper without `shard_outputs` sends) are captured
/// as when they come together: an empty kind must not drop the feature rows waiting for
/// their predictions.
#[test]
fn the_capture_is_the_same_when_each_kind_comes_alone() {
    let n = 240;
    let (_, together) = run(100, n, false);
    let (_, alone) = run(100, n, true);
    for tree in MonitorTree::ALL {
        assert_eq!(rows(&together, tree), u64::from(n), "{tree}");
        assert_eq!(
            rows(&alone, tree),
            u64::from(n),
            "{tree}, one kind at a time"
        );
    }
}

/// Every capture line in the lake: (inference id, output `p_empty,p_full`), sorted.
async fn captured(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    config: &ModelMonitorConfig,
) -> Vec<(String, String)> {
    use futures::TryStreamExt;
    let root = object_store::path::Path::from(config.capture_root());
    let metas: Vec<_> = store.list(Some(&root)).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push((
                v["eventMetadata"]["inferenceId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                v["captureData"]["endpointOutput"]["data"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// The update trigger's correction comes about two minutes after its early row, while epochs
/// close every 10 s: the two rows of an id land in different epochs, and a restore from the
/// checkpoint between them emits the correction again. The capture holds each id once, its
/// first revision (what was served when the prediction was asked for; decision 087).
#[tokio::test]
async fn a_prediction_corrected_in_a_later_epoch_is_captured_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&LakeConfig::default(), dir.path()).unwrap();
    let config = ModelMonitorConfig {
        sampling_percentage: 100,
        ..ModelMonitorConfig::default()
    };
    let writer = |name: &str| {
        LakeSinks::new(
            store.clone(),
            name,
            LakeOutputs {
                features: false,
                dead_letters: false,
            },
        )
        .with_model_monitor(config.clone())
    };
    let shard = "shardId-0";
    let early = envelopes::prediction("demo", "st-1", Timestamp(T0), 0.25, 0.5);
    let corrected = Prediction {
        revision: 1,
        p_empty: 0.75,
        ..early.clone()
    };
    let features = FeatureVector {
        system_id: SystemId::new("demo"),
        station_id: StationId::new("st-1"),
        as_of: Timestamp(T0),
        schema_id: FeatureSchemaId("fs".into()),
        values: vec![Some(1.0)],
    };
    let emit = async |s: &LakeSinks, p: &Prediction| {
        let outputs = ShardOutputs {
            features: vec![features.clone()],
            predictions: vec![p.clone()],
            ..ShardOutputs::default()
        };
        s.shard_outputs(shard, outputs).await.unwrap();
    };
    let a = writer("processor-a");
    a.open_shard(shard, 0).await.unwrap();
    emit(&a, &early).await;
    a.commit(&[(shard.to_owned(), 1)]).await.unwrap();
    emit(&a, &corrected).await;
    a.commit(&[(shard.to_owned(), 2)]).await.unwrap();
    let id = early.prediction_id.as_str().to_owned();
    let once = vec![(id.clone(), "0.25,0.5".to_owned())];
    assert_eq!(captured(&store, &config).await, once);

    // Killed before checkpoint 2 was stored: b resumes from 1 and emits the correction again.
    drop(a);
    let b = writer("processor-b");
    b.open_shard(shard, 1).await.unwrap();
    emit(&b, &corrected).await;
    b.commit(&[(shard.to_owned(), 2)]).await.unwrap();
    assert_eq!(captured(&store, &config).await, once);
}
