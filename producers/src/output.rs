//! Where producers put what they make: validated events and dead letters.
//!
//! [`StreamOutput`] publishes to the `events` and `dead-letters` streams (embedded or
//! Kinesis); [`MemoryOutput`] keeps them in memory for tests.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bikeshare_stream::publisher::{PublishError, Publisher, PublisherConfig, PublisherStats};
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_types::SharedClock;
use bikeshare_types::contracts::{DeadLetter, Envelope};

/// Why an output could not take records.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output closed")]
    Closed,
    #[error("publish failed: {0}")]
    Publish(String),
}

/// The destination of producers. Implementations apply backpressure by awaiting.
#[async_trait]
pub trait Output: Send + Sync + std::fmt::Debug {
    async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError>;
    async fn dead_letters(&self, dead_letters: Vec<DeadLetter>) -> Result<(), OutputError>;
}

/// Collects everything in memory (tests, dry runs).
#[derive(Debug, Default, Clone)]
pub struct MemoryOutput {
    pub events: Arc<Mutex<Vec<Envelope>>>,
    pub dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemoryOutput {
    pub fn take_events(&self) -> Vec<Envelope> {
        take_all(&self.events)
    }
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        take_all(&self.dead_letters)
    }
}

/// Everything in `list`, leaving it empty (nothing from a poisoned lock).
fn take_all<T>(list: &Mutex<Vec<T>>) -> Vec<T> {
    list.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// Adds `items` to `list`.
fn append<T>(list: &Mutex<Vec<T>>, items: Vec<T>) -> Result<(), OutputError> {
    list.lock().map_err(|_| OutputError::Closed)?.extend(items);
    Ok(())
}

#[async_trait]
impl Output for MemoryOutput {
    async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError> {
        append(&self.events, events)
    }
    async fn dead_letters(&self, dead_letters: Vec<DeadLetter>) -> Result<(), OutputError> {
        append(&self.dead_letters, dead_letters)
    }
}

/// Publishes events to the `events` stream (partition key: the system id) and dead letters
/// to the `dead-letters` stream, through [`Publisher`]s (batching, retries, backpressure).
///
/// An event too large for a stream record becomes a dead letter (`stream.record_too_large`)
/// instead of being lost.
#[derive(Debug)]
pub struct StreamOutput {
    events: Publisher,
    dead_letters: Publisher,
    clock: SharedClock,
}

/// The rule of a dead letter made from an event too large for the stream.
pub const RULE_RECORD_TOO_LARGE: &str = "stream.record_too_large";

impl StreamOutput {
    pub fn new(
        events: Arc<dyn StreamWriter>,
        dead_letters: Arc<dyn StreamWriter>,
        config: PublisherConfig,
        clock: SharedClock,
    ) -> Self {
        Self {
            events: Publisher::spawn(events, config.clone()),
            dead_letters: Publisher::spawn(dead_letters, config),
            clock,
        }
    }

    /// Counters of the (events, dead letters) publishers.
    pub fn stats(&self) -> (PublisherStats, PublisherStats) {
        (self.events.stats(), self.dead_letters.stats())
    }

    /// Waits until everything sent so far is acknowledged by the streams.
    pub async fn flush(&self) -> Result<(), OutputError> {
        self.events.flush().await.map_err(publish_error)?;
        self.dead_letters.flush().await.map_err(publish_error)
    }

    /// Flushes and stops both publishers.
    pub async fn close(self) -> Result<(PublisherStats, PublisherStats), OutputError> {
        let events = self.events.close().await.map_err(publish_error)?;
        let dead_letters = self.dead_letters.close().await.map_err(publish_error)?;
        Ok((events, dead_letters))
    }

    async fn send_dead_letter(&self, dl: &DeadLetter) -> Result<(), OutputError> {
        let record = PutRecord::new(dl.system_id.as_str(), dl.encode());
        match self.dead_letters.send(record).await {
            Ok(()) => Ok(()),
            Err(PublishError::RecordTooLarge { .. }) => {
                // Cannot happen with DEAD_LETTER_RAW_LIMIT far below the record limit; keep
                // the reason even if it did.
                let mut small = dl.clone();
                small.raw.truncate(1024);
                small.raw_truncated = true;
                let record = PutRecord::new(small.system_id.as_str(), small.encode());
                self.dead_letters.send(record).await.map_err(publish_error)
            }
            Err(e) => Err(publish_error(e)),
        }
    }
}

fn publish_error(e: PublishError) -> OutputError {
    OutputError::Publish(bikeshare_types::error::chain(&e))
}

#[async_trait]
impl Output for StreamOutput {
    async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError> {
        for env in events {
            let data = env.encode();
            let record = PutRecord::new(env.system_id.as_str(), data);
            match self.events.send(record).await {
                Ok(()) => {}
                Err(
                    e @ (PublishError::RecordTooLarge { .. }
                    | PublishError::InvalidPartitionKey { .. }),
                ) => {
                    let raw = String::from_utf8_lossy(&env.encode()).into_owned();
                    let dl = DeadLetter::new(
                        env.system_id.clone(),
                        env.source.clone(),
                        RULE_RECORD_TOO_LARGE,
                        format!("event {} not publishable: {e}", env.event_id),
                        &raw,
                        self.clock.now(),
                    );
                    self.send_dead_letter(&dl).await?;
                }
                Err(e) => return Err(publish_error(e)),
            }
        }
        Ok(())
    }

    async fn dead_letters(&self, dead_letters: Vec<DeadLetter>) -> Result<(), OutputError> {
        for dl in &dead_letters {
            self.send_dead_letter(dl).await?;
        }
        Ok(())
    }
}
