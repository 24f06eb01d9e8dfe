//! Hot swap mid-stream: the processor runs over a real embedded stream, a new version is
//! promoted in the registry while it runs, and the watcher swaps the scorer. No event is
//! dropped or scored twice, and every prediction after the swap names the new version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::registry_support;
use registry_support as support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bikeshare_embedded::EmbeddedStream;
use bikeshare_models::hotswap::ProductionWatcher;
use bikeshare_models::registry::Registry;
use bikeshare_models::registry::local::LocalRegistry;
use bikeshare_runner::{Runner, RunnerConfig};
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::checkpoint::LocalCheckpointStore;
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_stream_processor::{BaselineScorer, Processor, ProcessorConfig, Scorer};
use bikeshare_testkit::envelopes::status_envelope;
use bikeshare_types::time::ManualClock;
use bikeshare_types::{SharedClock, Timestamp};
use tokio::sync::watch;

const T0: i64 = 1_790_000_000_000;

/// Reports of 4 stations, one a minute each, for `minutes` minutes starting at `from`.
fn records(from: i64, minutes: i64) -> Vec<PutRecord> {
    let mut out = Vec::new();
    for m in from..from + minutes {
        for (k, s) in ["a", "b", "c", "d"].iter().enumerate() {
            let bikes = (((m * 7 + k as i64 * 3) % 13) as u32).min(12);
            out.push(PutRecord::new(
                "city",
                status_envelope(
                    "city",
                    "test",
                    s,
                    T0 + m * 60_000 + k as i64 * 1000,
                    bikes,
                    12 - bikes,
                )
                .encode(),
            ));
        }
    }
    out
}

fn processor() -> Processor {
    Processor::new(ProcessorConfig {
        lateness_ms: 0,
        ..ProcessorConfig::default()
    })
}

