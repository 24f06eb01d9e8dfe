//! Writing an epoch's files so that a restart neither duplicates nor loses a row.
//!
//! Protocol of one writer (one id, one checkpoint sequence):
//!
//! 1. `commit(N)` at the checkpoint barrier of epoch `N`: put the manifest
//!    `_epochs/<writer>/epoch-N.json` listing the files about to be written, then put the
//!    files (each put is atomic: a rename locally, a single PUT on S3), then delete the
//!    manifests of earlier epochs (their checkpoints are stored: the runner calls
//!    `commit(N)` only after checkpoint `N-1` was saved). The caller stores checkpoint `N`
//!    after `commit(N)` returns.
//! 2. `recover(E)` on start, `E` being the epoch of the checkpoint resumed from: for every
//!    manifest of an epoch after `E`, delete its files, then the manifest. Those files held
//!    rows processed after checkpoint `E`; the replay from `E` stages and writes them again.
//!
//! A crash before the manifest is written leaves nothing; after it, the manifest names
//! every file the epoch may have written. Files of epoch `N` are replaced by name if `N` is
//! written again.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

use crate::layout::{EncodedFile, epochs_dir, manifest_epoch, manifest_path};
use crate::staging::Staging;
use crate::{LakeError, store_err};

/// Files written in parallel per commit.
const PUT_CONCURRENCY: usize = 8;

/// Fail point for crash tests: `BIKESHARE_LAKE_ABORT_AFTER_EPOCH=N` aborts the process right
/// after epoch `N`'s files are written and before its checkpoint is stored — the window a
/// random kill rarely hits.
pub const ABORT_AFTER_EPOCH_ENV: &str = "BIKESHARE_LAKE_ABORT_AFTER_EPOCH";

fn abort_after_files(epoch: u64) -> bool {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| std::env::var(ABORT_AFTER_EPOCH_ENV).ok()?.parse().ok()) == Some(epoch)
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    writer: String,
    epoch: u64,
    files: Vec<String>,
}

/// What a commit wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    pub files: usize,
    pub rows: usize,
    pub bytes: usize,
}

/// What a recovery removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Epochs after the restored checkpoint whose files were removed.
    pub epochs_discarded: usize,
    pub files_deleted: usize,
}

/// Writes one writer's epochs into the lake.
#[derive(Debug, Clone)]
pub struct EpochWriter {
    store: Arc<dyn ObjectStore>,
    writer: String,
}

impl EpochWriter {
    pub fn new(store: Arc<dyn ObjectStore>, writer: impl Into<String>) -> Self {
        Self {
            store,
            writer: writer.into(),
        }
    }

    pub fn writer(&self) -> &str {
        &self.writer
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    async fn manifests(&self) -> Result<Vec<(u64, Path)>, LakeError> {
        let dir = epochs_dir(&self.writer);
        let metas: Vec<_> = self
            .store
            .list(Some(&Path::from(dir.as_str())))
            .try_collect()
            .await
            .map_err(store_err(dir))?;
        let mut out: Vec<(u64, Path)> = metas
            .into_iter()
            .filter_map(|m| Some((manifest_epoch(m.location.filename()?)?, m.location)))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn delete(&self, path: &Path) -> Result<bool, LakeError> {
        match self.store.delete(path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_err(path.to_string())(e)),
        }
    }

    /// Removes what epochs after `restored_epoch` wrote (see the module docs).
    pub async fn recover(&self, restored_epoch: u64) -> Result<RecoveryReport, LakeError> {
        let mut report = RecoveryReport::default();
        for (epoch, path) in self.manifests().await? {
            if epoch > restored_epoch {
                self.discard_epoch(epoch, &path, &mut report).await?;
            }
            self.delete(&path).await?;
        }
        Ok(report)
    }

    /// Removes what this writer's epochs in `after + 1 ..= up_to` wrote, and nothing else:
    /// another writer's clean-up of epochs it knows were never checkpointed by this one
    /// (decision 087).
    pub async fn discard(&self, after: u64, up_to: u64) -> Result<RecoveryReport, LakeError> {
        let mut report = RecoveryReport::default();
        for (epoch, path) in self.manifests().await? {
            if epoch > after && epoch <= up_to {
                self.discard_epoch(epoch, &path, &mut report).await?;
                self.delete(&path).await?;
            }
        }
        Ok(report)
    }

    /// Deletes the files the manifest at `path` (of `epoch`) lists.
    async fn discard_epoch(
        &self,
        epoch: u64,
        path: &Path,
        report: &mut RecoveryReport,
    ) -> Result<(), LakeError> {
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(store_err(path.to_string()))?
            .bytes()
            .await
            .map_err(store_err(path.to_string()))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| LakeError::Manifest {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        for f in &m.files {
            if self.delete(&Path::from(f.as_str())).await? {
                report.files_deleted += 1;
            }
        }
        report.epochs_discarded += 1;
        tracing::info!(
            writer = %self.writer,
            epoch,
            files = m.files.len(),
            "discarded the files of an epoch whose checkpoint was never stored"
        );
        Ok(())
    }

    /// Encodes and writes everything staged as epoch `epoch` (see the module docs).
    pub async fn commit(&self, epoch: u64, staging: Staging) -> Result<CommitReport, LakeError> {
        let writer = self.writer.clone();
        let files = tokio::task::spawn_blocking(move || staging.encode(&writer, epoch))
            .await
            .map_err(|e| LakeError::Task(e.to_string()))??;
        self.write_files(epoch, files).await
    }

    /// Writes already encoded files as epoch `epoch`.
    pub async fn write_files(
        &self,
        epoch: u64,
        files: Vec<EncodedFile>,
    ) -> Result<CommitReport, LakeError> {
        let mut report = CommitReport::default();
        if !files.is_empty() {
            let manifest = Manifest {
                writer: self.writer.clone(),
                epoch,
                files: files.iter().map(|f| f.path.clone()).collect(),
            };
            let mpath = manifest_path(&self.writer, epoch);
            let body = serde_json::to_vec(&manifest).map_err(|e| LakeError::Manifest {
                path: mpath.clone(),
                message: e.to_string(),
            })?;
            self.store
                .put(
                    &Path::from(mpath.as_str()),
                    PutPayload::from(Bytes::from(body)),
                )
                .await
                .map_err(store_err(mpath))?;
            report.files = files.len();
            report.rows = files.iter().map(|f| f.rows).sum();
            report.bytes = files.iter().map(|f| f.bytes.len()).sum();
            futures::stream::iter(files.into_iter().map(|f| {
                let store = self.store.clone();
                async move {
                    store
                        .put(&Path::from(f.path.as_str()), PutPayload::from(f.bytes))
                        .await
                        .map(|_| ())
                        .map_err(store_err(f.path))
                }
            }))
            .buffer_unordered(PUT_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
            if abort_after_files(epoch) {
                tracing::error!(epoch, "fail point: aborting after the epoch's files");
                std::process::abort();
            }
        }
        for (old, path) in self.manifests().await? {
            if old < epoch {
                self.delete(&path).await?;
            }
        }
        Ok(report)
    }
}
