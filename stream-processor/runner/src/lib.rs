//! # bikeshare-runner
//!
//! The processor's I/O edge: read shards, feed the [`Processor`], score rows, publish
//! outputs, checkpoint — on one instance, or on several sharing the shards like AWS's Kinesis
//! Client Library.
//!
//! One loop, one task: records are read shard by shard through a
//! [`ShardConsumer`] (parents before children after a reshard, closed shards ended
//! cleanly, positions per shard), decoded (undecodable bytes become
//! dead letters `processor.decode`), processed, and the emitted rows are scored by the
//! current [`Scorer`] into [`Prediction`]s — or, with a [`Predictor`] set
//! ([`Runner::with_predictor`]), by a model endpoint in batches, the current `Scorer` being
//! its fallback. Outputs go to [`Sinks`].
//!
//! ## Shards, leases and checkpoints
//!
//! - The runner reads only the shards whose **leases** it holds ([`LeaseCoordinator`]:
//!   owner, counter, expiry, conditional writes). The lease store is in memory by default
//!   (one instance takes every lease; no DynamoDB needed) or shared (DynamoDB) so that
//!   several instances split the shards, take over the leases of an instance that died and
//!   release theirs at shutdown. Leases are renewed, and free or expired ones taken, on a
//!   thread of their own every third of their duration
//!   ([`LeaseCoordinator::spawn_keeper`]): a processing step that blocks delays neither, and
//!   a stalled take round does not delay a renewal (decisions 084, 088). The runner's own
//!   lease rounds ask that thread for a take round and adopt what is held. A shard whose
//!   lease lapsed (past the safety margin) or went to another instance is given up at once:
//!   nothing more is read or emitted for it.
//! - **Checkpoints are per shard**: every `checkpoint_interval`, and at shutdown, the runner
//!   renews its leases, waits for the sinks to acknowledge everything, then stores for each
//!   shard it still holds `{its position, the state of the systems whose records live in
//!   it}` under the shard's id. The partition key of `events` is the system id, so a
//!   system's records — and hence its state — belong to the one shard whose hash-key range
//!   holds the MD5 of its id; a record whose partition key is not its system id is a dead
//!   letter `processor.partition_key`.
//! - Taking a shard's lease (at start, or from an instance that died) loads that shard's
//!   checkpoint and claims it (writes it back as this instance's), absorbs its systems' state
//!   ([`Processor::absorb`]) and resumes after its position. Every checkpoint write is
//!   conditional on the version last loaded or written, so a former owner's write is
//!   refused and it gives the shard up. Losing a lease drops the shard's systems from memory.
//! - A shard read to its end is checkpointed at once (`SHARD_END`, with its systems' state)
//!   before any record of its children is processed. A child that was never checkpointed
//!   inherits, from its parents' final checkpoints in the store (both after a merge), the
//!   systems in its hash-key range, whichever instance read the parents, and is read only
//!   once it has them.
//! - With `stop_when_caught_up`, the runner stops once it holds every unfinished shard and
//!   each one's last read was empty with `MillisBehindLatest` 0.
//!
//! See [`bikeshare_stream::checkpoint`] for why this makes restarts and take-overs reproduce
//! the same outputs.
//!
//! The latest prediction of every station is kept in a [`LatestPredictions`] map (a
//! `DashMap`) that the live summary, the dashboard and subscribers read concurrently.

mod telemetry;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bikeshare_stream::consumer::{ConsumerConfig, SHARD_END, ShardConsumer};
use bikeshare_stream::lease::{
    LeaseConfig, LeaseCoordinator, LeaseStore, MemoryLeaseStore, Renewer,
};
use bikeshare_stream::sink::{ShardOutputs, SinkError, Sinks};
use bikeshare_stream::{
    ShardDescription, ShardId, StartPosition, StreamReader, StreamRecord, hash_key,
};
use bikeshare_types::contracts::{
    DeadLetter, Envelope, ModelRef, PREDICTION_SCHEMA_VERSION, Prediction, ScoredBy,
};
use bikeshare_types::{SharedClock, StationId, SystemId};
use dashmap::DashMap;
use smart_default::SmartDefault;
use tokio::sync::watch;

