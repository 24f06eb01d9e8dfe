//! # bikeshare-lake
//!
//! The Parquet lake: six datasets ([`dataset::Dataset`]) partitioned by the UTC hour of their
//! event time ([`layout`]), in a local directory by default or on S3 ([`store`]), through
//! `object_store`.
//!
//! Writing is tied to checkpoints. Writers stage rows in memory ([`staging::Staging`]) and
//! write them only at a checkpoint barrier, as one file per dataset and hour named after the
//! writer and the checkpoint epoch ([`writer::EpochWriter`]). Before writing, the epoch's
//! manifest lists the files it is about to write; on restart from checkpoint `E`, the files of
//! any epoch after `E` (written, but whose checkpoint was never stored) are deleted, and the
//! replay from `E` writes those rows again. A row is therefore in exactly one committed file:
//! a restart neither duplicates nor loses rows.
//!
//! Two writers fill the lake:
//! - [`sinks::LakeSinks`], a [`bikeshare_stream::sink::Sinks`] of the stream processor:
//!   features, predictions, labels;
//! - [`archive::Archiver`], a checkpointed consumer of the `events` and `dead-letters`
//!   streams: raw events, curated station status, dead letters.
//!
//! The processor's writer also writes SageMaker Model Monitor's inputs — data capture and
//! ground truth as JSON lines in SageMaker's hourly layout ([`model_monitor`]) — in the same
//! epochs.
//!
//! Each dataset's columns are declared once ([`column`]); its Arrow schema, Parquet encoding,
//! JSON row ([`json`]) and Athena table ([`athena`]) follow from that declaration.
//!
//! [`catalog`] lists datasets, partitions and row counts and reads datasets back.

pub mod archive;
pub mod athena;
pub mod catalog;
pub mod column;
pub mod dataset;
pub mod json;
pub mod layout;
pub mod model_monitor;
pub mod sinks;
pub mod staging;
pub mod store;
pub mod writer;

pub use column::Column;
pub use dataset::{CuratedStatus, Dataset, LakeRecord};
pub use json::JsonRow;
pub use store::{LakeConfig, open_store};
pub use writer::EpochWriter;

use bikeshare_types::error::{Classify, ErrorClass};

/// Why the lake could not write or read.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake configuration: {0}")]
    Config(String),
    #[error("encoding {dataset}: {message}")]
    Encode {
        dataset: &'static str,
        message: String,
    },
    #[error("decoding {dataset}: {message}")]
    Decode {
        dataset: &'static str,
        message: String,
    },
    #[error("lake storage at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("lake manifest {path}: {message}")]
    Manifest { path: String, message: String },
    #[error("lake task failed: {0}")]
    Task(String),
}

impl Classify for LakeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) => ErrorClass::User,
            Self::Store { .. } => ErrorClass::External,
            Self::Encode { .. } | Self::Decode { .. } | Self::Manifest { .. } | Self::Task(_) => {
                ErrorClass::Internal
            }
        }
    }
    fn retryable(&self) -> bool {
        matches!(self, Self::Store { .. })
    }
}

pub(crate) fn store_err(path: impl Into<String>) -> impl FnOnce(object_store::Error) -> LakeError {
    let path = path.into();
    move |source| LakeError::Store { path, source }
}
