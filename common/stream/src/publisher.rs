//! The batching publisher: a queue and a background task in front of any [`StreamWriter`]
//! (embedded or Kinesis), which turns single records into `PutRecords` batches and owns
//! their retries.
//!
//! ## Flow
//!
//! [`Publisher::send`] checks the record against the per-record limits (refusing it with
//! [`PublishError::RecordTooLarge`] or [`PublishError::InvalidPartitionKey`], so the caller
//! can dead-letter it) and puts it into a bounded queue: when the queue is full, `send`
//! awaits, which is the backpressure on producers. One background task takes records from
//! the queue into a batch until it holds [`PublisherConfig::max_batch_records`] records,
//! would exceed [`PublisherConfig::max_batch_bytes`], or [`PublisherConfig::linger`] has
//! passed since its first record; then it writes the batch and waits for the outcome.
//!
//! ## Retries (this task is the one retry owner of the write path)
//!
//! - A record that failed alone ([`PutOutcome::Failed`], e.g. Kinesis'
//!   `ProvisionedThroughputExceededException`) is sent again, with only the other failed
//!   records of its batch, after a [`Backoff`] delay (full jitter).
//! - A whole call that failed with a retryable error ([`Classify::retryable`]: throttling,
//!   service or storage errors) is sent again whole after a delay.
//! - By default retries never stop ([`Backoff::max_retries`] `None`): nothing is lost while
//!   the stream is unavailable, and the queue fills up and pushes back instead.
//! - A non-retryable error (or a record failing with a code in [`PERMANENT_FAILURE_CODES`],
//!   or spent retries if a limit is configured) drops the records concerned; the error is
//!   kept and returned, once, by the next [`Publisher::send`] or [`Publisher::flush`] as
//!   [`PublishError::Dropped`].
//!
//! ## Order
//!
//! At most one batch is in flight, and the failed records of a batch are sent again, in
//! their original order, before any new record is taken from the queue. So a record is never
//! written before a record of the same partition key that was sent earlier *in an earlier
//! batch*. Within one `PutRecords` call the backend decides: Kinesis throttles per shard,
//! so it fails a key's records from some point on and order holds; a backend that failed a
//! key's first record and wrote its second would reorder them, and no client can prevent it.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use bikeshare_embedded::EmbeddedStream;
//! use bikeshare_stream::publisher::{Publisher, PublisherConfig};
//! use bikeshare_stream::{PutRecord, names};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let stream = EmbeddedStream::open(dir.path().join("streams.db"), names::EVENTS, 1).await.unwrap();
//! let publisher = Publisher::spawn(Arc::new(stream), PublisherConfig::default());
//! publisher.send(PutRecord::new("bluebikes", "hello")).await.unwrap();
//! publisher.flush().await.unwrap(); // "hello" is written
//! let stats = publisher.close().await.unwrap();
//! assert_eq!(stats.records_sent, 1);
//! # });
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use smart_default::SmartDefault;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{PutOutcome, PutRecord, StreamError, StreamWriter};
use bikeshare_types::error::{Classify, ErrorClass, chain};
use bikeshare_types::limits::{
    KINESIS_MAX_BYTES_PER_PUT, KINESIS_MAX_PARTITION_KEY_CHARS, KINESIS_MAX_RECORD_BYTES,
    KINESIS_MAX_RECORDS_PER_PUT,
};
use bikeshare_types::retry::Backoff;

/// Per-record error codes that no retry can fix: such records are dropped and reported.
/// Every other code (`ProvisionedThroughputExceededException`, `InternalFailure`, ...) is
/// retried.
pub const PERMANENT_FAILURE_CODES: &[&str] = &["ValidationException", "InvalidArgumentException"];

