//! Lease renewal does not depend on the processing runtime (issue 14, leftover 2; decision
//! 084): a runner on a single-threaded runtime whose one worker a processing step keeps busy
//! (a sink that blocks the thread) for three lease durations keeps its shards. With the
//! renewer on a task of that runtime, the lease lapsed during the step and the runner gave
//! its shards up as soon as the step ended.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, ReshardableStream, city};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bikeshare_runner::RunnerConfig;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::checkpoint::MemoryCheckpointStore;
use bikeshare_stream::lease::MemoryLeaseStore;
use bikeshare_stream::sink::{SinkError, Sinks};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};

/// 1.5 s leases: renewed every 500 ms, held here until 1,125 ms after a renewal was sent.
const LEASE: Duration = Duration::from_millis(1_500);

type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Memory sinks whose first predictions block the calling thread (a long synchronous
/// step: the runtime's only worker is busy, nothing else of that runtime runs).
#[derive(Debug, Clone)]
struct BusySinks {
    inner: MemorySinks,
    busy: Duration,
    done: Arc<AtomicBool>,
}

impl Sinks for BusySinks {
    fn features<'a, 'b>(&'a self, rows: Vec<FeatureVector>) -> SinkFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.features(rows)
    }
    fn predictions<'a, 'b>(&'a self, p: Vec<Prediction>) -> SinkFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        if !self.done.swap(true, Ordering::SeqCst) {
            std::thread::sleep(self.busy);
        }
        self.inner.predictions(p)
    }
    fn labels<'a, 'b>(&'a self, l: Vec<Label>) -> SinkFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.labels(l)
    }
    fn dead_letters<'a, 'b>(&'a self, d: Vec<DeadLetter>) -> SinkFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.dead_letters(d)
    }
    fn flush<'a, 'b>(&'a self) -> SinkFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.flush()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_runner_whose_runtime_is_kept_busy_still_renews_its_leases() {
    support::logs();
    let systems: Vec<String> = (0..4).map(|i| format!("city-{i}")).collect();
    let stream = ReshardableStream::new(2);
    stream.put(&city(&systems, 60));
    let sinks = BusySinks {
        inner: MemorySinks::new(),
        busy: LEASE * 3,
        done: Arc::new(AtomicBool::new(false)),
    };
    let runner = support::runner(
        "busy",
        Arc::new(stream),
        Arc::new(sinks.clone()),
        Arc::new(MemoryCheckpointStore::default()),
        Arc::new(MemoryLeaseStore::default()),
        LEASE,
        RunnerConfig {
            batch: 40,
            stop_when_caught_up: true,
            checkpoint_interval: Duration::from_millis(100),
            idle_wait: Duration::from_millis(5),
            ..RunnerConfig::default()
        },
    );
    let stats = runner.stats();
    runner.run(std::future::pending()).await.unwrap();
    assert!(sinks.done.load(Ordering::SeqCst), "the busy step ran");
    assert_eq!(
        stats.shards_lost.load(Ordering::Relaxed),
        0,
        "a shard was given up: its lease lapsed while the runtime was busy"
    );
    assert_eq!(
        stats.lease_changes.load(Ordering::Relaxed),
        2,
        "the two leases were taken once and kept"
    );
    assert!(!support::predictions(&sinks.inner).is_empty());
}
