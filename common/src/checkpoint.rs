//! Checkpoints: the processor's whole state and the input positions, taken together.
//!
//! Protocol (one processor instance, at-least-once outputs with deterministic ids):
//!
//! 1. process records; remember, per shard, the last sequence number processed;
//! 2. at a checkpoint, first wait until every output emitted so far is acknowledged by its
//!    sink, then write `{epoch, positions, state}` atomically (temporary file, fsync, rename);
//! 3. on start, load the newest checkpoint and resume each shard after its position.
//!
//! A crash between two checkpoints replays the records after the last one: the processor
//! state is the one that produced exactly those outputs, so the replay re-emits the same
//! outputs with the same ids, which consumers and the lake deduplicate. Straight-through and
//! kill-and-restore runs therefore agree on the set of outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Timestamp;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The checkpoint format version this build writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

/// One checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// Increases by one per checkpoint.
    pub epoch: u64,
    /// Wall-clock time it was taken (for the checkpoint-age metric only).
    pub taken_at: Timestamp,
    /// Per shard id, the last sequence number whose record is reflected in `state`.
    pub positions: BTreeMap<String, String>,
    /// The operator state (the stream processor's snapshot).
    #[serde(with = "serde_bytes_compat")]
    pub state: Vec<u8>,
}

mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Why a checkpoint could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {path} has version {found}; this build reads {CHECKPOINT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// Where checkpoints live: a local directory by default, S3 or DynamoDB in AWS.
#[async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    async fn latest(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
}

/// Checkpoints as files `checkpoint-<epoch>.bin` in a directory; keeps the newest `keep`.
#[derive(Debug, Clone)]
pub struct LocalCheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl LocalCheckpointStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keep: 3,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
        move |source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(CheckpointError::Io {
                    path: dir.to_owned(),
                    source: e,
                });
            }
        };
        let mut out: Vec<(u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let epoch = name
                    .strip_prefix("checkpoint-")?
                    .strip_suffix(".bin")?
                    .parse()
                    .ok()?;
                Some((epoch, e.path()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(Self::io(path))?;
        let cp: Checkpoint =
            rmp_serde::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                path: path.to_owned(),
                found: cp.version,
            });
        }
        Ok(cp)
    }

    fn write(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let bytes = rmp_serde::to_vec_named(cp).map_err(|e| CheckpointError::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let final_path = self.dir.join(format!("checkpoint-{:012}.bin", cp.epoch));
        let tmp = self.dir.join(format!(".checkpoint-{:012}.tmp", cp.epoch));
        let mut f = std::fs::File::create(&tmp).map_err(Self::io(&tmp))?;
        f.write_all(&bytes).map_err(Self::io(&tmp))?;
        f.sync_all().map_err(Self::io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &final_path).map_err(Self::io(&final_path))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let all = Self::list(&self.dir)?;
        for (_, old) in all.iter().rev().skip(self.keep) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for LocalCheckpointStore {
    async fn latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let dir = self.dir.clone();
        let r = tokio::task::spawn_blocking(move || {
            // The newest readable one: a torn write never has the final name (rename is atomic).
            match Self::list(&dir)?.pop() {
                Some((_, path)) => Self::read(&path).map(Some),
                None => Ok(None),
            }
        })
        .await;
        r.unwrap_or_else(|e| {
            Err(CheckpointError::Corrupt {
                path: self.dir.clone(),
                reason: e.to_string(),
            })
        })
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let this = self.clone();
        let cp = checkpoint.clone();
        tokio::task::spawn_blocking(move || this.write(&cp))
            .await
            .unwrap_or_else(|e| {
                Err(CheckpointError::Corrupt {
                    path: self.dir.clone(),
                    reason: e.to_string(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(epoch: u64) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            epoch,
            taken_at: Timestamp(epoch as i64),
            positions: BTreeMap::from([("shardId-000000000000".into(), format!("{epoch}"))]),
            state: vec![1, 2, 3, epoch as u8],
        }
    }

    #[tokio::test]
    async fn saves_loads_the_newest_and_keeps_three() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalCheckpointStore::new(dir.path());
        assert_eq!(store.latest().await.unwrap(), None);
        for e in 1..=5 {
            store.save(&cp(e)).await.unwrap();
        }
        assert_eq!(store.latest().await.unwrap(), Some(cp(5)));
        assert_eq!(LocalCheckpointStore::list(dir.path()).unwrap().len(), 3);
        // A torn temporary file is ignored.
        std::fs::write(dir.path().join(".checkpoint-000000000006.tmp"), b"garbage").unwrap();
        assert_eq!(store.latest().await.unwrap(), Some(cp(5)));
        // A corrupt final file is a clear error, not a panic.
        std::fs::write(dir.path().join("checkpoint-000000000007.bin"), b"garbage").unwrap();
        assert!(matches!(
            store.latest().await,
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}
