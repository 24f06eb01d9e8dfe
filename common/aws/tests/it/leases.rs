//! Shard leases in DynamoDB (moto) shared by two consumer instances over one kinesis-mock
//! stream of 4 shards: they split the shards, one is killed, the other takes its leases
//! after they expire and resumes each shard from its checkpoint; no record is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bikeshare_aws::DynamoLeaseStore;
use bikeshare_stream::consumer::ShardConsumer;
use bikeshare_stream::lease::{LeaseConfig, LeaseCoordinator, LeaseStore};
use bikeshare_stream::publisher::{Publisher, PublisherConfig};
use bikeshare_stream::{ShardId, StreamReader, StreamRecord};
use bikeshare_types::Timestamp;

const KEYS: usize = 40;
const PER_KEY: usize = 25;

/// One consumer instance: its leases, its shard consumer.
struct Instance {
    leases: LeaseCoordinator,
    consumer: ShardConsumer,
}

impl Instance {
    fn new(name: &str, store: Arc<dyn LeaseStore>, reader: Arc<dyn StreamReader>) -> Self {
        let leases = LeaseCoordinator::new(
            store,
            LeaseConfig {
                owner: name.into(),
                duration: Duration::from_secs(10),
            },
        );
        let consumer = support::consumer_from_start(reader, Duration::from_millis(100));
        Self { leases, consumer }
    }

    /// Renews/takes leases at `now`, adopting the checkpoint of every newly held shard.
    async fn tick(
        &mut self,
        now: Timestamp,
        checkpoints: &BTreeMap<String, String>,
    ) -> BTreeSet<ShardId> {
        let before: BTreeSet<ShardId> = self.consumer.reading().cloned().collect();
        let held = self.leases.tick(now).await.unwrap();
        for shard in held.difference(&before) {
            if let Some(pos) = checkpoints.get(shard.as_str()) {
                self.consumer.adopt_position(shard, pos.clone());
            }
        }
        self.consumer.set_owned(Some(held.clone()));
        held
    }

    /// Polls once; returns the records and checkpoints their shards' positions.
    async fn poll(&mut self, checkpoints: &mut BTreeMap<String, String>) -> Vec<StreamRecord> {
        let poll = self.consumer.poll(100).await.unwrap();
        let mut out = Vec::new();
        for part in poll.shards {
            out.extend(part.records);
        }
        for (shard, pos) in self.consumer.positions() {
            checkpoints.insert(shard.clone(), pos.clone());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leases_are_taken_over_and_resumed_from_checkpoints() {
    let Some(kinesis) = support::kinesis_endpoint("leases") else {
        return;
    };
    let Some(moto) = support::moto_endpoint("leases") else {
        return;
    };
    let sdk = support::sdk_config(&kinesis).await;
    let stream = support::new_stream(&sdk, "leases", 4).await;
    let store = DynamoLeaseStore::new(&sdk, format!("leases-{}", stream.name()), Some(&moto));
    store.ensure_table().await.unwrap();
    let store: Arc<dyn LeaseStore> = Arc::new(store);

    let publisher = Publisher::spawn(Arc::new(stream.clone()), PublisherConfig::default());
    let sent = support::send_interleaved(&publisher, KEYS, PER_KEY, None).await;
    publisher.close().await.unwrap();

    let reader: Arc<dyn StreamReader> = Arc::new(stream.clone());
    let shard_ids: Vec<ShardId> = reader
        .list_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let mut a = Instance::new("a", store.clone(), reader.clone());
    let mut b = Instance::new("b", store.clone(), reader.clone());
    a.leases.ensure_leases(&shard_ids).await.unwrap();

    // Checkpoints shared by the instances (the checkpoint store), and what each processed.
    let mut checkpoints = BTreeMap::new();
    let t0 = Timestamp(1_000_000);
    let (mut by_a, mut by_b) = (Vec::new(), Vec::new());
    // Balance: a takes all, b steals until 2 + 2.
    for round in 0..4 {
        let now = t0.plus_millis(round);
        a.tick(now, &checkpoints).await;
        b.tick(now, &checkpoints).await;
    }
    let held_a = a.tick(t0, &checkpoints).await;
    let held_b = b.tick(t0, &checkpoints).await;
    assert_eq!(
        (held_a.len(), held_b.len()),
        (2, 2),
        "{held_a:?} {held_b:?}"
    );

    // Both read one batch each and checkpoint; then a is killed (no release, no renewal).
    by_a.extend(a.poll(&mut checkpoints).await);
    by_b.extend(b.poll(&mut checkpoints).await);
    assert!(!by_a.is_empty(), "a read before it was killed");
    drop(a);

    // After expiry, b takes a's shards and resumes them from the checkpoints.
    let later = t0.plus_millis(11_000);
    let held = b.tick(later, &checkpoints).await;
    assert_eq!(held.len(), 4, "b holds every shard");
    assert!(b.leases.changes() >= 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while by_a.len() + by_b.len() < KEYS * PER_KEY && tokio::time::Instant::now() < deadline {
        by_b.extend(b.poll(&mut checkpoints).await);
    }
    let mut all = by_a.clone();
    all.extend(by_b.iter().cloned());
    // a checkpointed everything it read, so nothing is read twice here; in general a
    // take-over re-reads what was read after the last checkpoint (at-least-once).
    let mut per_shard: BTreeMap<&ShardId, Vec<&StreamRecord>> = BTreeMap::new();
    for r in &all {
        per_shard.entry(&r.shard).or_default().push(r);
    }
    // Order per key: a's records of a shard come before b's of the same shard.
    let ordered: Vec<StreamRecord> = per_shard.values().flatten().map(|r| (*r).clone()).collect();
    support::assert_complete_and_ordered(&ordered, &sent);

    b.leases.release().await.unwrap();
    let leases = store.list().await.unwrap();
    assert!(
        leases.iter().all(|l| l.owner.is_none()),
        "released: {leases:?}"
    );
}
