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
//! ## Fencing
//!
//! Every checkpoint of a shard is written by the holder of the shard's lease, and every
//! write is conditional ([`CheckpointStore::save_if`]): it names the [`Version`] of the
//! checkpoint it replaces, the one its writer last read or wrote, and is refused
//! ([`CheckpointError::Fenced`]) when the stored one is another. An instance that takes a
//! shard *claims* its checkpoint at once (loads it and writes it back under its own
//! [`Holder`]), so the former owner's next write is refused even if it has not noticed yet
//! that its lease is gone: it then drops the shard. S3 does this with `If-Match` /
//! `If-None-Match` on the ETag; the local store with a lock file and a revision number.
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

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

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
    #[error(
        "checkpoint {key} was written by {holder} since this instance last read it: the shard is held elsewhere now"
    )]
    Fenced { key: String, holder: Holder },
}

/// Who wrote a checkpoint: the instance holding the shard's lease, and the lease's counter
/// when that instance took it (for logs; the condition itself is on the [`Version`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub owner: String,
    pub lease_counter: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.owner.is_empty() {
            f.write_str("an unfenced writer")
        } else {
            write!(f, "{} (lease counter {})", self.owner, self.lease_counter)
        }
    }
}

/// The version of a key's newest checkpoint as its store tells versions apart (an S3 ETag,
/// a local revision number); `Version::ABSENT` when there is none. Opaque to callers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version(pub Option<String>);

impl Version {
    pub const ABSENT: Self = Self(None);
}

/// A key's newest checkpoint, who wrote it and its version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub checkpoint: Option<Checkpoint>,
    /// `None` for a checkpoint written without a holder (unconditional writes, older files).
    pub holder: Option<Holder>,
    pub version: Version,
}

/// How a checkpoint is stored: its fields, who wrote it and a revision that every
/// conditional write increments (so two writes never store the same bytes, and an S3
/// ETag, the MD5 of the bytes, tells them apart).
#[derive(Serialize)]
struct WireOut<'a> {
    version: u32,
    epoch: u64,
    taken_at: Timestamp,
    positions: &'a BTreeMap<String, String>,
    #[serde(with = "serde_bytes_compat")]
    state: &'a [u8],
    holder: Option<&'a Holder>,
    revision: u64,
}

#[derive(Deserialize)]
struct WireIn {
    version: u32,
    epoch: u64,
    taken_at: Timestamp,
    positions: BTreeMap<String, String>,
    #[serde(with = "serde_bytes_compat")]
    state: Vec<u8>,
    #[serde(default)]
    holder: Option<Holder>,
    #[serde(default)]
    revision: u64,
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
        Self::decode_stored(bytes, path).map(|(cp, _, _)| cp)
    }

    /// The bytes stored with the writer and the revision ([`CheckpointStore::save_if`]).
    pub fn encode_stored(
        &self,
        holder: Option<&Holder>,
        revision: u64,
    ) -> Result<Vec<u8>, CheckpointError> {
        let wire = WireOut {
            version: self.version,
            epoch: self.epoch,
            taken_at: self.taken_at,
            positions: &self.positions,
            state: &self.state,
            holder,
            revision,
        };
        rmp_serde::to_vec_named(&wire).map_err(|e| CheckpointError::Corrupt {
            path: PathBuf::from("<checkpoint>"),
            reason: e.to_string(),
        })
    }

    /// A checkpoint, its writer and its revision from stored bytes (either encoding).
    pub fn decode_stored(
        bytes: &[u8],
        path: &Path,
    ) -> Result<(Self, Option<Holder>, u64), CheckpointError> {
        let wire: WireIn = rmp_serde::from_slice(bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if wire.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                path: path.to_owned(),
                found: wire.version,
            });
        }
        let cp = Self {
            version: wire.version,
            epoch: wire.epoch,
            taken_at: wire.taken_at,
            positions: wire.positions,
            state: wire.state,
        };
        Ok((cp, wire.holder, wire.revision))
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
    /// The newest checkpoint stored under `key`, who wrote it and its version.
    async fn load(&self, key: &str) -> Result<Loaded, CheckpointError>;
    /// Stores `checkpoint` under `key`, atomically (a reader sees the old one or the new
    /// one), unconditionally: for a key with a single writer.
    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// Stores `checkpoint` under `key` written by `holder` only if the newest stored one is
    /// still `expected` (the version its writer last loaded or wrote); otherwise
    /// [`CheckpointError::Fenced`] naming the one who wrote since. Returns the new version.
    async fn save_if(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        holder: &Holder,
        expected: &Version,
    ) -> Result<Version, CheckpointError>;

    /// The newest checkpoint stored under `key`.
    async fn latest(&self, key: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.load(key).await?.checkpoint)
    }
}

/// A stored checkpoint, its writer and its revision.
type Stored = (Checkpoint, Option<Holder>, u64);

/// Checkpoints in memory (tests, and whatever must not touch a disk).
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    latest: std::sync::Mutex<BTreeMap<String, Stored>>,
}

impl MemoryCheckpointStore {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&self, key: &str) -> Result<Loaded, CheckpointError> {
        check_key(key)?;
        Ok(match self.map().get(key) {
            Some((cp, holder, revision)) => Loaded {
                checkpoint: Some(cp.clone()),
                holder: holder.clone(),
                version: Version(Some(revision.to_string())),
            },
            None => Loaded::default(),
        })
    }
    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        check_key(key)?;
        let mut map = self.map();
        let revision = map.get(key).map_or(0, |(_, _, r)| r + 1);
        map.insert(key.to_owned(), (checkpoint.clone(), None, revision));
        Ok(())
    }
    async fn save_if(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        holder: &Holder,
        expected: &Version,
    ) -> Result<Version, CheckpointError> {
        check_key(key)?;
        let mut map = self.map();
        let stored = map.get(key);
        let current = Version(stored.map(|(_, _, r)| r.to_string()));
        if &current != expected {
            return Err(CheckpointError::Fenced {
                key: key.to_owned(),
                holder: stored.and_then(|(_, h, _)| h.clone()).unwrap_or_default(),
            });
        }
        let revision = stored.map_or(0, |(_, _, r)| r + 1);
        map.insert(
            key.to_owned(),
            (checkpoint.clone(), Some(holder.clone()), revision),
        );
        Ok(Version(Some(revision.to_string())))
    }
}

