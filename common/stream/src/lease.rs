//! Shard leases, the Kinesis Client Library's model: several consumer instances share a
//! stream, and each shard is read by the instance holding its lease.
//!
//! - A [`Lease`] has an owner, a counter and an expiry. Every write is conditional on the
//!   counter the writer last saw ([`LeaseStore::replace`]), and increments it: an instance
//!   that lost a lease learns it when its renewal fails, never by overwriting.
//! - Owners renew their leases well within [`LeaseConfig::duration`]; a lease not renewed
//!   in time expires and any instance may take it.
//! - [`plan`] balances: each instance aims at `ceil(leases / live instances)`; below that it
//!   takes expired or free leases first, then steals one lease per round from the instance
//!   that holds the most.
//! - On shutdown an instance releases its leases (owner cleared), so others take them at
//!   once.
//! - [`MemoryLeaseStore`] serves one process (one instance alone needs no DynamoDB); a
//!   DynamoDB store implements the same trait for several.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::ShardId;
use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::time::Timestamp;

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
        let by_shard: BTreeMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.shard, l)).collect();
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
            bikeshare_types::metrics::lease_changes(&self.config.owner, changed);
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
