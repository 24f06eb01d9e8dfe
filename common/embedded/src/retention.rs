//! Retention like Kinesis', in event time and never past a consumer.
//!
//! Kinesis keeps 24 hours of arrival time. The embedded stream is also fed by replays, which
//! publish a month of history in a minute: arrival time would keep all of it. So retention
//! here is measured in the records' own *event time*, read by a function the caller gives
//! ([`EventTimeOf`]; the stream does not know its payloads), and it never passes a consumer:
//!
//! - `passed` names, per shard, the last sequence number *every* consumer with a checkpoint
//!   has processed (the minimum over them). A shard missing from it is not trimmed at all.
//!   `None` means the stream has no checkpointed consumer (its readers follow the head, like
//!   the subscription API and the dashboard): the shard's newest record stands in.
//! - The reference time is the event time of the record at that position (or of the newest
//!   one before it with a readable time); records older than the reference by more than the
//!   retention are deleted, oldest first, up to the first record that is not (a trim horizon,
//!   as in Kinesis: nothing after a kept record is deleted). A record whose time cannot be
//!   read goes with its neighbours.
//!
//! Deleted pages go back to the file system when the database was created with
//! `auto_vacuum = INCREMENTAL` (every database this build creates); an older database keeps
//! and reuses them.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use bikeshare_stream::StreamError;
use bikeshare_types::time::Timestamp;

use crate::{EmbeddedStream, Inner, blocking, connect, lock, storage};

/// Reads a record's event time from its data; `None` when it has none that can be read.
pub type EventTimeOf = fn(&[u8]) -> Option<Timestamp>;

/// Records read back from a position to find a readable reference time.
const REFERENCE_LOOKBACK: i64 = 256;

/// What one trim did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrimReport {
    /// Records deleted, over every shard.
    pub deleted: u64,
    /// Records still in the stream afterwards.
    pub kept: u64,
}

impl EmbeddedStream {
    /// Deletes, in each shard, the records that every consumer has passed and whose event
    /// time is more than `retention` before the event time at that position (see
    /// [`crate::retention`]). `passed`: shard id → the last sequence number all consumers
    /// processed, or `None` when the stream has no checkpointed consumer.
    pub async fn trim_retained(
        &self,
        passed: Option<&BTreeMap<String, u64>>,
        retention: Duration,
        event_time: EventTimeOf,
    ) -> Result<TrimReport, StreamError> {
        let limits: Vec<Option<i64>> = self
            .inner
            .shards
            .iter()
            .map(|s| match passed {
                None => Some(i64::MAX),
                Some(p) => p
                    .get(s.id.as_str())
                    .map(|n| i64::try_from(*n).unwrap_or(i64::MAX)),
            })
            .collect();
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let inner = self.inner.clone();
        let report =
            blocking(move || trim_retained_blocking(&inner, &limits, retention_ms, event_time))
                .await?;
        if report.deleted > 0 {
            tracing::debug!(stream = %self.inner.name, ?report, "trimmed stream by retention");
        }
        Ok(report)
    }
}

/// Where the horizon of one shard goes: the first sequence number to keep.
fn keep_from(
    conn: &rusqlite::Connection,
    stream_id: i64,
    shard: i64,
    limit: i64,
    retention_ms: i64,
    event_time: EventTimeOf,
) -> Result<Option<i64>, StreamError> {
    let reference = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT data FROM records WHERE stream_id = ?1 AND shard = ?2 AND seq <= ?3 \
                 ORDER BY seq DESC LIMIT ?4",
            )
            .map_err(storage)?;
        let mut rows = stmt
            .query(params![stream_id, shard, limit, REFERENCE_LOOKBACK])
            .map_err(storage)?;
        let mut found = None;
        while let Some(row) = rows.next().map_err(storage)? {
            let data: Vec<u8> = row.get(0).map_err(storage)?;
            if let Some(t) = event_time(&data) {
                found = Some(t);
                break;
            }
        }
        found
    };
    let Some(reference) = reference else {
        return Ok(None);
    };
    let cutoff = reference.millis().saturating_sub(retention_ms);
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, data FROM records WHERE stream_id = ?1 AND shard = ?2 AND seq <= ?3 \
             ORDER BY seq",
        )
        .map_err(storage)?;
    let mut rows = stmt
        .query(params![stream_id, shard, limit])
        .map_err(storage)?;
    let mut last = None;
    while let Some(row) = rows.next().map_err(storage)? {
        let seq: i64 = row.get(0).map_err(storage)?;
        let data: Vec<u8> = row.get(1).map_err(storage)?;
        if event_time(&data).is_some_and(|t| t.millis() >= cutoff) {
            return Ok(Some(seq));
        }
        last = Some(seq);
    }
    Ok(last.map(|s| s + 1))
}

