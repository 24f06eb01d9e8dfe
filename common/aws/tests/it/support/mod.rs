//! What the kinesis-mock tests share: finding the emulator (through `bikeshare_testkit`),
//! clients, fresh streams, writing keys interleaved, reading everything back, and checking
//! "none lost, order per key kept".
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bikeshare_aws::{KinesisStream, client};
use bikeshare_runtime::aws::SdkConfig;
use bikeshare_stream::consumer::{ConsumerConfig, ShardConsumer};
use bikeshare_stream::publisher::{Publisher, PublisherConfig, PublisherStats};
use bikeshare_stream::{
    PutRecord, ShardCursor, ShardId, StartPosition, StreamReader, StreamRecord,
};

/// The emulators' endpoints; `None` when the test is skipped without its emulator.
pub use bikeshare_testkit::emulators::{kinesis_endpoint, moto_endpoint};

/// The SDK configuration for kinesis-mock, or `None` when `test` is skipped without it.
pub async fn kinesis_sdk(test: &str) -> Option<SdkConfig> {
    Some(sdk_config(&kinesis_endpoint(test)?).await)
}

/// The shared SDK configuration for an emulator: our HTTPS client, a region, fixed
/// credentials, the endpoint from configuration.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    bikeshare_runtime::aws::emulator_sdk_config(endpoint).await
}

/// A stream with a unique name and `shards` shards, active.
pub async fn new_stream(sdk: &SdkConfig, prefix: &str, shards: u32) -> KinesisStream {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let stream = KinesisStream::new(client::kinesis_client(sdk), name);
    stream
        .ensure_exists(shards, Duration::from_secs(30))
        .await
        .unwrap();
    stream
}

/// The partition key of key number `k`: `station-000`, `station-001`, ...
pub fn key(k: usize) -> String {
    format!("station-{k:03}")
}

/// What [`send_interleaved`] sends: `per_key` records for each of `keys` keys.
pub fn sent(keys: usize, per_key: usize) -> BTreeMap<String, usize> {
    (0..keys).map(|k| (key(k), per_key)).collect()
}

/// Sends `per_key` records for each of `keys` keys, interleaved (one round is one record of
/// every key), payload `key:index`; sleeps `pause` after every round when given. Returns
/// [`sent`].
pub async fn send_interleaved(
    publisher: &Publisher,
    keys: usize,
    per_key: usize,
    pause: Option<Duration>,
) -> BTreeMap<String, usize> {
    for i in 0..per_key {
        for k in 0..keys {
            let key = key(k);
            publisher
                .send(PutRecord::new(key.clone(), format!("{key}:{i}")))
                .await
                .unwrap();
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    sent(keys, per_key)
}

/// A consumer of every shard of `reader` from the trim horizon, no checkpoints, looking for
/// new shards every `discovery_interval`.
pub fn consumer_from_start(
    reader: Arc<dyn StreamReader>,
    discovery_interval: Duration,
) -> ShardConsumer {
    ShardConsumer::new(
        reader,
        BTreeMap::new(),
        ConsumerConfig {
            initial: StartPosition::TrimHorizon,
            discovery_interval,
        },
    )
}

/// Reads every shard from the trim horizon until `expected` records arrived (or `timeout`
/// passed): a plain reader for streams that do not reshard.
pub async fn read_all(
    reader: &dyn StreamReader,
    limit: usize,
    expected: usize,
    timeout: Duration,
) -> Vec<StreamRecord> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut cursors: Vec<(ShardId, Box<dyn ShardCursor>)> = Vec::new();
    for shard in reader.list_shards().await.unwrap() {
        let cursor = reader
            .open(&shard.id, StartPosition::TrimHorizon)
            .await
            .unwrap();
        cursors.push((shard.id, cursor));
    }
    let mut out = Vec::new();
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        for (_, cursor) in &mut cursors {
            out.extend(cursor.next_batch(limit).await.unwrap().records);
        }
    }
    out
}

/// Publishes `per_key` records for each of `keys` keys into `stream` ([`send_interleaved`]),
/// closes the publisher, reads everything back (`limit` records a read, within `timeout`)
/// and checks that every record arrived once and in order per key; prints how long each
/// half took. Returns the publisher's stats.
pub async fn publish_and_read_back(
    stream: &KinesisStream,
    config: PublisherConfig,
    keys: usize,
    per_key: usize,
    limit: usize,
    timeout: Duration,
) -> PublisherStats {
    let total = keys * per_key;
    let publisher = Publisher::spawn(Arc::new(stream.clone()), config);
    let started = std::time::Instant::now();
    let sent = send_interleaved(&publisher, keys, per_key, None).await;
    let stats = publisher.close().await.unwrap();
    assert_eq!(stats.records_sent, total as u64);
    eprintln!(
        "wrote {total} records in {:?}: {stats:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let records = read_all(stream, limit, total, timeout).await;
    eprintln!("read {} records in {:?}", records.len(), started.elapsed());
    assert_complete_and_ordered(&records, &sent);
    stats
}

/// Payloads are `key:index`; checks that every index of every key arrived exactly once and
/// in order. `sent` is the number of records sent per key.
pub fn assert_complete_and_ordered(records: &[StreamRecord], sent: &BTreeMap<String, usize>) {
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for r in records {
        let text = std::str::from_utf8(&r.data).unwrap();
        let (key, index) = text.rsplit_once(':').unwrap();
        assert_eq!(key, r.partition_key, "payload and partition key agree");
        per_key
            .entry(key.to_owned())
            .or_default()
            .push(index.parse().unwrap());
    }
    let total: usize = sent.values().sum();
    assert_eq!(records.len(), total, "records read vs sent");
    for (key, &n) in sent {
        let got = per_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let expected: Vec<usize> = (0..n).collect();
        assert_eq!(
            got,
            expected.as_slice(),
            "records of {key} lost or reordered"
        );
    }
}
