//! Lease renewal does not depend on the processing runtime (issue 14, leftover 2; decision
//! 084): a runner on a single-threaded runtime whose one worker a processing step keeps busy
//! (a sink that blocks the thread) for three lease durations keeps its shards. With the
//! renewer on a task of that runtime, the lease lapsed during the step and the runner gave
//! its shards up as soon as the step ended.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, ReshardableStream, StallingSinks, city};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bikeshare_runner::RunnerConfig;

/// 1.5 s leases: renewed every 500 ms, held here until 1,125 ms after a renewal was sent.
const LEASE: Duration = Duration::from_millis(1_500);

#[tokio::test(flavor = "current_thread")]
async fn a_runner_whose_runtime_is_kept_busy_still_renews_its_leases() {
    support::logs();
    let systems: Vec<String> = (0..4).map(|i| format!("city-{i}")).collect();
    let stream = ReshardableStream::new(2);
    stream.put(&city(&systems, 60));
    // The first predictions block the runtime's only worker for three lease durations.
    let sinks = StallingSinks::blocking(LEASE * 3);
    let runner = support::alone(
        "busy",
        Arc::new(stream),
        Arc::new(sinks.clone()),
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
    assert!(sinks.stalled.load(Ordering::SeqCst), "the busy step ran");
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
