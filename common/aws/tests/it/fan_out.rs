//! Enhanced fan-out against kinesis-mock: `RegisterStreamConsumer` + `SubscribeToShard`
//! over the plain HTTP/1.1 port, read through the generic shard consumer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bikeshare_aws::{FanOutReader, FanOutSettings};
use bikeshare_stream::publisher::{Publisher, PublisherConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_read_through_enhanced_fan_out() {
    let Some(sdk) = support::kinesis_sdk("enhanced_fan_out").await else {
        return;
    };
    let stream = support::new_stream(&sdk, "fanout", 2).await;
    let reader = FanOutReader::register(
        stream.clone(),
        FanOutSettings {
            consumer_name: "fan-out-test".into(),
            ..FanOutSettings::default()
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(reader.consumer_arn().contains("fan-out-test"));

    let publisher = Publisher::spawn(Arc::new(stream.clone()), PublisherConfig::default());
    let (keys, per_key) = (10, 50);
    let sent = support::send_interleaved(&publisher, keys, per_key, None).await;
    publisher.close().await.unwrap();

    let mut consumer = support::consumer_from_start(Arc::new(reader), Duration::from_secs(5));
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < keys * per_key && tokio::time::Instant::now() < deadline {
        for part in consumer.poll(1000).await.unwrap().shards {
            records.extend(part.records);
        }
    }
    support::assert_complete_and_ordered(&records, &sent);
    let shards = stream.metrics().shards();
    assert_eq!(shards.len(), 2, "both shards were subscribed: {shards:?}");
    assert!(
        shards.values().all(|m| m.get_records_calls == 0),
        "no GetRecords polling: {shards:?}"
    );
}
