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

bikeshare_types::counters! {
    /// The producer counters of one stream.
    pub struct WriteCounters => /// A plain copy of [`WriteCounters`].
    pub struct WriteMetrics {
        put_calls,
        records_put,
        bytes_put,
        /// Records refused by Kinesis with any code (they are retried by the publisher).
        records_failed,
        /// Of those, refused for throughput (`ProvisionedThroughputExceededException`).
        records_throttled,
        /// Records refused before sending (over the size limit, bad partition key).
        records_invalid,
    }
}

/// Figures of one stream handle and its cursors; cheap to share.
#[derive(Debug, Default)]
pub struct KinesisMetrics {
    shards: Mutex<BTreeMap<ShardId, ShardMetrics>>,
    writes: WriteCounters,
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
        self.writes.snapshot()
    }

    pub(crate) fn shard(&self, shard: &ShardId, update: impl FnOnce(&mut ShardMetrics)) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        update(shards.entry(shard.clone()).or_default());
    }

    pub(crate) fn put(&self, written: usize, bytes: usize, failed: usize, throttled: usize) {
        let w = &self.writes;
        w.put_calls.incr();
        w.records_put.add(written);
        w.bytes_put.add(bytes);
        w.records_failed.add(failed);
        w.records_throttled.add(throttled);
    }

    pub(crate) fn invalid(&self, n: usize) {
        self.writes.records_invalid.add(n);
    }
}
