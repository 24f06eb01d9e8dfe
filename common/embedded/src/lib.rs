//! # bikeshare-embedded
//!
//! The embedded durable stream: Kinesis' model (shards, hash-key ranges, sequence numbers,
//! a trim horizon) in one SQLite file. It is the default backend of `bikeshare up`.
//!
//! ## Layout
//!
//! One database file holds several named streams ([`bikeshare_stream::names`]). Three tables:
//!
//! - `streams (id, name, created_at)`: one row per stream.
//! - `shards (stream_id, shard, starting_hash_key, ending_hash_key, last_seq)`: the shard
//!   layout, made once by [`uniform_ranges`] when the stream is created, and the last
//!   sequence number handed out in each shard. Hash keys are 32 hex digits (a `u128` does not
//!   fit an SQLite integer).
//! - `records (stream_id, shard, seq, partition_key, arrival, data)`, primary key
//!   `(stream_id, shard, seq)`, `WITHOUT ROWID`: a shard is one contiguous range of the
//!   B-tree, so reading it forward is a range scan.
//!
//! The stream never reshards: its shards have no parents, never close, and a cursor never
//! reaches a shard end.
//!
//! ## Writing
//!
//! One [`StreamWriter::put_records`] call is one `BEGIN IMMEDIATE` transaction: it takes the
//! database's write lock first, reads each shard's `last_seq`, inserts the records with the
//! next numbers, stores the new `last_seq` values and commits; `Ok` is returned only after the
//! commit. Because numbers are allocated under the write lock, two processes writing the same
//! stream serialise and never hand out a number twice, and a reader can never see number
//! `n + 1` committed while `n` is still pending: reading "everything after `n`" never skips.
//! `last_seq` is kept apart from the records, so trimming never makes numbers be reused.
//! The primary key would refuse a duplicate number anyway. A `put_records` future dropped
//! while its transaction runs does not stop it: the batch may be committed unacknowledged
//! (as with Kinesis, a caller that retries may then write it twice).
//!
//! A batch over [`KINESIS_MAX_RECORDS_PER_PUT`] records or [`KINESIS_MAX_BYTES_PER_PUT`]
//! bytes is refused whole ([`StreamError::InvalidRequest`]). A record over
//! [`KINESIS_MAX_RECORD_BYTES`], or with an empty or too long partition key, fails alone
//! with code [`INVALID_RECORD_CODE`] (retrying cannot help it); the rest of the batch is
//! written. The [`bikeshare_stream::publisher`] refuses such records before they get here.
//!
//! ## Durability and concurrency
//!
//! The database is in WAL mode, so readers in other processes (`bikeshare tail`) read while a
//! writer writes. With [`Durability::Full`] (the default) SQLite syncs the WAL on every
//! commit: an acknowledged batch survives a crash of the process *and* of the machine.
//! [`Durability::Normal`] syncs only at checkpoints: acknowledged batches survive a crash of
//! the process, but the last ones may be lost, never corrupted, if the machine loses power.
//! Locks are waited for up to [`EmbeddedConfig::busy_timeout`]; after that a call fails with a
//! retryable [`StreamError::Storage`].
//!
//! All SQLite work runs on tokio's blocking pool ([`tokio::task::spawn_blocking`]), never on
//! the async workers. A handle is cheap to clone; clones share one writer connection, and each
//! cursor has its own read connection.
//!
//! ## Waking readers
//!
//! Every commit that wrote records bumps a counter shared by all handles on the same file and
//! stream *in this process*; [`EmbeddedStream::subscribe_changes`] returns a
//! [`ChangeListener`] that waits for it, so same-process consumers need not poll. Readers in
//! other processes cannot be woken and poll (use the listener's timeout as the poll interval).
//!
//! ## Retention
//!
//! Nothing is deleted on its own: the processes that use the stream (`bikeshare process`,
//! `up`, `lake write`) call [`EmbeddedStream::trim_retained`] periodically: Kinesis' retention
//! measured in the records' event time and never past a checkpointed consumer (see
//! [`retention`]). It moves each shard's trim horizon forward like Kinesis does: a record is
//! deleted with every earlier record of its shard. [`EmbeddedStream::trim_before`] trims by
//! arrival time instead (from the injected [`EmbeddedConfig::clock`], never the wall clock).
//!
//! ## Opening
//!
//! [`EmbeddedStream::open`] creates the stream with the given number of shards if it is
//! missing. If it exists with a *different* number of shards, opening fails with
//! [`StreamError::InvalidRequest`] (a silent change of layout would surprise whoever
//! configured it); [`EmbeddedStream::open_existing`] opens a stream with whatever layout it
//! has, for readers that do not care.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use bikeshare_embedded::EmbeddedStream;
//! use bikeshare_stream::{PutRecord, StartPosition, StreamReader, StreamWriter, names};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let stream = EmbeddedStream::open(dir.path().join("streams.db"), names::EVENTS, 2).await.unwrap();
//! stream.put_records(&[PutRecord::new("bluebikes", "hello")]).await.unwrap();
//! let shards = stream.list_shards().await.unwrap();
//! let mut total = 0;
//! for shard in &shards {
//!     let mut cursor = stream.open(&shard.id, StartPosition::TrimHorizon).await.unwrap();
//!     total += cursor.next_batch(100).await.unwrap().records.len();
//! }
//! assert_eq!(total, 1);
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use smart_default::SmartDefault;
use tokio::sync::watch;

