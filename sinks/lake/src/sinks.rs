//! The stream processor's outputs into the lake: [`LakeSinks`].
//!
//! Rows are staged in memory per input shard ([`Sinks::shard_outputs`] names it; outputs
//! handed over without a shard, through the single-kind methods, are staged under
//! [`UNSCOPED`]) and written at the runner's
//! checkpoint barrier ([`Sinks::commit`]) as the files of that shard's epoch. A take
//! ([`Sinks::open_shard`]) discards what epochs after the shard's restored checkpoint left
//! behind: this writer's, and other instances' of the same role (a former owner killed
//! between its lake commit and its refused checkpoint leaves such an epoch; the new owner
//! removes it, so the lake holds each row once). A former owner may also commit that epoch
//! *after* the take's clean-up (its lease lost while it wrote) and be killed before it rolls
//! it back: so every later commit of the taker removes other writers' epochs between the
//! take and its own last stored checkpoint, which no one else can have checkpointed
//! (decision 087). A refused owner rolls back with [`Sinks::abandon_shard`], which touches
//! only its own epochs. See [`crate::writer`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bikeshare_stream::sink::{ShardOutputs, SinkError, Sinks};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};
use object_store::ObjectStore;
use object_store::path::Path;

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

/// The shard under which outputs handed over without one ([`Sinks::features`] and the
/// other single-kind methods) are staged.
pub const UNSCOPED: &str = "";

#[derive(Debug, Default)]
struct State {
    staged: BTreeMap<String, Staging>,
    /// The last epoch committed or restored, per shard.
    epochs: BTreeMap<String, u64>,
    /// The checkpoint epoch each held shard was taken at (shards taken with a checkpoint).
    taken: BTreeMap<String, u64>,
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

