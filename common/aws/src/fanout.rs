//! Enhanced fan-out: [`FanOutReader`] registers a stream consumer and reads shards with
//! `SubscribeToShard`, which pushes records over an HTTP event stream (dedicated 2 MB/s per
//! shard and consumer, no `GetRecords` polling).
//!
//! - [`FanOutReader::register`] registers the consumer (or finds it registered) and waits
//!   until it is `ACTIVE`.
//! - Each [`FanOutCursor`] runs one subscription in a background task that forwards events
//!   through a small bounded channel (backpressure: the task stops reading while the
//!   channel is full). `next_batch` returns the next event's records, or an empty batch
//!   after [`FanOutSettings::wait`] without one; its `limit` does not apply (Kinesis decides
//!   the size of each event).
//! - A subscription lasts five minutes; then (or after an error) the cursor subscribes
//!   again after the last sequence number returned.
//! - The last event of a closed shard carries `ChildShards`: the cursor reports the shard's
//!   end.
//!
//! Listing shards goes through the wrapped [`KinesisStream`].

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{
    ConsumerStatus, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};
use bikeshare_stream::{
    ReadBatch, SequenceNumber, ShardCursor, ShardDescription, ShardId, StartPosition, StreamError,
    StreamReader,
};
use bikeshare_types::error::{Classify, chain};
use bikeshare_types::retry::Backoff;
use bikeshare_types::time::millis;
use bikeshare_types::{SharedClock, SystemClock};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use tokio::sync::mpsc;
use tokio::time::Duration;

use crate::cursor::{READ_BACKOFF, resume_at, stream_record};
use crate::error::classify;
use crate::metrics::KinesisMetrics;
use crate::stream::KinesisStream;

/// Settings of enhanced fan-out reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct FanOutSettings {
    /// The registered consumer's name (one per application).
    #[default("bikeshare-processor")]
    pub consumer_name: String,
    /// How long `next_batch` waits for an event before returning an empty batch.
    #[serde(with = "millis")]
    #[default(Duration::from_millis(200))]
    pub wait: Duration,
    /// Delays between re-subscriptions after errors.
    #[default(READ_BACKOFF)]
    pub backoff: Backoff,
}

/// Reads a stream's shards by enhanced fan-out (see the module docs).
#[derive(Debug, Clone)]
pub struct FanOutReader {
    stream: KinesisStream,
    consumer_arn: String,
    settings: FanOutSettings,
    clock: SharedClock,
}