use bikeshare_stream::{
    PutOutcome, PutRecord, ReadBatch, SequenceNumber, ShardCursor, ShardDescription, ShardId,
    StartPosition, StreamError, StreamReader, StreamRecord, StreamWriter, check_put_request,
    shard_for_key, uniform_ranges,
};
use bikeshare_types::error::chain;
use bikeshare_types::limits::KINESIS_MAX_GET_RECORDS;
use bikeshare_types::time::{SharedClock, SystemClock, Timestamp};

/// The per-record error code of a record that can never be written (too large, bad
/// partition key). Kinesis refuses such a call whole with the same name.
pub const INVALID_RECORD_CODE: &str = "ValidationException";

/// Most bytes one [`ShardCursor::next_batch`] returns (Kinesis' `GetRecords` limit); the
/// first record is returned whatever its size.
pub const MAX_READ_BYTES: usize = 10 * 1024 * 1024;

/// The schema this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

pub mod retention;
pub use retention::{EventTimeOf, TrimReport};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    stream_id INTEGER NOT NULL REFERENCES streams (id),
    shard INTEGER NOT NULL,
    starting_hash_key TEXT NOT NULL,
    ending_hash_key TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream_id, shard)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    stream_id INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    arrival INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (stream_id, shard, seq)
) WITHOUT ROWID;
";

/// How hard a commit works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: the WAL is synced on every commit; an acknowledged batch
    /// survives a power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: synced at checkpoints only; an acknowledged batch survives a
    /// crash of the process, the last ones may be lost on a power loss. Faster.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Settings of an [`EmbeddedStream`].
#[derive(Debug, Clone, SmartDefault)]
pub struct EmbeddedConfig {
    #[default(Durability::Full)]
    pub durability: Durability,
    /// How long a call waits for a lock held by another connection before failing.
    #[default(Duration::from_secs(5))]
    pub busy_timeout: Duration,
    /// Where arrival times come from.
    #[default(Arc::new(SystemClock))]
    pub clock: SharedClock,
}

/// A stream in an SQLite file: writer and reader at once. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStream {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    name: String,
    stream_id: i64,
    shards: Vec<ShardDescription>,
    ranges: Vec<(u128, u128)>,
    writer: Mutex<Connection>,
    config: EmbeddedConfig,
    changes: Arc<watch::Sender<u64>>,
}

impl fmt::Debug for EmbeddedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStream")
            .field("path", &self.inner.path)
            .field("name", &self.inner.name)
            .field("shards", &self.inner.shards.len())
            .field("durability", &self.inner.config.durability)
            .finish()
    }
}

impl EmbeddedStream {
    /// Opens `stream_name` in the database at `path` (created if missing), creating the
    /// stream with `shard_count` shards if it does not exist. Fails with
    /// [`StreamError::InvalidRequest`] if it exists with another number of shards.
    pub async fn open(
        path: impl AsRef<Path>,
        stream_name: &str,
        shard_count: u32,
    ) -> Result<Self, StreamError> {
        Self::open_with(
            path,
            stream_name,
            Some(shard_count),
            EmbeddedConfig::default(),
        )
        .await
    }

    /// Opens an existing stream with its stored layout; [`StreamError::NoSuchStream`] if
    /// the database or the stream does not exist.
    pub async fn open_existing(
        path: impl AsRef<Path>,
        stream_name: &str,
    ) -> Result<Self, StreamError> {
        Self::open_with(path, stream_name, None, EmbeddedConfig::default()).await
    }

    /// Like [`Self::open`] (`Some(shard_count)`) or [`Self::open_existing`] (`None`), with
    /// explicit settings.
    pub async fn open_with(
        path: impl AsRef<Path>,
        stream_name: &str,
        shard_count: Option<u32>,
        config: EmbeddedConfig,
    ) -> Result<Self, StreamError> {
        let path = path.as_ref().to_path_buf();
        let name = stream_name.to_owned();
        blocking(move || open_blocking(path, name, shard_count, config)).await
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The shards, in order of their hash-key ranges.
    pub fn shards(&self) -> &[ShardDescription] {
        &self.inner.shards
    }

    /// A listener woken by every commit to this stream made in this process.
    pub fn subscribe_changes(&self) -> ChangeListener {
        ChangeListener {
            rx: self.inner.changes.subscribe(),
            _sender: self.inner.changes.clone(),
        }
    }

    /// Deletes, in every shard, the oldest records up to the first one that arrived at or
    /// after `cutoff` (see the module docs); returns how many were deleted. Sequence numbers
    /// are never reused. Call it periodically from the process that owns the stream.
    pub async fn trim_before(&self, cutoff: Timestamp) -> Result<u64, StreamError> {
        let inner = self.inner.clone();
        let deleted = blocking(move || trim_blocking(&inner, cutoff)).await?;
        if deleted > 0 {
            tracing::debug!(stream = %self.inner.name, deleted, %cutoff, "trimmed stream");
        }
        Ok(deleted)
    }
}

/// Waits for commits to one stream made in this process (see [`EmbeddedStream::subscribe_changes`]).
#[derive(Debug)]
pub struct ChangeListener {
    rx: watch::Receiver<u64>,
    // Keeps the sender alive, so `changed` never fails while a listener exists.
    _sender: Arc<watch::Sender<u64>>,
}

impl ChangeListener {
    /// Returns `true` as soon as a commit happened since the listener was made or last
    /// returned `true` (at once if one already did), `false` after `timeout` without one.
    ///
    /// Subscribe *before* reading, then wait only when a read came back empty: a commit
    /// between the read and the wait is not missed.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.rx.changed()).await,
            Ok(Ok(()))
        )
    }
}

