//! The stream processor's outputs into the lake: [`LakeSinks`].
//!
//! Rows are staged in memory per input shard ([`Sinks::scope`]) and written at the runner's
//! checkpoint barrier ([`Sinks::commit`]) as the files of that shard's epoch;
//! [`Sinks::open_shard`] discards what epochs after the shard's restored checkpoint left
//! behind. See [`crate::writer`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bikeshare_stream::sink::{SinkError, Sinks};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};
use object_store::ObjectStore;

use crate::model_monitor::{ModelMonitorConfig, MonitorStaging};
use crate::staging::Staging;
use crate::writer::EpochWriter;

/// Which of the processor's outputs go to the lake.
#[derive(Debug, Clone, Copy)]
pub struct LakeOutputs {
    pub features: bool,
    /// Off when dead letters also go to the `dead-letters` stream, which the
    /// [`crate::archive::Archiver`] writes to the lake (each dead letter lands once).
    pub dead_letters: bool,
}

/// Stages the processor's outputs per input shard and writes them per shard checkpoint
/// epoch: the files of shard `S`'s epoch `N` are `<writer>-S-N.parquet`, with their manifest
/// under `_epochs/<writer>-S/`, so shards checkpointed at different times — or by different
/// instances — never touch each other's files.
#[derive(Debug)]
pub struct LakeSinks {
    store: Arc<dyn ObjectStore>,
    writer: String,
    outputs: LakeOutputs,
    model_monitor: Option<Arc<ModelMonitorConfig>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The shard the next outputs come from.
    scope: String,
    staged: BTreeMap<String, Staging>,
    /// The last epoch committed or restored, per shard.
    epochs: BTreeMap<String, u64>,
}

fn sink_err(e: &crate::LakeError) -> SinkError {
    SinkError {
        sink: "lake",
        message: bikeshare_types::error::chain(e),
    }
}

fn poisoned() -> SinkError {
    SinkError {
        sink: "lake",
        message: "staging lock poisoned".into(),
    }
}

impl LakeSinks {
    /// `writer` names this role (`processor`); the shard id is appended per shard.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        writer: impl Into<String>,
        outputs: LakeOutputs,
    ) -> Self {
        Self {
            store,
            writer: writer.into(),
            outputs,
            model_monitor: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Also writes Model Monitor's data capture (predictions with their features) and ground
    /// truth (labels), in the same epochs ([`crate::model_monitor`]).
    pub fn with_model_monitor(mut self, config: ModelMonitorConfig) -> Self {
        self.model_monitor = Some(Arc::new(config));
        self
    }

    fn epoch_writer(&self, shard: &str) -> EpochWriter {
        EpochWriter::new(self.store.clone(), format!("{}-{shard}", self.writer))
    }

    fn stage(&self, f: impl FnOnce(&mut Staging)) -> Result<(), SinkError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        let scope = st.scope.clone();
        let monitor = &self.model_monitor;
        f(st.staged.entry(scope).or_insert_with(|| Staging {
            model_monitor: monitor.clone().map(MonitorStaging::new).unwrap_or_default(),
            ..Staging::default()
        }));
        Ok(())
    }

    /// Rows staged and not yet written.
    pub fn staged_rows(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.staged.values().map(Staging::rows).sum())
            .unwrap_or(0)
    }
}

#[async_trait]
impl Sinks for LakeSinks {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError> {
        let keep = self.outputs.features;
        self.stage(|s| {
            s.model_monitor.features(&rows);
            if keep {
                s.features.push(rows);
            }
        })
    }
    async fn predictions(&self, predictions: Vec<Prediction>) -> Result<(), SinkError> {
        self.stage(|s| {
            s.model_monitor.predictions(&predictions);
            s.predictions.push(predictions);
        })
    }
    async fn labels(&self, labels: Vec<Label>) -> Result<(), SinkError> {
        self.stage(|s| {
            s.model_monitor.labels(&labels);
            s.labels.push(labels);
        })
    }
    async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
        if self.outputs.dead_letters {
            self.stage(|s| s.dead_letters.push(letters))?;
        }
        Ok(())
    }
    /// Writes what is staged for every shard as that shard's next epoch.
    async fn flush(&self) -> Result<(), SinkError> {
        let next: Vec<(String, u64)> = {
            let st = self.state.lock().map_err(|_| poisoned())?;
            st.staged
                .keys()
                .map(|k| (k.clone(), st.epochs.get(k).copied().unwrap_or(0) + 1))
                .collect()
        };
        self.commit(&next).await
    }
    fn scope(&self, shard: &str) {
        if let Ok(mut st) = self.state.lock()
            && st.scope != shard
        {
            st.scope = shard.to_owned();
        }
    }
    async fn open_shard(&self, shard: &str, restored_epoch: u64) -> Result<(), SinkError> {
        {
            let mut st = self.state.lock().map_err(|_| poisoned())?;
            // Anything staged for it from an earlier holding is about to be emitted again.
            st.staged.remove(shard);
            st.epochs.insert(shard.to_owned(), restored_epoch);
        }
        let r = self
            .epoch_writer(shard)
            .recover(restored_epoch)
            .await
            .map_err(|e| sink_err(&e))?;
        if r.files_deleted > 0 {
            tracing::info!(shard, ?r, "lake: uncommitted epochs discarded");
        }
        Ok(())
    }
    async fn commit(&self, checkpoints: &[(String, u64)]) -> Result<(), SinkError> {
        for (shard, epoch) in checkpoints {
            let staged = {
                let mut st = self.state.lock().map_err(|_| poisoned())?;
                st.staged.remove(shard).unwrap_or_default()
            };
            let report = self
                .epoch_writer(shard)
                .commit(*epoch, staged)
                .await
                .map_err(|e| sink_err(&e))?;
            self.state
                .lock()
                .map_err(|_| poisoned())?
                .epochs
                .insert(shard.clone(), *epoch);
            tracing::debug!(shard, epoch, ?report, "lake epoch written");
        }
        Ok(())
    }
}
