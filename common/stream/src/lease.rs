//! Shard leases, the Kinesis Client Library's model: several consumer instances share a
//! stream, and each shard is read by the instance holding its lease.
//!
//! - A [`Lease`] has an owner, a counter and an expiry. Every write is conditional on the
//!   counter the writer last saw ([`LeaseStore::replace`]), and increments it: an instance
//!   that lost a lease learns it when its renewal fails, never by overwriting.
//! - **Renewal runs on its own OS thread and runtime** ([`LeaseCoordinator::spawn_renewer`])
//!   every third of [`LeaseConfig::duration`], independently of processing: neither a
//!   processing step blocked on a slow sink nor a processing runtime kept busy (a long
//!   synchronous step, every worker occupied) delays it, and neither does a take round: a
//!   renewal writes only leases held here and a take round only leases not held here, so
//!   they share no lock (decision 088; a release racing a renewal is completed by the
//!   renewal that won). A store whose I/O is bound to the runtime that made its connections
//!   gives the renewer its own ([`LeaseStore::for_renewer`]).
//! - **Take rounds can run on that thread too** ([`LeaseCoordinator::spawn_keeper`]): every
//!   third of the duration, and when asked ([`Renewer::take`]), so a processing step that is
//!   blocked does not stop free or expired leases being taken.
//! - **A safety margin**: a lease counts as held here only until a quarter of its duration
//!   before it could expire elsewhere ([`LeaseConfig::held_for`], from the moment its last
//!   successful renewal was sent). An instance whose renewals fail therefore stops using a
//!   shard ([`LeaseCoordinator::holds`], [`LeaseCoordinator::held`]) before any other
//!   instance may take it. A renewal refused because another instance wrote the lease drops
//!   the shard at once.
//! - Taking is separate ([`LeaseCoordinator::acquire`]): [`plan`] balances, each instance
//!   aiming at `ceil(leases / live instances)`; below that it takes expired or free leases
//!   first, then steals one lease per round from the instance that holds the most.
//! - On shutdown an instance releases its leases (owner cleared), so others take them at
//!   once.
//! - The counter of the write that took a lease ([`LeaseCoordinator::taken_counter`]) names
//!   the holder's tenure in the checkpoints it writes (`checkpoint::Holder`); checkpoint
//!   writes are fenced on the checkpoint's version (see [`crate::checkpoint`]).
//! - [`MemoryLeaseStore`] serves one process (one instance alone needs no DynamoDB); a
//!   DynamoDB store implements the same trait for several.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;

use crate::ShardId;
use bikeshare_types::SharedClock;
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

    /// The write that frees `shard`'s lease, last written at `counter`: no owner, expired, the
    /// counter moved on (conditional on `counter`, it fails if anyone wrote since).
    pub fn freed(shard: ShardId, counter: u64) -> Self {
        Self {
            shard,
            owner: None,
            counter: counter + 1,
            expires_at: Timestamp(0),
        }
    }

    /// The write that takes or renews `shard`'s lease for `owner` until `expires_at`, last
    /// written at `counter` (conditional on `counter`, like [`Lease::freed`]).
    pub fn held(shard: ShardId, owner: String, counter: u64, expires_at: Timestamp) -> Self {
        Self {
            shard,
            owner: Some(owner),
            counter: counter + 1,
            expires_at,
        }
    }
}

/// Why a lease operation failed (`Clone`: a take round's error goes to every caller that
/// waits on it, as it is).
#[derive(Debug, Clone, thiserror::Error)]
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

    /// The same leases for the renewer, which runs on a runtime of its own: a store whose
    /// connections are driven by the runtime that opened them (an SDK client's pool) returns
    /// one with its own connections, so that a busy processing runtime cannot stall a
    /// renewal. `None` (the default): this store can be used from any runtime as it is.
    fn for_renewer(&self) -> Option<Arc<dyn LeaseStore>> {
        None
    }
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
    /// How long a lease lasts unless renewed (renewed every third of it).
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often the renewer renews the leases held: a third of the duration.
    pub fn renew_every(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(10))
    }

    /// How long after a successful renewal was sent a lease counts as held here: the
    /// duration less a safety margin of a quarter of it (for the other instances' clocks),
    /// so one failed renewal is survived and the lease is given up before it can expire.
    pub fn held_for(&self) -> Duration {
        self.duration - self.duration / 4
    }
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

