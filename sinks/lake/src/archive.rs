//! The [`Archiver`]: the input streams into the lake, with checkpoints.
//!
//! It consumes `events` (every envelope into `raw_events`; station reports also into the
//! curated `station_status`) and `dead-letters` (into `dead_letters`: the producers' and,
//! through the processor's stream sinks, the processor's), like the processor does: rows are
//! staged, and every `checkpoint_interval` the staged rows are written as one epoch
//! ([`crate::writer`]) and then `{epoch, positions}` is stored. On start it resumes after the
//! stored positions and discards files of later epochs, so a crash at any point neither
//! duplicates nor loses a row.
//!
//! An [`ArchiveTap`] (the Firehose sink) can ride along: it gets each epoch's rows before
//! they are written, and an error from it stops the archiver before that checkpoint, so the
//! tap sees every row at least once.
//!
//! Bytes on `events` that are not an envelope are skipped here (counted and logged): the
//! processor turns them into `processor.decode` dead letters, which arrive through
//! `dead-letters`. Undecodable bytes on `dead-letters` are counted and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bikeshare_stream::checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointStore,
};
use bikeshare_stream::consumer::{ConsumerConfig, Poll, ShardConsumer};
use bikeshare_stream::sink::SinkError;
use bikeshare_stream::{
    ShardId, StartPosition, StreamError, StreamReader, StreamRecord, pause_between_polls,
};
use bikeshare_types::SharedClock;
use bikeshare_types::contracts::{DeadLetter, Envelope};
use smart_default::SmartDefault;

use crate::LakeError;
use crate::staging::Staging;
use crate::writer::EpochWriter;

/// Why the archiver stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Tap(#[from] SinkError),
}

/// Another destination of the archived rows, called with each epoch's rows before they are
/// written and the checkpoint stored; it must return only once they are durable there.
#[async_trait::async_trait]
pub trait ArchiveTap: Send + Sync + std::fmt::Debug {
    async fn epoch(&self, staging: &Staging) -> Result<(), SinkError>;
}

/// Settings of the archiver.
#[derive(Debug, Clone, SmartDefault)]
pub struct ArchiverConfig {
    /// Records per read from a shard.
    #[default(1000)]
    pub batch: usize,
    #[default(Duration::from_secs(10))]
    pub checkpoint_interval: Duration,
    #[default(Duration::from_millis(200))]
    pub idle_wait: Duration,
    /// Stop once both streams are read (bounded inputs, tests).
    pub stop_when_caught_up: bool,
    #[default(Duration::from_secs(10))]
    pub discovery_interval: Duration,
}

bikeshare_types::counters! {
    /// Live counters of an archiver.
    pub struct ArchiverStats => /// A plain copy of [`ArchiverStats`].
    pub struct ArchiverSnapshot {
        events,
        dead_letters,
        undecodable,
        epochs,
        files,
        rows_written,
    }
}

/// The archiver's key in its checkpoint store (one archiver per lake).
pub const CHECKPOINT_KEY: &str = "archive";

/// Position keys in the checkpoint: `<stream>/<shard>`.
const EVENTS: &str = "events";
const DEAD_LETTERS: &str = "dead-letters";

fn split_positions(all: &BTreeMap<String, String>, stream: &str) -> BTreeMap<String, String> {
    let prefix = format!("{stream}/");
    all.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), v.clone())))
        .collect()
}

fn join_positions(events: &ShardConsumer, dead: &ShardConsumer) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for (stream, c) in [(EVENTS, events), (DEAD_LETTERS, dead)] {
        for (k, v) in c.positions() {
            all.insert(format!("{stream}/{k}"), v.clone());
        }
    }
    all
}

/// Archives `events` and `dead-letters` into the lake.
#[derive(Debug)]
pub struct Archiver {
    events: Arc<dyn StreamReader>,
    dead_letters: Arc<dyn StreamReader>,
    store: Arc<dyn CheckpointStore>,
    writer: EpochWriter,
    clock: SharedClock,
    config: ArchiverConfig,
    stats: Arc<ArchiverStats>,
    tap: Option<Arc<dyn ArchiveTap>>,
}

impl Archiver {
    pub fn new(
        events: Arc<dyn StreamReader>,
        dead_letters: Arc<dyn StreamReader>,
        store: Arc<dyn CheckpointStore>,
        writer: EpochWriter,
        clock: SharedClock,
        config: ArchiverConfig,
    ) -> Self {
        Self {
            events,
            dead_letters,
            store,
            writer,
            clock,
            config,
            stats: Arc::new(ArchiverStats::default()),
            tap: None,
        }
    }

