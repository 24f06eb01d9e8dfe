//! # bikeshare-stream
//!
//! The system's spine. Streams: sharded, ordered, durable logs of records, as Kinesis models them.
//!
//! Two traits, [`StreamWriter`] and [`StreamReader`], with one implementation per backend:
//! `bikeshare-embedded` (SQLite on local disk, the default) and Kinesis (in AWS). Code above this
//! module never knows which one it has.
//!
//! - A record goes to the shard whose hash-key range holds the MD5 of its partition key
//!   ([`shard_for_key`]), exactly as in Kinesis; the partition key on the input stream is
//!   the system id, so a city stays in one shard and in order.
//! - Sequence numbers increase within a shard; they are strings, compared by
//!   [`SequenceNumber::cmp_numeric`], because Kinesis's do not fit in 128 bits.
//! - [`StreamWriter::put_records`] reports an outcome per record: a partial failure is data,
//!   and only failed records are sent again ([`publisher`] does that, with backoff).
//! - Readers open a [`ShardCursor`] at a [`StartPosition`] and pull batches; a closed shard
//!   ends with its children, which are read only after their parents are finished.

//!
//! The modules, in the order data meets them:
//!
//! - [`publisher`]: batching within the PutRecords limits, re-sending only failed records.
//! - the backends live in their own crates: `bikeshare-embedded` (one SQLite file, the
//!   default) and `bikeshare-aws` (Kinesis), so this crate compiles no SQLite and no AWS SDK.
//! - [`consumer`]: reading a stream's shards across reshards (parents before children);
//!   [`lease`]: which instance reads which shard.
//! - [`checkpoint`]: per shard, the input position and the operator state, and their stores.
//! - [`sink`]: the port the stream processor's outputs go through.
//! - [`pause_between_polls`]: how a consumer's poll loop waits when idle and stops on shutdown.

pub mod checkpoint;
pub mod consumer;
pub mod lease;
pub mod publisher;
pub mod sink;

use std::cmp::Ordering;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::limits::{
    KINESIS_MAX_BYTES_PER_PUT, KINESIS_MAX_PARTITION_KEY_CHARS, KINESIS_MAX_RECORD_BYTES,
    KINESIS_MAX_RECORDS_PER_PUT,
};
use bikeshare_types::time::Timestamp;

/// Names of the streams the system uses.
pub mod names {
    /// Validated input events ([`bikeshare_types::contracts::Envelope`]), partitioned by system id.
    pub const EVENTS: &str = "events";
    /// Records that failed validation ([`bikeshare_types::contracts::DeadLetter`]).
    pub const DEAD_LETTERS: &str = "dead-letters";
    /// Predictions for subscribers, partitioned by station.
    pub const PREDICTIONS: &str = "predictions";
}

/// A shard id, e.g. `shardId-000000000000`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub String);

impl ShardId {
    /// The Kinesis-style id of the `n`-th shard.
    pub fn from_index(n: u32) -> Self {
        Self(format!("shardId-{n:012}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sequence number within a shard: a decimal string.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SequenceNumber(pub String);

impl SequenceNumber {
    pub fn from_u64(n: u64) -> Self {
        Self(n.to_string())
    }
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
    /// Numeric comparison of two decimal strings of any length.
    pub fn cmp_numeric(&self, other: &Self) -> Ordering {
        let (a, b) = (
            self.0.trim_start_matches('0'),
            other.0.trim_start_matches('0'),
        );
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecord {
    pub partition_key: String,
    pub data: Bytes,
}

impl PutRecord {
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            data: data.into(),
        }
    }
    /// Size as Kinesis counts it against its limits: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Why this record can never be written (over 1 MiB, or a partition key that is empty or
    /// over 256 characters), if it cannot: every backend fails it alone with
    /// `INVALID_RECORD_CODE`, and the rest of its batch is written.
    pub fn invalid_reason(&self) -> Option<String> {
        let size = self.size();
        if size > KINESIS_MAX_RECORD_BYTES {
            return Some(format!(
                "record of {size} bytes, the limit is {KINESIS_MAX_RECORD_BYTES}"
            ));
        }
        let key_chars = self.partition_key.chars().count();
        if key_chars == 0 || key_chars > KINESIS_MAX_PARTITION_KEY_CHARS {
            return Some(format!(
                "partition key of {key_chars} characters, it must have 1 to \
                 {KINESIS_MAX_PARTITION_KEY_CHARS}"
            ));
        }
        None
    }
}

/// Refuses a whole `PutRecords` request over the call's limits (500 records, 5 MiB), as
/// Kinesis does: every backend checks it here before writing anything.
pub fn check_put_request(records: &[PutRecord]) -> Result<(), StreamError> {
    if records.len() > KINESIS_MAX_RECORDS_PER_PUT {
        return Err(StreamError::InvalidRequest(format!(
            "{} records in one put, the limit is {KINESIS_MAX_RECORDS_PER_PUT}",
            records.len()
        )));
    }
    let bytes: usize = records.iter().map(PutRecord::size).sum();
    if bytes > KINESIS_MAX_BYTES_PER_PUT {
        return Err(StreamError::InvalidRequest(format!(
            "{bytes} bytes in one put, the limit is {KINESIS_MAX_BYTES_PER_PUT}"
        )));
    }
    Ok(())
}

/// The outcome of writing one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written {
        shard: ShardId,
        sequence: SequenceNumber,
    },
    /// Kinesis' per-record `ErrorCode` (`ProvisionedThroughputExceededException`,
    /// `InternalFailure`, ...): the caller sends it again.
    Failed { code: String, message: String },
}

/// A shard as listed by the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDescription {
    pub id: ShardId,
    /// One parent after a split, two after a merge (`adjacent_parent`), none at creation.
    pub parent: Option<ShardId>,
    pub adjacent_parent: Option<ShardId>,
    pub starting_hash_key: u128,
    pub ending_hash_key: u128,
    /// Closed shards take no more writes; they end once read to their last record.
    pub closed: bool,
}

impl ShardDescription {
    pub fn parents(&self) -> impl Iterator<Item = &ShardId> {
        self.parent.iter().chain(self.adjacent_parent.iter())
    }
}

/// Where a cursor starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "sequence")]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtSequence(SequenceNumber),
    AfterSequence(SequenceNumber),
}