use crate::telemetry::RunTelemetry;
use bikeshare_stream::checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointStore, Holder, Loaded, Version,
};
use bikeshare_stream_processor::predictor::{Predictor, Scorer, Scores};
use bikeshare_stream_processor::processor::{Emitted, FeatureRow, Processor, RejectReason};
use bikeshare_stream_processor::quality::QualityReport;

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Stream(#[from] bikeshare_stream::StreamError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("restoring the processor: {0}")]
    Restore(#[from] bikeshare_stream_processor::processor::SnapshotError),
}

/// The latest prediction of each station, shared with readers.
pub type LatestPredictions = Arc<DashMap<(SystemId, StationId), Prediction>>;

/// The live model quality of each system held (refreshed with the quality gauges), shared
/// with readers such as the dashboard.
pub type LiveQualityView = Arc<DashMap<SystemId, QualityReport>>;

/// Settings of the runner.
#[derive(Debug, Clone, SmartDefault)]
pub struct RunnerConfig {
    /// Records per read from a shard.
    #[default(1000)]
    pub batch: usize,
    #[default(Duration::from_secs(10))]
    pub checkpoint_interval: Duration,
    /// How long to wait for new records when every shard is caught up.
    #[default(Duration::from_millis(200))]
    pub idle_wait: Duration,
    /// Stop once every shard is caught up (bounded inputs: backfills, tests).
    pub stop_when_caught_up: bool,
    /// With `stop_when_caught_up`: the input has ended, so before stopping each held shard
    /// applies its reorder buffer and labels every prediction whose horizon the input
    /// covers (what `process --until-caught-up` does). Off for a run that is a snapshot of
    /// an input still growing.
    pub label_to_end: bool,
    /// How often shards are listed again (new shards after a reshard; a shard's end
    /// triggers a listing at once).
    #[default(Duration::from_secs(10))]
    pub discovery_interval: Duration,
    /// This instance's name among those sharing the shards, and how long its leases last
    /// unless renewed (they are renewed every third of that).
    #[default(LeaseConfig {
        owner: "local".into(),
        duration: Duration::from_secs(10),
    })]
    pub lease: LeaseConfig,
}

/// Live counters of a runner.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub records: AtomicU64,
    pub predictions: AtomicU64,
    pub labels: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Dead letters by rule (`processor.late`, ...): [`Self::dead_letters_by_rule`].
    dead_letters_by_rule: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    pub checkpoints: AtomicU64,
    pub stations: AtomicU64,
    pub millis_behind_latest: AtomicU64,
    /// Shard leases held now.
    pub shards_held: AtomicU64,
    /// Leases gained plus leases lost since start.
    pub lease_changes: AtomicU64,
    /// Shards given up while running: the lease lapsed or went to another instance, or a
    /// checkpoint write was refused because another instance had claimed the shard.
    pub shards_lost: AtomicU64,
    /// Recent processing latencies (arrival to outputs published, seconds), for in-process
    /// readers such as the dashboard.
    pub processing_latency: RecentSamples,
    /// Recent inference latencies per row (seconds).
    pub inference_latency: RecentSamples,
}

impl RunnerStats {
    /// Counts one dead letter of `rule`, in the total and by rule.
    pub fn count_dead_letter(&self, rule: &str) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.dead_letters_by_rule.lock() {
            *m.entry(rule.to_owned()).or_default() += 1;
        }
    }

    /// Dead letters by rule so far.
    pub fn dead_letters_by_rule(&self) -> std::collections::BTreeMap<String, u64> {
        self.dead_letters_by_rule
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// The last [`RecentSamples::CAPACITY`] values of a measurement, for percentiles.
#[derive(Debug, Default)]
pub struct RecentSamples(std::sync::Mutex<std::collections::VecDeque<f64>>);

impl RecentSamples {
    pub const CAPACITY: usize = 1024;

    pub fn push(&self, v: f64) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() == Self::CAPACITY {
                q.pop_front();
            }
            q.push_back(v);
        }
    }

    /// The `q`-quantiles (nearest rank) of the samples held; `None` when there are none.
    pub fn quantiles<const N: usize>(&self, q: [f64; N]) -> Option<[f64; N]> {
        let mut v: Vec<f64> = self.0.lock().ok()?.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let last = v.len() - 1;
        Some(q.map(|q| v[((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last)]))
    }
}

/// Drives a [`Processor`] over a stream.
#[derive(Debug)]
pub struct Runner {
    reader: Arc<dyn StreamReader>,
    sinks: Arc<dyn Sinks>,
    store: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    scorer: watch::Receiver<Arc<dyn Scorer>>,
    predictor: Option<Arc<dyn Predictor>>,
    clock: SharedClock,
    config: RunnerConfig,
    processor: Processor,
    latest: LatestPredictions,
    quality: LiveQualityView,
    stats: Arc<RunnerStats>,
    telemetry: RunTelemetry,
}

/// What the runner knows about the shards while it runs.
#[derive(Debug, Default)]
struct ShardBook {
    /// Every shard listed, by id.
    listed: BTreeMap<ShardId, ShardDescription>,
    /// Shards whose lease was created (by anyone) as far as this instance knows.
    leased: BTreeSet<ShardId>,
    /// Leases held now.
    held: BTreeSet<ShardId>,
    /// Held shards never checkpointed that wait for their parents' final state.
    waiting: BTreeSet<ShardId>,
    /// Shards whose final (`SHARD_END`) checkpoint is stored.
    finalized: BTreeSet<ShardId>,
    /// Held shards read (or given state) since their last checkpoint.
    dirty: BTreeSet<ShardId>,
    /// The last checkpoint epoch of each shard.
    epochs: BTreeMap<ShardId, u64>,
    /// The version of each held shard's checkpoint this instance last loaded or wrote: its
    /// next checkpoint write is conditional on it (fencing).
    versions: BTreeMap<ShardId, Version>,
    /// Whether a held shard's last read was empty and at the tip.
    caught_up: BTreeMap<ShardId, bool>,
    /// The lease counter at which each held shard was taken: another one means the lease
    /// was lost and taken again in between, so the shard is adopted afresh.
    tenures: BTreeMap<ShardId, u64>,
}

