//! Resharding-aware consumption of any [`StreamReader`], as AWS's Kinesis Client Library
//! does it.
//!
//! ## Rules
//!
//! - Shards are listed on start and again every [`ConsumerConfig::discovery_interval`], and
//!   at once whenever a shard ends (its children become readable).
//! - A shard is read only once every parent is *finished* (read to its end) or gone from the
//!   listing (its records expired): after a split, the parent; after a merge, **both**
//!   parents. Records of one partition key therefore come out in order across a reshard:
//!   all of the key's records in the parent before any in the child.
//! - A closed shard ends cleanly: its cursor reports the children, the shard is marked
//!   finished and never opened again. With [`ShardConsumer::defer_finish`] (the runner) the
//!   mark waits for [`ShardConsumer::finish`]: the caller marks a shard finished only once
//!   its last records are processed and checkpointed, so no decision taken meanwhile (which
//!   systems' state to keep, whether the children may be read) treats it as done early.
//! - [`ShardConsumer::poll`] is cancel-safe: nothing it changes (positions, finished
//!   shards) changes before every read of the poll has returned, and a poll cancelled (or
//!   failed) mid-read makes the next one reopen the cursors from the positions, so no cursor
//!   stays past records that were never returned. A shutdown may abandon a poll anywhere.
//! - Positions ([`ShardConsumer::positions`]) map each shard to the last sequence number
//!   returned, or to [`SHARD_END`] once finished; they are what a checkpoint stores, and
//!   what [`ShardConsumer::new`] resumes from.
//! - Optionally only some shards are read ([`ShardConsumer::set_owned`]): the shards whose
//!   leases this instance holds.
//!
//! [`ShardProgress`] holds the decisions as pure functions over the listing; the
//! [`ShardConsumer`] adds the I/O (listing, cursors).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use smart_default::SmartDefault;
use tokio::time::Instant;

use super::{
    SequenceNumber, ShardCursor, ShardDescription, ShardId, StartPosition, StreamError,
    StreamReader, StreamRecord,
};

/// The position of a shard that was read to its end.
pub const SHARD_END: &str = "SHARD_END";

/// Which shards exist and which are finished: the pure part of the consumer.
#[derive(Debug, Clone, Default)]
pub struct ShardProgress {
    listed: BTreeMap<ShardId, ShardDescription>,
    finished: BTreeSet<ShardId>,
}

impl ShardProgress {
    /// Replaces the listing (a shard missing from it has expired).
    pub fn update(&mut self, listing: Vec<ShardDescription>) {
        self.listed = listing.into_iter().map(|s| (s.id.clone(), s)).collect();
    }

    /// Marks `shard` read to its end.
    pub fn finish(&mut self, shard: &ShardId) {
        self.finished.insert(shard.clone());
    }

    pub fn is_finished(&self, shard: &ShardId) -> bool {
        self.finished.contains(shard)
    }

    /// Finished, or no longer listed (expired): nothing more to read from it.
    fn done(&self, shard: &ShardId) -> bool {
        self.is_finished(shard) || !self.listed.contains_key(shard)
    }

    /// Whether `shard` may be read now: listed, not finished, and every parent done.
    pub fn readable(&self, shard: &ShardId) -> bool {
        match self.listed.get(shard) {
            Some(s) => !self.is_finished(shard) && s.parents().all(|p| self.done(p)),
            None => false,
        }
    }

    /// Every shard that may be read now, in id order.
    pub fn readable_shards(&self) -> Vec<ShardId> {
        self.listed
            .keys()
            .filter(|id| self.readable(id))
            .cloned()
            .collect()
    }

    /// The listed shards.
    pub fn listed(&self) -> impl Iterator<Item = &ShardDescription> {
        self.listed.values()
    }
}

/// A checkpointed position: the start of a shard's cursor, or `None` when it is finished.
pub fn resume_from(position: Option<&str>, initial: &StartPosition) -> Option<StartPosition> {
    match position {
        Some(SHARD_END) => None,
        Some(seq) => Some(StartPosition::AfterSequence(SequenceNumber(seq.to_owned()))),
        None => Some(initial.clone()),
    }
}