/// A lease held here.
#[derive(Debug, Clone, Copy)]
struct HeldLease {
    /// The counter of our last write.
    counter: u64,
    /// The counter of the write that took it.
    taken: u64,
    /// Until when it counts as held here ([`LeaseConfig::held_for`]).
    valid_until: Instant,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn LeaseStore>,
    config: LeaseConfig,
    held: Mutex<BTreeMap<ShardId, HeldLease>>,
    /// Serialises this instance's take rounds (never held by a renewal: see the module docs).
    takes: tokio::sync::Mutex<()>,
    /// Set (under the `held` lock) once [`LeaseCoordinator::release`] has begun: a take
    /// round still under way frees what it takes instead of keeping it.
    released: std::sync::atomic::AtomicBool,
    changes: AtomicU64,
}

/// Holds this instance's leases in a [`LeaseStore`]; cheap to clone (the lease thread holds
/// a clone).
#[derive(Debug, Clone)]
pub struct LeaseCoordinator {
    shared: Arc<Shared>,
}

/// A take round asked of the lease thread: the shards whose leases to create first, and
/// where to answer.
type TakeRequest = (
    Vec<ShardId>,
    tokio::sync::oneshot::Sender<Result<(), LeaseError>>,
);

/// The lease thread of a [`LeaseCoordinator`] (renewals, and take rounds for
/// [`LeaseCoordinator::spawn_keeper`]); stops when dropped (a renewal under way finishes
/// first, on that thread).
#[derive(Debug)]
pub struct Renewer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    takes: tokio::sync::mpsc::UnboundedSender<TakeRequest>,
    /// To take on the caller's runtime when the thread could not start.
    fallback: (LeaseCoordinator, SharedClock),
}

impl Drop for Renewer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Renewer {
    /// Creates the leases of `new` shards, then runs a take round ([`LeaseCoordinator::acquire`])
    /// on the lease thread, and waits for it. The caller's runtime only waits: a take round
    /// runs on the lease thread whatever the caller's runtime is doing, and it never delays a
    /// renewal.
    pub async fn take(&self, new: Vec<ShardId>) -> Result<(), LeaseError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.takes.send((new, reply)) {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(LeaseError::Store("the lease thread stopped".into()))),
            Err(tokio::sync::mpsc::error::SendError((new, _))) => {
                // No lease thread (it could not start): take here.
                let (coordinator, clock) = &self.fallback;
                coordinator.ensure_leases(&new).await?;
                coordinator.acquire(clock.now()).await.map(|_| ())
            }
        }
    }
}

impl LeaseCoordinator {
    pub fn new(store: Arc<dyn LeaseStore>, config: LeaseConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                config,
                held: Mutex::new(BTreeMap::new()),
                takes: tokio::sync::Mutex::new(()),
                released: std::sync::atomic::AtomicBool::new(false),
                changes: AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.shared.config
    }

