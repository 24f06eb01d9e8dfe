//! What the lease and reshard tests share: a small city of several systems, runners over
//! shared lease and checkpoint stores, sinks that stall on purpose, outputs by id.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bikeshare_embedded::EmbeddedStream;
use bikeshare_runner::{Runner, RunnerConfig, RunnerError};
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::checkpoint::{CheckpointStore, LocalCheckpointStore, MemoryCheckpointStore};
use bikeshare_stream::lease::{LeaseConfig, LeaseStore, MemoryLeaseStore};
use bikeshare_stream::sink::{SinkError, Sinks};
use bikeshare_stream::{
    PutRecord, ReadBatch, SequenceNumber, ShardCursor, ShardDescription, ShardId, StartPosition,
    StreamError, StreamReader, StreamRecord, StreamWriter,
};
use bikeshare_stream_processor::{BaselineScorer, Processor, ProcessorConfig, Scorer};
use bikeshare_testkit::envelopes::status_envelope;
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};
use bikeshare_types::time::{ManualClock, SystemClock};
use bikeshare_types::xorshift::XorShift64;
use bikeshare_types::{SharedClock, Timestamp};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

pub const T0: i64 = 1_700_000_000_000;
pub const MIN: i64 = 60_000;
const CAPACITY: u32 = 12;

/// Six stations per system reporting every 2 minutes for `minutes` (deterministic walks
/// that drain, fill and wander), systems interleaved in event time.
pub fn city(systems: &[String], minutes: i64) -> Vec<PutRecord> {
    let mut out = Vec::new();
    let mut state: Vec<(XorShift64, [i64; 6])> = systems
        .iter()
        .enumerate()
        .map(|(i, _)| {
            (
                XorShift64::new(0x2545_f491_4f6c_dd1d ^ (i as u64 * 0x9e37)),
                [6, 3, 9, 6, 1, 11],
            )
        })
        .collect();
    for m in (0..minutes).step_by(2) {
        for (system, (x, bikes)) in systems.iter().zip(state.iter_mut()) {
            for (i, b) in bikes.iter_mut().enumerate() {
                let drift = match i {
                    0 | 1 => -1,
                    4 | 5 => 1,
                    _ => 0,
                };
                let step = x.below(3) as i64 - 1 + if m % 40 < 20 { drift } else { -drift };
                *b = (*b + step).clamp(0, i64::from(CAPACITY));
                let env = status_envelope(
                    system,
                    "test",
                    &format!("s{i}"),
                    T0 + m * MIN,
                    *b as u32,
                    CAPACITY - *b as u32,
                );
                out.push(PutRecord::new(system.as_str(), env.encode()));
            }
        }
    }
    out
}

pub fn processor_config() -> ProcessorConfig {
    ProcessorConfig {
        lateness_ms: 0,
        ..ProcessorConfig::default()
    }
}

/// A runner named `owner` over `reader`, sharing `leases` and `checkpoints` with others.
pub fn runner(
    owner: &str,
    reader: Arc<dyn StreamReader>,
    sinks: Arc<dyn Sinks>,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    lease: Duration,
    config: RunnerConfig,
) -> Runner {
    let processor = Processor::new(processor_config());
    let scorer: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(processor.schema(), 30));
    let (tx, rx) = watch::channel(scorer);
    std::mem::forget(tx); // the scorer never changes
    let clock: SharedClock = Arc::new(SystemClock);
    Runner::new(
        reader,
        sinks,
        checkpoints,
        rx,
        clock,
        processor,
        RunnerConfig {
            lease: LeaseConfig {
                owner: owner.into(),
                duration: lease,
            },
            ..config
        },
    )
    .with_lease_store(leases)
}

/// What the runners of one test share: the stream, the checkpoint and lease stores, and
/// the lease duration.
#[derive(Clone)]
pub struct Shared {
    pub reader: Arc<dyn StreamReader>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub leases: Arc<dyn LeaseStore>,
    pub lease: Duration,
}

impl Shared {
    /// Over `reader`, with new in-memory checkpoint and lease stores.
    pub fn in_memory(reader: Arc<dyn StreamReader>, lease: Duration) -> Self {
        let leases = Arc::new(MemoryLeaseStore::default());
        let checkpoints = Arc::new(MemoryCheckpointStore::default());
        Self {
            reader,
            checkpoints,
            leases,
            lease,
        }
    }

