//! Sinks that keep everything in memory.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bikeshare_stream::sink::{SinkError, Sinks};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};

/// Everything received, in order of arrival.
#[derive(Debug, Default, Clone)]
pub struct MemorySinks {
    pub features: Arc<Mutex<Vec<FeatureVector>>>,
    pub predictions: Arc<Mutex<Vec<Prediction>>>,
    pub labels: Arc<Mutex<Vec<Label>>>,
    pub dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
    /// When false, features are counted but not kept (benchmarks).
    pub keep_features: bool,
}

/// Adds `rows` to the sink's list.
fn append<T>(list: &Mutex<Vec<T>>, sink: &'static str, rows: Vec<T>) -> Result<(), SinkError> {
    list.lock().map_err(|_| poisoned(sink))?.extend(rows);
    Ok(())
}

fn poisoned(sink: &'static str) -> SinkError {
    SinkError {
        sink,
        message: "lock poisoned".into(),
    }
}

impl MemorySinks {
    pub fn new() -> Self {
        Self {
            keep_features: true,
            ..Self::default()
        }
    }
}

#[async_trait]
impl Sinks for MemorySinks {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError> {
        if self.keep_features {
            append(&self.features, "features", rows)?;
        }
        Ok(())
    }
    async fn predictions(&self, p: Vec<Prediction>) -> Result<(), SinkError> {
        append(&self.predictions, "predictions", p)
    }
    async fn labels(&self, l: Vec<Label>) -> Result<(), SinkError> {
        append(&self.labels, "labels", l)
    }
    async fn dead_letters(&self, d: Vec<DeadLetter>) -> Result<(), SinkError> {
        append(&self.dead_letters, "dead_letters", d)
    }
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}