#[async_trait]
impl StreamWriter for EmbeddedStream {
    fn stream_name(&self) -> &str {
        &self.inner.name
    }

    async fn put_records(&self, records: &[PutRecord]) -> Result<Vec<PutOutcome>, StreamError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        check_put_request(records)?;
        let inner = self.inner.clone();
        let records = records.to_vec();
        let outcomes = blocking(move || put_blocking(&inner, &records)).await?;
        if outcomes
            .iter()
            .any(|o| matches!(o, PutOutcome::Written { .. }))
        {
            self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(outcomes)
    }
}

#[async_trait]
impl StreamReader for EmbeddedStream {
    fn stream_name(&self) -> &str {
        &self.inner.name
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, StreamError> {
        Ok(self.inner.shards.clone())
    }

    async fn open(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardCursor>, StreamError> {
        let index = self
            .inner
            .shards
            .iter()
            .position(|d| &d.id == shard)
            .ok_or_else(|| StreamError::NoSuchShard(shard.clone()))?;
        let inner = self.inner.clone();
        let cursor = blocking(move || open_cursor_blocking(&inner, index, from)).await?;
        Ok(Box::new(cursor))
    }
}

/// A cursor over one shard of an [`EmbeddedStream`], with its own read connection.
pub struct EmbeddedCursor {
    conn: Arc<Mutex<Connection>>,
    stream_id: i64,
    shard: ShardId,
    shard_index: i64,
    /// The last sequence number returned (or skipped by the start position).
    after: i64,
}

impl fmt::Debug for EmbeddedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedCursor")
            .field("shard", &self.shard)
            .field("after", &self.after)
            .finish()
    }
}

#[async_trait]
impl ShardCursor for EmbeddedCursor {
    async fn next_batch(&mut self, limit: usize) -> Result<ReadBatch, StreamError> {
        let limit = limit.clamp(1, KINESIS_MAX_GET_RECORDS);
        let conn = self.conn.clone();
        let (stream_id, shard_index, after, shard) = (
            self.stream_id,
            self.shard_index,
            self.after,
            self.shard.clone(),
        );
        let (records, last, behind) =
            blocking(move || read_blocking(&conn, stream_id, shard_index, &shard, after, limit))
                .await?;
        // The position moves only once the batch is in hand: a cancelled call loses nothing.
        if let Some(last) = last {
            self.after = last;
        }
        Ok(ReadBatch {
            records,
            millis_behind_latest: Some(behind),
            shard_end: None,
        })
    }

    fn position(&self) -> Option<SequenceNumber> {
        Some(SequenceNumber::from_u64(
            u64::try_from(self.after).unwrap_or(0),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Blocking work, on tokio's blocking pool.

async fn blocking<T, F>(f: F) -> Result<T, StreamError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StreamError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StreamError::Storage(format!("blocking task failed: {e}")))?
}

fn storage(err: rusqlite::Error) -> StreamError {
    StreamError::Storage(chain(&err))
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while the lock was held rolled its transaction back when the transaction was
    // dropped: the connection is still consistent.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect(path: &Path, config: &EmbeddedConfig, create: bool) -> Result<Connection, StreamError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StreamError::Storage(format!("cannot open {}: {}", path.display(), chain(&e)))
    })?;
    conn.busy_timeout(config.busy_timeout).map_err(storage)?;
    if create {
        // Takes effect only in a new, empty database, and only before WAL mode is set:
        // trimmed pages then go back to the file system (see `retention`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(storage)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(storage)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StreamError::Storage(format!(
            "{} cannot be put in WAL mode (journal mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", config.durability.pragma())
        .map_err(storage)?;
    Ok(conn)
}