/// Settings of a [`ShardConsumer`].
#[derive(Debug, Clone, SmartDefault)]
pub struct ConsumerConfig {
    /// Where a shard with no stored position starts.
    #[default(StartPosition::TrimHorizon)]
    pub initial: StartPosition,
    /// How often the shards are listed again.
    #[default(Duration::from_secs(10))]
    pub discovery_interval: Duration,
}

/// The records of one shard from one [`ShardConsumer::poll`].
#[derive(Debug)]
pub struct ShardRecords {
    pub shard: ShardId,
    pub records: Vec<StreamRecord>,
    pub millis_behind_latest: Option<i64>,
    /// The shard ended with this pull (its children, if any, are opened next).
    pub ended: bool,
}

/// What one [`ShardConsumer::poll`] returned.
#[derive(Debug, Default)]
pub struct Poll {
    pub shards: Vec<ShardRecords>,
    /// A shard ended or a new one was opened: more may come even if no record did.
    pub changed: bool,
}

impl Poll {
    pub fn records(&self) -> usize {
        self.shards.iter().map(|s| s.records.len()).sum()
    }
}

/// Reads the shards of one stream in the order the rules above demand.
#[derive(Debug)]
pub struct ShardConsumer {
    reader: Arc<dyn StreamReader>,
    config: ConsumerConfig,
    progress: ShardProgress,
    cursors: BTreeMap<ShardId, Box<dyn ShardCursor>>,
    positions: BTreeMap<String, String>,
    owned: Option<BTreeSet<ShardId>>,
    next_discovery: Option<Instant>,
    /// Shards mark themselves finished only through [`Self::finish`].
    deferred: bool,
    /// Shards read to their end whose finish waits for [`Self::finish`] (deferred only).
    ending: BTreeSet<ShardId>,
    /// A poll started and has not returned yet: if the next one finds it set, that poll was
    /// cancelled or failed mid-read and the cursors may be past records never returned.
    in_poll: bool,
}

impl ShardConsumer {
    /// A consumer resuming from `positions` (shard id → last sequence number or
    /// [`SHARD_END`]); shards missing from it start at [`ConsumerConfig::initial`].
    pub fn new(
        reader: Arc<dyn StreamReader>,
        positions: BTreeMap<String, String>,
        config: ConsumerConfig,
    ) -> Self {
        let mut progress = ShardProgress::default();
        for (shard, pos) in &positions {
            if pos == SHARD_END {
                progress.finish(&ShardId(shard.clone()));
            }
        }
        Self {
            reader,
            config,
            progress,
            cursors: BTreeMap::new(),
            positions,
            owned: None,
            next_discovery: None,
            deferred: false,
            ending: BTreeSet::new(),
            in_poll: false,
        }
    }