/// Settings of a [`Publisher`].
#[derive(Debug, Clone, PartialEq, SmartDefault)]
pub struct PublisherConfig {
    /// Records per batch, at most [`KINESIS_MAX_RECORDS_PER_PUT`] (larger values are lowered).
    #[default(KINESIS_MAX_RECORDS_PER_PUT)]
    pub max_batch_records: usize,
    /// Bytes (data plus partition keys) per batch, at most [`KINESIS_MAX_BYTES_PER_PUT`].
    #[default(KINESIS_MAX_BYTES_PER_PUT)]
    pub max_batch_bytes: usize,
    /// How long a batch waits for more records after its first one.
    #[default(Duration::from_millis(50))]
    pub linger: Duration,
    /// Records the queue holds before [`Publisher::send`] waits.
    #[default(10_000)]
    pub queue_capacity: usize,
    /// Delays between retries; `max_retries: None` retries forever.
    #[default(Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_secs(5),
        max_retries: None,
    })]
    pub backoff: Backoff,
}

/// Why a record was not accepted, or earlier ones were not written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// This record is over the per-record limit (data plus partition key): dead-letter it.
    #[error("record of {size} bytes is over the limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
    /// This record's partition key is empty or too long: dead-letter it.
    #[error("partition key of {chars} characters; it must have 1 to {limit}")]
    InvalidPartitionKey { chars: usize, limit: usize },
    /// Records sent *earlier* were dropped after an error no retry could fix. The record
    /// given to the `send` that returns this was not queued; send it again to queue it.
    #[error("{records} records sent earlier were dropped: {}", chain(source))]
    Dropped {
        records: usize,
        #[source]
        source: StreamError,
    },
    /// The background task is gone.
    #[error("the publisher is closed")]
    Closed,
}

impl Classify for PublishError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::RecordTooLarge { .. } | Self::InvalidPartitionKey { .. } => ErrorClass::User,
            Self::Dropped { source, .. } => source.class(),
            Self::Closed => ErrorClass::Internal,
        }
    }
    /// Never: the refused record will not fit later, and dropped records are gone.
    fn retryable(&self) -> bool {
        false
    }
}

bikeshare_types::counters! {
    /// The publisher's counters (shared with its task).
    struct PublisherCounters => /// Counters since the publisher was spawned.
    pub struct PublisherStats {
        /// Records the stream acknowledged.
        records_sent,
        /// Batches formed (each one is one or more `put_records` calls).
        batches,
        /// `put_records` calls that sent records again (whole batch or failed records only).
        retries,
        /// Records sent again, summed over retries.
        records_retried,
        /// Records dropped after a non-retryable error.
        records_failed,
        /// Records refused by `send` (too large, bad partition key).
        records_refused,
    }
}

/// A batching, retrying front for one stream. Spawned on the current tokio runtime.
///
/// Dropping it without [`Publisher::close`] lets the task write what is queued in the
/// background and then stop, unless the runtime stops first.
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    record_limit: usize,
}

enum Command {
    Record(PutRecord),
    Flush(oneshot::Sender<Result<(), PublishError>>),
}

#[derive(Debug, Default)]
struct Shared {
    error: Mutex<Option<PublishError>>,
    counts: PublisherCounters,
}

impl Shared {
    /// Counts `records` as dropped and keeps the error for the next caller (the first
    /// error's cause is kept; later drops add to its count).
    fn dropped(&self, records: usize, source: StreamError) {
        self.counts.records_failed.add(records);
        tracing::error!(records, error = %chain(&source), "publisher dropped records");
        self.keep_error(records, source);
    }

    fn keep_error(&self, records: usize, source: StreamError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *slot {
            Some(PublishError::Dropped { records: n, .. }) => *n += records,
            _ => *slot = Some(PublishError::Dropped { records, source }),
        }
    }

