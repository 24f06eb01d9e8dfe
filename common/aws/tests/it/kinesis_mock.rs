//! Producer → kinesis-mock → consumer, through the real SDK: volume, partial failures and
//! throttling (through a fault-injecting proxy), and oversize records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bikeshare_aws::{INVALID_RECORD_CODE, KinesisStream, client};
use bikeshare_producers::output::{Output, RULE_RECORD_TOO_LARGE, StreamOutput};
use bikeshare_stream::publisher::{PublishError, Publisher, PublisherConfig};
use bikeshare_stream::{PutOutcome, PutRecord, StreamWriter};
use bikeshare_testkit::envelopes::station_info;
use bikeshare_testkit::fault_proxy::{FaultProxy, kinesis};
use bikeshare_types::contracts::{DeadLetter, Envelope, Event};
use bikeshare_types::{SystemClock, SystemId, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_arrive_once_each_in_order_per_station() {
    let Some(sdk) = support::kinesis_sdk("hundred_thousand_records").await else {
        return;
    };
    // kinesis-mock appends to a shard in time that grows with the shard's size: many
    // shards keep 100,000 records to about two minutes.
    let stream = support::new_stream(&sdk, "volume", 128).await;
    let config = PublisherConfig::default();
    let timeout = Duration::from_secs(240);
    support::publish_and_read_back(&stream, config, 400, 250, 10_000, timeout).await;
    let shards = stream.metrics().shards();
    assert_eq!(shards.len(), 128, "every shard was read");
    let read: u64 = shards.values().map(|m| m.records_read).sum();
    assert_eq!(read, 100_000, "per-shard metrics add up");
    assert!(
        shards.values().all(|m| m.millis_behind_latest.is_some()),
        "MillisBehindLatest of every shard: {shards:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_and_throttling_lose_nothing_and_keep_order() {
    let Some(endpoint) = support::kinesis_endpoint("partial_failures_and_throttling") else {
        return;
    };
    let proxy = FaultProxy::start(&endpoint, kinesis::Policy::new(42)).await;
    let direct = support::sdk_config(&endpoint).await;
    let created = support::new_stream(&direct, "faults", 8).await;
    let through_proxy = support::sdk_config(&proxy.endpoint()).await;
    let stream = KinesisStream::new(client::kinesis_client(&through_proxy), created.name());

    let config = PublisherConfig {
        max_batch_records: 100,
        linger: Duration::from_millis(5),
        ..PublisherConfig::default()
    };
    let timeout = Duration::from_secs(120);
    let stats = support::publish_and_read_back(&stream, config, 20, 100, 500, timeout).await;

    let faults = proxy.faults();
    assert!(
        faults.records_failed > 0,
        "the proxy failed records: {faults:?}"
    );
    assert!(
        faults.puts_throttled > 0,
        "the proxy throttled puts: {faults:?}"
    );
    assert!(
        faults.gets_throttled > 0,
        "the proxy throttled reads: {faults:?}"
    );
    assert!(
        stats.records_retried > 0,
        "the publisher re-sent records: {stats:?}"
    );
    let writes = stream.metrics().writes();
    assert!(writes.records_throttled > 0, "{writes:?}");
    let throttles: u64 = stream
        .metrics()
        .shards()
        .values()
        .map(|m| m.throttles)
        .sum();
    assert!(throttles > 0, "the cursors saw throttling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_record_is_refused_alone_and_dead_lettered() {
    let Some(sdk) = support::kinesis_sdk("oversize_record").await else {
        return;
    };
    let events = support::new_stream(&sdk, "oversize-events", 1).await;
    let dead = support::new_stream(&sdk, "oversize-dead", 1).await;

    // The writer alone: the large record fails by itself, its neighbours are written.
    let huge = PutRecord::new(
        "k",
        vec![b'x'; bikeshare_types::limits::KINESIS_MAX_RECORD_BYTES],
    );
    let outcomes = events
        .put_records(&[
            PutRecord::new("k", "k:0"),
            huge.clone(),
            PutRecord::new("k", "k:1"),
        ])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], PutOutcome::Written { .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], PutOutcome::Failed { code, .. } if code == INVALID_RECORD_CODE),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[2], PutOutcome::Written { .. }),
        "{outcomes:?}"
    );
    // The publisher refuses it at `send`, so the caller can dead-letter it.
    let publisher = Publisher::spawn(Arc::new(events.clone()), PublisherConfig::default());
    assert!(matches!(
        publisher.send(huge).await,
        Err(PublishError::RecordTooLarge { .. })
    ));
    publisher.close().await.unwrap();

    // The producers' output does: an oversize event becomes a dead letter with its reason.
    let output = StreamOutput::new(
        Arc::new(events.clone()),
        Arc::new(dead.clone()),
        PublisherConfig::default(),
        Arc::new(SystemClock),
    );
    let name = "n".repeat(bikeshare_types::limits::KINESIS_MAX_RECORD_BYTES);
    let station = station_info("s1", name, 42.0, -71.0, 10);
    let system = SystemId::new("bluebikes");
    let env = Envelope::new(
        system,
        "test",
        Timestamp::from_secs(1_700_000_000),
        Timestamp::from_secs(1_700_000_000),
        Event::StationInfo(station),
    );
    output.events(vec![env]).await.unwrap();
    output.close().await.unwrap();

    let read = support::read_all(&events, 100, 2, Duration::from_secs(30)).await;
    let texts: Vec<&[u8]> = read.iter().map(|r| r.data.as_ref()).collect();
    assert_eq!(
        texts,
        [b"k:0".as_slice(), b"k:1"],
        "only the valid records were written"
    );
    let letters = support::read_all(&dead, 100, 1, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 1);
    let letter: DeadLetter = serde_json::from_slice(&letters[0].data).unwrap();
    assert_eq!(letter.rule, RULE_RECORD_TOO_LARGE);
    assert!(
        letter.message.contains("over the limit"),
        "{}",
        letter.message
    );
}
