//! [`KinesisCursor`]: reading one shard with `GetRecords`, within the per-shard limits.
//!
//! - **Pacing** ([`ReadPacer`]): at most [`ReadSettings::calls_per_sec`] calls per second
//!   (Kinesis allows [`KINESIS_GET_RECORDS_PER_SHARD_PER_SEC`]) and, after a call that read
//!   `b` bytes, no call before `b / bytes_per_sec` seconds (the shard's
//!   [`KINESIS_SHARD_READ_BYTES_PER_SEC`]). [`ShardCursor::next_batch`] waits until the next
//!   call is allowed.
//! - **Throttling** (`ProvisionedThroughputExceededException`): the cursor backs this shard
//!   off (exponential, full jitter) and returns an empty batch; the caller comes back later.
//!   This cursor is the one retry owner of the read path: the SDK's retries are off.
//! - **Expired iterators** (older than five minutes): renewed after the last sequence number
//!   returned (or at the original start position when nothing was returned yet).
//! - **Transient errors** (5xx, timeouts): retried with backoff up to
//!   [`Backoff::max_retries`], then returned.
//! - **Shard end**: when `GetRecords` returns no next iterator, the shard is closed and read
//!   to its end; the batch carries `shard_end` with the `ChildShards`, and so does every
//!   later call.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::types::ShardIteratorType;
use bikeshare_stream::{
    ReadBatch, SequenceNumber, ShardCursor, ShardId, StartPosition, StreamError, StreamRecord,
};
use bikeshare_types::error::Classify;
use bikeshare_types::limits::{
    KINESIS_GET_RECORDS_PER_SHARD_PER_SEC, KINESIS_MAX_GET_RECORDS,
    KINESIS_SHARD_READ_BYTES_PER_SEC,
};
use bikeshare_types::retry::{Backoff, Failure};
use bikeshare_types::{SharedClock, Timestamp};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use tokio::time::{Duration, Instant};

use crate::error::{EXPIRED_ITERATOR_CODE, classify};
use crate::metrics::KinesisMetrics;

/// How a cursor paces and retries its reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct ReadSettings {
    /// `GetRecords` calls per second per shard, at most
    /// [`KINESIS_GET_RECORDS_PER_SHARD_PER_SEC`] (higher values are lowered).
    #[default(KINESIS_GET_RECORDS_PER_SHARD_PER_SEC)]
    pub calls_per_sec: u32,
    /// Bytes per second per shard, at most [`KINESIS_SHARD_READ_BYTES_PER_SEC`].
    #[default(KINESIS_SHARD_READ_BYTES_PER_SEC)]
    pub bytes_per_sec: usize,
    /// Delays after throttling and transient errors.
    #[default(READ_BACKOFF)]
    pub backoff: Backoff,
}

/// Kinesis reads' retries after throttling and transient errors, polling and fan-out alike:
/// eight retries, 200 ms doubling to at most 5 s apart.
pub const READ_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(5),
    max_retries: Some(8),
};

/// When the next `GetRecords` on one shard may start. Pure: times are given to it.
#[derive(Debug, Clone)]
pub struct ReadPacer {
    min_interval: Duration,
    bytes_per_sec: f64,
    next: Option<Instant>,
}

impl ReadPacer {
    /// Limits above the Kinesis ones are lowered to them, zeroes raised to one.
    pub fn new(calls_per_sec: u32, bytes_per_sec: usize) -> Self {
        let calls = calls_per_sec.clamp(1, KINESIS_GET_RECORDS_PER_SHARD_PER_SEC);
        let bytes = bytes_per_sec.clamp(1, KINESIS_SHARD_READ_BYTES_PER_SEC);
        Self {
            min_interval: Duration::from_secs(1) / calls,
            bytes_per_sec: bytes as f64,
            next: None,
        }
    }

    /// The earliest start of the next call, if any call was made.
    pub fn ready_at(&self) -> Option<Instant> {
        self.next
    }

    /// A call started at `started` and read `bytes`.
    pub fn called(&mut self, started: Instant, bytes: usize) {
        let by_bytes = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        self.push(started + self.min_interval.max(by_bytes));
    }

    /// No call before `now + delay` (after throttling).
    pub fn back_off(&mut self, now: Instant, delay: Duration) {
        self.push(now + delay);
    }

    fn push(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.max(at)));
    }
}

