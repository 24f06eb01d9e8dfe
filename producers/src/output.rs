//! Where producers put what they make: validated events and dead letters.
//!
//! [`StreamOutput`] publishes to the `events` and `dead-letters` streams (embedded or
//! Kinesis); [`MemoryOutput`] keeps them in memory for tests.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bikeshare_common::contracts::{DeadLetter, Envelope};

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
        self.events.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

#[async_trait]
impl Output for MemoryOutput {
    async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError> {
        self.events.lock().map_err(|_| OutputError::Closed)?.extend(events);
        Ok(())
    }
    async fn dead_letters(&self, dead_letters: Vec<DeadLetter>) -> Result<(), OutputError> {
        self.dead_letters.lock().map_err(|_| OutputError::Closed)?.extend(dead_letters);
        Ok(())
    }
}
