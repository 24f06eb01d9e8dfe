//! Rough write throughput of the embedded stream, printed, never asserted:
//!
//! ```text
//! cargo test -p bikeshare-stream --test it stream_throughput -- --ignored --nocapture
//! ```

// Test helpers outside `#[test]` functions panic on failure like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bikeshare_embedded::{Durability, EmbeddedConfig, EmbeddedStream};
use bikeshare_stream::publisher::{Publisher, PublisherConfig};
use bikeshare_stream::{PutRecord, StreamWriter, names};

const BATCHES: usize = 40;
const BATCH: usize = 500;

fn records(batch: usize) -> Vec<PutRecord> {
    (0..BATCH)
        .map(|i| {
            let id = format!("b{batch}-i{i}");
            PutRecord::new(
                format!("system-{}", i % 7),
                format!("{id}|{}", "x".repeat(400 - id.len() - 1)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn embedded_write_throughput() {
    for durability in [Durability::Full, Durability::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let config = EmbeddedConfig {
            durability,
            ..Default::default()
        };
        let stream =
            EmbeddedStream::open_with(dir.path().join("s.db"), names::EVENTS, Some(4), config)
                .await
                .unwrap();
        let batches: Vec<_> = (0..BATCHES).map(records).collect();
        let start = Instant::now();
        for batch in &batches {
            stream.put_records(batch).await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let n = (BATCHES * BATCH) as f64;
        println!(
            "put_records {durability:?}: {n} records of ~400 B in {secs:.2} s = {:.0} records/s, {:.1} ms per 500-record batch",
            n / secs,
            secs * 1000.0 / BATCHES as f64
        );

        let publisher = Publisher::spawn(Arc::new(stream.clone()), PublisherConfig::default());
        let start = Instant::now();
        for batch in batches {
            for r in batch {
                publisher.send(r).await.unwrap();
            }
        }
        publisher.close().await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!("publisher {durability:?}: {:.0} records/s", n / secs);
    }
}
