//! Endpoint outage: the processor scores through `bikeshare serve-model` (the real binary,
//! reached with the real SageMaker runtime client); the server is SIGKILLed mid-run and
//! started again later. The pipeline keeps flowing on the in-process fallback while it is
//! down, goes back to the endpoint once it returns, and loses nothing: the predictions are
//! exactly those of an uninterrupted run, each marked with the model that scored it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, TestEnv};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bikeshare_embedded::EmbeddedStream;
use bikeshare_models::endpoint::{EndpointConfig, Fallback, SageMakerPredictor};
use bikeshare_runner::{Runner, RunnerConfig, RunnerStats};
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::checkpoint::LocalCheckpointStore;
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_stream_processor::{BaselineScorer, Processor, ProcessorConfig, Scorer};
use bikeshare_types::contracts::{Envelope, Prediction, ScoredBy};
use bikeshare_types::retry::Backoff;
use bikeshare_types::{SharedClock, SystemClock};
use tokio::sync::watch;

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn new_runner(
    stream: EmbeddedStream,
    sinks: &MemorySinks,
    checkpoints: &Path,
    scorer: Arc<dyn Scorer>,
    stop_when_caught_up: bool,
) -> (Runner, watch::Sender<Arc<dyn Scorer>>) {
    let (tx, rx) = watch::channel(scorer);
    let clock: SharedClock = Arc::new(SystemClock);
    let runner = Runner::new(
        Arc::new(stream),
        Arc::new(sinks.clone()),
        Arc::new(LocalCheckpointStore::new(checkpoints)),
        rx,
        clock,
        Processor::new(ProcessorConfig::default()),
        RunnerConfig {
            batch: 20,
            idle_wait: Duration::from_millis(20),
            stop_when_caught_up,
            ..RunnerConfig::default()
        },
    );
    (runner, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_endpoint_falls_back_without_losing_events_and_recovers() {
    let history =
        support::History::simulate(40, 11, "2026-04-07T06:00:00Z", "2026-04-07T09:00:00Z");
    let dir = history.dir();
    let records: Vec<PutRecord> = std::fs::read_to_string(history.file())
        .unwrap()
        .lines()
        .map(|l| {
            let env = Envelope::decode(l.as_bytes()).unwrap();
            PutRecord::new(env.system_id.as_str(), env.encode())
        })
        .collect();
    assert!(records.len() > 300, "{}", records.len());
    let thirds = [
        &records[..records.len() / 3],
        &records[records.len() / 3..2 * records.len() / 3],
        &records[2 * records.len() / 3..],
    ];

    // The model the endpoint serves, for the processor's schema.
    let model_dir = dir.join("model");
    let schema = support::synthetic_model(&model_dir, "3", 30, 5);
    let model = bikeshare_models::model_dir::load(&model_dir, &schema).unwrap();
    let addr = free_port();
    // Returns once it answers /ping (a blocking wait; this worker's other tasks move on).
    let mut server = tokio::task::block_in_place(|| support::serve_model(dir, &model_dir, addr));

    // The processor, scoring through the endpoint; the in-process baseline is its fallback.
    let stream = EmbeddedStream::open(dir.join("s.db"), "events", 1)
        .await
        .unwrap();
    let sinks = MemorySinks::new();
    let baseline: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let (runner, _scorer_tx) = new_runner(
        stream.clone(),
        &sinks,
        &dir.join("cp"),
        baseline.clone(),
        false,
    );
    let url = format!("http://{addr}");
    let sdk = bikeshare_runtime::aws::emulator_sdk_config(&url).await;
    let predictor = Arc::new(SageMakerPredictor::new(
        &sdk,
        EndpointConfig {
            endpoint_url: Some(url),
            timeout_ms: 1000,
            retry: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
                max_retries: Some(1),
            },
            breaker_failures: 2,
            breaker_open_ms: 200,
            fallback: Fallback::InProcess,
            ..EndpointConfig::default()
        },
        schema.id().clone(),
    ));
    let endpoint_stats = predictor.stats();
    let runner = runner.with_predictor(predictor);
    let stats: Arc<RunnerStats> = runner.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(runner.run(async {
        let _ = stop_rx.await;
    }));
    let read = |n: usize| {
        let stats = stats.clone();
        move || stats.records.load(Ordering::Relaxed) as usize >= n
    };
    let scored_by = |from: usize| -> BTreeMap<ScoredBy, usize> {
        let mut m = BTreeMap::new();
        for p in sinks.predictions.lock().unwrap()[from..].iter() {
            *m.entry(p.scored_by).or_insert(0) += 1;
        }
        m
    };

    // 1. Up: scored by the endpoint.
    stream.put_records(thirds[0]).await.unwrap();
    wait_until("first third read", read(thirds[0].len())).await;
    let after_up = sinks.predictions.lock().unwrap().len();
    assert!(after_up > 0);
    assert_eq!(
        scored_by(0).keys().copied().collect::<Vec<_>>(),
        [ScoredBy::Endpoint]
    );

    // 2. SIGKILL the server: the pipeline keeps flowing on the fallback.
    server.kill().unwrap();
    server.wait().unwrap();
    stream.put_records(thirds[1]).await.unwrap();
    wait_until("second third read", read(thirds[0].len() + thirds[1].len())).await;
    let after_down = sinks.predictions.lock().unwrap().len();
    let down = scored_by(after_up);
    assert!(after_down > after_up);
    assert_eq!(
        down.keys().copied().collect::<Vec<_>>(),
        [ScoredBy::Fallback],
        "{down:?}"
    );
    assert!(endpoint_stats.circuit_opened.load(Ordering::Relaxed) >= 1);

    // 3. The endpoint returns: after the open period the probe succeeds and the endpoint
    //    scores again.
    // Returns once it answers /ping (a blocking wait; this worker's other tasks move on).
    let mut server = tokio::task::block_in_place(|| support::serve_model(dir, &model_dir, addr));
    tokio::time::sleep(Duration::from_millis(250)).await;
    stream.put_records(thirds[2]).await.unwrap();
    wait_until("everything read", read(records.len())).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the runner did not stop within 120 s of being told to")
        .unwrap()
        .unwrap();
    server.kill().unwrap();
    let _ = server.wait();
    let back = scored_by(after_down);
    assert!(
        back.get(&ScoredBy::Endpoint).copied().unwrap_or(0) > 0,
        "{back:?}"
    );
    let predictions: Vec<Prediction> = sinks.predictions.lock().unwrap().clone();
    let last = predictions.last().unwrap();
    assert_eq!(last.scored_by, ScoredBy::Endpoint, "recovered for good");

    // Nothing lost, nothing doubled: the same predictions (ids) and labels as an
    // uninterrupted in-process run over the same events.
    let reference_stream = EmbeddedStream::open(dir.join("ref.db"), "events", 1)
        .await
        .unwrap();
    reference_stream.put_records(&records).await.unwrap();
    let reference = MemorySinks::new();
    let (r, _tx) = new_runner(
        reference_stream,
        &reference,
        &dir.join("cp-ref"),
        baseline.clone(),
        true,
    );
    tokio::time::timeout(Duration::from_secs(120), r.run(std::future::pending()))
        .await
        .expect("the reference run did not catch up within 120 s")
        .unwrap();
    let ids = |ps: &[Prediction]| {
        ps.iter()
            .map(|p| p.prediction_id.clone())
            .collect::<Vec<_>>()
    };
    let expected = reference.predictions.lock().unwrap().clone();
    assert_eq!(ids(&predictions), ids(&expected));
    assert_eq!(
        sinks.labels.lock().unwrap().len(),
        reference.labels.lock().unwrap().len()
    );
    assert!(sinks.dead_letters.lock().unwrap().is_empty());

    // Each prediction is the scoring model's own: the endpoint's equal the served model's
    // in-process scores to the bit; the fallback's the baseline's; each names its model.
    let features = sinks.features.lock().unwrap().clone();
    assert_eq!(features.len(), predictions.len());
    for (p, f) in predictions.iter().zip(&features) {
        let (scorer, name): (&dyn Scorer, &str) = match p.scored_by {
            ScoredBy::Endpoint => (&model, "synthetic"),
            ScoredBy::Fallback => (baseline.as_ref(), BaselineScorer::NAME),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(p.model.name, name);
        let s = scorer.score(&f.values);
        assert_eq!(
            (p.p_empty.to_bits(), p.p_full.to_bits()),
            (s.p_empty.to_bits(), s.p_full.to_bits())
        );
    }
}

/// `bikeshare process` with `[predictor] backend = "sagemaker"` from the environment scores
/// through `bikeshare serve-model`, and the stream says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_scores_through_serve_model_when_configured() {
    let history = support::History::simulate(10, 3, "2026-04-07T06:00:00Z", "2026-04-07T07:00:00Z");
    let model_dir = history.dir().join("model");
    support::synthetic_model(&model_dir, "5", 10, 4);
    let addr = free_port();
    let mut server =
        tokio::task::block_in_place(|| support::serve_model(history.dir(), &model_dir, addr));

    let data = history.replayed("data");
    support::ok(
        support::bikeshare(&data)
            .args(["process", "--until-caught-up"])
            .env("BIKESHARE_PREDICTOR__BACKEND", "sagemaker")
            .env(
                "BIKESHARE_PREDICTOR__SAGEMAKER__ENDPOINT_URL",
                format!("http://{addr}"),
            )
            .emulator_credentials(),
    );
    server.kill().unwrap();
    let _ = server.wait();
    let predictions = support::stream_records(&data, "predictions");
    assert!(!predictions.is_empty());
    for p in &predictions {
        assert_eq!(p["scored_by"], "endpoint", "{p}");
        assert_eq!(p["model"]["name"], "synthetic");
        assert_eq!(p["model"]["version"], "5");
        assert_eq!(p["schema_version"], 3);
    }
}
