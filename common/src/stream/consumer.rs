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
//!   finished and never opened again.
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
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where a shard with no stored position starts.
    pub initial: StartPosition,
    /// How often the shards are listed again.
    pub discovery_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            initial: StartPosition::TrimHorizon,
            discovery_interval: Duration::from_secs(10),
        }
    }
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
        }
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
        self.cursors.remove(shard);
        self.positions.insert(shard.0.clone(), position);
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
    /// due). Positions move past every record returned.
    pub async fn poll(&mut self, limit: usize) -> Result<Poll, StreamError> {
        let mut poll = Poll::default();
        if self.next_discovery.is_none_or(|at| Instant::now() >= at) {
            poll.changed |= self.discover().await?;
        }
        let mut ended = Vec::new();
        for (shard, cursor) in &mut self.cursors {
            let batch = cursor.next_batch(limit).await?;
            if let Some(last) = batch.records.last() {
                self.positions
                    .insert(shard.0.clone(), last.sequence.0.clone());
            }
            let end = batch.shard_end.is_some();
            if end {
                ended.push(shard.clone());
            }
            poll.shards.push(ShardRecords {
                shard: shard.clone(),
                records: batch.records,
                millis_behind_latest: batch.millis_behind_latest,
                ended: end,
            });
        }
        for shard in &ended {
            tracing::debug!(stream = self.reader.stream_name(), %shard, "shard finished");
            self.cursors.remove(shard);
            self.progress.finish(shard);
            self.positions.insert(shard.0.clone(), SHARD_END.to_owned());
        }
        if !ended.is_empty() {
            poll.changed = true;
            self.discover().await?;
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

/// Shard leases, the Kinesis Client Library's model: several consumer instances share a
/// stream, and each shard is read by the instance holding its lease.
///
/// - A [`Lease`] has an owner, a counter and an expiry. Every write is conditional on the
///   counter the writer last saw ([`LeaseStore::replace`]), and increments it: an instance
///   that lost a lease learns it when its renewal fails, never by overwriting.
/// - Owners renew their leases well within [`LeaseConfig::duration`]; a lease not renewed
///   in time expires and any instance may take it.
/// - [`plan`] balances: each instance aims at `ceil(leases / live instances)`; below that it
///   takes expired or free leases first, then steals one lease per round from the instance
///   that holds the most.
/// - On shutdown an instance releases its leases (owner cleared), so others take them at
///   once.
/// - [`MemoryLeaseStore`] serves one process (one instance alone needs no DynamoDB); a
///   DynamoDB store implements the same trait for several.
pub mod lease {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use async_trait::async_trait;

    use crate::error::{Classify, ErrorClass};
    use crate::stream::ShardId;
    use crate::time::Timestamp;

    /// One shard's lease.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Lease {
        pub shard: ShardId,
        /// The instance holding it; `None` when free.
        pub owner: Option<String>,
        /// Incremented by every write.
        pub counter: u64,
        /// When it expires unless renewed.
        pub expires_at: Timestamp,
    }

    impl Lease {
        pub fn is_live(&self, now: Timestamp) -> bool {
            self.owner.is_some() && self.expires_at > now
        }
    }

    /// Why a lease operation failed.
    #[derive(Debug, thiserror::Error)]
    pub enum LeaseError {
        #[error("lease store: {0}")]
        Store(String),
    }

    impl Classify for LeaseError {
        fn class(&self) -> ErrorClass {
            ErrorClass::External
        }
        fn retryable(&self) -> bool {
            true
        }
    }

    /// Where leases live, with conditional writes.
    #[async_trait]
    pub trait LeaseStore: Send + Sync + std::fmt::Debug {
        async fn list(&self) -> Result<Vec<Lease>, LeaseError>;
        /// Creates a free lease for `shard` unless one exists.
        async fn create(&self, shard: &ShardId) -> Result<(), LeaseError>;
        /// Writes `lease` only if the stored one still has `expected_counter`; `false` when
        /// that condition failed (someone else wrote it).
        async fn replace(&self, lease: &Lease, expected_counter: u64) -> Result<bool, LeaseError>;
    }

    /// Leases in memory: one process.
    #[derive(Debug, Default)]
    pub struct MemoryLeaseStore {
        leases: Mutex<BTreeMap<ShardId, Lease>>,
    }

    #[async_trait]
    impl LeaseStore for MemoryLeaseStore {
        async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(leases.values().cloned().collect())
        }
        async fn create(&self, shard: &ShardId) -> Result<(), LeaseError> {
            let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            leases.entry(shard.clone()).or_insert_with(|| Lease {
                shard: shard.clone(),
                owner: None,
                counter: 0,
                expires_at: Timestamp(0),
            });
            Ok(())
        }
        async fn replace(&self, lease: &Lease, expected_counter: u64) -> Result<bool, LeaseError> {
            let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            match leases.get_mut(&lease.shard) {
                Some(stored) if stored.counter == expected_counter => {
                    *stored = lease.clone();
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    /// Settings of lease taking.
    #[derive(Debug, Clone)]
    pub struct LeaseConfig {
        /// This instance's unique name.
        pub owner: String,
        /// How long a lease lasts unless renewed (renew at least every third of it).
        pub duration: Duration,
    }

    /// What an instance should do with the leases this round.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct LeasePlan {
        /// Leases it holds: renew them.
        pub renew: Vec<ShardId>,
        /// Expired or free leases to take.
        pub take: Vec<ShardId>,
        /// At most one lease to steal from the busiest instance.
        pub steal: Option<ShardId>,
    }

    /// Decides renewals, takes and steals for `me` (pure; see the module docs).
    pub fn plan(leases: &[Lease], me: &str, now: Timestamp) -> LeasePlan {
        let mut held: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        held.entry(me).or_default();
        let mut available = Vec::new();
        for lease in leases {
            match &lease.owner {
                Some(owner) if lease.is_live(now) => held.entry(owner).or_default().push(lease),
                Some(owner) if owner == me => held.entry(me).or_default().push(lease),
                _ => available.push(lease.shard.clone()),
            }
        }
        let target = leases.len().div_ceil(held.len());
        let mine = held.get(me).map_or(0, Vec::len);
        let renew = held
            .get(me)
            .map(|v| v.iter().map(|l| l.shard.clone()).collect())
            .unwrap_or_default();
        let want = target.saturating_sub(mine);
        let take: Vec<ShardId> = available.into_iter().take(want).collect();
        let steal = if take.len() < want {
            held.iter()
                .filter(|(owner, _)| **owner != me)
                .max_by_key(|(_, v)| v.len())
                .filter(|(_, v)| v.len() > target)
                .and_then(|(_, v)| v.first().map(|l| l.shard.clone()))
        } else {
            None
        };
        LeasePlan { renew, take, steal }
    }

    /// Holds this instance's leases in a [`LeaseStore`].
    #[derive(Debug)]
    pub struct LeaseCoordinator {
        store: std::sync::Arc<dyn LeaseStore>,
        config: LeaseConfig,
        /// Leases held, with the counter of our last write.
        held: BTreeMap<ShardId, u64>,
        /// Leases gained and lost so far (a metric).
        pub changes: u64,
    }

    impl LeaseCoordinator {
        pub fn new(store: std::sync::Arc<dyn LeaseStore>, config: LeaseConfig) -> Self {
            Self {
                store,
                config,
                held: BTreeMap::new(),
                changes: 0,
            }
        }

        /// Creates leases for `shards` that have none (new shards after a listing).
        pub async fn ensure_leases(&self, shards: &[ShardId]) -> Result<(), LeaseError> {
            for shard in shards {
                self.store.create(shard).await?;
            }
            Ok(())
        }

        /// One round: renew, take, steal. Returns the shards held afterwards.
        pub async fn tick(&mut self, now: Timestamp) -> Result<BTreeSet<ShardId>, LeaseError> {
            let leases = self.store.list().await?;
            let by_shard: BTreeMap<&ShardId, &Lease> =
                leases.iter().map(|l| (&l.shard, l)).collect();
            let plan = plan(&leases, &self.config.owner, now);
            let expires_at =
                now.plus_millis(i64::try_from(self.config.duration.as_millis()).unwrap_or(0));
            let mut held = BTreeMap::new();
            let wanted = plan.renew.iter().chain(&plan.take).chain(&plan.steal);
            for shard in wanted {
                let Some(current) = by_shard.get(shard) else {
                    continue;
                };
                let next = Lease {
                    shard: shard.clone(),
                    owner: Some(self.config.owner.clone()),
                    counter: current.counter + 1,
                    expires_at,
                };
                if self.store.replace(&next, current.counter).await? {
                    held.insert(shard.clone(), next.counter);
                }
            }
            let before: BTreeSet<&ShardId> = self.held.keys().collect();
            let after: BTreeSet<&ShardId> = held.keys().collect();
            let changed = before.symmetric_difference(&after).count() as u64;
            if changed > 0 {
                tracing::info!(owner = %self.config.owner, held = ?after, "leases changed");
            }
            self.changes += changed;
            if changed > 0 {
                crate::metrics::lease_changes(&self.config.owner, changed);
            }
            self.held = held;
            Ok(self.held.keys().cloned().collect())
        }

        /// Frees every lease held (at shutdown), so others take them at once.
        pub async fn release(&mut self) -> Result<(), LeaseError> {
            for (shard, counter) in std::mem::take(&mut self.held) {
                let free = Lease {
                    shard,
                    owner: None,
                    counter: counter + 1,
                    expires_at: Timestamp(0),
                };
                self.store.replace(&free, counter).await?;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::Arc;

        use super::*;

        fn config(owner: &str) -> LeaseConfig {
            LeaseConfig {
                owner: owner.into(),
                duration: Duration::from_secs(10),
            }
        }

        fn shards(n: u32) -> Vec<ShardId> {
            (0..n).map(ShardId::from_index).collect()
        }

        #[tokio::test]
        async fn two_instances_balance_take_over_expired_and_released_leases() {
            let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
            let mut a = LeaseCoordinator::new(store.clone(), config("a"));
            let mut b = LeaseCoordinator::new(store.clone(), config("b"));
            a.ensure_leases(&shards(4)).await.unwrap();
            let t = Timestamp(1_000_000);
            assert_eq!(a.tick(t).await.unwrap().len(), 4, "alone, a takes all");
            // b arrives: it steals one per round until both hold two.
            for i in 0..3 {
                b.tick(t.plus_millis(i)).await.unwrap();
                a.tick(t.plus_millis(i)).await.unwrap();
            }
            let (ha, hb) = (a.tick(t).await.unwrap(), b.tick(t).await.unwrap());
            assert_eq!((ha.len(), hb.len()), (2, 2), "{ha:?} {hb:?}");
            assert!(ha.is_disjoint(&hb));
            // a stops renewing (killed): after expiry b takes everything.
            let later = t.plus_millis(11_000);
            assert_eq!(b.tick(later).await.unwrap().len(), 4);
            // a comes back: its old leases are gone (renewals fail), it steals one per round.
            assert_eq!(a.tick(later).await.unwrap().len(), 1);
            assert!(b.changes >= 4 && a.changes >= 4);
            // b releases at shutdown: a takes all at once, without waiting for expiry.
            b.release().await.unwrap();
            assert_eq!(a.tick(later).await.unwrap().len(), 4);
        }

        #[test]
        fn plan_takes_free_leases_before_stealing() {
            let now = Timestamp(100);
            let lease = |n: u32, owner: Option<&str>, exp: i64| Lease {
                shard: ShardId::from_index(n),
                owner: owner.map(str::to_owned),
                counter: 1,
                expires_at: Timestamp(exp),
            };
            let leases = [
                lease(0, Some("x"), 200),
                lease(1, Some("x"), 200),
                lease(2, Some("x"), 200),
                lease(3, None, 0),
            ];
            let p = plan(&leases, "me", now);
            assert_eq!(p.take, vec![ShardId::from_index(3)]);
            assert_eq!(p.steal, Some(ShardId::from_index(0)), "x has 3 > target 2");
            assert!(p.renew.is_empty());
        }
    }
}