fn open_blocking(
    path: PathBuf,
    name: String,
    shard_count: Option<u32>,
    config: EmbeddedConfig,
) -> Result<EmbeddedStream, StreamError> {
    if name.is_empty() {
        return Err(StreamError::InvalidRequest(
            "a stream name must not be empty".into(),
        ));
    }
    if shard_count == Some(0) {
        return Err(StreamError::InvalidRequest(format!(
            "stream {name:?} needs at least 1 shard"
        )));
    }
    if shard_count.is_none() && !path.exists() {
        return Err(StreamError::NoSuchStream(name));
    }
    let mut conn = connect(&path, &config, shard_count.is_some())?;

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    if version > SCHEMA_VERSION {
        return Err(StreamError::Storage(format!(
            "{} has stream schema version {version}; this build knows up to {SCHEMA_VERSION}",
            path.display()
        )));
    }
    tx.execute_batch(SCHEMA).map_err(storage)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(storage)?;

    let existing: Option<i64> = tx
        .query_row("SELECT id FROM streams WHERE name = ?1", [&name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(storage)?;
    let stream_id = match (existing, shard_count) {
        (Some(id), _) => id,
        (None, None) => return Err(StreamError::NoSuchStream(name)),
        (None, Some(n)) => {
            tx.execute(
                "INSERT INTO streams (name, created_at) VALUES (?1, ?2)",
                params![name, config.clock.now().millis()],
            )
            .map_err(storage)?;
            let id = tx.last_insert_rowid();
            for (i, (start, end)) in uniform_ranges(n).into_iter().enumerate() {
                tx.execute(
                    "INSERT INTO shards (stream_id, shard, starting_hash_key, ending_hash_key, \
                     last_seq) VALUES (?1, ?2, ?3, ?4, 0)",
                    params![id, i as i64, format!("{start:032x}"), format!("{end:032x}")],
                )
                .map_err(storage)?;
            }
            tracing::info!(stream = %name, shards = n, path = %path.display(), "created stream");
            id
        }
    };

    let mut ranges = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT shard, starting_hash_key, ending_hash_key FROM shards \
                 WHERE stream_id = ?1 ORDER BY shard",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([stream_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(storage)?;
        for (expected, row) in rows.enumerate() {
            let (index, start, end) = row.map_err(storage)?;
            let parse = |s: &str| u128::from_str_radix(s, 16).ok();
            match (parse(&start), parse(&end)) {
                (Some(s), Some(e)) if index == expected as i64 => ranges.push((s, e)),
                _ => {
                    return Err(StreamError::Storage(format!(
                        "corrupt shard layout of stream {name:?} in {}",
                        path.display()
                    )));
                }
            }
        }
    }
    tx.commit().map_err(storage)?;

    if ranges.is_empty() {
        return Err(StreamError::Storage(format!(
            "stream {name:?} in {} has no shards",
            path.display()
        )));
    }
    if let Some(n) = shard_count
        && ranges.len() != n as usize
    {
        return Err(StreamError::InvalidRequest(format!(
            "stream {name:?} in {} has {} shards, not {n}: configure {} shards, or use another \
             database",
            path.display(),
            ranges.len(),
            ranges.len()
        )));
    }

    let shards = ranges
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| ShardDescription {
            id: ShardId::from_index(i as u32),
            parent: None,
            adjacent_parent: None,
            starting_hash_key: start,
            ending_hash_key: end,
            closed: false,
        })
        .collect();
    let changes = notifier(&path, &name);
    Ok(EmbeddedStream {
        inner: Arc::new(Inner {
            path,
            name,
            stream_id,
            shards,
            ranges,
            writer: Mutex::new(conn),
            config,
            changes,
        }),
    })
}

fn put_blocking(inner: &Inner, records: &[PutRecord]) -> Result<Vec<PutOutcome>, StreamError> {
    let mut conn = lock(&inner.writer);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let mut last_seq = vec![0i64; inner.shards.len()];
    {
        let mut stmt = tx
            .prepare_cached("SELECT shard, last_seq FROM shards WHERE stream_id = ?1")
            .map_err(storage)?;
        let rows = stmt
            .query_map([inner.stream_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(storage)?;
        for row in rows {
            let (shard, seq) = row.map_err(storage)?;
            if let Some(slot) = usize::try_from(shard)
                .ok()
                .and_then(|s| last_seq.get_mut(s))
            {
                *slot = seq;
            }
        }
    }
    // Taken under the write lock: arrival times follow commit order (for a monotonic clock).
    let arrival = inner.config.clock.now().millis();
    let mut touched = vec![false; inner.shards.len()];
    let mut outcomes = Vec::with_capacity(records.len());
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO records (stream_id, shard, seq, partition_key, arrival, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(storage)?;
        for record in records {
            if let Some(message) = record.invalid_reason() {
                outcomes.push(PutOutcome::Failed {
                    code: INVALID_RECORD_CODE.into(),
                    message,
                });
                continue;
            }
            let shard = shard_for_key(&inner.ranges, &record.partition_key);
            last_seq[shard] += 1;
            touched[shard] = true;
            insert
                .execute(params![
                    inner.stream_id,
                    shard as i64,
                    last_seq[shard],
                    record.partition_key,
                    arrival,
                    &record.data[..],
                ])
                .map_err(storage)?;
            outcomes.push(PutOutcome::Written {
                shard: inner.shards[shard].id.clone(),
                sequence: SequenceNumber::from_u64(last_seq[shard].unsigned_abs()),
            });
        }
    }
    {
        let mut update = tx
            .prepare_cached("UPDATE shards SET last_seq = ?3 WHERE stream_id = ?1 AND shard = ?2")
            .map_err(storage)?;
        for (shard, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            update
                .execute(params![inner.stream_id, shard as i64, last_seq[shard]])
                .map_err(storage)?;
        }
    }
    tx.commit().map_err(storage)?;
    Ok(outcomes)
}

fn trim_blocking(inner: &Inner, cutoff: Timestamp) -> Result<u64, StreamError> {
    let mut conn = lock(&inner.writer);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let mut deleted = 0u64;
    for shard in 0..inner.shards.len() as i64 {
        let keep_from: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM records WHERE stream_id = ?1 AND shard = ?2 AND arrival >= ?3 \
                 ORDER BY seq LIMIT 1",
            )
            .map_err(storage)?
            .query_row(params![inner.stream_id, shard, cutoff.millis()], |r| {
                r.get(0)
            })
            .optional()
            .map_err(storage)?;
        let n = tx
            .prepare_cached("DELETE FROM records WHERE stream_id = ?1 AND shard = ?2 AND seq < ?3")
            .map_err(storage)?
            .execute(params![
                inner.stream_id,
                shard,
                keep_from.unwrap_or(i64::MAX)
            ])
            .map_err(storage)?;
        deleted += n as u64;
    }
    tx.commit().map_err(storage)?;
    Ok(deleted)
}

fn open_cursor_blocking(
    inner: &Inner,
    index: usize,
    from: StartPosition,
) -> Result<EmbeddedCursor, StreamError> {
    let conn = connect(&inner.path, &inner.config, false)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(storage)?;
    let shard = inner.shards[index].id.clone();
    let shard_index = index as i64;
    let last_seq: i64 = conn
        .query_row(
            "SELECT last_seq FROM shards WHERE stream_id = ?1 AND shard = ?2",
            params![inner.stream_id, shard_index],
            |r| r.get(0),
        )
        .map_err(storage)?;
    let parse = |s: &SequenceNumber| {
        s.as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| {
                StreamError::InvalidRequest(format!("invalid sequence number {s:?} for {shard}"))
            })
    };
    let beyond = |n: i64| {
        StreamError::InvalidRequest(format!(
            "sequence number {n} is beyond the last one ({last_seq}) of {shard} in stream {:?}",
            inner.name
        ))
    };
    let after = match &from {
        StartPosition::TrimHorizon => 0,
        StartPosition::Latest => last_seq,
        StartPosition::AtSequence(s) => {
            let n = parse(s)?;
            if n < 1 {
                return Err(StreamError::InvalidRequest(format!(
                    "sequence numbers start at 1, not {n}"
                )));
            }
            if n > last_seq {
                return Err(beyond(n));
            }
            n - 1
        }
        StartPosition::AfterSequence(s) => {
            let n = parse(s)?;
            if n > last_seq {
                return Err(beyond(n));
            }
            n
        }
    };
    Ok(EmbeddedCursor {
        conn: Arc::new(Mutex::new(conn)),
        stream_id: inner.stream_id,
        shard,
        shard_index,
        after,
    })
}

