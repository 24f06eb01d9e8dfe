//! Lease fencing (issue 14, split-brain): a runner whose step blocks longer than its lease
//! keeps the shard (renewal runs on its own task), so no second instance emits the same
//! outputs; and a former owner whose shard was claimed by another instance has its
//! checkpoint write refused, drops the shard and emits nothing more for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, StallingSinks, by_id, city, prediction_key, predictions, until};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bikeshare_embedded::EmbeddedStream;
use bikeshare_runner::RunnerConfig;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::checkpoint::Holder;
use bikeshare_stream::{ShardId, StreamReader, StreamWriter};

async fn one_shard_stream(dir: &std::path::Path, minutes: i64) -> Arc<dyn StreamReader> {
    let stream = EmbeddedStream::open(dir.join("s.db"), "events", 1)
        .await
        .unwrap();
    let systems = vec!["city".to_owned()];
    for chunk in city(&systems, minutes).chunks(500) {
        stream.put_records(chunk).await.unwrap();
    }
    Arc::new(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_blocked_longer_than_the_lease_keeps_the_shard_and_nothing_is_emitted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let reader = one_shard_stream(dir.path(), 180).await;
    // Renewed every 400 ms and held for 900 ms after a renewal was sent: a renewal may start
    // 500 ms late on a busy machine before the lease lapses here.
    let lease = Duration::from_millis(1_200);
    let shared = support::Shared::in_memory(reader.clone(), lease);
    let config = RunnerConfig {
        batch: 50,
        checkpoint_interval: Duration::from_millis(50),
        discovery_interval: Duration::from_millis(50),
        idle_wait: Duration::from_millis(10),
        stop_when_caught_up: true,
        ..RunnerConfig::default()
    };

    // The reference: one runner, no stall.
    let reference = support::reference_run(reader.clone(), lease, config.clone()).await;

    // a's first publish stalls for two lease durations; b waits for a free lease meanwhile.
    let a_sinks = StallingSinks::new(Some(lease * 2), false);
    let a = shared.runner("a", Arc::new(a_sinks.clone()), config.clone());
    let a_stats = a.stats();
    let a = tokio::spawn(a.run(std::future::pending()));
    until("a holds the shard", || {
        a_stats.shards_held.load(Ordering::Relaxed) == 1
    })
    .await;
    let b_sinks = MemorySinks::new();
    let b = shared.runner(
        "b",
        Arc::new(b_sinks.clone()),
        RunnerConfig {
            stop_when_caught_up: false,
            ..config
        },
    );
    let b_stats = b.stats();
    let (stop_b, b) = support::spawn_until_stopped(b);
    let a = tokio::time::timeout(Duration::from_secs(60), a).await;
    let _ = stop_b.send(());
    support::joined("b", b).await;
    a.expect("a did not finish within 60 s: it lost the shard to b")
        .unwrap()
        .unwrap();

    assert_eq!(
        a_stats.shards_lost.load(Ordering::Relaxed),
        0,
        "a lost its lease while its step was blocked"
    );
    assert!(
        predictions(&b_sinks).is_empty(),
        "b emitted {} predictions of a shard a was still processing",
        predictions(&b_sinks).len()
    );
    assert_eq!(b_stats.shards_lost.load(Ordering::Relaxed), 0);
    let a_out = predictions(&a_sinks.inner);
    let a_by_id = by_id(&a_out, prediction_key);
    assert_eq!(a_out.len(), a_by_id.len(), "no output twice");
    assert!(
        a_by_id == by_id(&predictions(&reference), prediction_key),
        "a's outputs differ from the reference"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owner_is_fenced_at_its_checkpoint_drops_the_shard_and_emits_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let reader = one_shard_stream(dir.path(), 240).await;
    // A long lease: a's renewer does not notice the take-over before its checkpoint.
    let lease = Duration::from_secs(60);
    let shared = support::Shared::in_memory(reader.clone(), lease);
    let (leases, checkpoints) = (shared.leases.clone(), shared.checkpoints.clone());
    let a_sinks = StallingSinks::new(None, true);
    let a = shared.runner(
        "a",
        Arc::new(a_sinks.clone()),
        RunnerConfig {
            batch: 20,
            checkpoint_interval: Duration::ZERO,
            idle_wait: Duration::from_millis(10),
            ..RunnerConfig::default()
        },
    );
    let a_stats = a.stats();
    let (stop_a, a) = support::spawn_until_stopped(a);
    // a reaches its first checkpoint barrier and waits there (a slow sink flush) ...
    until("a at its checkpoint barrier", || {
        a_sinks.at_first_commit.load(Ordering::SeqCst) != usize::MAX
    })
    .await;
    let emitted_before = a_sinks.at_first_commit.load(Ordering::SeqCst);
    assert!(emitted_before > 0, "a emitted before its checkpoint");

    // ... while b takes the lease (as after an expiry) and claims the checkpoint.
    let shard = ShardId::from_index(0);
    let mut lease_row = leases.list().await.unwrap()[0].clone();
    assert_eq!(lease_row.owner.as_deref(), Some("a"));
    lease_row.owner = Some("b".into());
    lease_row.counter += 1;
    assert!(
        leases
            .replace(&lease_row, lease_row.counter - 1)
            .await
            .unwrap()
    );
    let b = Holder {
        owner: "b".into(),
        lease_counter: lease_row.counter,
    };
    let loaded = checkpoints.load(shard.as_str()).await.unwrap();
    // a claimed the shard when it took it: an empty checkpoint of epoch 0.
    let claimed = loaded.checkpoint.clone();
    let cp = claimed
        .as_ref()
        .expect("a claimed the checkpoint at its take");
    assert_eq!(cp.epoch, 0);
    checkpoints
        .save_if(shard.as_str(), cp, &b, &loaded.version)
        .await
        .unwrap();

    a_sinks.open_gate();
    until("a gives the shard up", || {
        a_stats.shards_lost.load(Ordering::Relaxed) == 1
    })
    .await;
    // Give a the time to misbehave if it would: it reads on unless it dropped the shard.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_a.send(());
    support::joined("a", a).await;

    let after = checkpoints.load(shard.as_str()).await.unwrap();
    assert_eq!(
        after.holder,
        Some(b),
        "a's checkpoint write was not refused"
    );
    assert_eq!(after.checkpoint, claimed, "b's checkpoint was overwritten");
    assert_eq!(
        predictions(&a_sinks.inner).len(),
        emitted_before,
        "a emitted for the shard after it was fenced"
    );
    assert_eq!(a_stats.shards_held.load(Ordering::Relaxed), 0);
    // The epoch a committed to its sinks before the refusal is rolled back: its outputs are
    // b's to emit (the lake deletes that epoch's files), back to the last epoch stored (none).
    // A rollback, not a take: a take would discard the new owner's epochs above 0.
    assert_eq!(
        a_sinks.opened_shards.lock().unwrap().clone(),
        vec![(shard.0.clone(), 0)],
        "a's sinks: opened once, at the take"
    );
    assert_eq!(
        a_sinks.abandoned_shards.lock().unwrap().clone(),
        vec![(shard.0.clone(), 0)],
        "a's sinks: abandoned after the refusal, back to the last epoch stored (none)"
    );
    let row = leases.list().await.unwrap()[0].clone();
    assert_eq!(row.owner.as_deref(), Some("b"), "a left b's lease alone");
}