    /// A runner named `owner` over the shared stream and stores ([`runner`]).
    pub fn runner(&self, owner: &str, sinks: Arc<dyn Sinks>, config: RunnerConfig) -> Runner {
        runner(
            owner,
            self.reader.clone(),
            sinks,
            self.checkpoints.clone(),
            self.leases.clone(),
            self.lease,
            config,
        )
    }
}

/// An embedded `events` stream of `shards` shards in `dir`.
pub async fn embedded_events(dir: &Path, shards: u32) -> EmbeddedStream {
    EmbeddedStream::open(dir.join("s.db"), "events", shards)
        .await
        .unwrap()
}

/// Publishes `records` into `stream`, 500 (the PutRecords limit) at a time.
pub async fn put_all(stream: &EmbeddedStream, records: &[PutRecord]) {
    for chunk in records.chunks(500) {
        stream.put_records(chunk).await.unwrap();
    }
}

/// [`runner`] alone: its own fresh in-memory checkpoint and lease stores (a reference run,
/// or one instance that nothing else competes with).
pub fn alone(
    owner: &str,
    reader: Arc<dyn StreamReader>,
    sinks: Arc<dyn Sinks>,
    lease: Duration,
    config: RunnerConfig,
) -> Runner {
    runner(
        owner,
        reader,
        sinks,
        Arc::new(MemoryCheckpointStore::default()),
        Arc::new(MemoryLeaseStore::default()),
        lease,
        config,
    )
}

/// A runner without leases over the embedded `stream`, with `processor`, scoring with the
/// baseline, its checkpoints in the directory `checkpoints`, its clock fixed at [`T0`].
pub fn local_runner(
    stream: &EmbeddedStream,
    sinks: &MemorySinks,
    checkpoints: &Path,
    processor: Processor,
    config: RunnerConfig,
) -> Runner {
    let scorer: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(processor.schema(), 30));
    let (tx, rx) = watch::channel(scorer);
    std::mem::forget(tx); // the scorer never changes
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(T0)));
    Runner::new(
        Arc::new(stream.clone()),
        Arc::new(sinks.clone()),
        Arc::new(LocalCheckpointStore::new(checkpoints)),
        rx,
        clock,
        processor,
        config,
    )
}

/// Outputs by id (`key` gives the id and the content); an id emitted twice must have the
/// same content.
pub fn by_id<T>(
    items: &[T],
    key: impl Fn(&T) -> (String, serde_json::Value),
) -> BTreeMap<String, serde_json::Value> {
    let mut map = BTreeMap::new();
    for item in items {
        let (id, v) = key(item);
        if let Some(prev) = map.insert(id, v.clone()) {
            assert_eq!(prev, v, "an output re-emitted with another content");
        }
    }
    map
}

/// A prediction's id and content.
pub fn prediction_key(p: &Prediction) -> (String, serde_json::Value) {
    (
        p.prediction_id.to_string(),
        serde_json::to_value(p).unwrap(),
    )
}

/// A label's id and content.
pub fn label_key(l: &Label) -> (String, serde_json::Value) {
    let v = serde_json::to_value(l).unwrap();
    (v["prediction_id"].to_string(), v)
}

pub fn predictions(sinks: &MemorySinks) -> Vec<Prediction> {
    sinks.predictions.lock().unwrap().clone()
}

pub fn labels(sinks: &MemorySinks) -> Vec<Label> {
    sinks.labels.lock().unwrap().clone()
}

/// [`MemorySinks`] that can stall: the first `predictions` call sleeps `stall` (a slow
/// Kinesis write; with [`Self::blocking`], a long synchronous step that keeps the calling
/// thread, so nothing else of a single-threaded runtime runs), and `commit` (the
/// checkpoint barrier) waits at the gate while it is closed.
#[derive(Debug, Clone)]
pub struct StallingSinks {
    pub inner: MemorySinks,
    pub stall: Option<Duration>,
    blocking: bool,
    /// Whether the stall happened.
    pub stalled: Arc<AtomicBool>,
    pub gate_closed: Arc<AtomicBool>,
    pub at_gate: Arc<Notify>,
    pub opened: Arc<Notify>,
    /// Predictions received when the barrier was first reached.
    pub at_first_commit: Arc<AtomicUsize>,
    /// `open_shard` calls: (shard, restored epoch).
    pub opened_shards: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    /// `abandon_shard` calls: (shard, last stored epoch).
    pub abandoned_shards: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
}