    fn take_error(&self) -> Option<PublishError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Publisher {
    /// Starts the background task on the current tokio runtime (panics outside one, like
    /// [`tokio::spawn`]). Limits above the Kinesis ones are lowered to them, zeroes raised
    /// to one.
    pub fn spawn(writer: Arc<dyn StreamWriter>, config: PublisherConfig) -> Self {
        let config = PublisherConfig {
            max_batch_records: config
                .max_batch_records
                .clamp(1, KINESIS_MAX_RECORDS_PER_PUT),
            max_batch_bytes: config.max_batch_bytes.clamp(1, KINESIS_MAX_BYTES_PER_PUT),
            queue_capacity: config.queue_capacity.max(1),
            ..config
        };
        let record_limit = KINESIS_MAX_RECORD_BYTES.min(config.max_batch_bytes);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let shared = Arc::new(Shared::default());
        let batcher = Batcher {
            writer,
            rx,
            shared: shared.clone(),
            config,
        };
        let task = tokio::spawn(batcher.run());
        Self {
            tx,
            shared,
            task,
            record_limit,
        }
    }

    /// The largest record (data plus partition key) that [`Self::send`] accepts.
    pub fn max_record_bytes(&self) -> usize {
        self.record_limit
    }

    /// Queues a record, waiting while the queue is full. `Ok` means queued, not written:
    /// use [`Self::flush`] to know it is written.
    pub async fn send(&self, record: PutRecord) -> Result<(), PublishError> {
        let size = record.size();
        if size > self.record_limit {
            self.shared.counts.records_refused.incr();
            return Err(PublishError::RecordTooLarge {
                size,
                limit: self.record_limit,
            });
        }
        let chars = record.partition_key.chars().count();
        if chars == 0 || chars > KINESIS_MAX_PARTITION_KEY_CHARS {
            self.shared.counts.records_refused.incr();
            return Err(PublishError::InvalidPartitionKey {
                chars,
                limit: KINESIS_MAX_PARTITION_KEY_CHARS,
            });
        }
        if let Some(err) = self.shared.take_error() {
            return Err(err);
        }
        self.tx
            .send(Command::Record(record))
            .await
            .map_err(|_| PublishError::Closed)
    }

    /// Resolves once every record queued before this call was acknowledged by the stream
    /// (or dropped: then the error says so). Waits as long as retries take.
    pub async fn flush(&self) -> Result<(), PublishError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .await
            .map_err(|_| PublishError::Closed)?;
        done.await.map_err(|_| PublishError::Closed)?
    }

    /// Counters so far.
    pub fn stats(&self) -> PublisherStats {
        self.shared.counts.snapshot()
    }

    /// Writes everything queued, stops the task and returns the final counters, or the
    /// error of records dropped since the last `send`/`flush`. With retries forever (the
    /// default) it waits as long as the stream is unavailable: bound it with
    /// [`tokio::time::timeout`] at shutdown if need be.
    pub async fn close(self) -> Result<PublisherStats, PublishError> {
        let Self {
            tx, shared, task, ..
        } = self;
        drop(tx);
        task.await.map_err(|e| {
            tracing::error!(error = %e, "publisher task failed");
            PublishError::Closed
        })?;
        match shared.take_error() {
            Some(err) => Err(err),
            None => Ok(shared.counts.snapshot()),
        }
    }
}

/// The background task.
struct Batcher {
    writer: Arc<dyn StreamWriter>,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    config: PublisherConfig,
}