type ReadResult = (Vec<StreamRecord>, Option<i64>, i64);

fn read_blocking(
    conn: &Mutex<Connection>,
    stream_id: i64,
    shard_index: i64,
    shard: &ShardId,
    after: i64,
    limit: usize,
) -> Result<ReadResult, StreamError> {
    let mut conn = lock(conn);
    // One read transaction: the records and the shard's tip come from the same snapshot.
    let tx = conn.transaction().map_err(storage)?;
    let mut records = Vec::new();
    let mut last: Option<(i64, i64)> = None;
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, partition_key, arrival, data FROM records \
                 WHERE stream_id = ?1 AND shard = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )
            .map_err(storage)?;
        let mut rows = stmt
            .query(params![stream_id, shard_index, after, limit as i64])
            .map_err(storage)?;
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(storage)? {
            let seq: i64 = row.get(0).map_err(storage)?;
            let partition_key: String = row.get(1).map_err(storage)?;
            let arrival: i64 = row.get(2).map_err(storage)?;
            let data: Vec<u8> = row.get(3).map_err(storage)?;
            let size = data.len() + partition_key.len();
            if !records.is_empty() && bytes + size > MAX_READ_BYTES {
                break;
            }
            bytes += size;
            last = Some((seq, arrival));
            records.push(StreamRecord {
                shard: shard.clone(),
                sequence: SequenceNumber::from_u64(seq.unsigned_abs()),
                partition_key,
                data: Bytes::from(data),
                arrival: Timestamp::from_millis(arrival),
            });
        }
    }
    let tip: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT seq, arrival FROM records WHERE stream_id = ?1 AND shard = ?2 \
             ORDER BY seq DESC LIMIT 1",
        )
        .map_err(storage)?
        .query_row(params![stream_id, shard_index], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(storage)?;
    tx.commit().map_err(storage)?;
    let behind = match (tip, last) {
        (Some((tip_seq, tip_arrival)), Some((seq, arrival))) if tip_seq > seq => {
            (tip_arrival - arrival).max(0)
        }
        _ => 0,
    };
    Ok((records, last.map(|(seq, _)| seq), behind))
}

