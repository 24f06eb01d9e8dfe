//! The processor's I/O edge: read shards, feed the [`Processor`], score rows, publish
//! outputs, checkpoint.
//!
//! One loop, one task: records are read shard by shard through a
//! [`ShardConsumer`] (parents before children after a reshard, closed shards ended
//! cleanly, positions per shard), decoded (undecodable bytes become
//! dead letters `processor.decode`), processed, and the emitted rows are scored by the
//! current [`Scorer`] into [`Prediction`]s. Outputs go to [`Sinks`]. Every
//! `checkpoint_interval`, and at shutdown, the runner waits for the sinks to acknowledge
//! everything, then stores a [`Checkpoint`] (see [`bikeshare_common::checkpoint`] for why this makes
//! restarts reproduce the same outputs).
//!
//! The latest prediction of every station is kept in a [`LatestPredictions`] map (a
//! `DashMap`) that the live summary, the dashboard and subscribers read concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bikeshare_common::contracts::{DeadLetter, Envelope, PREDICTION_SCHEMA_VERSION, Prediction};
use bikeshare_common::sink::{SinkError, Sinks};
use bikeshare_common::stream::consumer::{ConsumerConfig, ShardConsumer};
use bikeshare_common::stream::{StartPosition, StreamReader};
use bikeshare_common::{SharedClock, StationId, SystemId};
use dashmap::DashMap;
use tokio::sync::watch;

use crate::predictor::Scorer;
use crate::processor::{Emitted, FeatureRow, Processor, RejectReason};
use bikeshare_common::checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointStore,
};

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Stream(#[from] bikeshare_common::stream::StreamError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("restoring the processor: {0}")]
    Restore(#[from] crate::processor::SnapshotError),
}

/// The latest prediction of each station, shared with readers.
pub type LatestPredictions = Arc<DashMap<(SystemId, StationId), Prediction>>;

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Records per read from a shard.
    pub batch: usize,
    pub checkpoint_interval: Duration,
    /// How long to wait for new records when every shard is caught up.
    pub idle_wait: Duration,
    /// Stop once every shard is caught up (bounded inputs: backfills, tests).
    pub stop_when_caught_up: bool,
    /// How often shards are listed again (new shards after a reshard; a shard's end
    /// triggers a listing at once).
    pub discovery_interval: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            checkpoint_interval: Duration::from_secs(10),
            idle_wait: Duration::from_millis(200),
            stop_when_caught_up: false,
            discovery_interval: Duration::from_secs(10),
        }
    }
}

/// Live counters of a runner.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub records: AtomicU64,
    pub predictions: AtomicU64,
    pub labels: AtomicU64,
    pub dead_letters: AtomicU64,
    pub checkpoints: AtomicU64,
    pub stations: AtomicU64,
    pub millis_behind_latest: AtomicU64,
}

/// Drives a [`Processor`] over a stream.
#[derive(Debug)]
pub struct Runner {
    reader: Arc<dyn StreamReader>,
    sinks: Arc<dyn Sinks>,
    store: Arc<dyn CheckpointStore>,
    scorer: watch::Receiver<Arc<dyn Scorer>>,
    clock: SharedClock,
    config: RunnerConfig,
    processor: Processor,
    latest: LatestPredictions,
    stats: Arc<RunnerStats>,
}

impl Runner {
    pub fn new(
        reader: Arc<dyn StreamReader>,
        sinks: Arc<dyn Sinks>,
        store: Arc<dyn CheckpointStore>,
        scorer: watch::Receiver<Arc<dyn Scorer>>,
        clock: SharedClock,
        processor: Processor,
        config: RunnerConfig,
    ) -> Self {
        Self {
            reader,
            sinks,
            store,
            scorer,
            clock,
            config,
            processor,
            latest: Arc::new(DashMap::new()),
            stats: Arc::new(RunnerStats::default()),
        }
    }

