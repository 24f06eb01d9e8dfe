//! [`KinesisStream`]: one Kinesis stream as a [`StreamWriter`] and a [`StreamReader`].
//!
//! ## Writing (`PutRecords`)
//!
//! A call holds at most [`KINESIS_MAX_RECORDS_PER_PUT`] records and
//! [`KINESIS_MAX_BYTES_PER_PUT`] bytes (more is refused whole). A record over
//! [`KINESIS_MAX_RECORD_BYTES`] or with a bad partition key fails alone, before sending,
//! with [`INVALID_RECORD_CODE`] (Kinesis would refuse the whole call); the
//! [`bikeshare_stream::publisher::Publisher`] refuses such records at `send` already,
//! so callers dead-letter them. Each answer entry becomes a [`PutOutcome`]: a partial
//! failure is data, and the publisher re-sends only the failed records. A whole call refused
//! for throughput (`ProvisionedThroughputExceededException`) becomes a failed outcome for
//! every record, so it takes the same path.
//!
//! ## Reading
//!
//! [`StreamReader::list_shards`] pages through `ListShards` (parents, adjacent parents, hash
//! ranges; a shard with an ending sequence number is closed). [`StreamReader::open`] gets a
//! shard iterator and returns a [`KinesisCursor`], which paces `GetRecords` within the
//! per-shard limits. Which shards to read, and in which order after a reshard, is the
//! consumer's business (`bikeshare_stream::consumer`).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use bikeshare_stream::{
    PutOutcome, PutRecord, SequenceNumber, ShardCursor, ShardDescription, ShardId, StartPosition,
    StreamError, StreamReader, StreamWriter, check_put_request,
};
use bikeshare_types::error::Classify;
use bikeshare_types::retry::Failure;
use bikeshare_types::{SharedClock, SystemClock};
use tokio::time::{Duration, Instant};

use crate::cursor::{KinesisCursor, ReadSettings};
use crate::error::{THROTTLED_CODE, classify};
use crate::metrics::KinesisMetrics;

/// The per-record code of a record refused before sending (too large, bad partition key);
/// the publisher treats it as permanent.
pub const INVALID_RECORD_CODE: &str = "ValidationException";

/// One Kinesis stream. Cheap to clone; clones share the client and the metrics.
#[derive(Debug, Clone)]
pub struct KinesisStream {
    client: Client,
    name: String,
    read: ReadSettings,
    metrics: Arc<KinesisMetrics>,
    clock: SharedClock,
}

impl KinesisStream {
    /// The stream `name`, through `client` (see [`crate::client::kinesis_client`]).
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            read: ReadSettings::default(),
            metrics: Arc::new(KinesisMetrics::default()),
            clock: Arc::new(SystemClock),
        }
    }

    /// With other read settings (pacing, backoff).
    pub fn with_read_settings(mut self, read: ReadSettings) -> Self {
        self.read = read;
        self
    }

    /// With another clock (iterator ages).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Figures of this handle's writes and of the cursors it opened.
    pub fn metrics(&self) -> Arc<KinesisMetrics> {
        self.metrics.clone()
    }

    /// Creates the stream with `shards` shards unless it exists, then waits until it is
    /// `ACTIVE` (polling `DescribeStreamSummary`; the SDK's waiter costs seconds more).
    pub async fn ensure_exists(&self, shards: u32, timeout: Duration) -> Result<(), StreamError> {
        let created = self
            .client
            .create_stream()
            .stream_name(&self.name)
            .shard_count(i32::try_from(shards).unwrap_or(i32::MAX))
            .send()
            .await;
        if let Err(e) = created {
            let failure = classify("CreateStream", &self.name, e);
            if !failure.is("ResourceInUseException") {
                return Err(failure.error);
            }
        }
        self.wait_active(timeout).await
    }

    /// Waits until the stream is `ACTIVE` (after creation or a reshard).
    pub async fn wait_active(&self, timeout: Duration) -> Result<(), StreamError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .client
                .describe_stream_summary()
                .stream_name(&self.name)
                .send()
                .await
                .map_err(|e| classify("DescribeStreamSummary", &self.name, e).error)?
                .stream_description_summary
                .map(|s| s.stream_status);
            if status == Some(StreamStatus::Active) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StreamError::Service(format!(
                    "stream {} not active after {timeout:?} (status {status:?})",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn list_page(
        &self,
        token: Option<&str>,
    ) -> Result<aws_sdk_kinesis::operation::list_shards::ListShardsOutput, StreamError> {
        let call = || async {
            // With a token, the stream name must not be given.
            let request = match token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.name),
            };
            request.send().await.map_err(|e| {
                let error = classify("ListShards", &self.name, e).error;
                Failure {
                    retryable: error.retryable(),
                    error,
                }
            })
        };
        self.read
            .backoff
            .retry(call, tokio::time::sleep, |_, _, _| {})
            .await
            .map_err(|g| g.error)
    }
}