impl StallingSinks {
    pub fn new(stall: Option<Duration>, gate_closed: bool) -> Self {
        Self {
            inner: MemorySinks::new(),
            stall,
            blocking: false,
            stalled: Arc::new(AtomicBool::new(false)),
            gate_closed: Arc::new(AtomicBool::new(gate_closed)),
            at_gate: Arc::new(Notify::new()),
            opened: Arc::new(Notify::new()),
            at_first_commit: Arc::new(AtomicUsize::new(usize::MAX)),
            opened_shards: Arc::default(),
            abandoned_shards: Arc::default(),
        }
    }

    /// The first `predictions` call blocks its thread for `stall`.
    pub fn blocking(stall: Duration) -> Self {
        Self {
            blocking: true,
            ..Self::new(Some(stall), false)
        }
    }

    pub fn open_gate(&self) {
        self.gate_closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }
}

#[async_trait]
impl Sinks for StallingSinks {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError> {
        self.inner.features(rows).await
    }
    async fn predictions(&self, p: Vec<Prediction>) -> Result<(), SinkError> {
        if let Some(stall) = self.stall
            && !self.stalled.swap(true, Ordering::SeqCst)
        {
            if self.blocking {
                std::thread::sleep(stall);
            } else {
                tokio::time::sleep(stall).await;
            }
        }
        self.inner.predictions(p).await
    }
    async fn labels(&self, l: Vec<Label>) -> Result<(), SinkError> {
        self.inner.labels(l).await
    }
    async fn dead_letters(&self, d: Vec<DeadLetter>) -> Result<(), SinkError> {
        self.inner.dead_letters(d).await
    }
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn open_shard(&self, shard: &str, restored_epoch: u64) -> Result<(), SinkError> {
        self.opened_shards
            .lock()
            .unwrap()
            .push((shard.to_owned(), restored_epoch));
        Ok(())
    }
    async fn abandon_shard(&self, shard: &str, stored_epoch: u64) -> Result<(), SinkError> {
        self.abandoned_shards
            .lock()
            .unwrap()
            .push((shard.to_owned(), stored_epoch));
        Ok(())
    }
    async fn commit(&self, _checkpoints: &[(String, u64)]) -> Result<(), SinkError> {
        let seen = self.inner.predictions.lock().unwrap().len();
        let _ = self.at_first_commit.compare_exchange(
            usize::MAX,
            seen,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        while self.gate_closed.load(Ordering::SeqCst) {
            let opened = self.opened.notified();
            self.at_gate.notify_waiters();
            tokio::select! {
                () = opened => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        Ok(())
    }
}

/// How long a run of these tests may take to stop (by itself with `stop_when_caught_up`, or
/// once told to) before the test fails: a hang must fail with a message, not stall CI. The
/// runs take seconds; the bound is wide for a shared, busy machine.
pub const RUN_BOUND: Duration = Duration::from_secs(120);

/// Runs `runner` until it stops by itself (`stop_when_caught_up`); the test fails, naming
/// `what`, if it has not stopped within [`RUN_BOUND`].
pub async fn run_to_end(what: &str, runner: Runner) -> Processor {
    match tokio::time::timeout(RUN_BOUND, runner.run(std::future::pending())).await {
        Ok(run) => run.unwrap_or_else(|e| panic!("{what} failed: {e}")),
        Err(_) => panic!("{what} did not stop within {RUN_BOUND:?}: it never caught up"),
    }
}

/// The reference run: one runner [`alone`] over `reader` to the end of what it holds
/// (`stop_when_caught_up` is set); what it wrote, to compare other runs with.
pub async fn reference_run(
    reader: Arc<dyn StreamReader>,
    lease: Duration,
    config: RunnerConfig,
) -> MemorySinks {
    let sinks = MemorySinks::new();
    let config = RunnerConfig {
        stop_when_caught_up: true,
        ..config
    };
    let runner = alone("reference", reader, Arc::new(sinks.clone()), lease, config);
    run_to_end("the reference run", runner).await;
    sinks
}

/// Spawns `runner` to run until the returned sender is sent to (or dropped).
pub fn spawn_until_stopped(
    runner: Runner,
) -> (
    oneshot::Sender<()>,
    JoinHandle<Result<Processor, RunnerError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    (stop, run)
}

/// Waits for a spawned run to end; the test fails, naming `what`, if it has not within
/// [`RUN_BOUND`].
pub async fn joined(what: &str, run: JoinHandle<Result<Processor, RunnerError>>) -> Processor {
    match tokio::time::timeout(RUN_BOUND, run).await {
        Ok(Ok(run)) => run.unwrap_or_else(|e| panic!("{what} failed: {e}")),
        Ok(Err(e)) => panic!("{what} panicked: {e}"),
        Err(_) => panic!("{what} did not stop within {RUN_BOUND:?}"),
    }
}

/// Waits (bounded) until `f` holds.
pub async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn now() -> Timestamp {
    bikeshare_types::time::Clock::now(&SystemClock)
}

/// An in-memory stream that reshards like Kinesis: a split or a merge closes the parents
/// (they end once read to their last record, naming their children) and new records go to
/// the open shard whose hash-key range holds the MD5 of their partition key.
#[derive(Debug, Clone, Default)]
pub struct ReshardableStream {
    shards: Arc<std::sync::Mutex<Shards>>,
    /// Reads answered before reads hang ([`ReshardableStream::freezing_after`]); `None`: never.
    answers: Option<Arc<AtomicUsize>>,
    /// A shard whose reads are held back ([`ReshardableStream::gated`]).
    gate: Option<Arc<ShardGate>>,
}

/// A gate on the reads of one shard ([`ReshardableStream::gated`]).
#[derive(Debug)]
pub struct ShardGate {
    pub shard: ShardId,
    /// Reads still answered before the gate holds the shard back.
    pub passes: AtomicUsize,
    /// Once set, every read is answered.
    pub open: AtomicBool,
}

impl ShardGate {
    /// Whether this read of the gated shard is answered (counting it against `passes`).
    fn pass(&self) -> bool {
        self.open.load(Ordering::SeqCst)
            || self
                .passes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

#[derive(Debug, Default)]
struct Shards {
    shards: Vec<(ShardDescription, Vec<StreamRecord>)>,
    next_sequence: u64,
}

impl Shards {
    fn add(&mut self, mut desc: ShardDescription) -> ShardId {
        desc.id = ShardId::from_index(self.shards.len() as u32);
        let id = desc.id.clone();
        self.shards.push((desc, Vec::new()));
        id
    }
    fn find(&mut self, id: &ShardId) -> &mut (ShardDescription, Vec<StreamRecord>) {
        self.shards.iter_mut().find(|(d, _)| &d.id == id).unwrap()
    }
}

impl ReshardableStream {
    pub fn new(shards: u32) -> Self {
        let stream = Self::default();
        {
            let mut s = stream.shards.lock().unwrap();
            for (start, end) in bikeshare_stream::uniform_ranges(shards) {
                s.add(ShardDescription {
                    id: ShardId::from_index(0),
                    parent: None,
                    adjacent_parent: None,
                    starting_hash_key: start,
                    ending_hash_key: end,
                    closed: false,
                });
            }
        }
        stream
    }

    /// The same stream as a frozen emulator serves it: once `answers` reads were answered
    /// through this handle (and the cursors it opens), every further read hangs forever.
    /// Other handles read on.
    pub fn freezing_after(&self, answers: usize) -> Self {
        Self {
            shards: self.shards.clone(),
            answers: Some(Arc::new(AtomicUsize::new(answers))),
            gate: None,
        }
    }

    /// The same stream with shard `shard` gated: through this handle it answers `passes`
    /// reads, then only empty reads behind the tip (so a runner neither moves on nor thinks
    /// it caught up) until the gate opens.
    pub fn gated(&self, shard: ShardId, passes: usize) -> (Self, Arc<ShardGate>) {
        let gate = Arc::new(ShardGate {
            shard,
            passes: AtomicUsize::new(passes),
            open: AtomicBool::new(false),
        });
        let stream = Self {
            shards: self.shards.clone(),
            answers: None,
            gate: Some(gate.clone()),
        };
        (stream, gate)
    }

    pub fn put(&self, records: &[PutRecord]) {
        let mut s = self.shards.lock().unwrap();
        for r in records {
            let h = bikeshare_stream::hash_key(&r.partition_key);
            s.next_sequence += 1;
            let sequence = SequenceNumber::from_u64(s.next_sequence);
            let (desc, log) = s
                .shards
                .iter_mut()
                .find(|(d, _)| !d.closed && d.starting_hash_key <= h && h <= d.ending_hash_key)
                .unwrap();
            log.push(StreamRecord {
                shard: desc.id.clone(),
                sequence,
                partition_key: r.partition_key.clone(),
                data: r.data.clone(),
                arrival: now(),
            });
        }
    }

    /// The open shards, in hash-key order.
    pub fn open_shards(&self) -> Vec<ShardDescription> {
        let s = self.shards.lock().unwrap();
        let mut open: Vec<ShardDescription> = s
            .shards
            .iter()
            .filter(|(d, _)| !d.closed)
            .map(|(d, _)| d.clone())
            .collect();
        open.sort_by_key(|d| d.starting_hash_key);
        open
    }

    /// Splits `shard` at the middle of its range; returns the two children.
    pub fn split(&self, shard: &ShardId) -> (ShardId, ShardId) {
        let mut s = self.shards.lock().unwrap();
        let parent = s.find(shard);
        parent.0.closed = true;
        let p = parent.0.clone();
        let middle = p.starting_hash_key + (p.ending_hash_key - p.starting_hash_key) / 2;
        let child = |start, end| ShardDescription {
            id: ShardId::from_index(0),
            parent: Some(p.id.clone()),
            adjacent_parent: None,
            starting_hash_key: start,
            ending_hash_key: end,
            closed: false,
        };
        let low = s.add(child(p.starting_hash_key, middle));
        let high = s.add(child(middle + 1, p.ending_hash_key));
        (low, high)
    }

    /// Merges two adjacent open shards; returns the child.
    pub fn merge(&self, a: &ShardId, b: &ShardId) -> ShardId {
        let mut s = self.shards.lock().unwrap();
        s.find(a).0.closed = true;
        s.find(b).0.closed = true;
        let (da, db) = (s.find(a).0.clone(), s.find(b).0.clone());
        assert!(
            da.ending_hash_key + 1 == db.starting_hash_key
                || db.ending_hash_key + 1 == da.starting_hash_key,
            "not adjacent"
        );
        s.add(ShardDescription {
            id: ShardId::from_index(0),
            parent: Some(a.clone()),
            adjacent_parent: Some(b.clone()),
            starting_hash_key: da.starting_hash_key.min(db.starting_hash_key),
            ending_hash_key: da.ending_hash_key.max(db.ending_hash_key),
            closed: false,
        })
    }
}

#[async_trait]
impl StreamReader for ReshardableStream {
    fn stream_name(&self) -> &str {
        "events"
    }
    async fn list_shards(&self) -> Result<Vec<ShardDescription>, StreamError> {
        let list = self
            .shards
            .lock()
            .unwrap()
            .shards
            .iter()
            .map(|(d, _)| d.clone())
            .collect();
        Ok(list)
    }
    async fn open(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardCursor>, StreamError> {
        let after = match from {
            StartPosition::TrimHorizon => 0,
            StartPosition::AfterSequence(seq) => seq.as_u64().unwrap(),
            other => panic!("not used by the runner: {other:?}"),
        };
        let cursor: Box<dyn ShardCursor> = Box::new(MemoryCursor {
            stream: self.clone(),
            shard: shard.clone(),
            after,
        });
        Ok(cursor)
    }
}

#[derive(Debug)]
struct MemoryCursor {
    stream: ReshardableStream,
    shard: ShardId,
    after: u64,
}

#[async_trait]
impl ShardCursor for MemoryCursor {
    async fn next_batch(&mut self, limit: usize) -> Result<ReadBatch, StreamError> {
        if let Some(answers) = &self.stream.answers
            && answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return std::future::pending().await;
        }
        if let Some(gate) = &self.stream.gate
            && gate.shard == self.shard
            && !gate.pass()
        {
            return Ok(ReadBatch {
                records: Vec::new(),
                millis_behind_latest: Some(1),
                shard_end: None,
            });
        }
        let mut s = self.stream.shards.lock().unwrap();
        let children: Vec<ShardId> = s
            .shards
            .iter()
            .filter(|(d, _)| d.parents().any(|p| p == &self.shard))
            .map(|(d, _)| d.id.clone())
            .collect();
        let (desc, log) = s.find(&self.shard);
        let records: Vec<StreamRecord> = log
            .iter()
            .filter(|r| r.sequence.as_u64().unwrap() > self.after)
            .take(limit)
            .cloned()
            .collect();
        if let Some(last) = records.last() {
            self.after = last.sequence.as_u64().unwrap();
        }
        let left = log
            .iter()
            .filter(|r| r.sequence.as_u64().unwrap() > self.after)
            .count();
        let batch = ReadBatch {
            millis_behind_latest: Some(if left == 0 { 0 } else { 1 }),
            shard_end: (desc.closed && left == 0).then_some(children),
            records,
        };
        drop(s);
        Ok(batch)
    }
}

/// Logs to the test's output at `RUST_LOG`'s levels when set (once per test binary).
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