    /// A shard read to its end is reported ([`ShardRecords::ended`]) but marked finished —
    /// position [`SHARD_END`], children readable — only by [`Self::finish`], once the caller
    /// has processed and checkpointed its last records. Until then it is neither read nor
    /// finished.
    pub fn defer_finish(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Marks `shard` finished: its position becomes [`SHARD_END`] and its children are
    /// opened at the next poll. With [`Self::defer_finish`], call it once the records of the
    /// poll that reported the shard's end are processed and checkpointed.
    pub fn finish(&mut self, shard: &ShardId) {
        tracing::debug!(stream = self.reader.stream_name(), %shard, "shard finished");
        self.ending.remove(shard);
        self.cursors.remove(shard);
        self.progress.finish(shard);
        self.positions.insert(shard.0.clone(), SHARD_END.to_owned());
        self.next_discovery = None;
    }

    /// Reads only these shards from now on (`None`: all). Cursors of shards no longer owned
    /// are closed; their positions stay.
    pub fn set_owned(&mut self, owned: Option<BTreeSet<ShardId>>) {
        if let Some(set) = &owned {
            self.cursors.retain(|id, _| set.contains(id));
        }
        self.owned = owned;
        self.next_discovery = None;
    }

    /// Positions to checkpoint: shard id → last sequence number returned, or [`SHARD_END`].
    pub fn positions(&self) -> &BTreeMap<String, String> {
        &self.positions
    }

    /// Takes positions from elsewhere (another instance's checkpoint of a shard this one
    /// just took over); reopens the shard's cursor from it.
    pub fn adopt_position(&mut self, shard: &ShardId, position: String) {
        if position == SHARD_END {
            self.progress.finish(shard);
        }
        self.ending.remove(shard);
        self.cursors.remove(shard);
        self.positions.insert(shard.0.clone(), position);
        self.next_discovery = None;
    }

    /// Forgets everything about `shard` (a shard whose lease went elsewhere): its cursor,
    /// its position and whether it finished. If it is owned again, its position comes from
    /// its checkpoint ([`Self::adopt_position`]) or it starts over.
    pub fn forget(&mut self, shard: &ShardId) {
        self.cursors.remove(shard);
        self.ending.remove(shard);
        self.positions.remove(shard.as_str());
        self.progress.finished.remove(shard);
        self.next_discovery = None;
    }

    /// The current listing and progress.
    pub fn progress(&self) -> &ShardProgress {
        &self.progress
    }

    /// Shards with an open cursor.
    pub fn reading(&self) -> impl Iterator<Item = &ShardId> {
        self.cursors.keys()
    }

    /// Lists the shards and opens a cursor on each readable (and owned) one not open yet.
    /// Returns whether a cursor was opened.
    pub async fn discover(&mut self) -> Result<bool, StreamError> {
        self.progress.update(self.reader.list_shards().await?);
        self.next_discovery = Some(Instant::now() + self.config.discovery_interval);
        let mut opened = false;
        for shard in self.progress.readable_shards() {
            if self.cursors.contains_key(&shard)
                || self.ending.contains(&shard)
                || self.owned.as_ref().is_some_and(|o| !o.contains(&shard))
            {
                continue;
            }
            let Some(from) = resume_from(
                self.positions.get(shard.as_str()).map(String::as_str),
                &self.config.initial,
            ) else {
                continue;
            };
            let cursor = self.reader.open(&shard, from).await?;
            tracing::debug!(stream = self.reader.stream_name(), %shard, "reading shard");
            self.cursors.insert(shard, cursor);
            opened = true;
        }
        Ok(opened)
    }

    /// Pulls up to `limit` records from each open shard (listing the shards first when
    /// due). Positions move past every record returned; a shard that ended is finished
    /// (unless [`Self::defer_finish`]) and its children are opened at the next poll.
    ///
    /// Cancel-safe: positions and finished shards change only once every read has
    /// returned, after the last `.await`; a poll cancelled or failed before that changes
    /// neither, and the next poll reopens every cursor from the positions.
    pub async fn poll(&mut self, limit: usize) -> Result<Poll, StreamError> {
        if std::mem::replace(&mut self.in_poll, true) {
            // The last poll did not return: its cursors may have moved past records that
            // were never returned.
            tracing::debug!(
                stream = self.reader.stream_name(),
                "the last poll was abandoned: reopening the cursors from the positions"
            );
            self.cursors.clear();
            self.next_discovery = None;
        }
        let mut poll = Poll::default();
        if self.next_discovery.is_none_or(|at| Instant::now() >= at) {
            poll.changed |= self.discover().await?;
        }
        let mut batches = Vec::with_capacity(self.cursors.len());
        for (shard, cursor) in &mut self.cursors {
            batches.push((shard.clone(), cursor.next_batch(limit).await?));
        }
        // No `.await` below: what follows happens entirely or not at all.
        self.in_poll = false;
        for (shard, batch) in batches {
            if let Some(last) = batch.records.last() {
                self.positions
                    .insert(shard.0.clone(), last.sequence.0.clone());
            }
            let ended = batch.shard_end.is_some();
            if ended {
                poll.changed = true;
                self.cursors.remove(&shard);
                if self.deferred {
                    tracing::debug!(stream = self.reader.stream_name(), %shard, "shard read to its end");
                    self.ending.insert(shard.clone());
                } else {
                    self.finish(&shard);
                }
            }
            poll.shards.push(ShardRecords {
                shard,
                records: batch.records,
                millis_behind_latest: batch.millis_behind_latest,
                ended,
            });
        }
        Ok(poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: u32, parents: &[u32], closed: bool) -> ShardDescription {
        ShardDescription {
            id: ShardId::from_index(n),
            parent: parents.first().map(|&p| ShardId::from_index(p)),
            adjacent_parent: parents.get(1).map(|&p| ShardId::from_index(p)),
            starting_hash_key: 0,
            ending_hash_key: u128::MAX,
            closed,
        }
    }

    fn ids(v: &[u32]) -> Vec<ShardId> {
        v.iter().map(|&n| ShardId::from_index(n)).collect()
    }

    /// A stream in memory: shard 0 closed with three records and a child, shard 1 open
    /// with one record. Listing answers `lists` times, then hangs; reading shard 1 hangs
    /// when `stall_open_shard` is set.
    #[derive(Debug)]
    struct Scripted {
        lists: std::sync::atomic::AtomicUsize,
        stall_open_shard: bool,
    }

    fn record(shard: u32, seq: u64) -> StreamRecord {
        StreamRecord {
            shard: ShardId::from_index(shard),
            sequence: SequenceNumber::from_u64(seq),
            partition_key: format!("key-{seq}"),
            data: bytes::Bytes::from_static(b"x"),
            arrival: bikeshare_types::time::Timestamp(0),
        }
    }

    #[derive(Debug)]
    struct ScriptedCursor {
        shard: u32,
        after: u64,
        stall: bool,
    }

    #[async_trait::async_trait]
    impl ShardCursor for ScriptedCursor {
        async fn next_batch(&mut self, limit: usize) -> Result<crate::ReadBatch, StreamError> {
            if self.stall {
                std::future::pending::<()>().await;
            }
            let (last, closed) = match self.shard {
                0 => (3, true),
                1 => (1, false),
                _ => (0, false),
            };
            let records: Vec<StreamRecord> = (self.after + 1..=last)
                .take(limit)
                .map(|n| record(self.shard, n))
                .collect();
            if let Some(r) = records.last() {
                self.after = r.sequence.as_u64().unwrap_or(0);
            }
            Ok(crate::ReadBatch {
                records,
                millis_behind_latest: Some(0),
                shard_end: (closed && self.after == last).then(|| ids(&[2])),
            })
        }
    }

    #[async_trait::async_trait]
    impl StreamReader for Scripted {
        fn stream_name(&self) -> &str {
            "scripted"
        }
        async fn list_shards(&self) -> Result<Vec<ShardDescription>, StreamError> {
            if self.lists.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            Ok(vec![
                shard(0, &[], true),
                shard(1, &[], false),
                shard(2, &[0], false),
            ])
        }
        async fn open(
            &self,
            shard: &ShardId,
            from: StartPosition,
        ) -> Result<Box<dyn ShardCursor>, StreamError> {
            let n = (0..3)
                .find(|&n| *shard == ShardId::from_index(n))
                .unwrap_or(2);
            let after = match from {
                StartPosition::AfterSequence(s) => s.as_u64().unwrap_or(0),
                _ => 0,
            };
            Ok(Box::new(ScriptedCursor {
                shard: n,
                after,
                stall: n == 1 && self.stall_open_shard,
            }))
        }
    }

    fn scripted(lists: usize, stall_open_shard: bool) -> ShardConsumer {
        ShardConsumer::new(
            Arc::new(Scripted {
                lists: std::sync::atomic::AtomicUsize::new(lists),
                stall_open_shard,
            }),
            BTreeMap::new(),
            ConsumerConfig::default(),
        )
    }

    fn sequences(poll: &Poll, n: u32) -> Vec<u64> {
        poll.shards
            .iter()
            .filter(|s| s.shard == ShardId::from_index(n))
            .flat_map(|s| s.records.iter().filter_map(|r| r.sequence.as_u64()))
            .collect()
    }

    /// Shutdown and a reshard together: a poll cancelled right after it read a closed
    /// shard's last records (the listing that follows a shard's end hangs) must not have
    /// finished the shard nor moved its position past records it never returned.
    #[tokio::test]
    async fn a_poll_cancelled_after_reading_a_shard_end_finishes_nothing() {
        let mut consumer = scripted(1, false);
        let parent = ShardId::from_index(0);
        match tokio::time::timeout(Duration::from_millis(200), consumer.poll(10)).await {
            Err(_cancelled) => {
                assert!(
                    !consumer.progress().is_finished(&parent),
                    "the parent is marked finished though its records were never returned"
                );
                assert_eq!(consumer.positions().get(parent.as_str()), None);
            }
            Ok(poll) => assert_eq!(sequences(&poll.unwrap(), 0), vec![1, 2, 3]),
        }
    }

    /// A poll cancelled while a second shard's read hangs: the first shard's records were
    /// never returned, so its position stays and the next poll returns them.
    #[tokio::test]
    async fn a_poll_cancelled_mid_read_moves_no_position_and_loses_no_record() {
        let mut consumer = scripted(usize::MAX, true);
        let cancelled = tokio::time::timeout(Duration::from_millis(200), consumer.poll(10)).await;
        assert!(cancelled.is_err(), "shard 1's read hangs");
        assert_eq!(
            consumer.positions().get(ShardId::from_index(0).as_str()),
            None
        );
        assert!(!consumer.progress().is_finished(&ShardId::from_index(0)));
        // Without the hang, the next poll returns shard 0's records after all.
        consumer.set_owned(Some(BTreeSet::from([ShardId::from_index(0)])));
        let poll = consumer.poll(10).await.unwrap();
        assert_eq!(sequences(&poll, 0), vec![1, 2, 3]);
    }

    /// Deferred: a shard read to its end is reported but neither finished nor read again,
    /// and its children wait, until the caller says its records are processed and
    /// checkpointed.
    #[tokio::test]
    async fn a_deferred_shard_end_waits_for_finish() {
        let mut consumer = scripted(usize::MAX, false).defer_finish();
        let (parent, child) = (ShardId::from_index(0), ShardId::from_index(2));
        let poll = consumer.poll(10).await.unwrap();
        assert_eq!(sequences(&poll, 0), vec![1, 2, 3]);
        assert!(poll.shards.iter().any(|s| s.shard == parent && s.ended));
        assert!(!consumer.progress().is_finished(&parent));
        assert_eq!(
            consumer
                .positions()
                .get(parent.as_str())
                .map(String::as_str),
            Some("3")
        );
        let again = consumer.poll(10).await.unwrap();
        assert!(
            again
                .shards
                .iter()
                .all(|s| s.shard != parent && s.shard != child),
            "neither the parent again nor its child yet: {again:?}"
        );
        consumer.finish(&parent);
        assert_eq!(
            consumer
                .positions()
                .get(parent.as_str())
                .map(String::as_str),
            Some(SHARD_END)
        );
        consumer.poll(10).await.unwrap();
        assert!(
            consumer.reading().any(|s| *s == child),
            "the child is read now"
        );
    }

    #[test]
    fn children_wait_for_their_parents_and_merges_for_both() {
        // 0 and 1 at creation; 0 split into 2 and 3; then 3 and 1 merged into 4.
        let mut p = ShardProgress::default();
        p.update(vec![
            shard(0, &[], true),
            shard(1, &[], true),
            shard(2, &[0], false),
            shard(3, &[0], true),
            shard(4, &[3, 1], false),
        ]);
        assert_eq!(p.readable_shards(), ids(&[0, 1]));
        p.finish(&ShardId::from_index(0));
        assert_eq!(p.readable_shards(), ids(&[1, 2, 3]));
        p.finish(&ShardId::from_index(3));
        assert_eq!(
            p.readable_shards(),
            ids(&[1, 2]),
            "4 waits for its other parent"
        );
        p.finish(&ShardId::from_index(1));
        assert_eq!(p.readable_shards(), ids(&[2, 4]));
    }

    #[test]
    fn expired_parents_do_not_block_their_children() {
        let mut p = ShardProgress::default();
        p.update(vec![shard(2, &[0], false), shard(3, &[0], false)]);
        assert_eq!(p.readable_shards(), ids(&[2, 3]));
        assert!(!p.readable(&ShardId::from_index(0)), "not listed");
    }

    #[test]
    fn positions_resume_after_the_last_record_and_skip_finished_shards() {
        let initial = StartPosition::TrimHorizon;
        assert_eq!(
            resume_from(None, &initial),
            Some(StartPosition::TrimHorizon)
        );
        assert_eq!(resume_from(Some(SHARD_END), &initial), None);
        assert_eq!(
            resume_from(Some("42"), &initial),
            Some(StartPosition::AfterSequence(SequenceNumber("42".into())))
        );
    }
}