    pub fn latest_predictions(&self) -> LatestPredictions {
        self.latest.clone()
    }
    pub fn stats(&self) -> Arc<RunnerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves (or, with `stop_when_caught_up`, until the input is
    /// read), then checkpoints and returns the processor.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Processor, RunnerError> {
        tokio::pin!(shutdown);
        let (mut epoch, positions) = match self.store.latest().await? {
            Some(cp) => {
                self.processor = Processor::restore(&cp.state)?;
                tracing::info!(
                    epoch = cp.epoch,
                    shards = cp.positions.len(),
                    "restored from checkpoint"
                );
                (cp.epoch, cp.positions)
            }
            None => (0, BTreeMap::new()),
        };
        let mut consumer = ShardConsumer::new(
            self.reader.clone(),
            positions,
            ConsumerConfig {
                initial: StartPosition::TrimHorizon,
                discovery_interval: self.config.discovery_interval,
            },
        );
        let mut last_checkpoint = Instant::now();
        let mut emitted = Vec::new();
        loop {
            let poll = consumer.poll(self.config.batch).await?;
            let changed = poll.changed;
            let mut got = 0usize;
            let mut behind = 0i64;
            for part in poll.shards {
                behind = behind.max(part.millis_behind_latest.unwrap_or(0));
                let shard = &part.shard;
                for rec in part.records {
                    got += 1;
                    match Envelope::decode(&rec.data) {
                        Ok(env) => self.processor.process(env, &mut emitted),
                        Err(e) => {
                            let dl = DeadLetter::new(
                                SystemId::new(rec.partition_key.clone()),
                                format!("stream:{shard}:{}", rec.sequence),
                                "processor.decode",
                                e.to_string(),
                                &String::from_utf8_lossy(&rec.data),
                                self.clock.now(),
                            );
                            self.sinks.dead_letters(vec![dl]).await?;
                            self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                self.publish(&mut emitted).await?;
            }
            self.stats.records.fetch_add(got as u64, Ordering::Relaxed);
            self.stats
                .millis_behind_latest
                .store(u64::try_from(behind).unwrap_or(0), Ordering::Relaxed);
            self.stats
                .stations
                .store(self.processor.stations() as u64, Ordering::Relaxed);
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                epoch += 1;
                self.checkpoint(epoch, consumer.positions()).await?;
                last_checkpoint = Instant::now();
            }
            if got == 0 && !changed {
                if self.config.stop_when_caught_up {
                    break;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(self.config.idle_wait) => {}
                }
            } else if futures_poll_ready(&mut shutdown) {
                break;
            }
        }
        epoch += 1;
        self.checkpoint(epoch, consumer.positions()).await?;
        Ok(self.processor)
    }

    async fn checkpoint(
        &self,
        epoch: u64,
        positions: &BTreeMap<String, String>,
    ) -> Result<(), RunnerError> {
        self.sinks.flush().await?;
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            epoch,
            taken_at: self.clock.now(),
            positions: positions.clone(),
            state: self.processor.snapshot()?,
        };
        self.store.save(&cp).await?;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(epoch, bytes = cp.state.len(), "checkpoint stored");
        Ok(())
    }

    async fn publish(&self, emitted: &mut Vec<Emitted>) -> Result<(), RunnerError> {
        if emitted.is_empty() {
            return Ok(());
        }
        let scorer = self.scorer.borrow().clone();
        let (mut features, mut predictions, mut labels, mut dead) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in emitted.drain(..) {
            match e {
                Emitted::Row(row) => {
                    let p = score(scorer.as_ref(), &row);
                    self.latest
                        .insert((p.system_id.clone(), p.station_id.clone()), p.clone());
                    predictions.push(p);
                    features.push(row.vector);
                }
                Emitted::Label(l) => labels.push(l),
                Emitted::Rejected { reason, envelope } => {
                    dead.push(rejected_letter(reason, &envelope, self.clock.now()))
                }
            }
        }
        self.stats
            .predictions
            .fetch_add(predictions.len() as u64, Ordering::Relaxed);
        self.stats
            .labels
            .fetch_add(labels.len() as u64, Ordering::Relaxed);
        self.stats
            .dead_letters
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
        if !features.is_empty() {
            self.sinks.features(features).await?;
            self.sinks.predictions(predictions).await?;
        }
        if !labels.is_empty() {
            self.sinks.labels(labels).await?;
        }
        if !dead.is_empty() {
            self.sinks.dead_letters(dead).await?;
        }
        Ok(())
    }
}

/// Polls a future once without waiting.
fn futures_poll_ready<F: std::future::Future<Output = ()> + Unpin>(f: &mut F) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(f).poll(&mut cx).is_ready()
}

/// Scores one row into its prediction.
pub fn score(scorer: &dyn Scorer, row: &FeatureRow) -> Prediction {
    let s = scorer.score(&row.vector.values);
    Prediction {
        schema_version: PREDICTION_SCHEMA_VERSION,
        prediction_id: row.prediction_id.clone(),
        system_id: row.vector.system_id.clone(),
        station_id: row.vector.station_id.clone(),
        as_of: row.vector.as_of,
        horizon_minutes: row.horizon_minutes,
        p_empty: s.p_empty,
        p_full: s.p_full,
        model: scorer.model().clone(),
        feature_schema_id: row.vector.schema_id.clone(),
        trigger: row.trigger,
    }
}

/// A rejected input event as a dead letter (`processor.late`, `processor.duplicate`).
pub fn rejected_letter(
    reason: RejectReason,
    env: &Envelope,
    at: bikeshare_common::Timestamp,
) -> DeadLetter {
    DeadLetter::new(
        env.system_id.clone(),
        env.source.clone(),
        format!("processor.{}", reason.as_str()),
        format!(
            "event {} at {} was {}",
            env.event_id,
            env.event_time,
            reason.as_str()
        ),
        &String::from_utf8_lossy(&env.encode()),
        at,
    )
}