/// Where a shard read (re)starts, in Kinesis' terms: just after `last`, the last record
/// returned, or at `start` when nothing was returned yet. For `GetShardIterator` and
/// `SubscribeToShard` alike.
pub(crate) fn resume_at(
    start: &StartPosition,
    last: Option<&SequenceNumber>,
) -> (ShardIteratorType, Option<String>) {
    let position = match last {
        Some(seq) => StartPosition::AfterSequence(seq.clone()),
        None => start.clone(),
    };
    match position {
        StartPosition::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
        StartPosition::Latest => (ShardIteratorType::Latest, None),
        StartPosition::AtSequence(s) => (ShardIteratorType::AtSequenceNumber, Some(s.0)),
        StartPosition::AfterSequence(s) => (ShardIteratorType::AfterSequenceNumber, Some(s.0)),
    }
}

/// A position in one Kinesis shard (see the module docs).
pub struct KinesisCursor {
    client: Client,
    stream: String,
    shard: ShardId,
    start: StartPosition,
    iterator: Option<String>,
    last: Option<SequenceNumber>,
    ended: Option<Vec<ShardId>>,
    pacer: ReadPacer,
    settings: ReadSettings,
    throttled_in_a_row: u32,
    metrics: Arc<KinesisMetrics>,
    clock: SharedClock,
}

impl std::fmt::Debug for KinesisCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisCursor")
            .field("stream", &self.stream)
            .field("shard", &self.shard)
            .field("last", &self.last)
            .field("ended", &self.ended)
            .finish()
    }
}

impl KinesisCursor {
    /// Gets a first iterator at `from`.
    pub(crate) async fn open(
        client: Client,
        stream: String,
        shard: ShardId,
        from: StartPosition,
        settings: ReadSettings,
        metrics: Arc<KinesisMetrics>,
        clock: SharedClock,
    ) -> Result<Self, StreamError> {
        let mut cursor = Self {
            client,
            stream,
            shard,
            start: from,
            iterator: None,
            last: None,
            ended: None,
            pacer: ReadPacer::new(settings.calls_per_sec, settings.bytes_per_sec),
            settings,
            throttled_in_a_row: 0,
            metrics,
            clock,
        };
        cursor.renew_iterator().await?;
        Ok(cursor)
    }

    /// A new iterator just after what was returned (or at the start position).
    async fn renew_iterator(&mut self) -> Result<String, StreamError> {
        let (kind, seq) = resume_at(&self.start, self.last.as_ref());
        let (client, stream, shard) = (&self.client, &self.stream, &self.shard);
        let call = || async {
            let out = client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.as_str())
                .shard_iterator_type(kind.clone())
                .set_starting_sequence_number(seq.clone())
                .send()
                .await
                .map_err(|e| {
                    let failure = classify("GetShardIterator", stream, e);
                    if failure.is("ResourceNotFoundException") {
                        return Failure {
                            error: StreamError::NoSuchShard(shard.clone()),
                            retryable: false,
                        };
                    }
                    Failure {
                        retryable: failure.error.retryable(),
                        error: failure.error,
                    }
                })?;
            out.shard_iterator.ok_or_else(|| Failure {
                error: StreamError::Service(format!(
                    "GetShardIterator on {stream} gave no iterator for {shard}"
                )),
                retryable: false,
            })
        };
        let it = self
            .settings
            .backoff
            .retry(call, tokio::time::sleep, |_, _, _| {})
            .await
            .map_err(|g| g.error)?;
        self.iterator = Some(it.clone());
        Ok(it)
    }

    fn take(&mut self, out: GetRecordsOutput, started: Instant) -> ReadBatch {
        let now = self.clock.now();
        let mut bytes = 0usize;
        let records: Vec<StreamRecord> = out
            .records
            .into_iter()
            .map(|r| {
                let record = stream_record(&self.shard, r, now);
                bytes += record.data.len();
                record
            })
            .collect();
        self.pacer.called(started, bytes);
        self.throttled_in_a_row = 0;
        if let Some(last) = records.last() {
            self.last = Some(last.sequence.clone());
        }
        let age = records.last().map(|r| now.millis() - r.arrival.millis());
        self.iterator = out.next_shard_iterator;
        if self.iterator.is_none() {
            let children = out
                .child_shards
                .unwrap_or_default()
                .into_iter()
                .map(|c| ShardId(c.shard_id))
                .collect();
            self.ended = Some(children);
            tracing::debug!(stream = %self.stream, shard = %self.shard, children = ?self.ended, "shard end");
        }
        let behind = out.millis_behind_latest;
        self.metrics.shard(&self.shard, |m| {
            m.records_read += records.len() as u64;
            m.bytes_read += bytes as u64;
            m.millis_behind_latest = behind;
            if age.is_some() {
                m.iterator_age_ms = age;
            }
            m.ended = self.ended.is_some();
        });
        ReadBatch {
            records,
            millis_behind_latest: behind,
            shard_end: self.ended.clone(),
        }
    }
}