    fn stage(&self, shard: &str, f: impl FnOnce(&mut Staging)) -> Result<(), SinkError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        let monitor = &self.model_monitor;
        f(st.staged
            .entry(shard.to_owned())
            .or_insert_with(|| Staging {
                model_monitor: monitor.clone().map(MonitorStaging::new).unwrap_or_default(),
                ..Staging::default()
            }));
        Ok(())
    }

    /// The other writers of `shard` in this role: `_epochs/<role>[-<instance>]-<shard>`
    /// other than this one (the role is this writer's id up to its first `-`).
    async fn peers(&self, shard: &str) -> Result<Vec<String>, SinkError> {
        let own = format!("{}-{shard}", self.writer);
        let role = self.writer.split('-').next().unwrap_or(&self.writer);
        let (bare, prefix, suffix) = (
            format!("{role}-{shard}"),
            format!("{role}-"),
            format!("-{shard}"),
        );
        let dir = Path::from("_epochs");
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| SinkError {
                sink: "lake",
                message: format!("listing {dir}: {}", bikeshare_types::error::chain(&e)),
            })?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|d| {
                *d != own && (*d == bare || (d.starts_with(&prefix) && d.ends_with(&suffix)))
            })
            .map(str::to_owned)
            .collect())
    }

    /// Discards this writer's epochs of `shard` after `epoch`.
    async fn rollback(&self, shard: &str, epoch: u64) -> Result<(), SinkError> {
        let r = self
            .epoch_writer(shard)
            .recover(epoch)
            .await
            .map_err(|e| sink_err(&e))?;
        if r.files_deleted > 0 {
            tracing::info!(shard, ?r, "lake: uncommitted epochs discarded");
        }
        Ok(())
    }

    /// Discards the other writers' epochs of `shard` after `after`, up to `up_to` when given
    /// (never checkpointed: see [`Sinks::open_shard`] and [`Sinks::commit`]).
    async fn discard_peers(
        &self,
        shard: &str,
        after: u64,
        up_to: Option<u64>,
    ) -> Result<(), SinkError> {
        for peer in self.peers(shard).await? {
            let w = EpochWriter::new(self.store.clone(), peer.clone());
            let r = match up_to {
                None => w.recover(after).await,
                Some(up_to) => w.discard(after, up_to).await,
            }
            .map_err(|e| sink_err(&e))?;
            if r.files_deleted > 0 {
                tracing::warn!(shard, writer = %peer, after, ?r,
                    "lake: a former owner's epochs after the checkpoint taken over discarded (never checkpointed)");
            }
        }
        Ok(())
    }

    /// Outputs handed over without a shard (`fill` sets the one kind), staged under
    /// [`UNSCOPED`].
    async fn unscoped(&self, fill: impl FnOnce(&mut ShardOutputs) + Send) -> Result<(), SinkError> {
        let mut outputs = ShardOutputs::default();
        fill(&mut outputs);
        self.shard_outputs(UNSCOPED, outputs).await
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
    async fn features(&self, features: Vec<FeatureVector>) -> Result<(), SinkError> {
        self.unscoped(|o| o.features = features).await
    }
    async fn predictions(&self, predictions: Vec<Prediction>) -> Result<(), SinkError> {
        self.unscoped(|o| o.predictions = predictions).await
    }
    async fn labels(&self, labels: Vec<Label>) -> Result<(), SinkError> {
        self.unscoped(|o| o.labels = labels).await
    }
    async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
        self.unscoped(|o| o.dead_letters = letters).await
    }
    /// Stages `outputs` under `shard` (features and dead letters only if the lake keeps
    /// them; Model Monitor's capture sees features, then predictions, then labels). Nothing
    /// to stage leaves the shard without staged rows.
    async fn shard_outputs(&self, shard: &str, outputs: ShardOutputs) -> Result<(), SinkError> {
        let keep_dead = self.outputs.dead_letters && !outputs.dead_letters.is_empty();
        if outputs.features.is_empty()
            && outputs.predictions.is_empty()
            && outputs.labels.is_empty()
            && !keep_dead
        {
            return Ok(());
        }
        let keep_features = self.outputs.features;
        self.stage(shard, |s| {
            // Only the kinds present: the capture keeps feature rows until their predictions
            // come, and a call with no predictions would drop them (the single-kind methods
            // bring one kind a call).
            if !outputs.features.is_empty() {
                s.model_monitor.features(&outputs.features);
            }
            if !outputs.predictions.is_empty() {
                s.model_monitor.predictions(&outputs.predictions);
            }
            if !outputs.labels.is_empty() {
                s.model_monitor.labels(&outputs.labels);
            }
            if keep_features {
                s.features.push(outputs.features);
            }
            s.predictions.push(outputs.predictions);
            s.labels.push(outputs.labels);
            if keep_dead {
                s.dead_letters.push(outputs.dead_letters);
            }
        })
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
    /// A take: discards the epochs after `restored_epoch`, this writer's and other writers'
    /// of this role. The taker has just claimed the shard's checkpoint, so a later epoch of
    /// another writer was never checkpointed (its owner was killed between its commit and
    /// its refused checkpoint). A take with no checkpoint (`restored_epoch` 0: a new shard,
    /// or a checkpoint store that was reset while the lake was kept) leaves other writers'
    /// epochs alone: nothing says they were never checkpointed, and a duplicate can be
    /// removed later where a deleted row is lost.
    async fn open_shard(&self, shard: &str, restored_epoch: u64) -> Result<(), SinkError> {
        {
            let mut st = self.state.lock().map_err(|_| poisoned())?;
            // Anything staged for it from an earlier holding is about to be emitted again.
            st.staged.remove(shard);
            st.epochs.insert(shard.to_owned(), restored_epoch);
            if restored_epoch > 0 {
                st.taken.insert(shard.to_owned(), restored_epoch);
            } else {
                st.taken.remove(shard);
            }
        }
        self.rollback(shard, restored_epoch).await?;
        if restored_epoch > 0 {
            self.discard_peers(shard, restored_epoch, None).await?;
        }
        Ok(())
    }
    /// The runner gave the shard up (its checkpoint was refused): only this writer's epochs
    /// after `stored_epoch` go; other writers' are the new owner's.
    async fn abandon_shard(&self, shard: &str, stored_epoch: u64) -> Result<(), SinkError> {
        {
            let mut st = self.state.lock().map_err(|_| poisoned())?;
            st.staged.remove(shard);
            st.epochs.insert(shard.to_owned(), stored_epoch);
            st.taken.remove(shard);
        }
        self.rollback(shard, stored_epoch).await
    }
    /// Writes each shard's staged rows as its epoch. For a shard taken at checkpoint `T`,
    /// first removes other writers' epochs `T+1 ..= epoch-1`: this writer stored those
    /// checkpoints (the runner commits `epoch` only after `epoch-1` is stored), so another
    /// writer's epoch there was never checkpointed — a former owner's, committed after the
    /// take's clean-up. Later epochs may be a next owner's and are left alone.
    async fn commit(&self, checkpoints: &[(String, u64)]) -> Result<(), SinkError> {
        for (shard, epoch) in checkpoints {
            let (staged, taken) = {
                let mut st = self.state.lock().map_err(|_| poisoned())?;
                (
                    st.staged.remove(shard).unwrap_or_default(),
                    st.taken.get(shard).copied(),
                )
            };
            if let Some(t) = taken.filter(|t| epoch.saturating_sub(1) > *t) {
                self.discard_peers(shard, t, Some(epoch - 1)).await?;
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use bikeshare_testkit::envelopes;
    use bikeshare_types::Timestamp;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;

    const T0: i64 = 1_772_431_200_000;

    fn sinks(store: &Arc<dyn ObjectStore>, writer: &str) -> LakeSinks {
        LakeSinks::new(
            store.clone(),
            writer,
            LakeOutputs {
                features: false,
                dead_letters: false,
            },
        )
    }

    /// Stages one prediction of `shard` and commits it as `epoch`.
    async fn epoch(s: &LakeSinks, shard: &str, epoch: u64) {
        let p = envelopes::prediction("demo", &format!("st-{epoch}"), Timestamp(T0), 0.25, 0.5);
        let outputs = ShardOutputs {
            predictions: vec![p],
            ..ShardOutputs::default()
        };
        s.shard_outputs(shard, outputs).await.unwrap();
        s.commit(&[(shard.to_owned(), epoch)]).await.unwrap();
    }

    /// `writer` takes shard 1 from its checkpoint `at` (0: none).
    async fn taker(store: &Arc<dyn ObjectStore>, writer: &str, at: u64) -> LakeSinks {
        let s = sinks(store, writer);
        s.open_shard("shardId-1", at).await.unwrap();
        s
    }

    /// A lake in which a took shard 1 without a checkpoint and wrote its epoch 1.
    async fn a_wrote_epoch_1() -> (Arc<dyn ObjectStore>, LakeSinks) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = taker(&store, "processor-a", 0).await;
        epoch(&a, "shardId-1", 1).await;
        (store, a)
    }

    /// The data files in the lake: `(writer-shard, epoch)` from their names.
    async fn files(store: &Arc<dyn ObjectStore>) -> Vec<String> {
        let mut out: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .filter_map(|p| p.rsplit('/').next().map(str::to_owned))
            .collect();
        out.sort();
        out
    }

    fn named(writer_shard: &str, epoch: u64) -> String {
        format!("{writer_shard}-{epoch:012}.parquet")
    }

    /// Instance a writes epochs 1 (checkpointed) and 2 of shard 1, and is SIGKILLed before
    /// its checkpoint 2 (refused: b had claimed the shard at 1) — nothing rolls epoch 2 back.
    /// b takes shard 1 from checkpoint 1: epoch 2 of a is discarded; a's epoch 1 and a's
    /// epochs of shard 2 stay.
    #[tokio::test]
    async fn a_taker_discards_a_killed_former_owners_epochs_after_the_checkpoint() {
        let (store, a) = a_wrote_epoch_1().await;
        epoch(&a, "shardId-1", 2).await;
        epoch(&a, "shardId-2", 1).await;
        epoch(&a, "shardId-2", 2).await;
        drop(a); // SIGKILL
        let b = taker(&store, "processor-b", 1).await;
        assert_eq!(
            files(&store).await,
            vec![
                named("processor-a-shardId-1", 1),
                named("processor-a-shardId-2", 1),
                named("processor-a-shardId-2", 2),
            ]
        );
        // b's own epochs then continue from 2.
        epoch(&b, "shardId-1", 2).await;
        assert!(
            files(&store)
                .await
                .contains(&named("processor-b-shardId-1", 2))
        );
    }

    /// A take without a checkpoint (a reset checkpoint store over a kept lake) deletes no
    /// other writer's epochs: their rows may be the only copy.
    #[tokio::test]
    async fn a_take_without_a_checkpoint_leaves_other_writers_epochs() {
        let (store, a) = a_wrote_epoch_1().await;
        epoch(&a, "shardId-1", 2).await;
        drop(a);
        let _b = taker(&store, "processor-b", 0).await;
        assert_eq!(
            files(&store).await,
            vec![
                named("processor-a-shardId-1", 1),
                named("processor-a-shardId-1", 2),
            ]
        );
    }

    /// The runner rolling back an epoch whose checkpoint was refused (the shard went to b):
    /// only a's own epoch goes; b's epochs after a's checkpoint are b's and stay.
    #[tokio::test]
    async fn a_refused_owner_rolling_back_leaves_the_new_owners_epochs() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = sinks(&store, "processor-a");
        let b = sinks(&store, "processor-b");
        a.open_shard("shardId-1", 0).await.unwrap();
        epoch(&a, "shardId-1", 1).await;
        b.open_shard("shardId-1", 1).await.unwrap();
        epoch(&b, "shardId-1", 2).await;
        epoch(&a, "shardId-1", 2).await; // then its checkpoint 2 is refused
        a.abandon_shard("shardId-1", 1).await.unwrap();
        assert_eq!(
            files(&store).await,
            vec![
                named("processor-a-shardId-1", 1),
                named("processor-b-shardId-1", 2),
            ]
        );
    }

    /// a, whose lease b took at checkpoint 1, commits its epoch 2 *after* b's clean-up at the
    /// take, and is SIGKILLed before rolling it back. b's next commits remove it: the rows of
    /// epoch 2 are in the lake once, b's.
    #[tokio::test]
    async fn a_fenced_former_owners_late_epoch_is_removed_by_the_new_owners_commits() {
        let (store, a) = a_wrote_epoch_1().await;
        let b = taker(&store, "processor-b", 1).await;
        epoch(&a, "shardId-1", 2).await; // late; its checkpoint is refused, then SIGKILL
        drop(a);
        epoch(&b, "shardId-1", 2).await;
        epoch(&b, "shardId-1", 3).await; // after b stored checkpoint 2
        assert_eq!(
            files(&store).await,
            vec![
                named("processor-a-shardId-1", 1),
                named("processor-b-shardId-1", 2),
                named("processor-b-shardId-1", 3),
            ]
        );
    }

    /// The clean-up at a commit spares a later owner: b took shard 1 at 1 and stored 2, c
    /// took it at 2; b, not yet aware, commits its epoch 3 (then abandons it when its
    /// checkpoint is refused). c's epoch 3 stays; b's goes.
    #[tokio::test]
    async fn a_stale_owners_commit_leaves_the_next_owners_epochs() {
        let (store, _a) = a_wrote_epoch_1().await;
        let b = taker(&store, "processor-b", 1).await;
        epoch(&b, "shardId-1", 2).await;
        let c = taker(&store, "processor-c", 2).await;
        epoch(&c, "shardId-1", 3).await;
        epoch(&b, "shardId-1", 3).await;
        b.abandon_shard("shardId-1", 2).await.unwrap();
        epoch(&c, "shardId-1", 4).await;
        assert_eq!(
            files(&store).await,
            vec![
                named("processor-a-shardId-1", 1),
                named("processor-b-shardId-1", 2),
                named("processor-c-shardId-1", 3),
                named("processor-c-shardId-1", 4),
            ]
        );
    }
}