impl FanOutReader {
    /// Registers [`FanOutSettings::consumer_name`] on the stream (or finds it) and waits
    /// until it is active.
    pub async fn register(
        stream: KinesisStream,
        settings: FanOutSettings,
        timeout: Duration,
    ) -> Result<Self, StreamError> {
        let client = stream.client();
        let name = stream.name().to_owned();
        let stream_arn = client
            .describe_stream_summary()
            .stream_name(&name)
            .send()
            .await
            .map_err(|e| classify("DescribeStreamSummary", &name, e).error)?
            .stream_description_summary
            .map(|s| s.stream_arn)
            .ok_or_else(|| StreamError::Service(format!("no description of stream {name}")))?;
        let registered = client
            .register_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(&settings.consumer_name)
            .send()
            .await;
        let consumer_arn = match registered {
            Ok(out) => out.consumer.map(|c| c.consumer_arn),
            Err(e) => {
                let failure = classify("RegisterStreamConsumer", &name, e);
                if !failure.is("ResourceInUseException") {
                    return Err(failure.error);
                }
                None
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut request = client.describe_stream_consumer();
            request = match &consumer_arn {
                Some(arn) => request.consumer_arn(arn),
                None => request
                    .stream_arn(&stream_arn)
                    .consumer_name(&settings.consumer_name),
            };
            let description = request
                .send()
                .await
                .map_err(|e| classify("DescribeStreamConsumer", &name, e).error)?
                .consumer_description;
            if let Some(d) = description
                && d.consumer_status == ConsumerStatus::Active
            {
                tracing::info!(stream = %name, consumer = %d.consumer_arn, "fan-out consumer active");
                return Ok(Self {
                    stream,
                    consumer_arn: d.consumer_arn,
                    settings,
                    clock: Arc::new(SystemClock),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StreamError::Service(format!(
                    "consumer {} of {name} not active after {timeout:?}",
                    settings.consumer_name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn consumer_arn(&self) -> &str {
        &self.consumer_arn
    }
}

#[async_trait]
impl StreamReader for FanOutReader {
    fn stream_name(&self) -> &str {
        self.stream.name()
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, StreamError> {
        self.stream.list_shards().await
    }

    async fn open(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardCursor>, StreamError> {
        Ok(Box::new(FanOutCursor {
            client: self.stream.client().clone(),
            consumer_arn: self.consumer_arn.clone(),
            shard: shard.clone(),
            start: from,
            last: None,
            events: None,
            ended: None,
            failures: 0,
            settings: self.settings.clone(),
            metrics: self.stream.metrics(),
            clock: self.clock.clone(),
        }))
    }
}

type Event = Result<SubscribeToShardEvent, StreamError>;

/// One shard read by a subscription (see the module docs).
pub struct FanOutCursor {
    client: Client,
    consumer_arn: String,
    shard: ShardId,
    start: StartPosition,
    last: Option<SequenceNumber>,
    /// Events of the current subscription; `None` between subscriptions.
    events: Option<mpsc::Receiver<Event>>,
    ended: Option<Vec<ShardId>>,
    failures: u32,
    settings: FanOutSettings,
    metrics: Arc<KinesisMetrics>,
    clock: SharedClock,
}

impl std::fmt::Debug for FanOutCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutCursor")
            .field("shard", &self.shard)
            .field("last", &self.last)
            .field("ended", &self.ended)
            .finish()
    }
}

impl FanOutCursor {
    async fn subscribe(&mut self) -> Result<mpsc::Receiver<Event>, StreamError> {
        let (kind, seq) = resume_at(&self.start, self.last.as_ref());
        let starting = StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(seq)
            .build()
            .map_err(|e| StreamError::InvalidRequest(e.to_string()))?;
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(self.shard.as_str())
            .starting_position(starting)
            .send()
            .await
            .map_err(|e| classify("SubscribeToShard", &self.consumer_arn, e).error)?;
        let mut receiver = out.event_stream;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => Ok(e),
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => Err(StreamError::Service(format!(
                        "SubscribeToShard event stream: {}",
                        chain(&e)
                    ))),
                };
                let stop = event.is_err();
                if tx.send(event).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(rx)
    }

    fn take(&mut self, event: SubscribeToShardEvent) -> ReadBatch {
        let now = self.clock.now();
        let records: Vec<_> = event
            .records
            .into_iter()
            .map(|r| stream_record(&self.shard, r, now))
            .collect();
        if let Some(last) = records.last() {
            self.last = Some(last.sequence.clone());
        }
        let children: Vec<ShardId> = event
            .child_shards
            .unwrap_or_default()
            .into_iter()
            .map(|c| ShardId(c.shard_id))
            .collect();
        if !children.is_empty() || event.continuation_sequence_number.is_empty() {
            self.ended = Some(children);
            self.events = None;
        }
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        let behind = event.millis_behind_latest;
        self.metrics.shard(&self.shard, |m| {
            m.records_read += records.len() as u64;
            m.bytes_read += bytes as u64;
            m.millis_behind_latest = Some(behind);
            if let Some(last) = records.last() {
                m.iterator_age_ms = Some(now.millis() - last.arrival.millis());
            }
            m.ended = self.ended.is_some();
        });
        ReadBatch {
            records,
            millis_behind_latest: Some(behind),
            shard_end: self.ended.clone(),
        }
    }
}

#[async_trait]
impl ShardCursor for FanOutCursor {
    async fn next_batch(&mut self, _limit: usize) -> Result<ReadBatch, StreamError> {
        if let Some(children) = &self.ended {
            return Ok(ReadBatch {
                records: Vec::new(),
                millis_behind_latest: Some(0),
                shard_end: Some(children.clone()),
            });
        }
        let mut events = match self.events.take() {
            Some(rx) => rx,
            None => match self.subscribe().await {
                Ok(rx) => rx,
                Err(err) => return self.failed(err).await,
            },
        };
        match tokio::time::timeout(self.settings.wait, events.recv()).await {
            Err(_) => {
                self.events = Some(events);
                Ok(ReadBatch::default())
            }
            // The subscription ended (after five minutes): subscribe again next time.
            Ok(None) => Ok(ReadBatch::default()),
            // The subscription broke after it was made (a stall, a dropped connection):
            // subscribe again soon; only failures to subscribe escalate the backoff.
            Ok(Some(Err(err))) => {
                self.failures = 0;
                self.failed(err).await
            }
            Ok(Some(Ok(event))) => {
                self.failures = 0;
                self.events = Some(events);
                Ok(self.take(event))
            }
        }
    }
}

impl FanOutCursor {
    /// Backs off after a failed subscription; gives up when retries are spent or the error
    /// is not retryable.
    async fn failed(&mut self, err: StreamError) -> Result<ReadBatch, StreamError> {
        let delay = err
            .retryable()
            .then(|| self.settings.backoff.delay(self.failures, &mut rand::rng()))
            .flatten();
        let Some(delay) = delay else {
            return Err(err);
        };
        self.failures += 1;
        if matches!(err, StreamError::Throttled(_)) {
            self.metrics.shard(&self.shard, |m| m.throttles += 1);
        }
        tracing::debug!(shard = %self.shard, ?delay, error = %chain(&err), "re-subscribing");
        tokio::time::sleep(delay).await;
        Ok(ReadBatch::default())
    }
}
