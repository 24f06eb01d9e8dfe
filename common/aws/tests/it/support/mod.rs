//! What the kinesis-mock tests share: finding the emulator, clients, fresh streams, reading
//! everything back, and checking "none lost, order per key kept".
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bikeshare_aws::{KinesisStream, client};
use bikeshare_runtime::aws::SdkConfig;
use bikeshare_stream::{ShardCursor, ShardId, StartPosition, StreamReader, StreamRecord};

/// The emulator's endpoint from `BIKESHARE_TEST_KINESIS_ENDPOINT` (set by
/// `scripts/test.sh`). Without it the test is skipped, except in CI (`CI=true`), where a
/// missing emulator is a failure.
pub fn kinesis_endpoint(test: &str) -> Option<String> {
    emulator("BIKESHARE_TEST_KINESIS_ENDPOINT", test)
}

/// moto server's endpoint (`BIKESHARE_TEST_MOTO_ENDPOINT`), with the same rule.
pub fn moto_endpoint(test: &str) -> Option<String> {
    emulator("BIKESHARE_TEST_MOTO_ENDPOINT", test)
}

fn emulator(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: {var} is not set in CI; run the tests with scripts/test.sh")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: {var} is not set (run scripts/test.sh, or \
                 scripts/emulators.sh cargo test -p bikeshare-aws)"
            );
            None
        }
    }
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