fn runner(
    stream: &EmbeddedStream,
    sinks: &MemorySinks,
    checkpoints: &std::path::Path,
    scorer: watch::Receiver<Arc<dyn Scorer>>,
    stop_when_caught_up: bool,
) -> Runner {
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(T0)));
    Runner::new(
        Arc::new(stream.clone()),
        Arc::new(sinks.clone()),
        Arc::new(LocalCheckpointStore::new(checkpoints)),
        scorer,
        clock,
        processor(),
        RunnerConfig {
            stop_when_caught_up,
            idle_wait: Duration::from_millis(5),
            ..RunnerConfig::default()
        },
    )
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_mid_stream_drops_nothing_and_names_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let schema = processor().schema().clone();
    let (first, second) = (records(0, 90), records(90, 90));

    // Reference: the whole stream straight through with one scorer.
    let reference_stream = EmbeddedStream::open(dir.path().join("ref.db"), "events", 2)
        .await
        .unwrap();
    reference_stream.put_records(&first).await.unwrap();
    reference_stream.put_records(&second).await.unwrap();
    let reference = MemorySinks::new();
    let baseline: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let (_tx, rx) = watch::channel(baseline);
    runner(
        &reference_stream,
        &reference,
        &dir.path().join("ref-cp"),
        rx,
        true,
    )
    .run(std::future::pending())
    .await
    .unwrap();

    // The registry with v1 in production.
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(T0)));
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(
        dir.path().join("registry"),
        "stockout",
        clock,
    ));
    let bikes = schema.index("bikes").unwrap();
    let n = schema.len();
    // v1's probabilities are sigmoid(±1), v2's sigmoid(±2): each prediction shows its model.
    for (label, leaf) in [("v1", 1.0), ("v2", 2.0)] {
        let m = support::stumps_model(n, &[(bikes, 3.0, leaf, -leaf)]);
        support::write_model_dir(&dir.path().join(label), &schema.id().0, &m, &m, label);
    }
    support::register_in_production(registry.as_ref(), &dir.path().join("v1")).await;
    let watcher = ProductionWatcher {
        registry: registry.clone(),
        schema: schema.clone(),
        cache: dir.path().join("cache"),
        interval: Duration::from_millis(20),
    };
    let (_, scorer) = watcher.load_current().await.unwrap().unwrap();
    let (tx, rx) = watch::channel(Arc::new(scorer) as Arc<dyn Scorer>);
    let mut observer = tx.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let watching = tokio::spawn(watcher.clone().run(tx, stopped(stop_rx.clone())));

    // First half through v1.
    let stream = EmbeddedStream::open(dir.path().join("live.db"), "events", 2)
        .await
        .unwrap();
    stream.put_records(&first).await.unwrap();
    let sinks = MemorySinks::new();
    let live = runner(&stream, &sinks, &dir.path().join("live-cp"), rx, false);
    let stats = live.stats();
    let running = tokio::spawn(live.run(stopped(stop_rx.clone())));
    wait_for("the first half", || {
        stats.records.load(Ordering::Relaxed) == first.len() as u64
    })
    .await;
    let before_swap = sinks.predictions.lock().unwrap().len();

    // Promote v2 while the processor runs; the watcher swaps it in.
    support::register_in_production(registry.as_ref(), &dir.path().join("v2")).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        observer.wait_for(|s| s.model().version == "2"),
    )
    .await
    .expect("the watcher swapped within 10 s")
    .unwrap();

    // Second half through v2.
    stream.put_records(&second).await.unwrap();
    wait_for("the second half", || {
        stats.records.load(Ordering::Relaxed) == (first.len() + second.len()) as u64
    })
    .await;
    stop_tx.send(true).unwrap();
    running.await.unwrap().unwrap();
    watching.await.unwrap();

    let got = sinks.predictions.lock().unwrap().clone();
    let want = reference.predictions.lock().unwrap().clone();
    let ids = |p: &[bikeshare_types::contracts::Prediction]| {
        p.iter()
            .map(|p| p.prediction_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&got),
        ids(&want),
        "the same predictions, in the same order, as a run without a swap"
    );
    assert!(before_swap > 0 && before_swap < got.len());
    let versions: Vec<&str> = got.iter().map(|p| p.model.version.as_str()).collect();
    assert!(
        versions[..before_swap].iter().all(|v| *v == "1"),
        "before the swap: v1"
    );
    assert!(
        versions[before_swap..].iter().all(|v| *v == "2"),
        "after the swap: v2"
    );
    assert!(got.iter().all(|p| p.model.name == "stockout"));
    // The numbers are the named model's.
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let near =
        |p: f32, leaf: f32| (p - sigmoid(leaf)).abs() < 1e-6 || (p - sigmoid(-leaf)).abs() < 1e-6;
    assert!(got[..before_swap].iter().all(|p| near(p.p_empty, 1.0)));
    assert!(got[before_swap..].iter().all(|p| near(p.p_empty, 2.0)));
}

#[tokio::test]
async fn a_version_that_does_not_load_leaves_the_current_scorer() {
    let dir = tempfile::tempdir().unwrap();
    let schema = processor().schema().clone();
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(T0)));
    let registry: Arc<dyn Registry> =
        Arc::new(LocalRegistry::new(dir.path().join("registry"), "m", clock));
    let m = support::stumps_model(schema.len(), &[(0, 1.0, 1.0, -1.0)]);
    support::write_model_dir(&dir.path().join("bad"), "fs1-another-schema", &m, &m, "bad");
    let v = support::register_in_production(registry.as_ref(), &dir.path().join("bad")).await;
    let watcher = ProductionWatcher {
        registry,
        schema: schema.clone(),
        cache: dir.path().join("cache"),
        interval: Duration::from_millis(10),
    };
    let baseline: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let (tx, rx) = watch::channel(baseline);
    let mut failed = None;
    assert_eq!(watcher.poll_once(&tx, &mut failed).await, None);
    assert_eq!(failed, Some(v.version));
    assert_eq!(rx.borrow().model().name, BaselineScorer::NAME);
    let err = watcher.load_current().await.unwrap_err();
    assert!(err.to_string().contains("feature schema"), "{err}");
}