/// Checkpoints as files `<key>/checkpoint-<epoch>.bin` under a directory; keeps the newest
/// `keep` of each key. Conditional writes hold `<key>/.lock` (an OS file lock, so
/// processes sharing the directory are fenced too) while they compare and write.
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

    /// The newest readable one: a torn write never has the final name (rename is atomic).
    fn read_newest(
        dir: &Path,
    ) -> Result<Option<(Checkpoint, Option<Holder>, u64)>, CheckpointError> {
        match Self::list(dir)?.pop() {
            Some((_, path)) => {
                let bytes = std::fs::read(&path).map_err(Self::io(&path))?;
                Checkpoint::decode_stored(&bytes, &path).map(Some)
            }
            None => Ok(None),
        }
    }

    fn write(
        dir: &Path,
        keep: usize,
        cp: &Checkpoint,
        holder: Option<&Holder>,
        revision: u64,
    ) -> Result<(), CheckpointError> {
        use std::io::Write;
        std::fs::create_dir_all(dir).map_err(Self::io(dir))?;
        let bytes = cp.encode_stored(holder, revision)?;
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

    /// Compares the newest checkpoint's revision with `expected` and writes, holding the
    /// key's lock file.
    fn write_if(
        dir: &Path,
        key: &str,
        keep: usize,
        cp: &Checkpoint,
        holder: &Holder,
        expected: &Version,
    ) -> Result<Version, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(Self::io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Self::io(&lock_path))?;
        lock.lock().map_err(Self::io(&lock_path))?;
        let stored = Self::read_newest(dir)?;
        let current = Version(stored.as_ref().map(|(_, _, r)| r.to_string()));
        if &current != expected {
            return Err(CheckpointError::Fenced {
                key: key.to_owned(),
                holder: stored.and_then(|(_, h, _)| h).unwrap_or_default(),
            });
        }
        let revision = stored.map_or(0, |(_, _, r)| r + 1);
        Self::write(dir, keep, cp, Some(holder), revision)?;
        drop(lock); // unlocks
        Ok(Version(Some(revision.to_string())))
    }

    fn joined(&self, e: tokio::task::JoinError) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        }
    }
}

#[async_trait]
impl CheckpointStore for LocalCheckpointStore {
    async fn load(&self, key: &str) -> Result<Loaded, CheckpointError> {
        check_key(key)?;
        let dir = self.dir.join(key);
        let newest = tokio::task::spawn_blocking(move || Self::read_newest(&dir))
            .await
            .map_err(|e| self.joined(e))??;
        Ok(match newest {
            Some((cp, holder, revision)) => Loaded {
                checkpoint: Some(cp),
                holder,
                version: Version(Some(revision.to_string())),
            },
            None => Loaded::default(),
        })
    }

    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        check_key(key)?;
        let (dir, keep) = (self.dir.join(key), self.keep);
        let cp = checkpoint.clone();
        tokio::task::spawn_blocking(move || {
            let revision = Self::read_newest(&dir)
                .ok()
                .flatten()
                .map_or(0, |(_, _, r)| r + 1);
            Self::write(&dir, keep, &cp, None, revision)
        })
        .await
        .map_err(|e| self.joined(e))?
    }

    async fn save_if(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        holder: &Holder,
        expected: &Version,
    ) -> Result<Version, CheckpointError> {
        check_key(key)?;
        let (dir, keep) = (self.dir.join(key), self.keep);
        let (cp, holder, expected, key) = (
            checkpoint.clone(),
            holder.clone(),
            expected.clone(),
            key.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            Self::write_if(&dir, &key, keep, &cp, &holder, &expected)
        })
        .await
        .map_err(|e| self.joined(e))?
    }
}

#[cfg(test)]
mod tests {
    use super::conformance::{former_owners_are_fenced, holder};
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
    async fn checkpoint_writes_are_fenced_in_memory_and_on_disk() {
        former_owners_are_fenced(&MemoryCheckpointStore::default()).await;
        let dir = tempfile::tempdir().unwrap();
        former_owners_are_fenced(&LocalCheckpointStore::new(dir.path())).await;
        // Two stores over one directory (two processes) fence each other as well.
        let (one, two) = (
            LocalCheckpointStore::new(dir.path()),
            LocalCheckpointStore::new(dir.path()),
        );
        let v = one.load("k2").await.unwrap().version;
        one.save_if("k2", &cp(1), &holder("a", 1), &v)
            .await
            .unwrap();
        assert!(matches!(
            two.save_if("k2", &cp(1), &holder("b", 2), &v).await,
            Err(CheckpointError::Fenced { .. })
        ));
    }

    #[test]
    fn checkpoints_written_before_fencing_still_load() {
        let old = cp(4).encode().unwrap();
        let (back, holder, revision) = Checkpoint::decode_stored(&old, Path::new("old")).unwrap();
        assert_eq!((back, holder, revision), (cp(4), None, 0));
        let new = cp(4).encode_stored(Some(&holder_of()), 9).unwrap();
        assert_eq!(Checkpoint::decode(&new, Path::new("new")).unwrap(), cp(4));
    }

    fn holder_of() -> Holder {
        holder("x", 3)
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
