//! Enhanced fan-out against kinesis-mock: `RegisterStreamConsumer` + `SubscribeToShard`
//! over the plain HTTP/1.1 port, read through the generic shard consumer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bikeshare_aws::{FanOutReader, FanOutSettings};
use bikeshare_stream::consumer::{ConsumerConfig, ShardConsumer};
use bikeshare_stream::publisher::{Publisher, PublisherConfig};
use bikeshare_stream::{PutRecord, StartPosition};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_read_through_enhanced_fan_out() {
    let Some(endpoint) = support::kinesis_endpoint("enhanced_fan_out") else {
        return;
    };
    let sdk = support::sdk_config(&endpoint).await;
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
    for i in 0..per_key {
        for k in 0..keys {
            let key = format!("station-{k:03}");
            publisher
                .send(PutRecord::new(key.clone(), format!("{key}:{i}")))
                .await
                .unwrap();
        }
    }
    publisher.close().await.unwrap();

    let mut consumer = ShardConsumer::new(
        Arc::new(reader),
        BTreeMap::new(),
        ConsumerConfig {
            initial: StartPosition::TrimHorizon,
            discovery_interval: Duration::from_secs(5),
        },
    );
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < keys * per_key && tokio::time::Instant::now() < deadline {
        for part in consumer.poll(1000).await.unwrap().shards {
            records.extend(part.records);
        }
    }
    let sent: BTreeMap<String, usize> = (0..keys)
        .map(|k| (format!("station-{k:03}"), per_key))
        .collect();
    support::assert_complete_and_ordered(&records, &sent);
    let shards = stream.metrics().shards();
    assert_eq!(shards.len(), 2, "both shards were subscribed: {shards:?}");
    assert!(
        shards.values().all(|m| m.get_records_calls == 0),
        "no GetRecords polling: {shards:?}"
    );
}