    /// Also hands each epoch's rows to `tap` (see the module docs).
    pub fn with_tap(mut self, tap: Arc<dyn ArchiveTap>) -> Self {
        self.tap = Some(tap);
        self
    }

    pub fn stats(&self) -> Arc<ArchiverStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves (or, with `stop_when_caught_up`, until both streams are
    /// read), writing a last epoch before returning.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ArchiveError> {
        tokio::pin!(shutdown);
        let (mut epoch, positions) = match self.store.latest(CHECKPOINT_KEY).await? {
            Some(cp) => (cp.epoch, cp.positions),
            None => (0, BTreeMap::new()),
        };
        let recovered = self.writer.recover(epoch).await?;
        tracing::info!(epoch, ?recovered, "archiver resuming");
        let consumer = |reader: &Arc<dyn StreamReader>, stream: &str| {
            ShardConsumer::new(
                reader.clone(),
                split_positions(&positions, stream),
                ConsumerConfig {
                    initial: StartPosition::TrimHorizon,
                    discovery_interval: self.config.discovery_interval,
                },
            )
        };
        let mut events = consumer(&self.events, EVENTS);
        let mut dead = consumer(&self.dead_letters, DEAD_LETTERS);
        let mut staging = Staging::default();
        let mut last_checkpoint = Instant::now();
        loop {
            let poll = events.poll(self.config.batch).await?;
            let mut changed = poll.changed;
            let mut got = self.each_record(
                poll,
                Envelope::decode,
                |env| {
                    staging.push_event(env);
                    self.stats.events.incr();
                },
                |shard, _, e| {
                    tracing::debug!(%shard, error = %e,
                        "events: undecodable record skipped (the processor dead-letters it)");
                },
            );
            let poll = dead.poll(self.config.batch).await?;
            changed |= poll.changed;
            got += self.each_record(
                poll,
                |data| serde_json::from_slice::<DeadLetter>(data),
                |d| {
                    staging.dead_letters.push([d]);
                    self.stats.dead_letters.incr();
                },
                |shard, rec, e| {
                    tracing::warn!(%shard, seq = %rec.sequence, error = %e,
                        "dead-letters: undecodable record skipped");
                },
            );
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                epoch += 1;
                let positions = join_positions(&events, &dead);
                self.checkpoint(epoch, std::mem::take(&mut staging), positions)
                    .await?;
                last_checkpoint = Instant::now();
            }
            let idle = got == 0 && !changed;
            if idle && self.config.stop_when_caught_up {
                break;
            }
            if pause_between_polls(&mut shutdown, idle, self.config.idle_wait).await {
                break;
            }
        }
        epoch += 1;
        let positions = join_positions(&events, &dead);
        self.checkpoint(epoch, staging, positions).await?;
        Ok(())
    }

    /// Decodes each record of `poll`: `keep` takes what decodes, `skipped` hears of what
    /// does not (counted as undecodable). Returns the number of records read.
    fn each_record<T, E: std::fmt::Display>(
        &self,
        poll: Poll,
        decode: impl Fn(&[u8]) -> Result<T, E>,
        mut keep: impl FnMut(T),
        skipped: impl Fn(&ShardId, &StreamRecord, E),
    ) -> usize {
        let mut got = 0;
        for part in poll.shards {
            for rec in part.records {
                got += 1;
                match decode(&rec.data) {
                    Ok(value) => keep(value),
                    Err(e) => {
                        self.stats.undecodable.incr();
                        skipped(&part.shard, &rec, e);
                    }
                }
            }
        }
        got
    }

    async fn checkpoint(
        &self,
        epoch: u64,
        staging: Staging,
        positions: BTreeMap<String, String>,
    ) -> Result<(), ArchiveError> {
        if let Some(tap) = &self.tap {
            tap.epoch(&staging).await?;
        }
        let report = self.writer.commit(epoch, staging).await?;
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            epoch,
            taken_at: self.clock.now(),
            positions,
            state: Vec::new(),
        };
        self.store.save(CHECKPOINT_KEY, &cp).await?;
        self.stats.epochs.incr();
        self.stats.files.add(report.files);
        self.stats.rows_written.add(report.rows);
        tracing::debug!(epoch, ?report, "archiver epoch written");
        Ok(())
    }
}