/// A record read from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub shard: ShardId,
    pub sequence: SequenceNumber,
    pub partition_key: String,
    pub data: Bytes,
    /// When the stream accepted it (Kinesis' `ApproximateArrivalTimestamp`).
    pub arrival: Timestamp,
}

/// One pull from a shard.
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    pub records: Vec<StreamRecord>,
    /// How far behind the newest record this cursor is, when the backend knows.
    pub millis_behind_latest: Option<i64>,
    /// `Some(children)` once a closed shard has been read to its end: the cursor is done.
    pub shard_end: Option<Vec<ShardId>>,
}

/// Errors of any stream backend.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream {0:?} does not exist")]
    NoSuchStream(String),
    #[error("shard {0} does not exist")]
    NoSuchShard(ShardId),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("service error: {0}")]
    Service(String),
}

impl Classify for StreamError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NoSuchStream(_) | Self::NoSuchShard(_) | Self::InvalidRequest(_) => {
                ErrorClass::User
            }
            Self::Throttled(_) | Self::Service(_) => ErrorClass::External,
            Self::Storage(_) => ErrorClass::Internal,
        }
    }
    fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled(_) | Self::Service(_) | Self::Storage(_)
        )
    }
}

/// Writes records to one stream.
#[async_trait]
pub trait StreamWriter: Send + Sync + fmt::Debug {
    /// The stream's name.
    fn stream_name(&self) -> &str;
    /// Writes a batch (at most the backend's limits, see [`bikeshare_types::limits`]); returns one
    /// outcome per record, in order. `Err` means no record was written.
    async fn put_records(&self, records: &[PutRecord]) -> Result<Vec<PutOutcome>, StreamError>;
}

/// Reads the shards of one stream.
#[async_trait]
pub trait StreamReader: Send + Sync + fmt::Debug {
    fn stream_name(&self) -> &str;
    async fn list_shards(&self) -> Result<Vec<ShardDescription>, StreamError>;
    async fn open(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardCursor>, StreamError>;
}

/// A position in one shard that pulls batches forward.
#[async_trait]
pub trait ShardCursor: Send + fmt::Debug {
    /// Up to `limit` records after the last one returned; empty when caught up.
    async fn next_batch(&mut self, limit: usize) -> Result<ReadBatch, StreamError>;

    /// The sequence number this cursor reads after, when the backend knows it (also before
    /// the first record, e.g. for `Latest`): with it a position can be resumed exactly.
    fn position(&self) -> Option<SequenceNumber> {
        None
    }
}

/// The MD5 of a partition key as a 128-bit hash key, as Kinesis computes it.
pub fn hash_key(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// Hash-key ranges of `n` equal shards, as `CreateStream` makes them.
pub fn uniform_ranges(n: u32) -> Vec<(u128, u128)> {
    let n = u128::from(n.max(1));
    let step = u128::MAX / n;
    (0..n)
        .map(|i| {
            let start = i * step;
            let end = if i == n - 1 {
                u128::MAX
            } else {
                (i + 1) * step - 1
            };
            (start, end)
        })
        .collect()
}

/// Index of the range in `ranges` that holds the hash of `partition_key`.
pub fn shard_for_key(ranges: &[(u128, u128)], partition_key: &str) -> usize {
    let h = hash_key(partition_key);
    ranges
        .iter()
        .position(|&(s, e)| s <= h && h <= e)
        .unwrap_or(0)
}

/// The pause of a consumer's poll loop after one round (the archiver's, the runner's): when
/// the round found nothing (`idle`), wait `idle_wait` or until `shutdown` resolves;
/// otherwise only look whether it has. Returns whether to stop.
pub async fn pause_between_polls<F: std::future::Future<Output = ()> + Unpin>(
    shutdown: &mut F,
    idle: bool,
    idle_wait: std::time::Duration,
) -> bool {
    if idle {
        tokio::select! {
            () = &mut *shutdown => true,
            () = tokio::time::sleep(idle_wait) => false,
        }
    } else {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(shutdown).poll(&mut cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_numerically() {
        let a = SequenceNumber("9".into());
        let b = SequenceNumber("10".into());
        assert_eq!(a.cmp_numeric(&b), Ordering::Less);
        let k1 = SequenceNumber("49590338271490256608559692538361571095921575989136588898".into());
        let k2 = SequenceNumber("49590338271490256608559692540925702759324208523137515618".into());
        assert_eq!(k1.cmp_numeric(&k2), Ordering::Less);
    }

    #[test]
    fn ranges_cover_the_whole_key_space() {
        for n in [1, 2, 3, 4, 7] {
            let r = uniform_ranges(n);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[r.len() - 1].1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
    }

    #[test]
    fn md5_hash_key_matches_kinesis() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }
}
