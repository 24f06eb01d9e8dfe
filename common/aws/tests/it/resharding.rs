//! A split and a merge while records flow: the resharding-aware consumer
//! (`bikeshare_stream::consumer`) over kinesis-mock loses nothing and keeps each
//! key's order (parents are finished before their children are read; both parents after a
//! merge).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bikeshare_stream::StreamReader;
use bikeshare_stream::consumer::SHARD_END;
use bikeshare_stream::publisher::{Publisher, PublisherConfig};

const KEYS: usize = 20;
const PER_KEY: usize = 60;

async fn wait_written(publisher: &Publisher, n: u64) {
    while publisher.stats().records_sent < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_records_flow_lose_nothing_and_keep_order() {
    let Some(sdk) = support::kinesis_sdk("split_and_merge").await else {
        return;
    };
    let stream = support::new_stream(&sdk, "reshard", 2).await;

    let config = PublisherConfig {
        linger: Duration::from_millis(5),
        max_batch_records: 50,
        ..PublisherConfig::default()
    };
    let publisher = Arc::new(Publisher::spawn(Arc::new(stream.clone()), config));
    let producer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let pause = Some(Duration::from_millis(20));
            let sent = support::send_interleaved(&publisher, KEYS, PER_KEY, pause).await;
            publisher.flush().await.unwrap();
            sent
        })
    };
    let consumer = {
        let reader: Arc<dyn StreamReader> = Arc::new(stream.clone());
        tokio::spawn(async move {
            let mut consumer = support::consumer_from_start(reader, Duration::from_millis(200));
            let mut records = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
            while records.len() < KEYS * PER_KEY && tokio::time::Instant::now() < deadline {
                let poll = consumer.poll(1000).await.unwrap();
                for part in poll.shards {
                    records.extend(part.records);
                }
            }
            // Read on until the closed shards have ended.
            for _ in 0..50 {
                consumer.poll(1000).await.unwrap();
            }
            (records, consumer.positions().clone())
        })
    };

    let client = stream.client();
    wait_written(&publisher, (KEYS * PER_KEY / 3) as u64).await;
    // Split shard 0 at the middle of its range.
    let shards = stream.list_shards().await.unwrap();
    let s0 = &shards[0];
    let middle = s0.starting_hash_key + (s0.ending_hash_key - s0.starting_hash_key) / 2;
    client
        .split_shard()
        .stream_name(stream.name())
        .shard_to_split(s0.id.as_str())
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .unwrap();
    stream.wait_active(Duration::from_secs(30)).await.unwrap();

    wait_written(&publisher, (2 * KEYS * PER_KEY / 3) as u64).await;
    // Merge the upper child of shard 0 with shard 1 (adjacent ranges).
    let shards = stream.list_shards().await.unwrap();
    let upper_child = shards
        .iter()
        .find(|s| !s.closed && s.parent.as_ref() == Some(&s0.id) && s.starting_hash_key == middle)
        .unwrap();
    let s1 = &shards[1];
    assert_eq!(upper_child.ending_hash_key + 1, s1.starting_hash_key);
    client
        .merge_shards()
        .stream_name(stream.name())
        .shard_to_merge(upper_child.id.as_str())
        .adjacent_shard_to_merge(s1.id.as_str())
        .send()
        .await
        .unwrap();
    stream.wait_active(Duration::from_secs(30)).await.unwrap();

    let sent = producer.await.unwrap();
    let (records, positions) = consumer.await.unwrap();
    support::assert_complete_and_ordered(&records, &sent);

    let shards = stream.list_shards().await.unwrap();
    assert_eq!(
        shards.len(),
        5,
        "2 at creation, 2 from the split, 1 from the merge"
    );
    for s in shards.iter().filter(|s| s.closed) {
        assert_eq!(
            positions.get(s.id.as_str()).map(String::as_str),
            Some(SHARD_END),
            "closed shard {} was read to its end: {positions:?}",
            s.id
        );
    }
    let merged = shards.iter().find(|s| s.adjacent_parent.is_some()).unwrap();
    assert!(
        positions.contains_key(merged.id.as_str()),
        "the merged child was read after both parents: {positions:?}"
    );
}
