//! Shutdown while a read is stalled (issue 14, item 3): a stream that stops answering (a
//! frozen Kinesis) must not cost the final checkpoint. The runner abandons the read at the
//! signal and stores each shard's position as of the last records it processed and
//! published, with their state, so a restart neither skips nor repeats them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, ReshardableStream, by_id, city, prediction_key, predictions, until};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bikeshare_runner::RunnerConfig;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::ShardId;
use bikeshare_stream::checkpoint::{CheckpointStore, MemoryCheckpointStore};
use bikeshare_stream::lease::MemoryLeaseStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_stalled_read_still_stores_the_final_checkpoint() {
    support::logs();
    let records = city(&["city".to_owned()], 240);
    let stream = ReshardableStream::new(1);
    stream.put(&records);
    let answers = 5;
    let frozen = stream.freezing_after(answers);
    let checkpoints = Arc::new(MemoryCheckpointStore::default());
    let sinks = MemorySinks::new();
    let batch = 40;
    let config = RunnerConfig {
        batch,
        // No checkpoint while running: the one stored is the final one.
        checkpoint_interval: Duration::from_secs(3600),
        discovery_interval: Duration::from_secs(3600),
        idle_wait: Duration::from_millis(5),
        ..RunnerConfig::default()
    };
    let runner = support::runner(
        "frozen",
        Arc::new(frozen),
        Arc::new(sinks.clone()),
        checkpoints.clone(),
        Arc::new(MemoryLeaseStore::default()),
        Duration::from_secs(30),
        config.clone(),
    );
    let stats = runner.stats();
    let (stop, run) = support::spawn_until_stopped(runner);
    let read = answers * batch;
    until("the reads before the freeze processed", || {
        stats.records.load(Ordering::Relaxed) as usize >= read
    })
    .await;
    // The next read hangs; let the runner sit in it, then stop it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the runner did not stop while its read was stalled")
        .unwrap()
        .unwrap();

    let cp = checkpoints
        .latest(ShardId::from_index(0).as_str())
        .await
        .unwrap()
        .expect("no final checkpoint stored");
    assert!(cp.epoch >= 1, "only the claim was stored: {cp:?}");
    let position = cp.positions.get(ShardId::from_index(0).as_str()).cloned();
    assert_eq!(
        position.as_deref(),
        Some(read.to_string().as_str()),
        "the final checkpoint is not at the last record processed"
    );

    // A restart from it, unstalled, gives the rest: together, the outputs of one clean run.
    let rest = MemorySinks::new();
    support::run_to_end(
        "the restart",
        support::runner(
            "restart",
            Arc::new(stream.clone()),
            Arc::new(rest.clone()),
            checkpoints,
            Arc::new(MemoryLeaseStore::default()),
            Duration::from_secs(30),
            RunnerConfig {
                stop_when_caught_up: true,
                ..config.clone()
            },
        ),
    )
    .await;
    let reference = support::reference_run(Arc::new(stream), Duration::from_secs(30), config).await;
    let mut both = predictions(&sinks);
    let first = both.len();
    both.extend(predictions(&rest));
    let want = by_id(&predictions(&reference), prediction_key);
    assert!(first > 0, "nothing emitted before the freeze");
    assert_eq!(both.len(), want.len(), "an output lost or repeated");
    assert!(by_id(&both, prediction_key) == want, "outputs differ");
}