/// Commit counters shared by every handle on one file and stream in this process.
type Notifiers = HashMap<(PathBuf, String), Weak<watch::Sender<u64>>>;
static NOTIFIERS: LazyLock<Mutex<Notifiers>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn notifier(path: &Path, name: &str) -> Arc<watch::Sender<u64>> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut map = NOTIFIERS.lock().unwrap_or_else(PoisonError::into_inner);
    map.retain(|_, w| w.strong_count() > 0);
    let key = (path, name.to_owned());
    if let Some(sender) = map.get(&key).and_then(Weak::upgrade) {
        return sender;
    }
    let sender = Arc::new(watch::Sender::new(0));
    map.insert(key, Arc::downgrade(&sender));
    sender
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use bikeshare_stream::names;
    use bikeshare_types::limits::{
        KINESIS_MAX_PARTITION_KEY_CHARS, KINESIS_MAX_RECORD_BYTES, KINESIS_MAX_RECORDS_PER_PUT,
    };
    use bikeshare_types::time::ManualClock;

    fn record(key: &str, data: &str) -> PutRecord {
        PutRecord::new(key, data.to_owned())
    }

    fn written(outcomes: &[PutOutcome]) -> Vec<(ShardId, u64)> {
        outcomes
            .iter()
            .map(|o| match o {
                PutOutcome::Written { shard, sequence } => {
                    (shard.clone(), sequence.as_u64().unwrap())
                }
                PutOutcome::Failed { code, message } => panic!("failed: {code}: {message}"),
            })
            .collect()
    }

    async fn read_all(stream: &EmbeddedStream, shard: &ShardId) -> Vec<StreamRecord> {
        let mut cursor = stream
            .open(shard, StartPosition::TrimHorizon)
            .await
            .unwrap();
        let mut out = Vec::new();
        loop {
            let batch = cursor.next_batch(7).await.unwrap();
            if batch.records.is_empty() {
                return out;
            }
            out.extend(batch.records);
        }
    }

    async fn read_stream(stream: &EmbeddedStream) -> Vec<StreamRecord> {
        let mut out = Vec::new();
        for shard in stream.list_shards().await.unwrap() {
            out.extend(read_all(stream, &shard.id).await);
        }
        out
    }

    fn text(r: &StreamRecord) -> String {
        String::from_utf8(r.data.to_vec()).unwrap()
    }

    /// A new `events` stream of `shards` shards in a file of its own (kept while the
    /// directory lives).
    pub(crate) async fn fresh(shards: u32) -> (tempfile::TempDir, EmbeddedStream) {
        let dir = tempfile::tempdir().unwrap();
        let stream = EmbeddedStream::open(dir.path().join("s.db"), names::EVENTS, shards)
            .await
            .unwrap();
        (dir, stream)
    }

    /// The texts of the next batch (up to 100 records) of `cursor`.
    async fn next_texts(cursor: &mut dyn ShardCursor) -> Vec<String> {
        let batch = cursor.next_batch(100).await.unwrap();
        batch.records.iter().map(text).collect()
    }

    #[tokio::test]
    async fn sequence_numbers_increase_within_each_shard() {
        let (_dir, stream) = fresh(3).await;
        let mut last: HashMap<ShardId, u64> = HashMap::new();
        for batch in 0..5 {
            let records: Vec<_> = (0..40)
                .map(|i| record(&format!("k{}", i % 11), &format!("{batch}-{i}")))
                .collect();
            for (shard, seq) in written(&stream.put_records(&records).await.unwrap()) {
                let prev = last.insert(shard.clone(), seq).unwrap_or(0);
                assert_eq!(seq, prev + 1, "{shard} jumped from {prev} to {seq}");
            }
        }
        assert!(
            last.len() > 1,
            "11 keys should spread over more than one of 3 shards"
        );
        // Reading gives the same numbers, in order.
        for shard in stream.list_shards().await.unwrap() {
            let seqs: Vec<u64> = read_all(&stream, &shard.id)
                .await
                .iter()
                .map(|r| r.sequence.as_u64().unwrap())
                .collect();
            let n = last.get(&shard.id).copied().unwrap_or(0);
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn records_go_to_the_shard_of_their_key() {
        let (_dir, stream) = fresh(4).await;
        let ranges = uniform_ranges(4);
        let shards = stream.list_shards().await.unwrap();
        assert_eq!(shards.len(), 4);
        for (s, r) in shards.iter().zip(&ranges) {
            assert_eq!((s.starting_hash_key, s.ending_hash_key), *r);
            assert!(s.parent.is_none() && s.adjacent_parent.is_none() && !s.closed);
        }
        let keys: Vec<String> = (0..50).map(|i| format!("system-{i}")).collect();
        let records: Vec<_> = keys.iter().map(|k| record(k, k)).collect();
        let outcomes = written(&stream.put_records(&records).await.unwrap());
        let mut used = HashSet::new();
        for (key, (shard, _)) in keys.iter().zip(&outcomes) {
            let expected = &shards[shard_for_key(&ranges, key)].id;
            assert_eq!(shard, expected, "key {key}");
            used.insert(shard.clone());
        }
        assert!(used.len() > 1);
        for shard in &shards {
            for r in read_all(&stream, &shard.id).await {
                assert_eq!(
                    &shards[shard_for_key(&ranges, &r.partition_key)].id,
                    &shard.id
                );
                assert_eq!(text(&r), r.partition_key);
            }
        }
    }

    #[tokio::test]
    async fn readers_start_and_resume_at_the_right_record() {
        let (_dir, stream) = fresh(1).await;
        let shard = ShardId::from_index(0);
        let records: Vec<_> = (1..=10).map(|i| record("k", &format!("r{i}"))).collect();
        stream.put_records(&records).await.unwrap();

        let mut cursor = stream
            .open(&shard, StartPosition::TrimHorizon)
            .await
            .unwrap();
        let first = cursor.next_batch(4).await.unwrap();
        let got: Vec<_> = first.records.iter().map(text).collect();
        assert_eq!(got, ["r1", "r2", "r3", "r4"]);
        let checkpoint = first.records[3].sequence.clone();

        let mut after = stream
            .open(&shard, StartPosition::AfterSequence(checkpoint.clone()))
            .await
            .unwrap();
        assert_eq!(text(&after.next_batch(1).await.unwrap().records[0]), "r5");
        let mut at = stream
            .open(&shard, StartPosition::AtSequence(checkpoint))
            .await
            .unwrap();
        assert_eq!(text(&at.next_batch(1).await.unwrap().records[0]), "r4");
        // The first cursor goes on where it stopped.
        let rest = next_texts(&mut *cursor).await;
        assert_eq!(rest, ["r5", "r6", "r7", "r8", "r9", "r10"]);
        assert!(cursor.next_batch(100).await.unwrap().records.is_empty());

        let mut latest = stream.open(&shard, StartPosition::Latest).await.unwrap();
        assert!(latest.next_batch(100).await.unwrap().records.is_empty());
        stream.put_records(&[record("k", "r11")]).await.unwrap();
        let new = next_texts(&mut *latest).await;
        assert_eq!(new, ["r11"]);
        assert_eq!(cursor.next_batch(100).await.unwrap().records.len(), 1);

        let beyond = SequenceNumber::from_u64(12);
        assert!(matches!(
            stream
                .open(&shard, StartPosition::AfterSequence(beyond))
                .await,
            Err(StreamError::InvalidRequest(_))
        ));
        assert!(matches!(
            stream
                .open(
                    &shard,
                    StartPosition::AtSequence(SequenceNumber("x".into()))
                )
                .await,
            Err(StreamError::InvalidRequest(_))
        ));
        assert!(matches!(
            stream
                .open(&ShardId::from_index(1), StartPosition::Latest)
                .await,
            Err(StreamError::NoSuchShard(_))
        ));
    }

    #[tokio::test]
    async fn streams_in_one_file_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let events = EmbeddedStream::open(&path, names::EVENTS, 2).await.unwrap();
        let predictions = EmbeddedStream::open(&path, names::PREDICTIONS, 1)
            .await
            .unwrap();
        let dead = EmbeddedStream::open(&path, names::DEAD_LETTERS, 3)
            .await
            .unwrap();
        events
            .put_records(&[record("a", "e1"), record("b", "e2"), record("c", "e3")])
            .await
            .unwrap();
        let p = written(&predictions.put_records(&[record("a", "p1")]).await.unwrap());
        assert_eq!(
            p,
            [(ShardId::from_index(0), 1)],
            "predictions number on their own"
        );

        assert_eq!(dead.list_shards().await.unwrap().len(), 3);
        assert!(read_stream(&dead).await.is_empty());
        let mut e: Vec<_> = read_stream(&events).await.iter().map(text).collect();
        e.sort();
        assert_eq!(e, ["e1", "e2", "e3"]);
        let p: Vec<_> = read_stream(&predictions).await.iter().map(text).collect();
        assert_eq!(p, ["p1"]);
    }

    #[tokio::test]
    async fn reopening_keeps_records_layout_and_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        assert!(matches!(
            EmbeddedStream::open_existing(&path, names::EVENTS).await,
            Err(StreamError::NoSuchStream(_))
        ));
        {
            let s = EmbeddedStream::open(&path, names::EVENTS, 1).await.unwrap();
            s.put_records(&[record("k", "one"), record("k", "two")])
                .await
                .unwrap();
        }
        assert!(matches!(
            EmbeddedStream::open(&path, names::EVENTS, 2).await,
            Err(StreamError::InvalidRequest(m)) if m.contains("has 1 shards, not 2")
        ));
        assert!(matches!(
            EmbeddedStream::open_existing(&path, names::PREDICTIONS).await,
            Err(StreamError::NoSuchStream(_))
        ));
        let s = EmbeddedStream::open_existing(&path, names::EVENTS)
            .await
            .unwrap();
        assert_eq!(s.shards().len(), 1);
        let w = written(&s.put_records(&[record("k", "three")]).await.unwrap());
        assert_eq!(w[0].1, 3);
        let all: Vec<_> = read_stream(&s).await.iter().map(text).collect();
        assert_eq!(all, ["one", "two", "three"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_never_hand_out_a_number_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let config = EmbeddedConfig {
            durability: Durability::Normal,
            ..Default::default()
        };
        // Two separate opens: separate connections, as two processes would have.
        let a = EmbeddedStream::open_with(&path, names::EVENTS, Some(2), config.clone())
            .await
            .unwrap();
        let b = EmbeddedStream::open_with(&path, names::EVENTS, Some(2), config)
            .await
            .unwrap();
        let write = |s: EmbeddedStream, who: &'static str| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for batch in 0..30 {
                    let records: Vec<_> = (0..20)
                        .map(|i| record(&format!("k{}", i % 5), &format!("{who}-{batch}-{i}")))
                        .collect();
                    acked.extend(written(&s.put_records(&records).await.unwrap()));
                }
                acked
            })
        };
        let (ta, tb) = (write(a.clone(), "a"), write(b, "b"));
        let mut acked = ta.await.unwrap();
        acked.extend(tb.await.unwrap());
        let unique: HashSet<_> = acked.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            acked.len(),
            "a sequence number was handed out twice"
        );

        let all = read_stream(&a).await;
        assert_eq!(all.len(), 2 * 30 * 20);
        let ids: HashSet<_> = all.iter().map(text).collect();
        assert_eq!(ids.len(), all.len());
        for shard in a.shards() {
            let seqs: Vec<u64> = all
                .iter()
                .filter(|r| r.shard == shard.id)
                .map(|r| r.sequence.as_u64().unwrap())
                .collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn batch_limits_refuse_the_batch_and_bad_records_fail_alone() {
        let (_dir, stream) = fresh(1).await;
        let too_many: Vec<_> = (0..=KINESIS_MAX_RECORDS_PER_PUT)
            .map(|_| record("k", "x"))
            .collect();
        assert!(matches!(
            stream.put_records(&too_many).await,
            Err(StreamError::InvalidRequest(_))
        ));
        let big = vec![b'x'; KINESIS_MAX_RECORD_BYTES - 1];
        let too_big: Vec<_> = (0..6).map(|_| PutRecord::new("k", big.clone())).collect();
        assert!(matches!(
            stream.put_records(&too_big).await,
            Err(StreamError::InvalidRequest(_))
        ));
        assert!(
            read_stream(&stream).await.is_empty(),
            "a refused batch writes nothing"
        );

        let at_limit = PutRecord::new("k", big.clone());
        let over_limit = PutRecord::new("kk", big);
        let long_key = record(&"k".repeat(KINESIS_MAX_PARTITION_KEY_CHARS + 1), "x");
        let outcomes = stream
            .put_records(&[
                record("k", "a"),
                over_limit,
                at_limit,
                record("", "x"),
                long_key,
                record("k", "b"),
            ])
            .await
            .unwrap();
        let codes: Vec<Option<&str>> = outcomes
            .iter()
            .map(|o| match o {
                PutOutcome::Written { .. } => None,
                PutOutcome::Failed { code, .. } => Some(code.as_str()),
            })
            .collect();
        let bad = Some(INVALID_RECORD_CODE);
        assert_eq!(codes, [None, bad, None, bad, bad, None]);
        let sizes: Vec<usize> = read_stream(&stream)
            .await
            .iter()
            .map(|r| r.data.len())
            .collect();
        assert_eq!(sizes, [1, KINESIS_MAX_RECORD_BYTES - 1, 1]);
    }

    /// A one-shard `events` stream in a temporary directory whose arrivals read `clock`.
    async fn one_shard_on_a_clock(
        start: Timestamp,
    ) -> (tempfile::TempDir, ManualClock, EmbeddedStream) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(start);
        let config = EmbeddedConfig {
            clock: Arc::new(clock.clone()),
            ..Default::default()
        };
        let stream =
            EmbeddedStream::open_with(dir.path().join("s.db"), names::EVENTS, Some(1), config)
                .await
                .unwrap();
        (dir, clock, stream)
    }

    #[tokio::test]
    async fn millis_behind_latest_follows_arrival_times() {
        let (_dir, clock, stream) = one_shard_on_a_clock(Timestamp::from_secs(1_000)).await;
        for step in [0, 1_000, 4_000] {
            clock.advance_millis(step);
            stream.put_records(&[record("k", "x")]).await.unwrap();
        }
        let mut cursor = stream
            .open(&ShardId::from_index(0), StartPosition::TrimHorizon)
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let b = cursor.next_batch(1).await.unwrap();
            assert!(b.shard_end.is_none());
            seen.push((
                b.records.first().map(|r| r.arrival.millis()),
                b.millis_behind_latest,
            ));
        }
        let t0 = 1_000_000;
        assert_eq!(
            seen,
            [
                (Some(t0), Some(5_000)),
                (Some(t0 + 1_000), Some(4_000)),
                (Some(t0 + 5_000), Some(0)),
                (None, Some(0)),
            ]
        );
    }

    #[tokio::test]
    async fn trimming_deletes_old_records_and_never_reuses_numbers() {
        let (_dir, clock, stream) = one_shard_on_a_clock(Timestamp::from_secs(0)).await;
        for i in 1..=5 {
            stream
                .put_records(&[record("k", &format!("r{i}"))])
                .await
                .unwrap();
            clock.advance_millis(1_000);
        }
        // r1..r5 arrived at 0, 1, 2, 3, 4 s.
        assert_eq!(
            stream.trim_before(Timestamp::from_secs(3)).await.unwrap(),
            3
        );
        let left: Vec<_> = read_stream(&stream).await.iter().map(text).collect();
        assert_eq!(left, ["r4", "r5"]);
        // A checkpoint inside the trimmed part resumes at the horizon.
        let mut c = stream
            .open(
                &ShardId::from_index(0),
                StartPosition::AfterSequence(SequenceNumber::from_u64(1)),
            )
            .await
            .unwrap();
        assert_eq!(text(&c.next_batch(10).await.unwrap().records[0]), "r4");

        assert_eq!(
            stream.trim_before(Timestamp::from_secs(100)).await.unwrap(),
            2
        );
        assert!(read_stream(&stream).await.is_empty());
        let w = written(&stream.put_records(&[record("k", "r6")]).await.unwrap());
        assert_eq!(w[0].1, 6, "numbers go on after a trim");
        assert_eq!(
            stream.trim_before(Timestamp::from_secs(0)).await.unwrap(),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_wake_listeners_of_every_handle_in_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let writer = EmbeddedStream::open(&path, names::EVENTS, 1).await.unwrap();
        let reader = EmbeddedStream::open_existing(&path, names::EVENTS)
            .await
            .unwrap();
        let other = EmbeddedStream::open(&path, names::PREDICTIONS, 1)
            .await
            .unwrap();
        let mut same = writer.subscribe_changes();
        let mut separate = reader.subscribe_changes();
        let mut unrelated = other.subscribe_changes();
        assert!(
            !same.wait(Duration::from_millis(20)).await,
            "nothing was written yet"
        );

        let waiter = tokio::spawn(async move { separate.wait(Duration::from_secs(30)).await });
        writer.put_records(&[record("k", "x")]).await.unwrap();
        assert!(
            waiter.await.unwrap(),
            "a handle opened separately was not woken"
        );
        assert!(same.wait(Duration::from_secs(30)).await);
        assert!(
            !unrelated.wait(Duration::from_millis(20)).await,
            "another stream's listener woke"
        );
    }
}
