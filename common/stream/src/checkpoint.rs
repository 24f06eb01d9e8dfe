//! Checkpoints: per shard, the shard's input position and the processor state of the
//! partitions (systems) whose records live in that shard, taken together.
//!
//! Protocol (at-least-once outputs with deterministic ids; one instance or several sharing
//! the shards through leases):
//!
//! 1. process records; remember, per shard, the last sequence number processed;
//! 2. at a checkpoint, first wait until every output emitted so far is acknowledged by its
//!    sink, then write, for every shard held, `{epoch, {shard: position}, state of the
//!    shard's systems}` under the shard's key, atomically (a local temporary file, fsync,
//!    rename; or one S3 `PutObject`);
//! 3. on start, and whenever an instance takes a shard's lease, load that shard's newest
//!    checkpoint, absorb its state and resume the shard after its position.
//!
//! A crash between two checkpoints replays the records after the last one: the state of the
//! shard's systems is the one that produced exactly those outputs, so the replay re-emits
//! the same outputs with the same ids, which consumers and the lake deduplicate.
//! Straight-through and kill-and-restore runs therefore agree on the set of outputs. Shards
//! are checkpointed one by one, and that is safe because their states are disjoint: a
//! system's state depends only on its own records, which all live in one shard (the
//! partition key of `events` is the system id).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bikeshare_types::Timestamp;
use serde::{Deserialize, Serialize};

/// The checkpoint format version this build writes and reads.
/// (Version 1 was one checkpoint of every shard together; version 2 is one per shard.)
pub const CHECKPOINT_VERSION: u32 = 2;

/// One checkpoint (of one shard: `positions` has that shard only).
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
    #[error("checkpoint key {0:?} is not a shard id (letters, digits, '-', '_' and '.' only)")]
    Key(String),
    #[error("checkpoint store {store}: {message}")]
    Remote { store: String, message: String },
}

impl Checkpoint {
    /// The bytes stored (MessagePack).
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        rmp_serde::to_vec_named(self).map_err(|e| CheckpointError::Corrupt {
            path: PathBuf::from("<checkpoint>"),
            reason: e.to_string(),
        })
    }

    /// A checkpoint from stored bytes; `path` names where they came from in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let cp: Self = rmp_serde::from_slice(bytes).map_err(|e| CheckpointError::Corrupt {
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
}

/// Refuses a key that is not safe as a file name or object key part (shard ids are).
pub fn check_key(key: &str) -> Result<(), CheckpointError> {
    let ok = !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CheckpointError::Key(key.to_owned()))
    }
}

/// Where checkpoints live, one series per key (a shard id): a local directory by default,
/// S3 in AWS (`bikeshare_aws::S3CheckpointStore`).
#[async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// The newest checkpoint stored under `key`.
    async fn latest(&self, key: &str) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Stores `checkpoint` under `key`, atomically: a reader sees the old one or the new one.
    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
}

/// Checkpoints in memory (tests, and whatever must not touch a disk).
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    latest: std::sync::Mutex<BTreeMap<String, Checkpoint>>,
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn latest(&self, key: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        check_key(key)?;
        let map = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(map.get(key).cloned())
    }
    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        check_key(key)?;
        let mut map = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(key.to_owned(), checkpoint.clone());
        Ok(())
    }
}

/// Checkpoints as files `<key>/checkpoint-<epoch>.bin` under a directory; keeps the newest
/// `keep` of each key.
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
        Checkpoint::decode(&bytes, path)
    }

    fn write(dir: &Path, keep: usize, cp: &Checkpoint) -> Result<(), CheckpointError> {
        use std::io::Write;
        std::fs::create_dir_all(dir).map_err(Self::io(dir))?;
        let bytes = cp.encode()?;
        let final_path = dir.join(format!("checkpoint-{:012}.bin", cp.epoch));
        let tmp = dir.join(format!(".checkpoint-{:012}.tmp", cp.epoch));
        let mut f = std::fs::File::create(&tmp).map_err(Self::io(&tmp))?;
        f.write_all(&bytes).map_err(Self::io(&tmp))?;
        f.sync_all().map_err(Self::io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &final_path).map_err(Self::io(&final_path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let all = Self::list(dir)?;
        for (_, old) in all.iter().rev().skip(keep) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for LocalCheckpointStore {
    async fn latest(&self, key: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        check_key(key)?;
        let dir = self.dir.join(key);
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

    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        check_key(key)?;
        let (dir, keep) = (self.dir.join(key), self.keep);
        let cp = checkpoint.clone();
        tokio::task::spawn_blocking(move || Self::write(&dir, keep, &cp))
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

    const KEY: &str = "shardId-000000000000";

    #[tokio::test]
    async fn saves_loads_the_newest_and_keeps_three_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalCheckpointStore::new(dir.path());
        assert_eq!(store.latest(KEY).await.unwrap(), None);
        for e in 1..=5 {
            store.save(KEY, &cp(e)).await.unwrap();
        }
        store.save("shardId-000000000001", &cp(9)).await.unwrap();
        assert_eq!(store.latest(KEY).await.unwrap(), Some(cp(5)));
        assert_eq!(
            store.latest("shardId-000000000001").await.unwrap(),
            Some(cp(9)),
            "keys are independent"
        );
        let shard_dir = dir.path().join(KEY);
        assert_eq!(LocalCheckpointStore::list(&shard_dir).unwrap().len(), 3);
        // A torn temporary file is ignored.
        std::fs::write(shard_dir.join(".checkpoint-000000000006.tmp"), b"garbage").unwrap();
        assert_eq!(store.latest(KEY).await.unwrap(), Some(cp(5)));
        // A corrupt final file is a clear error, not a panic.
        std::fs::write(shard_dir.join("checkpoint-000000000007.bin"), b"garbage").unwrap();
        assert!(matches!(
            store.latest(KEY).await,
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn keys_that_are_not_shard_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalCheckpointStore::new(dir.path());
        for bad in ["", "..", "a/b", "../x", "shard id"] {
            assert!(
                matches!(store.save(bad, &cp(1)).await, Err(CheckpointError::Key(_))),
                "{bad:?}"
            );
        }
        let memory = MemoryCheckpointStore::default();
        memory.save(KEY, &cp(2)).await.unwrap();
        assert_eq!(memory.latest(KEY).await.unwrap(), Some(cp(2)));
        assert!(memory.latest("a/b").await.is_err());
    }
}