#[async_trait]
impl StreamWriter for KinesisStream {
    fn stream_name(&self) -> &str {
        &self.name
    }

    async fn put_records(&self, records: &[PutRecord]) -> Result<Vec<PutOutcome>, StreamError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        check_put_request(records)?;
        let mut outcomes: Vec<Option<PutOutcome>> = vec![None; records.len()];
        let mut entries = Vec::with_capacity(records.len());
        let mut sent = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            if let Some(message) = record.invalid_reason() {
                outcomes[i] = Some(PutOutcome::Failed {
                    code: INVALID_RECORD_CODE.into(),
                    message,
                });
                continue;
            }
            let entry = PutRecordsRequestEntry::builder()
                .partition_key(&record.partition_key)
                .data(Blob::new(Vec::from(record.data.clone())))
                .build()
                .map_err(|e| StreamError::InvalidRequest(e.to_string()))?;
            entries.push(entry);
            sent.push(i);
        }
        self.metrics.invalid(records.len() - sent.len());
        if !entries.is_empty() {
            let sent_bytes: usize = sent.iter().map(|&i| records[i].size()).sum();
            let answer = self
                .client
                .put_records()
                .stream_name(&self.name)
                .set_records(Some(entries))
                .send()
                .await;
            match answer {
                Ok(out) => {
                    if out.records.len() != sent.len() {
                        return Err(StreamError::Service(format!(
                            "PutRecords on {}: {} results for {} records",
                            self.name,
                            out.records.len(),
                            sent.len()
                        )));
                    }
                    let (mut written, mut failed, mut throttled) = (0, 0, 0);
                    for (entry, &i) in out.records.into_iter().zip(&sent) {
                        outcomes[i] = Some(match entry.error_code {
                            Some(code) => {
                                failed += 1;
                                if code == THROTTLED_CODE {
                                    throttled += 1;
                                }
                                PutOutcome::Failed {
                                    code,
                                    message: entry.error_message.unwrap_or_default(),
                                }
                            }
                            None => {
                                written += 1;
                                PutOutcome::Written {
                                    shard: ShardId(entry.shard_id.unwrap_or_default()),
                                    sequence: SequenceNumber(
                                        entry.sequence_number.unwrap_or_default(),
                                    ),
                                }
                            }
                        });
                    }
                    self.metrics.put(written, sent_bytes, failed, throttled);
                }
                Err(e) => {
                    let failure = classify("PutRecords", &self.name, e);
                    let StreamError::Throttled(message) = failure.error else {
                        return Err(failure.error);
                    };
                    // Throttled whole: each record failed for throughput, like a partial
                    // failure of all of them.
                    self.metrics.put(0, 0, sent.len(), sent.len());
                    for &i in &sent {
                        outcomes[i] = Some(PutOutcome::Failed {
                            code: THROTTLED_CODE.into(),
                            message: message.clone(),
                        });
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StreamError::Service("a record got no outcome".into())))
            .collect()
    }
}

/// A hash key as Kinesis writes it: a decimal string.
fn parse_hash_key(shard: &str, key: &str) -> Result<u128, StreamError> {
    key.parse()
        .map_err(|_| StreamError::Service(format!("shard {shard} has an invalid hash key {key:?}")))
}

#[async_trait]
impl StreamReader for KinesisStream {
    fn stream_name(&self) -> &str {
        &self.name
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, StreamError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self.list_page(token.as_deref()).await?;
            for s in out.shards.unwrap_or_default() {
                let (start, end) = match &s.hash_key_range {
                    Some(r) => (
                        parse_hash_key(&s.shard_id, &r.starting_hash_key)?,
                        parse_hash_key(&s.shard_id, &r.ending_hash_key)?,
                    ),
                    None => (0, u128::MAX),
                };
                shards.push(ShardDescription {
                    closed: s
                        .sequence_number_range
                        .as_ref()
                        .is_some_and(|r| r.ending_sequence_number.is_some()),
                    id: ShardId(s.shard_id),
                    parent: s.parent_shard_id.map(ShardId),
                    adjacent_parent: s.adjacent_parent_shard_id.map(ShardId),
                    starting_hash_key: start,
                    ending_hash_key: end,
                });
            }
            match out.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn open(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardCursor>, StreamError> {
        let cursor = KinesisCursor::open(
            self.client.clone(),
            self.name.clone(),
            shard.clone(),
            from,
            self.read.clone(),
            self.metrics.clone(),
            self.clock.clone(),
        )
        .await?;
        Ok(Box::new(cursor))
    }
}
