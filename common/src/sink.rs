//! Where the stream processor's outputs go: the [`Sinks`] trait.
//!
//! Implementations live in the `sinks` crate (streams, the Parquet lake, Firehose); the
//! processor's runner only knows this trait. `flush` is the checkpoint barrier: it resolves
//! once everything handed over before it is durable.

use async_trait::async_trait;

use crate::contracts::{DeadLetter, FeatureVector, Label, Prediction};

/// A sink refused or lost records.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
}

/// The processor's outputs.
#[async_trait]
pub trait Sinks: Send + Sync + std::fmt::Debug {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError>;
    async fn predictions(&self, predictions: Vec<Prediction>) -> Result<(), SinkError>;
    async fn labels(&self, labels: Vec<Label>) -> Result<(), SinkError>;
    async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError>;
    /// Resolves when everything given so far is durably acknowledged.
    async fn flush(&self) -> Result<(), SinkError>;
}