    /// Leases gained and lost so far.
    pub fn changes(&self) -> u64 {
        self.shared.changes.load(Ordering::Relaxed)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShardId, HeldLease>> {
        self.shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn expiry(&self, now: Timestamp) -> Timestamp {
        now.plus_millis(i64::try_from(self.shared.config.duration.as_millis()).unwrap_or(0))
    }

    /// Counts `n` leases gained or lost and logs the set held now.
    fn changed(&self, n: u64, held: &BTreeSet<ShardId>) {
        if n == 0 {
            return;
        }
        let owner = &self.shared.config.owner;
        tracing::info!(%owner, ?held, "leases changed");
        self.shared.changes.fetch_add(n, Ordering::Relaxed);
        bikeshare_types::metrics::lease_changes(owner, n);
    }

    /// Creates leases for `shards` that have none (new shards after a listing).
    pub async fn ensure_leases(&self, shards: &[ShardId]) -> Result<(), LeaseError> {
        Self::create_through(&self.shared.store, shards).await
    }

    async fn create_through(
        store: &Arc<dyn LeaseStore>,
        shards: &[ShardId],
    ) -> Result<(), LeaseError> {
        for shard in shards {
            store.create(shard).await?;
        }
        Ok(())
    }

    /// The shards held now: leases renewed within [`LeaseConfig::held_for`]. A lease whose
    /// renewals failed for that long is given up here (logged), before it can expire.
    pub fn held(&self) -> BTreeSet<ShardId> {
        let now = Instant::now();
        let mut map = self.map();
        let lapsed: Vec<ShardId> = map
            .iter()
            .filter(|(_, h)| h.valid_until <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for shard in &lapsed {
            map.remove(shard);
            tracing::warn!(owner = %self.shared.config.owner, %shard,
                "lease not renewed in time: giving the shard up before the lease can expire");
        }
        let held: BTreeSet<ShardId> = map.keys().cloned().collect();
        drop(map);
        self.changed(lapsed.len() as u64, &held);
        held
    }

    /// Whether `shard`'s lease is held now (see [`Self::held`]).
    pub fn holds(&self, shard: &ShardId) -> bool {
        let valid = self
            .map()
            .get(shard)
            .is_some_and(|h| h.valid_until > Instant::now());
        valid || {
            self.held(); // gives up what lapsed
            false
        }
    }

    /// The counter of the write that took `shard`'s lease, while it is held.
    pub fn taken_counter(&self, shard: &ShardId) -> Option<u64> {
        self.map().get(shard).map(|h| h.taken)
    }

    /// Renews every lease held. A renewal refused (another instance wrote the lease) drops
    /// the shard at once; a failed call leaves it to lapse unless a later renewal succeeds.
    pub async fn renew(&self, now: Timestamp) -> Result<(), LeaseError> {
        self.renew_through(&self.shared.store, now).await
    }

    /// [`Self::renew`] through `store` (the renewer's own connections to the same leases).
    ///
    /// Takes no lock across a store call: a renewal writes only leases held here, which a
    /// take round never writes (it writes leases not held here), so the two need no
    /// ordering. A lease given up here while its renewal was under way
    /// ([`Self::release_shard`], [`Self::release`], or lapsed) is freed by the renewal that
    /// won the race, so it is not left held in the store by an instance that no longer
    /// reads it.
    async fn renew_through(
        &self,
        store: &Arc<dyn LeaseStore>,
        now: Timestamp,
    ) -> Result<(), LeaseError> {
        let held: Vec<(ShardId, HeldLease)> =
            self.map().iter().map(|(s, h)| (s.clone(), *h)).collect();
        let expires_at = self.expiry(now);
        let owner = &self.shared.config.owner;
        let mut lost = 0u64;
        let mut failed = None;
        for (shard, h) in held {
            if self
                .map()
                .get(&shard)
                .is_none_or(|e| e.counter != h.counter)
            {
                continue; // given up since
            }
            let next = Lease::held(shard.clone(), owner.clone(), h.counter, expires_at);
            let sent = Instant::now();
            match store.replace(&next, h.counter).await {
                Ok(true) => {
                    let renewed = match self.map().get_mut(&shard) {
                        Some(entry) if entry.counter == h.counter => {
                            entry.counter = next.counter;
                            entry.valid_until = sent + self.shared.config.held_for();
                            true
                        }
                        _ => false,
                    };
                    if !renewed {
                        // Given up here while this renewal was under way: free it.
                        let free = Lease::freed(next.shard, next.counter);
                        if let Err(e) = store.replace(&free, next.counter).await {
                            tracing::warn!(%owner, %shard, error = %e,
                                "freeing a lease given up during its renewal failed; it expires instead");
                        }
                    }
                }
                Ok(false) => {
                    let mut map = self.map();
                    if map.get(&shard).is_some_and(|e| e.counter == h.counter) {
                        map.remove(&shard);
                        drop(map);
                        lost += 1;
                        tracing::warn!(%owner, %shard,
                            "lease renewal refused: another instance holds the shard now");
                    }
                }
                Err(e) => {
                    tracing::warn!(%owner, %shard, error = %e,
                        "renewing a shard lease failed; retrying");
                    failed = Some(e);
                }
            }
        }
        let held: BTreeSet<ShardId> = self.map().keys().cloned().collect();
        self.changed(lost, &held);
        failed.map_or(Ok(()), Err)
    }

    /// Renews the leases held every [`LeaseConfig::renew_every`] on an OS thread with a
    /// runtime of its own (through [`LeaseStore::for_renewer`] when the store has one), until
    /// the returned [`Renewer`] is dropped. The caller's runtime may be as busy as it likes:
    /// nothing of a renewal runs on it, and a renewal never waits for a take round. Take
    /// rounds run on that thread only when asked ([`Renewer::take`]).
    pub fn spawn_renewer(&self, clock: SharedClock) -> Renewer {
        self.spawn_lease_thread(clock, None)
    }

    /// [`Self::spawn_renewer`], and a take round ([`Self::acquire`]) every
    /// [`LeaseConfig::renew_every`] on the same thread, beside the renewals: free and
    /// expired leases are taken (and one stolen) while the caller's processing is blocked.
    /// The caller learns what was taken from [`Self::held`].
    pub fn spawn_keeper(&self, clock: SharedClock) -> Renewer {
        let every = self.shared.config.renew_every();
        self.spawn_lease_thread(clock, Some(every))
    }

    fn spawn_lease_thread(&self, clock: SharedClock, take_every: Option<Duration>) -> Renewer {
        let this = self.clone();
        let store = self
            .shared
            .store
            .for_renewer()
            .unwrap_or_else(|| self.shared.store.clone());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (takes, requests) = tokio::sync::mpsc::unbounded_channel::<TakeRequest>();
        let owner = self.shared.config.owner.clone();
        let every = self.shared.config.renew_every();
        let thread_clock = clock.clone();
        let spawned = std::thread::Builder::new()
            .name("lease-renewer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(%owner, error = %e, "the lease renewer's runtime could not start: leases lapse unless renewed");
                        return;
                    }
                };
                let clock = thread_clock;
                runtime.block_on(async move {
                    // Take rounds on a task of their own: a stalled one delays no renewal.
                    tokio::spawn(this.clone().take_rounds(
                        store.clone(),
                        clock.clone(),
                        requests,
                        take_every,
                    ));
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            () = tokio::time::sleep(every) => {}
                        }
                        // Failures are logged per lease; the lease lapses unless a later
                        // renewal succeeds.
                        let _ = this.renew_through(&store, clock.now()).await;
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::error!(owner = %self.shared.config.owner, error = %e,
                "the lease renewer thread could not start: leases lapse unless renewed");
        }
        Renewer {
            stop: Some(stop),
            takes,
            fallback: (self.clone(), clock),
        }
    }

    /// The lease thread's take rounds: one per request (requests waiting meanwhile share the
    /// next round) and, with `every`, one every `every`.
    async fn take_rounds(
        self,
        store: Arc<dyn LeaseStore>,
        clock: SharedClock,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<TakeRequest>,
        every: Option<Duration>,
    ) {
        loop {
            let mut new = Vec::new();
            let mut replies = Vec::new();
            tokio::select! {
                request = requests.recv() => match request {
                    Some((shards, reply)) => {
                        new.extend(shards);
                        replies.push(reply);
                    }
                    None => break,
                },
                () = async {
                    match every {
                        Some(every) => tokio::time::sleep(every).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            while let Ok((shards, reply)) = requests.try_recv() {
                new.extend(shards);
                replies.push(reply);
            }
            let round = async {
                Self::create_through(&store, &new).await?;
                self.acquire_through(&store, clock.now()).await.map(|_| ())
            }
            .await;
            if replies.is_empty() {
                if let Err(e) = round {
                    tracing::warn!(owner = %self.shared.config.owner, error = %e,
                        "taking shard leases failed; retrying");
                }
                continue;
            }
            for reply in replies {
                let _ = reply.send(round.clone());
            }
        }
    }

    /// Takes free or expired leases and steals one from the busiest instance, as [`plan`]
    /// decides; notices leases held here that another instance wrote. Returns the shards
    /// held afterwards. Take rounds are serialised; none waits for, or delays, a renewal.
    pub async fn acquire(&self, now: Timestamp) -> Result<BTreeSet<ShardId>, LeaseError> {
        self.acquire_through(&self.shared.store, now).await
    }

    async fn acquire_through(
        &self,
        store: &Arc<dyn LeaseStore>,
        now: Timestamp,
    ) -> Result<BTreeSet<ShardId>, LeaseError> {
        let _takes = self.shared.takes.lock().await;
        let leases = store.list().await?;
        let me = self.shared.config.owner.as_str();
        let mut changes = 0u64;
        {
            // Held here but written by another instance since (held here means taken
            // before this listing: only take rounds add leases, one at a time). Our own
            // renewals may have moved the counter on, before or after the listing: only the
            // owner tells.
            let mut map = self.map();
            for lease in &leases {
                if map.contains_key(&lease.shard) && lease.owner.as_deref() != Some(me) {
                    map.remove(&lease.shard);
                    changes += 1;
                    tracing::warn!(owner = %me, shard = %lease.shard,
                        "lease taken by another instance: giving the shard up");
                }
            }
        }
        let plan = plan(&leases, me, now);
        let by_shard: BTreeMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.shard, l)).collect();
        let expires_at = self.expiry(now);
        let held_here: BTreeSet<ShardId> = self.map().keys().cloned().collect();
        // Ours in the store but not held here (a restart under the same name): take again.
        let wanted = plan
            .renew
            .iter()
            .filter(|s| !held_here.contains(*s))
            .chain(&plan.take)
            .chain(&plan.steal);
        for shard in wanted {
            let Some(current) = by_shard.get(shard) else {
                continue;
            };
            let next = Lease::held(shard.clone(), me.to_owned(), current.counter, expires_at);
            let sent = Instant::now();
            if !store.replace(&next, current.counter).await? {
                continue;
            }
            let kept = {
                let mut map = self.map();
                let keep = !self.shared.released.load(Ordering::SeqCst);
                if keep {
                    map.insert(
                        shard.clone(),
                        HeldLease {
                            counter: next.counter,
                            taken: next.counter,
                            valid_until: sent + self.shared.config.held_for(),
                        },
                    );
                }
                keep
            };
            if kept {
                changes += 1;
            } else {
                // Released (shutting down) while this round ran: give it back at once.
                let free = Lease::freed(next.shard.clone(), next.counter);
                store.replace(&free, next.counter).await?;
            }
        }
        let held: BTreeSet<ShardId> = self.map().keys().cloned().collect();
        self.changed(changes, &held);
        Ok(self.held())
    }

    /// One round: renew, then take and steal. Returns the shards held afterwards.
    pub async fn tick(&self, now: Timestamp) -> Result<BTreeSet<ShardId>, LeaseError> {
        self.renew(now).await?;
        self.acquire(now).await
    }

    /// Gives up `shard` here and frees its lease if it is still ours (a checkpoint refused
    /// because another instance claimed the shard; if that instance holds the lease, the
    /// conditional write fails and changes nothing). A renewal of it under way when it is
    /// given up frees it if it wins the race.
    pub async fn release_shard(&self, shard: &ShardId) -> Result<(), LeaseError> {
        let Some(h) = self.map().remove(shard) else {
            return Ok(());
        };
        let held: BTreeSet<ShardId> = self.map().keys().cloned().collect();
        self.changed(1, &held);
        self.shared
            .store
            .replace(&Lease::freed(shard.clone(), h.counter), h.counter)
            .await
            .map(|_| ())
    }

    /// Frees every lease held (at shutdown), so others take them at once; a take round still
    /// under way frees what it takes.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let held = {
            let mut map = self.map();
            self.shared.released.store(true, Ordering::SeqCst);
            std::mem::take(&mut *map)
        };
        for (shard, h) in held {
            self.shared
                .store
                .replace(&Lease::freed(shard, h.counter), h.counter)
                .await?;
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
        let a = LeaseCoordinator::new(store.clone(), config("a"));
        let b = LeaseCoordinator::new(store.clone(), config("b"));
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
        assert!(b.changes() >= 4 && a.changes() >= 4);
        // b releases at shutdown: a takes all at once, without waiting for expiry.
        b.release().await.unwrap();
        assert_eq!(a.tick(later).await.unwrap().len(), 4);
    }

    /// A clock on the monotonic time the safety margin is measured in, so lease expiries and
    /// the margin follow the same time.
    #[derive(Debug)]
    struct TokioClock(Instant);

    impl bikeshare_types::time::Clock for TokioClock {
        fn now(&self) -> Timestamp {
            Timestamp(1_000_000 + self.0.elapsed().as_millis() as i64)
        }
    }

    /// A lease store that fails every call while `down` is set (a partition from DynamoDB).
    #[derive(Debug, Default)]
    struct Partitioned {
        inner: Arc<MemoryLeaseStore>,
        down: std::sync::atomic::AtomicBool,
    }

    impl Partitioned {
        fn inner_arc(&self) -> Arc<dyn LeaseStore> {
            self.inner.clone()
        }
        fn check(&self) -> Result<(), LeaseError> {
            if self.down.load(Ordering::Relaxed) {
                Err(LeaseError::Store("unreachable".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl LeaseStore for Partitioned {
        async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            self.check()?;
            self.inner.list().await
        }
        async fn create(&self, shard: &ShardId) -> Result<(), LeaseError> {
            self.check()?;
            self.inner.create(shard).await
        }
        async fn replace(&self, lease: &Lease, expected: u64) -> Result<bool, LeaseError> {
            self.check()?;
            self.inner.replace(lease, expected).await
        }
    }

    #[tokio::test]
    async fn a_take_rounds_error_reaches_the_caller_as_the_store_said_it() {
        let store = Arc::new(Partitioned::default());
        store.down.store(true, Ordering::Relaxed);
        let a = LeaseCoordinator::new(store.clone(), config("a"));
        let clock: SharedClock = Arc::new(TokioClock(Instant::now()));
        let renewer = a.spawn_renewer(clock);
        let err = renewer.take(shards(1)).await.unwrap_err();
        assert_eq!(err.to_string(), "lease store: unreachable");
        assert!(err.retryable());
    }

    /// Real time (the renewer runs on its own thread and runtime, which a paused test clock
    /// does not reach), so the timings leave room for a shared, busy machine: renewed every
    /// second and held for 2.25 s after a renewal was sent, so a renewal may start up to
    /// 1.25 s late (a thread not scheduled, a slow store call) before a lease lapses here.
    fn short(owner: &str) -> LeaseConfig {
        LeaseConfig {
            owner: owner.into(),
            duration: SHORT,
        }
    }

    const SHORT: Duration = Duration::from_secs(3);

    /// How long the tests block processing: one and a half lease durations, longer than a
    /// lease lasts and twice as long as it counts as held without a renewal.
    const BLOCKED: Duration = Duration::from_millis(4_500);

    /// At least half the renewals due in [`BLOCKED`] (one every third of [`SHORT`]), on top
    /// of the write that took the lease: renewal went on while processing was blocked.
    fn renewed_while_blocked(lease: &Lease) -> bool {
        let due = BLOCKED.as_millis() / (SHORT / 3).as_millis();
        u128::from(lease.counter) > due / 2
    }

    #[tokio::test]
    async fn renewal_on_its_own_task_keeps_leases_while_processing_is_blocked() {
        let clock: SharedClock = Arc::new(TokioClock(Instant::now()));
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
        let a = LeaseCoordinator::new(store.clone(), short("a"));
        let b = LeaseCoordinator::new(store.clone(), short("b"));
        a.ensure_leases(&shards(1)).await.unwrap();
        assert_eq!(a.acquire(clock.now()).await.unwrap().len(), 1);
        let _renewer = a.spawn_renewer(clock.clone());
        // A processing step blocked (awaiting) for longer than a lease lasts.
        tokio::time::sleep(BLOCKED).await;
        assert!(a.holds(&ShardId::from_index(0)), "a kept its lease");
        assert!(
            b.acquire(clock.now()).await.unwrap().is_empty(),
            "b found no expired lease to take"
        );
        let lease = &store.list().await.unwrap()[0];
        assert_eq!(lease.owner.as_deref(), Some("a"));
        assert!(
            renewed_while_blocked(lease),
            "renewed every third: {lease:?}"
        );
    }

    /// The processing runtime kept busy: a single-threaded runtime whose only worker is
    /// blocked (a long synchronous step) for longer than a lease lasts. The renewal does not
    /// wait for it, so the lease is still held when the step ends — checked before the
    /// runtime gets to run anything else. (On a task of the blocked runtime, the renewer
    /// never ran and the lease had lapsed here.)
    #[tokio::test(flavor = "current_thread")]
    async fn renewal_keeps_leases_while_the_processing_runtime_is_kept_busy() {
        let clock: SharedClock = Arc::new(TokioClock(Instant::now()));
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
        let a = LeaseCoordinator::new(store.clone(), short("a"));
        a.ensure_leases(&shards(1)).await.unwrap();
        assert_eq!(a.acquire(clock.now()).await.unwrap().len(), 1);
        let _renewer = a.spawn_renewer(clock.clone());
        std::thread::sleep(BLOCKED);
        assert!(
            a.holds(&ShardId::from_index(0)),
            "the lease lapsed while the processing runtime was busy"
        );
        let lease = &store.list().await.unwrap()[0];
        assert!(
            renewed_while_blocked(lease),
            "renewed every third: {lease:?}"
        );
        assert!(lease.expires_at > clock.now(), "{lease:?}");
    }

    /// A lease store whose listings stall while `stalled` is set (a DynamoDB `Scan` that
    /// hangs, or a take round on a processing runtime starved in the middle of it); its
    /// conditional writes still answer.
    #[derive(Debug, Default)]
    struct StalledListing {
        inner: MemoryLeaseStore,
        stalled: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl LeaseStore for StalledListing {
        async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.inner.list().await
        }
        async fn create(&self, shard: &ShardId) -> Result<(), LeaseError> {
            self.inner.create(shard).await
        }
        async fn replace(&self, lease: &Lease, expected: u64) -> Result<bool, LeaseError> {
            self.inner.replace(lease, expected).await
        }
    }

    /// A take round stalled in its listing for longer than a lease lasts does not delay the
    /// renewals: the lease is still held and was renewed all along. (With the renewal and the
    /// take sharing one lock held across the take's store calls, the renewer waited for the
    /// stalled take and the lease lapsed.)
    #[tokio::test]
    async fn a_stalled_take_round_does_not_delay_renewal() {
        let clock: SharedClock = Arc::new(TokioClock(Instant::now()));
        let store = Arc::new(StalledListing::default());
        let a = LeaseCoordinator::new(store.clone(), short("a"));
        a.ensure_leases(&shards(1)).await.unwrap();
        assert_eq!(a.acquire(clock.now()).await.unwrap().len(), 1);
        let _renewer = a.spawn_renewer(clock.clone());
        store.stalled.store(true, Ordering::SeqCst);
        let take = tokio::spawn({
            let (a, now) = (a.clone(), clock.now());
            async move { a.acquire(now).await }
        });
        tokio::time::sleep(BLOCKED).await;
        assert!(!take.is_finished(), "the take round is still stalled");
        assert!(
            a.holds(&ShardId::from_index(0)),
            "the lease lapsed while a take round was stalled"
        );
        let lease = store.inner.list().await.unwrap()[0].clone();
        assert!(
            renewed_while_blocked(&lease),
            "renewed all along: {lease:?}"
        );
        take.abort();
    }

    #[tokio::test]
    async fn an_instance_that_cannot_renew_gives_up_before_its_lease_can_expire() {
        let clock: SharedClock = Arc::new(TokioClock(Instant::now()));
        let store = Arc::new(Partitioned::default());
        let a = LeaseCoordinator::new(store.clone(), short("a"));
        let b = LeaseCoordinator::new(store.inner_arc(), short("b"));
        a.ensure_leases(&shards(1)).await.unwrap();
        a.acquire(clock.now()).await.unwrap();
        let _renewer = a.spawn_renewer(clock.clone());
        while store.inner.list().await.unwrap()[0].counter < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await; // until a renewal
        }
        store.down.store(true, Ordering::Relaxed); // a can no longer reach the store
        let shard = ShardId::from_index(0);
        while a.holds(&shard) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let given_up_at = clock.now();
        let lease = store.inner.list().await.unwrap()[0].clone();
        assert!(
            given_up_at < lease.expires_at,
            "a gave the shard up at {given_up_at:?}, before its lease expires at {:?}",
            lease.expires_at
        );
        assert!(
            b.acquire(given_up_at).await.unwrap().is_empty(),
            "nobody can take it yet"
        );
        assert!(a.changes() >= 2, "gained, then lost");
        // Once it has expired, b takes it; a, back online, learns it lost it.
        while clock.now() <= lease.expires_at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(b.acquire(clock.now()).await.unwrap().len(), 1);
        store.down.store(false, Ordering::Relaxed);
        a.renew(clock.now()).await.unwrap();
        assert!(!a.holds(&shard));
    }

    #[tokio::test]
    async fn a_refused_renewal_drops_the_shard_at_once() {
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
        let a = LeaseCoordinator::new(store.clone(), config("a"));
        a.ensure_leases(&shards(1)).await.unwrap();
        let t = Timestamp(1_000_000);
        a.acquire(t).await.unwrap();
        let shard = ShardId::from_index(0);
        assert_eq!(a.taken_counter(&shard), Some(1));
        // Someone overwrites the lease (a forced take-over).
        let mut stolen = store.list().await.unwrap()[0].clone();
        stolen.owner = Some("b".into());
        stolen.counter += 1;
        assert!(store.replace(&stolen, stolen.counter - 1).await.unwrap());
        assert!(a.holds(&shard), "not noticed before the next renewal");
        a.renew(t).await.unwrap();
        assert!(!a.holds(&shard));
        assert_eq!(a.taken_counter(&shard), None);
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
