//! Per-shard consumer figures and producer counters, as plain structs.
//!
//! These are the figures operators watch (the `metrics` crate and the Prometheus/CloudWatch
//! exporters come with the monitoring work; they will read these snapshots):
//!
//! | figure | unit | meaning |
//! | --- | --- | --- |
//! | `millis_behind_latest` | ms | Kinesis' `MillisBehindLatest` of the last `GetRecords` |
//! | `iterator_age_ms` | ms | now minus the arrival time of the last record read |
//! | `records_read`, `bytes_read` | count, bytes | data read from the shard |
//! | `get_records_calls`, `throttles` | count | calls made, and calls refused for throughput |
//! | `expired_iterators` | count | iterators renewed after `ExpiredIteratorException` |
//! | `records_put`, `records_failed`, `records_throttled` | count | producer outcomes |

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bikeshare_stream::ShardId;

/// Figures of one shard's reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMetrics {
    pub millis_behind_latest: Option<i64>,
    pub iterator_age_ms: Option<i64>,
    pub records_read: u64,
    pub bytes_read: u64,
    pub get_records_calls: u64,
    pub throttles: u64,
    pub expired_iterators: u64,
    /// Whether the shard was read to its end (closed, children known).
    pub ended: bool,
}

/// Producer counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteMetrics {
    pub put_calls: u64,
    pub records_put: u64,
    pub bytes_put: u64,
    /// Records refused by Kinesis with any code (they are retried by the publisher).
    pub records_failed: u64,
    /// Of those, refused for throughput (`ProvisionedThroughputExceededException`).
    pub records_throttled: u64,
    /// Records refused before sending (over the size limit, bad partition key).
    pub records_invalid: u64,
}

/// Figures of one stream handle and its cursors; cheap to share.
#[derive(Debug, Default)]
pub struct KinesisMetrics {
    shards: Mutex<BTreeMap<ShardId, ShardMetrics>>,
    put_calls: AtomicU64,
    records_put: AtomicU64,
    bytes_put: AtomicU64,
    records_failed: AtomicU64,
    records_throttled: AtomicU64,
    records_invalid: AtomicU64,
}

impl KinesisMetrics {
    /// A copy of every shard's figures.
    pub fn shards(&self) -> BTreeMap<ShardId, ShardMetrics> {
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The producer counters.
    pub fn writes(&self) -> WriteMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriteMetrics {
            put_calls: get(&self.put_calls),
            records_put: get(&self.records_put),
            bytes_put: get(&self.bytes_put),
            records_failed: get(&self.records_failed),
            records_throttled: get(&self.records_throttled),
            records_invalid: get(&self.records_invalid),
        }
    }

    pub(crate) fn shard(&self, shard: &ShardId, update: impl FnOnce(&mut ShardMetrics)) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        update(shards.entry(shard.clone()).or_default());
    }

    pub(crate) fn put(&self, written: usize, bytes: usize, failed: usize, throttled: usize) {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        self.records_put
            .fetch_add(written as u64, Ordering::Relaxed);
        self.bytes_put.fetch_add(bytes as u64, Ordering::Relaxed);
        self.records_failed
            .fetch_add(failed as u64, Ordering::Relaxed);
        self.records_throttled
            .fetch_add(throttled as u64, Ordering::Relaxed);
    }

    pub(crate) fn invalid(&self, n: usize) {
        self.records_invalid.fetch_add(n as u64, Ordering::Relaxed);
    }
}