/// A Kinesis record as a [`StreamRecord`] of `shard` (arrival `now` if Kinesis gave none).
pub(crate) fn stream_record(
    shard: &ShardId,
    r: aws_sdk_kinesis::types::Record,
    now: Timestamp,
) -> StreamRecord {
    StreamRecord {
        shard: shard.clone(),
        sequence: SequenceNumber(r.sequence_number),
        partition_key: r.partition_key.unwrap_or_default(),
        data: Bytes::from(r.data.into_inner()),
        arrival: r
            .approximate_arrival_timestamp
            .and_then(|t| t.to_millis().ok())
            .map_or(now, Timestamp::from_millis),
    }
}

#[async_trait]
impl ShardCursor for KinesisCursor {
    async fn next_batch(&mut self, limit: usize) -> Result<ReadBatch, StreamError> {
        if let Some(children) = &self.ended {
            return Ok(ReadBatch {
                records: Vec::new(),
                millis_behind_latest: Some(0),
                shard_end: Some(children.clone()),
            });
        }
        if let Some(at) = self.pacer.ready_at() {
            tokio::time::sleep_until(at).await;
        }
        let limit = i32::try_from(limit.clamp(1, KINESIS_MAX_GET_RECORDS)).unwrap_or(1);
        let mut attempt = 0u32;
        let mut renewals = 0u32;
        loop {
            let iterator = match &self.iterator {
                Some(it) => it.clone(),
                None => self.renew_iterator().await?,
            };
            let started = Instant::now();
            let answer = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit)
                .send()
                .await;
            self.metrics
                .shard(&self.shard, |m| m.get_records_calls += 1);
            let failure = match answer {
                Ok(out) => return Ok(self.take(out, started)),
                Err(e) => classify("GetRecords", &self.stream, e),
            };
            if failure.is(EXPIRED_ITERATOR_CODE) && renewals < 3 {
                renewals += 1;
                self.iterator = None;
                self.metrics
                    .shard(&self.shard, |m| m.expired_iterators += 1);
                continue;
            }
            match failure.error {
                StreamError::Throttled(message) => {
                    let delay = self
                        .settings
                        .backoff
                        .delay(self.throttled_in_a_row, &mut rand::rng())
                        .unwrap_or(self.settings.backoff.max);
                    self.throttled_in_a_row = self.throttled_in_a_row.saturating_add(1);
                    self.pacer.back_off(Instant::now(), delay);
                    self.metrics.shard(&self.shard, |m| m.throttles += 1);
                    tracing::debug!(shard = %self.shard, ?delay, %message, "GetRecords throttled");
                    return Ok(ReadBatch::default());
                }
                err if err.retryable() => {
                    let Some(delay) = self.settings.backoff.delay(attempt, &mut rand::rng()) else {
                        return Err(err);
                    };
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                err => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_keeps_calls_and_bytes_within_the_shard_limits() {
        let t0 = Instant::now();
        let mut p = ReadPacer::new(100, usize::MAX); // lowered to 5 calls/s, 2 MiB/s
        assert_eq!(p.ready_at(), None);
        p.called(t0, 10);
        assert_eq!(p.ready_at(), Some(t0 + Duration::from_millis(200)));
        // 4 MiB read: two seconds before the next call.
        p.called(t0, 2 * KINESIS_SHARD_READ_BYTES_PER_SEC);
        assert_eq!(p.ready_at(), Some(t0 + Duration::from_secs(2)));
        // A throttle never brings the next call earlier, only later.
        p.back_off(t0, Duration::from_millis(500));
        assert_eq!(p.ready_at(), Some(t0 + Duration::from_secs(2)));
        p.back_off(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(p.ready_at(), Some(t0 + Duration::from_secs(3)));
    }
}