impl Batcher {
    async fn run(mut self) {
        let mut batch: Vec<PutRecord> = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            if batch.is_empty() {
                match self.rx.recv().await {
                    None => break,
                    Some(Command::Flush(reply)) => {
                        self.answer(reply);
                        continue;
                    }
                    Some(Command::Record(record)) => {
                        batch_bytes = record.size();
                        batch.push(record);
                    }
                }
            }
            let deadline = Instant::now() + self.config.linger;
            let mut carry = None;
            let mut flush = None;
            let mut closed = false;
            while batch.len() < self.config.max_batch_records {
                // `timeout_at` polls the queue before the deadline: ready records are
                // taken even once the linger has passed.
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Err(_) => break,
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Ok(Some(Command::Flush(reply))) => {
                        flush = Some(reply);
                        break;
                    }
                    Ok(Some(Command::Record(record))) => {
                        if batch_bytes + record.size() > self.config.max_batch_bytes {
                            carry = Some(record);
                            break;
                        }
                        batch_bytes += record.size();
                        batch.push(record);
                    }
                }
            }
            self.write(std::mem::take(&mut batch)).await;
            batch_bytes = 0;
            if let Some(record) = carry {
                batch_bytes = record.size();
                batch.push(record);
            }
            if let Some(reply) = flush {
                self.answer(reply);
            }
            if closed {
                break;
            }
        }
        // Closed with a record carried over (it arrived after the last batch was full).
        self.write(batch).await;
        tracing::debug!(stream = self.writer.stream_name(), "publisher stopped");
    }

    fn answer(&self, reply: oneshot::Sender<Result<(), PublishError>>) {
        let result = self.shared.take_error().map_or(Ok(()), Err);
        if let Err(Err(PublishError::Dropped { records, source })) = reply.send(result) {
            // The flusher went away: keep the error for the next caller.
            self.shared.keep_error(records, source);
        }
    }

    /// Writes one batch until every record is acknowledged or dropped.
    async fn write(&self, batch: Vec<PutRecord>) {
        if batch.is_empty() {
            return;
        }
        self.shared.counts.batches.incr();
        let mut pending = batch;
        let mut attempt = 0u32;
        loop {
            let (retry, cause) = match self.writer.put_records(&pending).await {
                Ok(outcomes) if outcomes.len() == pending.len() => {
                    match self.sort_outcomes(pending, outcomes) {
                        Some(retry) => retry,
                        None => return,
                    }
                }
                Ok(outcomes) => {
                    let n = pending.len();
                    self.shared.dropped(
                        n,
                        StreamError::Service(format!(
                            "{} outcomes for {n} records from {}",
                            outcomes.len(),
                            self.writer.stream_name()
                        )),
                    );
                    return;
                }
                Err(err) if err.retryable() => (pending, err),
                Err(err) => {
                    self.shared.dropped(pending.len(), err);
                    return;
                }
            };
            let Some(delay) = self.config.backoff.delay(attempt, &mut rand::rng()) else {
                self.shared.dropped(retry.len(), cause);
                return;
            };
            tracing::warn!(
                stream = self.writer.stream_name(),
                records = retry.len(),
                attempt = attempt + 1,
                delay_ms = delay.as_millis() as u64,
                error = %chain(&cause),
                "retrying put",
            );
            attempt = attempt.saturating_add(1);
            self.shared.counts.retries.incr();
            self.shared.counts.records_retried.add(retry.len());
            tokio::time::sleep(delay).await;
            pending = retry;
        }
    }

    /// Counts written records, drops permanently failed ones, and returns the records to
    /// send again (in their original order) with the cause, if any.
    fn sort_outcomes(
        &self,
        pending: Vec<PutRecord>,
        outcomes: Vec<PutOutcome>,
    ) -> Option<(Vec<PutRecord>, StreamError)> {
        let mut retry = Vec::new();
        let mut last_retryable = None;
        let mut rejected = 0usize;
        let mut first_rejection = None;
        let mut written = 0usize;
        for (record, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                PutOutcome::Written { .. } => written += 1,
                PutOutcome::Failed { code, message } => {
                    if PERMANENT_FAILURE_CODES.contains(&code.as_str()) {
                        rejected += 1;
                        first_rejection.get_or_insert((code, message));
                    } else {
                        retry.push(record);
                        last_retryable = Some((code, message));
                    }
                }
            }
        }
        self.shared.counts.records_sent.add(written);
        if let Some((code, message)) = first_rejection {
            self.shared.dropped(
                rejected,
                StreamError::InvalidRequest(format!("record rejected: {code}: {message}")),
            );
        }
        let (code, message) = last_retryable?;
        let cause = StreamError::Throttled(format!(
            "{} records failed, last: {code}: {message}",
            retry.len()
        ));
        Some((retry, cause))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};

    use async_trait::async_trait;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Records every call and what it wrote; fails what the test tells it to.
    #[derive(Default)]
    struct FlakyWriter {
        state: Mutex<State>,
    }

    type FailRule = Box<dyn FnMut(usize, &[PutRecord]) -> Vec<Option<&'static str>> + Send>;

    #[derive(Default)]
    struct State {
        /// Every call's records.
        calls: Vec<Vec<PutRecord>>,
        /// Records written, in order.
        log: Vec<PutRecord>,
        /// Errors returned by the next calls, in order.
        call_errors: VecDeque<StreamError>,
        /// Per call (number, records): a failure code per record, or none.
        fail: Option<FailRule>,
    }

    impl std::fmt::Debug for FlakyWriter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FlakyWriter")
        }
    }

    impl FlakyWriter {
        fn with_rule(rule: FailRule) -> Arc<Self> {
            let w = Self::default();
            w.state.lock().unwrap().fail = Some(rule);
            Arc::new(w)
        }
        fn with_errors(errors: Vec<StreamError>) -> Arc<Self> {
            let w = Self::default();
            w.state.lock().unwrap().call_errors = errors.into();
            Arc::new(w)
        }
        fn calls(&self) -> Vec<Vec<PutRecord>> {
            self.state.lock().unwrap().calls.clone()
        }
        fn log(&self) -> Vec<String> {
            self.state.lock().unwrap().log.iter().map(data).collect()
        }
    }

    #[async_trait]
    impl StreamWriter for FlakyWriter {
        fn stream_name(&self) -> &str {
            "flaky"
        }
        async fn put_records(&self, records: &[PutRecord]) -> Result<Vec<PutOutcome>, StreamError> {
            let mut s = self.state.lock().unwrap();
            assert!(records.len() <= KINESIS_MAX_RECORDS_PER_PUT);
            let n = s.calls.len();
            s.calls.push(records.to_vec());
            if let Some(err) = s.call_errors.pop_front() {
                return Err(err);
            }
            let codes = match s.fail.as_mut() {
                Some(rule) => rule(n, records),
                None => vec![None; records.len()],
            };
            let mut out = Vec::new();
            for (i, (record, code)) in records.iter().zip(codes).enumerate() {
                match code {
                    Some(code) => out.push(PutOutcome::Failed {
                        code: code.into(),
                        message: "test".into(),
                    }),
                    None => {
                        s.log.push(record.clone());
                        out.push(PutOutcome::Written {
                            shard: super::super::ShardId::from_index(0),
                            sequence: super::super::SequenceNumber::from_u64((n * 1000 + i) as u64),
                        });
                    }
                }
            }
            Ok(out)
        }
    }

    fn data(r: &PutRecord) -> String {
        String::from_utf8(r.data.to_vec()).unwrap()
    }

    fn fast(config: PublisherConfig) -> PublisherConfig {
        PublisherConfig {
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(3),
                max_retries: None,
            },
            ..config
        }
    }

    #[tokio::test]
    async fn resends_only_the_failed_records() {
        const THROTTLED: &str = "ProvisionedThroughputExceededException";
        // The first call fails records r2 and r5; later calls succeed.
        let writer = FlakyWriter::with_rule(Box::new(|call, records| {
            records
                .iter()
                .map(|r| {
                    (call == 0 && ["r2", "r5"].contains(&data(r).as_str())).then_some(THROTTLED)
                })
                .collect()
        }));
        let config = fast(PublisherConfig {
            linger: Duration::from_secs(60),
            ..Default::default()
        });
        let publisher = Publisher::spawn(writer.clone(), config);
        for i in 0..8 {
            publisher
                .send(PutRecord::new(format!("k{i}"), format!("r{i}")))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        let calls: Vec<Vec<String>> = writer
            .calls()
            .iter()
            .map(|c| c.iter().map(data).collect())
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].len(), 8);
        assert_eq!(calls[1], ["r2", "r5"]);
        let mut log = writer.log();
        log.sort();
        assert_eq!(log, (0..8).map(|i| format!("r{i}")).collect::<Vec<_>>());
        let stats = publisher.close().await.unwrap();
        assert_eq!(
            stats,
            PublisherStats {
                records_sent: 8,
                batches: 1,
                retries: 1,
                records_retried: 2,
                ..Default::default()
            }
        );
    }

    #[tokio::test]
    async fn retryable_call_errors_resend_the_batch_and_lose_nothing() {
        let writer = FlakyWriter::with_errors(vec![
            StreamError::Throttled("slow down".into()),
            StreamError::Service("503".into()),
            StreamError::Storage("busy".into()),
        ]);
        let publisher = Publisher::spawn(writer.clone(), fast(PublisherConfig::default()));
        for i in 0..5 {
            publisher
                .send(PutRecord::new("k", format!("r{i}")))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        assert_eq!(writer.log(), ["r0", "r1", "r2", "r3", "r4"]);
        let calls = writer.calls();
        assert_eq!(calls.len(), 4);
        assert!(
            calls.iter().all(|c| c == &calls[0]),
            "the same batch was sent each time"
        );
        let stats = publisher.close().await.unwrap();
        assert_eq!(
            (stats.retries, stats.records_sent, stats.records_failed),
            (3, 5, 0)
        );
    }

    #[tokio::test]
    async fn per_key_order_survives_partial_failures() {
        // Throttles like a Kinesis shard: in a failing call, a key's records fail from a
        // random point on.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let writer = FlakyWriter::with_rule(Box::new(move |_, records| {
            let mut failing: HashMap<String, bool> = HashMap::new();
            records
                .iter()
                .map(|r| {
                    let f = failing.entry(r.partition_key.clone()).or_insert(false);
                    if !*f && rng.random_bool(0.15) {
                        *f = true;
                    }
                    f.then_some("InternalFailure")
                })
                .collect()
        }));
        let config = fast(PublisherConfig {
            max_batch_records: 13,
            linger: Duration::from_millis(1),
            queue_capacity: 5,
            ..Default::default()
        });
        let publisher = Publisher::spawn(writer.clone(), config);
        let keys = ["a", "b", "c", "d"];
        for i in 0..400 {
            let key = keys[i % 3 + (i / 100) % 2];
            publisher
                .send(PutRecord::new(key, format!("{key}:{i:04}")))
                .await
                .unwrap();
        }
        let stats = publisher.close().await.unwrap();
        assert!(
            stats.retries > 5,
            "the test should exercise retries: {stats:?}"
        );
        assert_eq!(stats.records_sent, 400);

        let log = writer.log();
        assert_eq!(log.len(), 400, "every record written exactly once");
        for key in keys {
            let of_key: Vec<&String> = log.iter().filter(|d| d.starts_with(key)).collect();
            let mut sorted = of_key.clone();
            sorted.sort();
            assert_eq!(of_key, sorted, "records of key {key} were reordered");
        }
    }

    #[tokio::test]
    async fn records_over_the_limits_are_refused_at_send() {
        let writer = Arc::new(FlakyWriter::default());
        let publisher = Publisher::spawn(writer.clone(), fast(PublisherConfig::default()));
        let limit = KINESIS_MAX_RECORD_BYTES;
        assert_eq!(publisher.max_record_bytes(), limit);
        let too_large = PutRecord::new("k", vec![0u8; limit]); // one byte over, with the key
        match publisher.send(too_large).await {
            Err(PublishError::RecordTooLarge { size, limit: l }) => {
                assert_eq!((size, l), (limit + 1, limit))
            }
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
        assert!(matches!(
            publisher.send(PutRecord::new("", "x")).await,
            Err(PublishError::InvalidPartitionKey { chars: 0, .. })
        ));
        let long = "é".repeat(KINESIS_MAX_PARTITION_KEY_CHARS + 1);
        assert!(matches!(
            publisher.send(PutRecord::new(long, "x")).await,
            Err(PublishError::InvalidPartitionKey { .. })
        ));
        publisher
            .send(PutRecord::new("k", vec![0u8; limit - 1]))
            .await
            .unwrap();
        let stats = publisher.close().await.unwrap();
        assert_eq!((stats.records_refused, stats.records_sent), (3, 1));

        // A lower batch size lowers the record limit too.
        let small = PublisherConfig {
            max_batch_bytes: 100,
            ..Default::default()
        };
        let publisher = Publisher::spawn(writer, small);
        assert!(matches!(
            publisher.send(PutRecord::new("k", vec![0u8; 100])).await,
            Err(PublishError::RecordTooLarge {
                size: 101,
                limit: 100
            })
        ));
    }

    #[tokio::test]
    async fn batches_respect_record_and_byte_limits() {
        let writer = Arc::new(FlakyWriter::default());
        let config = PublisherConfig {
            max_batch_records: 7,
            max_batch_bytes: 50,
            linger: Duration::from_secs(60),
            ..Default::default()
        };
        let publisher = Publisher::spawn(writer.clone(), config);
        // 9-byte records (key "k" + 8 bytes): at most 5 fit 50 bytes.
        for i in 0..23 {
            publisher
                .send(PutRecord::new("k", format!("r{i:07}")))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        let sizes: Vec<usize> = writer.calls().iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [5, 5, 5, 5, 3],
            "the flush writes the last partial batch"
        );
        let expected: Vec<String> = (0..23).map(|i| format!("r{i:07}")).collect();
        assert_eq!(writer.log(), expected);

        let config = PublisherConfig {
            max_batch_records: 7,
            linger: Duration::from_secs(60),
            ..Default::default()
        };
        let writer = Arc::new(FlakyWriter::default());
        let publisher = Publisher::spawn(writer.clone(), config);
        for i in 0..16 {
            publisher
                .send(PutRecord::new("k", format!("{i}")))
                .await
                .unwrap();
        }
        publisher.close().await.unwrap();
        let sizes: Vec<usize> = writer.calls().iter().map(Vec::len).collect();
        assert_eq!(sizes, [7, 7, 2], "close writes what is queued");
    }

    #[tokio::test]
    async fn non_retryable_errors_reach_the_next_caller_once() {
        let writer = FlakyWriter::with_errors(vec![StreamError::InvalidRequest("bad".into())]);
        let publisher = Publisher::spawn(writer.clone(), fast(PublisherConfig::default()));
        for i in 0..3 {
            publisher
                .send(PutRecord::new("k", format!("r{i}")))
                .await
                .unwrap();
        }
        match publisher.flush().await {
            Err(PublishError::Dropped {
                records: 3,
                source: StreamError::InvalidRequest(_),
            }) => {}
            other => panic!("expected Dropped, got {other:?}"),
        }
        assert_eq!(
            writer.calls().len(),
            1,
            "a non-retryable error is not retried"
        );
        publisher.flush().await.unwrap();

        // A permanently failing record is dropped and reported, the others written.
        let writer = FlakyWriter::with_rule(Box::new(|_, records| {
            records
                .iter()
                .map(|r| (data(r) == "bad").then_some("ValidationException"))
                .collect()
        }));
        let publisher = Publisher::spawn(writer.clone(), fast(PublisherConfig::default()));
        for d in ["ok1", "bad", "ok2"] {
            publisher.send(PutRecord::new("k", d)).await.unwrap();
        }
        publisher.flush().await.unwrap_err();
        assert_eq!(writer.log(), ["ok1", "ok2"]);
        assert_eq!(writer.calls().len(), 1);
        // The error of a later drop goes to the next send, which does not queue its record.
        publisher.send(PutRecord::new("k", "bad")).await.unwrap();
        for _ in 0..1000 {
            if publisher.stats().records_failed == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(publisher.stats().records_failed, 2);
        match publisher.send(PutRecord::new("k", "later")).await {
            Err(PublishError::Dropped { records: 1, .. }) => {}
            other => panic!("expected Dropped, got {other:?}"),
        }
        publisher.flush().await.unwrap();
        assert_eq!(
            writer.log(),
            ["ok1", "ok2"],
            "the refused send queued nothing"
        );
        publisher.close().await.unwrap();
    }

    #[tokio::test]
    async fn spent_retries_drop_and_report() {
        let writer = FlakyWriter::with_rule(Box::new(|_, records| {
            vec![Some("InternalFailure"); records.len()]
        }));
        let config = PublisherConfig {
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
                max_retries: Some(2),
            },
            ..Default::default()
        };
        let publisher = Publisher::spawn(writer.clone(), config);
        publisher.send(PutRecord::new("k", "x")).await.unwrap();
        assert!(matches!(
            publisher.flush().await,
            Err(PublishError::Dropped {
                records: 1,
                source: StreamError::Throttled(_)
            })
        ));
        assert_eq!(writer.calls().len(), 3, "one call and two retries");
    }
}
