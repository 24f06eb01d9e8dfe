//! Where the stream processor's outputs go: the [`Sinks`] trait.
//!
//! Implementations live in the `sinks` crate (streams, the Parquet lake, Firehose); the
//! processor's runner only knows this trait. `flush` is the checkpoint barrier: it resolves
//! once everything handed over before it is durable.
//!
//! Checkpoints are per input shard, so sinks that write per checkpoint epoch (the lake) also
//! hear which shard outputs come from and which epochs are about to be stored, through four
//! defaulted methods (other sinks keep their defaults):
//! - [`Sinks::open_shard`] when the runner takes a shard, with the epoch of the checkpoint it
//!   resumes from: outputs after it are about to be emitted again;
//! - [`Sinks::abandon_shard`] when the runner gives a shard up because its checkpoint write
//!   was refused (another instance took it), with the last epoch it stored: what it handed
//!   over since is the new owner's to emit;
//! - [`Sinks::shard_outputs`], the outputs of one shard's records with the shard named (the
//!   default hands each kind to its method: a sink that keeps nothing per shard needs no
//!   more);
//! - [`Sinks::commit`] at the barrier, with the `(shard, epoch)` checkpoints stored right after
//!   it returns (the default is `flush`).

use async_trait::async_trait;

use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};

/// A sink refused or lost records.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
}

/// The outputs of one shard's records, handed over together
/// ([`Sinks::shard_outputs`]).
#[derive(Debug, Clone, Default)]
pub struct ShardOutputs {
    pub features: Vec<FeatureVector>,
    pub predictions: Vec<Prediction>,
    pub labels: Vec<Label>,
    pub dead_letters: Vec<DeadLetter>,
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
    /// The runner took `shard`, resuming from its checkpoint `restored_epoch` (0: none).
    async fn open_shard(&self, _shard: &str, _restored_epoch: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// The runner gave `shard` up after its checkpoint write was refused: another instance
    /// took it, and what was handed over after `stored_epoch` (the last checkpoint this one
    /// stored) will never be checkpointed here. Unlike [`Self::open_shard`] (a take), it
    /// says nothing about other instances' outputs. The default does nothing, which is right
    /// for a sink that keeps nothing per shard; it is never a take, which would discard the
    /// new owner's outputs. A wrapper forwards it (as `FanOut` does).
    async fn abandon_shard(&self, _shard: &str, _stored_epoch: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// `outputs` come from records of `shard`. The default hands each kind that is not
    /// empty to its method, in the order features, predictions, labels, dead letters; a
    /// sink that keeps outputs per shard (the lake) stages them under `shard`. A wrapper
    /// must forward it (as `FanOut` does): the default would lose the shard, and the lake
    /// commits only the shards the runner names.
    async fn shard_outputs(&self, _shard: &str, outputs: ShardOutputs) -> Result<(), SinkError> {
        let ShardOutputs {
            features,
            predictions,
            labels,
            dead_letters,
        } = outputs;
        if !features.is_empty() {
            self.features(features).await?;
        }
        if !predictions.is_empty() {
            self.predictions(predictions).await?;
        }
        if !labels.is_empty() {
            self.labels(labels).await?;
        }
        if !dead_letters.is_empty() {
            self.dead_letters(dead_letters).await?;
        }
        Ok(())
    }
    /// The checkpoint barrier: like `flush`, for everything handed over so far; then the
    /// runner stores checkpoint `epoch` of each `(shard, epoch)` in `checkpoints`.
    async fn commit(&self, _checkpoints: &[(String, u64)]) -> Result<(), SinkError> {
        self.flush().await
    }
}