fn trim_retained_blocking(
    inner: &Inner,
    limits: &[Option<i64>],
    retention_ms: i64,
    event_time: EventTimeOf,
) -> Result<TrimReport, StreamError> {
    // Finding the horizon reads (and decodes) what will be deleted: on a connection of its
    // own, so writers are not held up. Records up to a position never change but by a trim.
    let reader = connect(&inner.path, &inner.config, false)?;
    let mut horizons = Vec::new();
    for (shard, limit) in limits.iter().enumerate() {
        let Some(limit) = *limit else { continue };
        if let Some(k) = keep_from(
            &reader,
            inner.stream_id,
            shard as i64,
            limit,
            retention_ms,
            event_time,
        )? {
            horizons.push((shard as i64, k));
        }
    }
    drop(reader);

    let mut conn = lock(&inner.writer);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let mut deleted = 0u64;
    for (shard, keep) in horizons {
        deleted += tx
            .prepare_cached("DELETE FROM records WHERE stream_id = ?1 AND shard = ?2 AND seq < ?3")
            .map_err(storage)?
            .execute(params![inner.stream_id, shard, keep])
            .map_err(storage)? as u64;
    }
    let kept: i64 = tx
        .query_row(
            "SELECT count(*) FROM records WHERE stream_id = ?1",
            [inner.stream_id],
            |r| r.get(0),
        )
        .map_err(storage)?;
    tx.commit().map_err(storage)?;
    if deleted > 0 {
        // Give freed pages back (a no-op unless auto_vacuum is incremental), and the WAL's.
        // (The pragma frees one page per step: step it to the end.)
        let mut vacuum = conn.prepare("PRAGMA incremental_vacuum").map_err(storage)?;
        let mut rows = vacuum.query([]).map_err(storage)?;
        while rows.next().map_err(storage)?.is_some() {}
        drop(rows);
        drop(vacuum);
        let _busy: Option<i64> = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .optional()
            .map_err(storage)?;
    }
    Ok(TrimReport {
        deleted,
        kept: u64::try_from(kept).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bikeshare_stream::{PutRecord, ShardId, StartPosition, StreamReader, StreamWriter, names};

    /// A record whose data is its event time in minutes.
    fn at(minute: i64) -> PutRecord {
        PutRecord::new("k", minute.to_string())
    }

    fn minutes(data: &[u8]) -> Option<Timestamp> {
        let m: i64 = std::str::from_utf8(data).ok()?.parse().ok()?;
        Some(Timestamp(m * 60_000))
    }

    async fn left(stream: &EmbeddedStream) -> Vec<String> {
        let mut c = stream
            .open(&ShardId::from_index(0), StartPosition::TrimHorizon)
            .await
            .unwrap();
        c.next_batch(1000)
            .await
            .unwrap()
            .records
            .iter()
            .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
            .collect()
    }

    async fn stream_of(dir: &std::path::Path, times: &[&str]) -> EmbeddedStream {
        std::fs::create_dir_all(dir).unwrap();
        let s = EmbeddedStream::open(dir.join("s.db"), names::EVENTS, 1)
            .await
            .unwrap();
        let recs: Vec<PutRecord> = times
            .iter()
            .map(|t| PutRecord::new("k", t.to_string()))
            .collect();
        s.put_records(&recs).await.unwrap();
        s
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn keeps_the_retention_behind_the_slowest_consumer_and_nothing_it_has_not_passed() {
        // Minutes 0, 30, ..., 300 at sequence numbers 1..=11.
        let (_dir, s) = crate::tests::fresh(1).await;
        let recs: Vec<PutRecord> = (0..=10).map(|i| at(i * 30)).collect();
        s.put_records(&recs).await.unwrap();
        let shard = ShardId::from_index(0).as_str().to_owned();

        // No consumer has checkpointed this shard: nothing goes.
        let none = BTreeMap::new();
        assert_eq!(
            s.trim_retained(Some(&none), HOUR, minutes)
                .await
                .unwrap()
                .deleted,
            0
        );
        // The slowest consumer passed seq 5 (minute 120): one hour before it stays (60, 90).
        let passed = BTreeMap::from([(shard.clone(), 5)]);
        let r = s.trim_retained(Some(&passed), HOUR, minutes).await.unwrap();
        assert_eq!(
            r,
            TrimReport {
                deleted: 2,
                kept: 9
            }
        );
        assert_eq!(left(&s).await[0], "60");
        // Records the consumer has not reached are kept whatever their age.
        let r = s
            .trim_retained(Some(&passed), Duration::ZERO, minutes)
            .await
            .unwrap();
        assert_eq!(r.deleted, 2, "{r:?}");
        assert_eq!(
            left(&s).await,
            ["120", "150", "180", "210", "240", "270", "300"]
        );
        // No checkpointed consumer: the head (minute 300) is the reference.
        let r = s.trim_retained(None, HOUR, minutes).await.unwrap();
        assert_eq!(r.kept, 3, "{r:?}");
        assert_eq!(left(&s).await, ["240", "270", "300"]);
        // A consumer resuming inside the trimmed part reads from the horizon; numbers go on.
        let mut c = s
            .open(
                &ShardId::from_index(0),
                StartPosition::AfterSequence(bikeshare_stream::SequenceNumber::from_u64(2)),
            )
            .await
            .unwrap();
        assert_eq!(
            c.next_batch(1).await.unwrap().records[0].data.as_ref(),
            b"240"
        );
        let out = s.put_records(&[at(330)]).await.unwrap();
        assert!(format!("{out:?}").contains("sequence: 12 "), "{out:?}");
    }

    #[tokio::test]
    async fn the_horizon_stops_at_the_first_recent_record_and_unreadable_times_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        // Out of order: minute 200 arrived before minute 10; "x" has no time.
        let s = stream_of(dir.path(), &["0", "x", "200", "10", "20", "300"]).await;
        let r = s.trim_retained(None, HOUR, minutes).await.unwrap();
        // Cutoff = 300 - 60 = 240: 0 and x go; 200 is older too and goes; 10 and 20 are
        // older still and go; 300 stays.
        assert_eq!((r.deleted, r.kept), (5, 1), "{r:?}");
        let s2 = stream_of(&dir.path().join("b"), &["0", "250", "10", "300"]).await;
        // 250 is recent: the horizon stops there, the older 10 after it stays (Kinesis-like).
        let r = s2.trim_retained(None, HOUR, minutes).await.unwrap();
        assert_eq!(r.deleted, 1);
        assert_eq!(left(&s2).await, ["250", "10", "300"]);
    }

    #[tokio::test]
    async fn a_trimmed_database_gives_its_pages_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = EmbeddedStream::open(&path, names::EVENTS, 1).await.unwrap();
        let pad = "p".repeat(4000);
        for batch in 0..20 {
            let recs: Vec<PutRecord> = (0..100)
                .map(|i| PutRecord::new("k", format!("{} {pad}", batch * 100 + i)))
                .collect();
            s.put_records(&recs).await.unwrap();
        }
        let size = || {
            std::fs::metadata(&path).unwrap().len()
                + std::fs::metadata(path.with_extension("db-wal"))
                    .map(|m| m.len())
                    .unwrap_or(0)
        };
        let before = size();
        assert!(before > 8_000_000, "{before}");
        fn first_word(data: &[u8]) -> Option<Timestamp> {
            let s = std::str::from_utf8(data).ok()?;
            minutes(s.split(' ').next()?.as_bytes())
        }
        let r = s
            .trim_retained(None, Duration::from_secs(60 * 60), first_word)
            .await
            .unwrap();
        assert_eq!(r.kept, 61);
        let after = size();
        let c = rusqlite::Connection::open(&path).unwrap();
        let q = |p: &str| -> i64 { c.query_row(p, [], |r| r.get(0)).unwrap() };
        assert!(
            after * 10 < before,
            "{before} -> {after} bytes; db {} wal {:?} auto_vacuum {} freelist {} pages {}",
            std::fs::metadata(&path).unwrap().len(),
            std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()),
            q("PRAGMA auto_vacuum"),
            q("PRAGMA freelist_count"),
            q("PRAGMA page_count")
        );
    }
}
