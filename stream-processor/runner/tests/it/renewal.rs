//! Lease renewal does not depend on the processing runtime (issue 14, leftover 2; decision
//! 084): a runner on a single-threaded runtime whose one worker a processing step keeps busy
//! (a sink that blocks the thread) for longer than a lease lasts keeps its shards. With the
//! renewer on a task of that runtime, the lease lapsed during the step and the runner gave
//! its shards up as soon as the step ended. And taking does not wait for processing either
//! (decision 088).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, ReshardableStream, StallingSinks, by_id, city, prediction_key};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bikeshare_runner::RunnerConfig;
use bikeshare_stream::ShardId;
use bikeshare_stream::lease::{Lease, LeaseConfig, LeaseCoordinator};
use bikeshare_types::time::SystemClock;

/// 3 s leases: renewed (and free ones taken) every second, held here until 2.25 s after a
/// renewal was sent, so a renewal may start 1.25 s late on a shared, busy machine.
const LEASE: Duration = Duration::from_secs(3);

/// How long a step blocks: longer than a lease lasts (one and a half leases).
const BLOCKED: Duration = Duration::from_millis(4_500);

#[tokio::test(flavor = "current_thread")]
async fn a_runner_whose_runtime_is_kept_busy_still_renews_its_leases() {
    support::logs();
    let systems: Vec<String> = (0..4).map(|i| format!("city-{i}")).collect();
    let stream = ReshardableStream::new(2);
    stream.put(&city(&systems, 60));
    // The first predictions block the runtime's only worker for longer than a lease lasts.
    let sinks = StallingSinks::blocking(BLOCKED);
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
    support::run_to_end("the busy runner", runner).await;
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

/// Taking does not wait for processing (decision 088): a runner whose processing step is
/// blocked (a sink write that hangs for two lease durations) still takes a lease freed
/// meanwhile, within a few take rounds, and once the step ends reads that shard too: its
/// outputs are the reference's. With the take round on the runner's loop, nothing was taken
/// until the step ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_blocked_in_a_step_still_takes_a_freed_lease() {
    support::logs();
    let systems: Vec<String> = (0..4).map(|i| format!("city-{i}")).collect();
    let stream = ReshardableStream::new(2);
    stream.put(&city(&systems, 60));
    let shards: Vec<ShardId> = stream.open_shards().into_iter().map(|d| d.id).collect();
    let config = RunnerConfig {
        batch: 40,
        stop_when_caught_up: true,
        checkpoint_interval: Duration::from_millis(100),
        idle_wait: Duration::from_millis(5),
        ..RunnerConfig::default()
    };
    let reference = support::reference_run(Arc::new(stream.clone()), LEASE, config.clone()).await;

    // b holds both shards; a, arriving, steals one (its share) and blocks in its first write.
    let shared = support::Shared::in_memory(Arc::new(stream.clone()), LEASE);
    let leases = shared.leases.clone();
    let b = LeaseCoordinator::new(
        leases.clone(),
        LeaseConfig {
            owner: "b".into(),
            duration: LEASE,
        },
    );
    b.ensure_leases(&shards).await.unwrap();
    assert_eq!(b.acquire(support::now()).await.unwrap().len(), 2);
    let b_renewer = b.spawn_renewer(Arc::new(SystemClock));
    let stall = LEASE * 2;
    let sinks = StallingSinks::new(Some(stall), false);
    let a = shared.runner("a", Arc::new(sinks.clone()), config);
    let stats = a.stats();
    let run = tokio::spawn(a.run(std::future::pending()));
    support::until("a's step blocks", || sinks.stalled.load(Ordering::SeqCst)).await;
    let blocked_at = Instant::now();

    // b stops and frees the shard it kept: a takes it while its step is still blocked.
    drop(b_renewer);
    b.release().await.unwrap();
    let owned_by_a = |leases: &[Lease]| {
        leases.len() == 2 && leases.iter().all(|l| l.owner.as_deref() == Some("a"))
    };
    loop {
        if owned_by_a(&leases.list().await.unwrap()) {
            break;
        }
        assert!(
            blocked_at.elapsed() < stall / 2,
            "a took no freed lease within {:?} of its step blocking: {:?}",
            stall / 2,
            leases.list().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        blocked_at.elapsed() < stall,
        "the step had ended: this take proves nothing"
    );

    tokio::time::timeout(stall + Duration::from_secs(60), run)
        .await
        .expect("a did not stop within a minute of its step ending")
        .unwrap()
        .unwrap();
    assert_eq!(stats.shards_lost.load(Ordering::Relaxed), 0);
    let out = support::predictions(&sinks.inner);
    assert!(
        by_id(&out, prediction_key) == by_id(&support::predictions(&reference), prediction_key),
        "a's outputs differ from the reference's"
    );
}