impl ShardBook {
    fn contains(&self, shard: &ShardId, system: &SystemId) -> bool {
        self.listed.get(shard).is_some_and(|d| {
            let h = hash_key(system.as_str());
            d.starting_hash_key <= h && h <= d.ending_hash_key
        })
    }
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
            leases: Arc::new(MemoryLeaseStore::default()),
            scorer,
            predictor: None,
            clock,
            config,
            processor,
            latest: Arc::new(DashMap::new()),
            quality: Arc::new(DashMap::new()),
            stats: Arc::new(RunnerStats::default()),
            telemetry: RunTelemetry::new(bikeshare_stream::names::EVENTS),
        }
    }

    /// Shares the shards with other instances through `leases` (by default leases live in
    /// memory and this instance holds them all).
    pub fn with_lease_store(mut self, leases: Arc<dyn LeaseStore>) -> Self {
        self.leases = leases;
        self
    }

    /// Scores through `predictor` (a model endpoint) instead of in process; the current
    /// in-process scorer becomes its fallback.
    pub fn with_predictor(mut self, predictor: Arc<dyn Predictor>) -> Self {
        self.predictor = Some(predictor);
        self
    }

    pub fn latest_predictions(&self) -> LatestPredictions {
        self.latest.clone()
    }
    pub fn stats(&self) -> Arc<RunnerStats> {
        self.stats.clone()
    }
    /// Live model quality per system, refreshed every few seconds while running.
    pub fn live_quality(&self) -> LiveQualityView {
        self.quality.clone()
    }

    /// Runs until `shutdown` resolves (or, with `stop_when_caught_up`, until the input is
    /// read), then checkpoints, releases its leases and returns the processor.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Processor, RunnerError> {
        tokio::pin!(shutdown);
        let leases = LeaseCoordinator::new(self.leases.clone(), self.config.lease.clone());
        // Renewals and take rounds on their own thread: a step blocked on a slow sink (or a
        // busy runtime) neither lets leases expire nor stops free leases being taken.
        let keeper = leases.spawn_keeper(self.clock.clone());
        let mut consumer = ShardConsumer::new(
            self.reader.clone(),
            BTreeMap::new(),
            ConsumerConfig {
                initial: StartPosition::TrimHorizon,
                discovery_interval: self.config.discovery_interval,
            },
        )
        // A shard read to its end is finished here, after its final checkpoint.
        .defer_finish();
        consumer.set_owned(Some(BTreeSet::new()));
        let mut book = ShardBook::default();
        let take_every = leases.config().renew_every();
        let mut next_lease_round = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut emitted = Vec::new();
        loop {
            if Instant::now() >= next_lease_round {
                self.lease_round(&leases, &keeper, &mut consumer, &mut book)
                    .await?;
                next_lease_round = Instant::now() + take_every;
            } else {
                self.drop_lost(&leases, &mut consumer, &mut book);
            }
            // The read is the step a stalled stream blocks: a shutdown abandons it, and the
            // final checkpoint stores the positions from before it (`poll` is cancel-safe:
            // an abandoned read moves no position), so a stalled read still ends with a final
            // checkpoint.
            let poll = tokio::select! {
                biased;
                poll = consumer.poll(self.config.batch) => poll?,
                () = &mut shutdown => {
                    tracing::info!("shutdown while reading: the read is abandoned");
                    break;
                }
            };
            let mut changed = poll.changed;
            let mut got = 0usize;
            let mut behind = 0i64;
            let mut ended = Vec::new();
            for part in poll.shards {
                let shard = &part.shard;
                // Emit nothing for a shard whose lease is no longer held here.
                if !leases.holds(shard) {
                    self.lose(
                        shard,
                        &mut consumer,
                        &mut book,
                        "its lease is no longer held here",
                    );
                    changed = true;
                    continue;
                }
                behind = behind.max(part.millis_behind_latest.unwrap_or(0));
                book.caught_up.insert(
                    shard.clone(),
                    part.ended || (part.records.is_empty() && part.millis_behind_latest == Some(0)),
                );
                if !part.records.is_empty() {
                    book.dirty.insert(shard.clone());
                }
                if part.ended {
                    ended.push(shard.clone());
                }
                let ends = part.records.first().zip(part.records.last());
                let ends = ends.map(|(a, b)| (a.clone(), b.clone()));
                for rec in part.records {
                    got += 1;
                    match Envelope::decode(&rec.data) {
                        Ok(env) if env.system_id.as_str() == rec.partition_key => {
                            self.telemetry.event(&env);
                            self.processor.process(env, &mut emitted)
                        }
                        Ok(env) => {
                            let message = format!(
                                "event {} of system {} has partition key {:?}; events must be partitioned by system id",
                                env.event_id, env.system_id, rec.partition_key
                            );
                            self.dead_letter(shard, &rec, "processor.partition_key", message)
                                .await?;
                        }
                        Err(e) => {
                            self.dead_letter(shard, &rec, "processor.decode", e.to_string())
                                .await?;
                        }
                    }
                }
                if !leases.holds(shard) {
                    // Lost while processing: these outputs are the new owner's to emit.
                    emitted.clear();
                    ended.retain(|s| s != shard);
                    self.lose(
                        shard,
                        &mut consumer,
                        &mut book,
                        "its lease was lost while processing",
                    );
                    changed = true;
                    continue;
                }
                self.publish(shard, &mut emitted).await?;
                if let Some((oldest, _)) = &ends {
                    let ms = self.clock.now().millis() - oldest.arrival.millis();
                    self.stats
                        .processing_latency
                        .push(ms.max(0) as f64 / 1000.0);
                }
                let ends = ends.as_ref().map(|(a, b)| (a, b));
                self.telemetry.shard_done(
                    shard.as_str(),
                    part.millis_behind_latest,
                    ends,
                    self.clock.now(),
                );
            }
            if !ended.is_empty() {
                // Before any record of a child: the parent's final state and position.
                let mut positions = consumer.positions().clone();
                for shard in &ended {
                    positions.insert(shard.0.clone(), SHARD_END.to_owned());
                }
                self.finish_shards(&ended, &positions, &leases, &mut consumer, &mut book)
                    .await?;
                changed = true;
                // Their children need leases.
                next_lease_round = Instant::now();
            }
            self.stats.records.fetch_add(got as u64, Ordering::Relaxed);
            self.stats
                .millis_behind_latest
                .store(u64::try_from(behind).unwrap_or(0), Ordering::Relaxed);
            self.stats
                .stations
                .store(self.processor.stations() as u64, Ordering::Relaxed);
            let predictions = self.stats.predictions.load(Ordering::Relaxed);
            self.telemetry
                .poll_done(&self.processor, predictions, self.clock.now());
            self.telemetry
                .quality(&self.processor, &self.quality, false);
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                // Take new leases first; only shards still held are checkpointed.
                self.lease_round(&leases, &keeper, &mut consumer, &mut book)
                    .await?;
                next_lease_round = Instant::now() + take_every;
                let positions = consumer.positions().clone();
                self.checkpoint_held(&positions, &leases, &mut consumer, &mut book)
                    .await?;
                last_checkpoint = Instant::now();
            }
            let idle = got == 0 && !changed;
            if idle && self.config.stop_when_caught_up && Self::caught_up(&consumer, &book) {
                if self.config.label_to_end {
                    self.drain_held(&mut book).await?;
                }
                break;
            }
            if bikeshare_stream::pause_between_polls(&mut shutdown, idle, self.config.idle_wait)
                .await
            {
                break;
            }
        }
        self.telemetry.quality(&self.processor, &self.quality, true);
        self.drop_lost(&leases, &mut consumer, &mut book);
        let positions = consumer.positions().clone();
        self.checkpoint_held(&positions, &leases, &mut consumer, &mut book)
            .await?;
        drop(keeper);
        if let Err(e) = leases.release().await {
            tracing::warn!(error = %e, "releasing the shard leases failed; they expire instead");
        }
        Ok(self.processor)
    }

    /// The input ended (stopping when caught up): each held shard's systems apply what their
    /// reorder buffer holds and label every prediction whose horizon the input covers
    /// ([`Processor::drain_systems`]); the outputs go out as that shard's and the
    /// final checkpoint stores the drained state.
    async fn drain_held(&mut self, book: &mut ShardBook) -> Result<(), RunnerError> {
        let shards: Vec<ShardId> = book
            .held
            .iter()
            .filter(|s| !book.finalized.contains(*s))
            .cloned()
            .collect();
        for shard in shards {
            let mut tail = Vec::new();
            self.processor
                .drain_systems(|id| book.contains(&shard, id), &mut tail);
            if !tail.is_empty() {
                self.publish(&shard, &mut tail).await?;
                book.dirty.insert(shard);
            }
        }
        Ok(())
    }

    /// Caught up: every shard of the latest listing is finished, or held and last read
    /// empty at the tip (`MillisBehindLatest` 0).
    fn caught_up(consumer: &ShardConsumer, book: &ShardBook) -> bool {
        let progress = consumer.progress();
        let mut listed = progress.listed().peekable();
        listed.peek().is_some()
            && listed.all(|d| {
                progress.is_finished(&d.id)
                    || (book.held.contains(&d.id)
                        && book.caught_up.get(&d.id).copied().unwrap_or(false))
            })
    }

    /// Lists the shards, has the lease thread create missing leases and take/steal leases
    /// (and waits for that round), adopts the checkpoints of shards gained (here or by the
    /// lease thread's own rounds since) and drops the shards lost.
    async fn lease_round(
        &mut self,
        leases: &LeaseCoordinator,
        keeper: &Renewer,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        consumer.discover().await?;
        book.listed = consumer
            .progress()
            .listed()
            .map(|d| (d.id.clone(), d.clone()))
            .collect();
        let new: Vec<ShardId> = book
            .listed
            .keys()
            .filter(|s| !book.leased.contains(*s))
            .cloned()
            .collect();
        match keeper.take(new.clone()).await {
            Ok(()) => book.leased.extend(new),
            // The leases held stay held while their renewals succeed (or lapse).
            Err(e) => tracing::warn!(error = %e, "taking shard leases failed; retrying"),
        }
        self.drop_lost(leases, consumer, book);
        let held = leases.held();
        let gained: Vec<ShardId> = held.difference(&book.held).cloned().collect();
        book.held.extend(gained.iter().cloned());
        for shard in &gained {
            self.adopt(shard, leases, consumer, book).await?;
        }
        for shard in book.waiting.clone() {
            self.inherit(&shard, consumer, book).await?;
        }
        Self::own(consumer, book);
        self.drop_uncovered(consumer, book);
        self.stats
            .shards_held
            .store(book.held.len() as u64, Ordering::Relaxed);
        self.stats
            .lease_changes
            .store(leases.changes(), Ordering::Relaxed);
        Ok(())
    }

    /// Gives up the shards whose lease is no longer held here (lapsed, or written by
    /// another instance): stops reading and emitting for them and drops their systems.
    fn drop_lost(
        &mut self,
        leases: &LeaseCoordinator,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) {
        let held = leases.held();
        let lost: Vec<ShardId> = book
            .held
            .iter()
            .filter(|s| {
                !held.contains(*s) || leases.taken_counter(s) != book.tenures.get(*s).copied()
            })
            .cloned()
            .collect();
        for shard in &lost {
            self.lose(shard, consumer, book, "its lease is no longer held here");
        }
    }

    /// Forgets `shard` here: its cursor, position and bookkeeping, and (through
    /// [`Self::drop_uncovered`]) its systems' state, which its new owner restores from the
    /// checkpoint.
    fn lose(
        &mut self,
        shard: &ShardId,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
        why: &str,
    ) {
        if !book.held.remove(shard) {
            return;
        }
        tracing::warn!(owner = %self.config.lease.owner, %shard,
            "shard given up: {why}; stopped reading and emitting for it");
        book.caught_up.remove(shard);
        book.waiting.remove(shard);
        book.dirty.remove(shard);
        book.finalized.remove(shard);
        book.epochs.remove(shard);
        book.versions.remove(shard);
        book.tenures.remove(shard);
        Self::own(consumer, book);
        consumer.forget(shard);
        // Not its whole range: a finished shard's systems live on in its children.
        self.drop_uncovered(consumer, book);
        self.stats.shards_lost.fetch_add(1, Ordering::Relaxed);
        self.stats
            .shards_held
            .store(book.held.len() as u64, Ordering::Relaxed);
    }

    /// Reads the shards held, except children still waiting for their parents' final
    /// state: a child's records are processed only once it holds its inheritance.
    fn own(consumer: &mut ShardConsumer, book: &ShardBook) {
        consumer.set_owned(Some(book.held.difference(&book.waiting).cloned().collect()));
    }

    /// Loads `shard`'s checkpoint and claims it: writes it back as this instance's
    /// (conditional on the version loaded), so the former owner's next checkpoint write is
    /// refused. A shard never checkpointed is claimed with an empty checkpoint of epoch 0
    /// (no position, no state: read from the start). A former owner that wrote in between
    /// is read again.
    async fn claim(&self, shard: &ShardId, holder: &Holder) -> Result<Loaded, CheckpointError> {
        let mut attempts = 0;
        loop {
            let loaded = self.store.load(shard.as_str()).await?;
            let claim = loaded.checkpoint.clone().unwrap_or_else(|| Checkpoint {
                version: CHECKPOINT_VERSION,
                epoch: 0,
                taken_at: self.clock.now(),
                positions: BTreeMap::new(),
                state: Vec::new(),
            });
            match self
                .store
                .save_if(shard.as_str(), &claim, holder, &loaded.version)
                .await
            {
                Ok(version) => return Ok(Loaded { version, ..loaded }),
                Err(CheckpointError::Fenced { .. }) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The holder this instance writes `shard`'s checkpoints as.
    fn holder(&self, leases: &LeaseCoordinator, shard: &ShardId) -> Holder {
        Holder {
            owner: self.config.lease.owner.clone(),
            lease_counter: leases.taken_counter(shard).unwrap_or(0),
        }
    }

    /// A shard just gained: its checkpoint (claimed) with its state and position, or (never
    /// checkpointed) a wait for its parents' final state.
    async fn adopt(
        &mut self,
        shard: &ShardId,
        leases: &LeaseCoordinator,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        book.caught_up.remove(shard);
        if let Some(counter) = leases.taken_counter(shard) {
            book.tenures.insert(shard.clone(), counter);
        }
        let holder = self.holder(leases, shard);
        let loaded = match self.claim(shard, &holder).await {
            Ok(loaded) => loaded,
            Err(CheckpointError::Fenced { holder, .. }) => {
                let why = format!("its checkpoint keeps being written by {holder}");
                self.lose(shard, consumer, book, &why);
                if let Err(e) = leases.release_shard(shard).await {
                    tracing::warn!(%shard, error = %e, "releasing the lease failed; it expires instead");
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        book.versions.insert(shard.clone(), loaded.version.clone());
        // Epoch 0 is a claim alone: never checkpointed.
        let loaded = Loaded {
            checkpoint: loaded.checkpoint.filter(|cp| cp.epoch > 0),
            ..loaded
        };
        let finished = loaded.checkpoint.as_ref().is_some_and(|cp| {
            cp.positions.get(shard.as_str()).map(String::as_str) == Some(SHARD_END)
        });
        if let (true, Some(cp)) = (finished, &loaded.checkpoint) {
            // A finished shard: its systems' state lives on in its children, not here.
            book.finalized.insert(shard.clone());
            book.epochs.insert(shard.clone(), cp.epoch);
            consumer.adopt_position(shard, SHARD_END.to_owned());
            tracing::info!(%shard, epoch = cp.epoch, "finished shard taken");
            return Ok(());
        }
        let Some(cp) = loaded.checkpoint else {
            // Never checkpointed: its systems' state is its parents' final state (inherited
            // once they are final) or, with no parent, empty. Leftovers here are dropped,
            // except those of another shard held and still read here: a merge's child taken
            // while one of its parents is read here must not empty that parent's systems
            // (the parent's final checkpoint would carry the loss into the child).
            let reading: Vec<ShardId> = book
                .held
                .iter()
                .filter(|s| *s != shard && !book.waiting.contains(*s))
                .filter(|s| !consumer.progress().is_finished(s))
                .cloned()
                .collect();
            self.processor.release_systems(|id| {
                book.contains(shard, id) && !reading.iter().any(|s| book.contains(s, id))
            });
            let has_parents = book
                .listed
                .get(shard)
                .is_some_and(|d| d.parents().next().is_some());
            if has_parents {
                book.waiting.insert(shard.clone());
            }
            tracing::info!(%shard, "shard taken with no checkpoint: reading from its start");
            self.sinks.open_shard(shard.as_str(), 0).await?;
            return Ok(());
        };
        // Whatever of its systems this instance holds is older than the checkpoint.
        self.processor
            .release_systems(|id| book.contains(shard, id));
        self.processor.absorb(&cp.state)?;
        // A checkpointed shard had finished parents: let the consumer know.
        let parents: Vec<ShardId> = book
            .listed
            .get(shard)
            .map(|d| d.parents().cloned().collect())
            .unwrap_or_default();
        for parent in parents {
            if !consumer.progress().is_finished(&parent) {
                consumer.adopt_position(&parent, SHARD_END.to_owned());
            }
        }
        if let Some(position) = cp.positions.get(shard.as_str()) {
            if position == SHARD_END {
                book.finalized.insert(shard.clone());
            }
            consumer.adopt_position(shard, position.clone());
        }
        book.epochs.insert(shard.clone(), cp.epoch);
        self.sinks.open_shard(shard.as_str(), cp.epoch).await?;
        tracing::info!(%shard, epoch = cp.epoch, position = ?cp.positions.get(shard.as_str()), "shard taken: resuming from its checkpoint");
        Ok(())
    }

    /// A held child never checkpointed: once every parent has its final (`SHARD_END`)
    /// checkpoint, its state is the merge of the systems in the child's hash-key range
    /// from those checkpoints (both parents after a merge). Always through the checkpoint
    /// store, whether the parents were read here or elsewhere: what a parent's systems
    /// were when it ended is its final checkpoint, not what memory holds now.
    async fn inherit(
        &mut self,
        shard: &ShardId,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        let parents: Vec<ShardId> = book
            .listed
            .get(shard)
            .map(|d| d.parents().cloned().collect())
            .unwrap_or_default();
        let mut finals = Vec::new();
        for parent in &parents {
            match self.store.latest(parent.as_str()).await? {
                Some(cp)
                    if cp.positions.get(parent.as_str()).map(String::as_str) == Some(SHARD_END) =>
                {
                    finals.push((parent.clone(), cp));
                }
                Some(_) => return Ok(()), // still being read by its owner
                None if book.listed.contains_key(parent) => return Ok(()), // not checkpointed yet
                None => {}                // expired: nothing to inherit
            }
        }
        self.processor
            .release_systems(|id| book.contains(shard, id));
        for (parent, cp) in finals {
            let part = Processor::restore(&cp.state)?;
            let mine = part.snapshot_systems(|id| book.contains(shard, id))?;
            self.processor.absorb(&mine)?;
            if !consumer.progress().is_finished(&parent) {
                consumer.adopt_position(&parent, SHARD_END.to_owned());
            }
            tracing::info!(child = %shard, %parent, "child shard given its parent's final state");
        }
        book.waiting.remove(shard);
        book.dirty.insert(shard.clone());
        Ok(())
    }

    /// Drops the systems no held, unfinished shard covers (their shards moved elsewhere).
    fn drop_uncovered(&mut self, consumer: &ShardConsumer, book: &ShardBook) {
        let progress = consumer.progress();
        let open: Vec<&ShardId> = book
            .held
            .iter()
            .filter(|s| !progress.is_finished(s))
            .collect();
        let dropped = self
            .processor
            .release_systems(|id| !open.iter().any(|s| book.contains(s, id)));
        if dropped > 0 {
            tracing::info!(
                systems = dropped,
                "state of systems in shards no longer held dropped"
            );
        }
    }

    /// Final checkpoints of shards just read to their end.
    async fn finish_shards(
        &mut self,
        ended: &[ShardId],
        positions: &BTreeMap<String, String>,
        leases: &LeaseCoordinator,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        self.save_shards(ended, positions, leases, consumer, book)
            .await?;
        for shard in ended {
            if book.held.contains(shard) {
                // Only now, its last records processed and checkpointed: its children may
                // be read, and its systems live on in them.
                book.finalized.insert(shard.clone());
                consumer.finish(shard);
            }
        }
        self.drop_uncovered(consumer, book);
        Ok(())
    }

    /// Checkpoints every held shard changed since its last checkpoint.
    async fn checkpoint_held(
        &mut self,
        positions: &BTreeMap<String, String>,
        leases: &LeaseCoordinator,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        let due: Vec<ShardId> = book
            .held
            .iter()
            .filter(|s| book.dirty.contains(*s) && !book.finalized.contains(*s))
            .cloned()
            .collect();
        self.save_shards(&due, positions, leases, consumer, book)
            .await
    }

    /// Flushes the sinks, then stores the checkpoints of those of `shards` still held; a
    /// shard whose write is refused (another instance claimed it) is given up.
    async fn save_shards(
        &mut self,
        shards: &[ShardId],
        positions: &BTreeMap<String, String>,
        leases: &LeaseCoordinator,
        consumer: &mut ShardConsumer,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        self.drop_lost(leases, consumer, book);
        let due: Vec<ShardId> = shards
            .iter()
            .filter(|s| book.held.contains(*s))
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.sinks.commit(&Self::next_epochs(&due, book)).await?;
        for shard in &due {
            match self.save_shard(shard, positions, leases, book).await {
                Ok(()) => {}
                Err(RunnerError::Checkpoint(CheckpointError::Fenced { holder, .. })) => {
                    let stored = book.epochs.get(shard).copied().unwrap_or(0);
                    let why = format!("its checkpoint write was refused, {holder} claimed it");
                    self.lose(shard, consumer, book, &why);
                    // The sinks' epoch just committed for it will never be checkpointed: its
                    // outputs are the new owner's to emit again. Rolled back to the last
                    // epoch stored (the lake deletes that epoch's files).
                    if let Err(e) = self.sinks.abandon_shard(shard.as_str(), stored).await {
                        tracing::warn!(%shard, error = %e, "rolling the sinks back to the last stored epoch failed");
                    }
                    if let Err(e) = leases.release_shard(shard).await {
                        tracing::warn!(%shard, error = %e, "releasing the lease failed; it expires instead");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.telemetry.checkpointed(started.elapsed());
        Ok(())
    }

    /// The epoch each of `shards` is checkpointed at next.
    fn next_epochs(shards: &[ShardId], book: &ShardBook) -> Vec<(String, u64)> {
        shards
            .iter()
            .map(|s| (s.0.clone(), book.epochs.get(s).map_or(1, |e| e + 1)))
            .collect()
    }

    /// Stores one shard's position and its systems' state (sinks already flushed),
    /// conditional on the checkpoint version this instance last loaded or wrote.
    async fn save_shard(
        &self,
        shard: &ShardId,
        positions: &BTreeMap<String, String>,
        leases: &LeaseCoordinator,
        book: &mut ShardBook,
    ) -> Result<(), RunnerError> {
        let epoch = book.epochs.get(shard).map_or(1, |e| e + 1);
        let positions: BTreeMap<String, String> = positions
            .get(shard.as_str())
            .map(|p| BTreeMap::from([(shard.0.clone(), p.clone())]))
            .unwrap_or_default();
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            epoch,
            taken_at: self.clock.now(),
            positions,
            state: self
                .processor
                .snapshot_systems(|id| book.contains(shard, id))?,
        };
        let expected = book.versions.get(shard).cloned().unwrap_or_default();
        let holder = self.holder(leases, shard);
        let version = self
            .store
            .save_if(shard.as_str(), &cp, &holder, &expected)
            .await?;
        book.versions.insert(shard.clone(), version);
        book.epochs.insert(shard.clone(), epoch);
        book.dirty.remove(shard);
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%shard, epoch, bytes = cp.state.len(), "checkpoint stored");
        Ok(())
    }

    async fn publish(
        &mut self,
        shard: &ShardId,
        emitted: &mut Vec<Emitted>,
    ) -> Result<(), RunnerError> {
        if emitted.is_empty() {
            return Ok(());
        }
        let scorer = self.scorer.borrow().clone();
        let (mut features, mut predictions, mut labels, mut dead) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rows = Vec::new();
        let mut scoring = Duration::ZERO;
        for e in emitted.drain(..) {
            match e {
                Emitted::Row(row) => match &self.predictor {
                    None => {
                        let started = Instant::now();
                        let p = score(scorer.as_ref(), &row);
                        scoring += started.elapsed();
                        self.keep_latest(&p);
                        predictions.push(p);
                        features.push(row.vector);
                    }
                    Some(_) => rows.push(row),
                },
                Emitted::Label(l) => labels.push(l),
                Emitted::Rejected { reason, envelope } => {
                    dead.push(rejected_letter(reason, &envelope, self.clock.now()))
                }
            }
        }
        if let Some(predictor) = &self.predictor
            && !rows.is_empty()
        {
            let values: Vec<&[Option<f32>]> =
                rows.iter().map(|r| r.vector.values.as_slice()).collect();
            let started = Instant::now();
            let scored = predictor.predict(&values, &scorer).await;
            scoring += started.elapsed();
            for (i, row) in rows.into_iter().enumerate() {
                let p = match scored.get(i) {
                    Some(s) => prediction(&row, s.scores, s.model.clone(), s.scored_by),
                    // A predictor that broke its contract: say so rather than invent numbers.
                    None => prediction(
                        &row,
                        Scores {
                            p_empty: f32::NAN,
                            p_full: f32::NAN,
                        },
                        scorer.model().clone(),
                        ScoredBy::Unavailable,
                    ),
                };
                self.keep_latest(&p);
                predictions.push(p);
                features.push(row.vector);
            }
        }
        // Live quality: the batch's scores first, a label may answer one of them.
        for p in &predictions {
            self.processor.record_prediction(p);
        }
        for l in &labels {
            self.processor.record_label(l);
        }
        if !predictions.is_empty() {
            let rows = predictions.len() as f64;
            self.stats
                .inference_latency
                .push(scoring.as_secs_f64() / rows);
        }
        crate::telemetry::published(&predictions, &labels, &dead, scoring);
        self.stats
            .predictions
            .fetch_add(predictions.len() as u64, Ordering::Relaxed);
        self.stats
            .labels
            .fetch_add(labels.len() as u64, Ordering::Relaxed);
        for d in &dead {
            self.stats.count_dead_letter(&d.rule);
        }
        let outputs = ShardOutputs {
            features,
            predictions,
            labels,
            dead_letters: dead,
        };
        self.sinks.shard_outputs(shard.as_str(), outputs).await?;
        Ok(())
    }
}

impl Runner {
    /// A record of `shard` the processor cannot take, as a dead letter with its `rule`.
    async fn dead_letter(
        &self,
        shard: &ShardId,
        rec: &StreamRecord,
        rule: &'static str,
        message: String,
    ) -> Result<(), RunnerError> {
        let dl = DeadLetter::new(
            SystemId::new(rec.partition_key.clone()),
            format!("stream:{shard}:{}", rec.sequence),
            rule,
            message,
            &String::from_utf8_lossy(&rec.data),
            self.clock.now(),
        );
        let outputs = ShardOutputs {
            dead_letters: vec![dl],
            ..ShardOutputs::default()
        };
        self.sinks.shard_outputs(shard.as_str(), outputs).await?;
        self.stats.count_dead_letter(rule);
        bikeshare_types::metrics::dead_letters("processor", rule, 1);
        Ok(())
    }

    /// Unavailable predictions do not replace a station's latest usable one.
    fn keep_latest(&self, p: &Prediction) {
        if p.is_available() {
            self.latest
                .insert((p.system_id.clone(), p.station_id.clone()), p.clone());
        }
    }
}

/// Scores one row into its prediction.
pub fn score(scorer: &dyn Scorer, row: &FeatureRow) -> Prediction {
    let s = scorer.score(&row.vector.values);
    prediction(row, s, scorer.model().clone(), ScoredBy::InProcess)
}

/// A row's prediction from its scores and who computed them.
pub fn prediction(row: &FeatureRow, s: Scores, model: ModelRef, scored_by: ScoredBy) -> Prediction {
    Prediction {
        schema_version: PREDICTION_SCHEMA_VERSION,
        prediction_id: row.prediction_id.clone(),
        system_id: row.vector.system_id.clone(),
        station_id: row.vector.station_id.clone(),
        as_of: row.vector.as_of,
        horizon_minutes: row.horizon_minutes,
        p_empty: s.p_empty,
        p_full: s.p_full,
        model,
        feature_schema_id: row.vector.schema_id.clone(),
        trigger: row.trigger,
        scored_by,
        revision: row.revision,
    }
}

/// A rejected input event as a dead letter (`processor.late`, `processor.duplicate`).
pub fn rejected_letter(
    reason: RejectReason,
    env: &Envelope,
    at: bikeshare_types::Timestamp,
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
