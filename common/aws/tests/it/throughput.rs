//! Producer and consumer throughput against kinesis-mock, with the client's own CPU time.
//!
//! Not part of the default run (it measures, it does not check much):
//!
//! ```text
//! scripts/emulators.sh cargo test -p bikeshare-aws --release --test it throughput -- --ignored --nocapture
//! ```
//!
//! The emulator is a separate process, so this process's CPU time is the client side alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bikeshare_stream::PutRecord;
use bikeshare_stream::publisher::{Publisher, PublisherConfig};

const RECORDS: usize = 20_000;
const PAYLOAD: usize = 200;

/// User plus system CPU time of this process (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn report(what: &str, records: usize, bytes: usize, wall: Duration, cpu: Duration) {
    let secs = wall.as_secs_f64();
    eprintln!(
        "{what}: {records} records, {:.0} records/s, {:.2} MB/s, client CPU {:.1} ms per 1,000 records \
         ({:.1} s wall, {:.2} s CPU)",
        records as f64 / secs,
        bytes as f64 / secs / 1e6,
        cpu.as_secs_f64() * 1000.0 / (records as f64 / 1000.0),
        secs,
        cpu.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn producer_and_consumer_throughput_against_kinesis_mock() {
    let Some(sdk) = support::kinesis_sdk("throughput").await else {
        return;
    };
    let stream = support::new_stream(&sdk, "bench", 16).await;
    let payload = "x".repeat(PAYLOAD);

    let (cpu0, t0) = (cpu_time(), Instant::now());
    let publisher = Publisher::spawn(Arc::new(stream.clone()), PublisherConfig::default());
    for i in 0..RECORDS {
        let key = format!("station-{:03}", i % 400);
        publisher
            .send(PutRecord::new(key.clone(), format!("{key}:{i}:{payload}")))
            .await
            .unwrap();
    }
    publisher.close().await.unwrap();
    let bytes = stream.metrics().writes().bytes_put as usize;
    report("producer", RECORDS, bytes, t0.elapsed(), cpu_time() - cpu0);

    let (cpu0, t0) = (cpu_time(), Instant::now());
    let records = support::read_all(&stream, 10_000, RECORDS, Duration::from_secs(600)).await;
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    report(
        "consumer",
        records.len(),
        bytes,
        t0.elapsed(),
        cpu_time() - cpu0,
    );
    assert_eq!(records.len(), RECORDS);
}
