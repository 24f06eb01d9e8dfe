//! Killing the writer of an embedded stream mid-batch loses no acknowledged record and
//! duplicates none.
//!
//! The test re-runs its own binary as a child process (`child_writer`, ignored unless
//! [`CHILD_DB_ENV`] is set), which writes batches in a loop and prints the ids of each
//! acknowledged batch. The parent reads some acknowledgements, kills the child with SIGKILL
//! at a random point of the batch it is writing, reopens the database and checks it. Six
//! kills, on the same database, so each restart also recovers from the previous crash.

// Test helpers outside `#[test]` functions panic on failure like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;

use bikeshare_embedded::{Durability, EmbeddedConfig, EmbeddedStream};
use bikeshare_stream::{PutOutcome, PutRecord, StartPosition, StreamReader, StreamWriter, names};
use bikeshare_testkit::lines::line_channel;

const CHILD_DB_ENV: &str = "BIKESHARE_TEST_DURABILITY_DB";
const CHILD_RUN_ENV: &str = "BIKESHARE_TEST_DURABILITY_RUN";
const SHARDS: u32 = 2;
const BATCH: usize = 250;
/// Acknowledged batches the parent reads before each kill (of a new child each time).
const KILL_AFTER: [usize; 6] = [20, 40, 60, 80, 100, 150];

/// A record's data: its id, then padding to about 400 bytes.
fn payload(id: &str) -> String {
    format!("{id}|{}", "x".repeat(400 - id.len() - 1))
}

fn id_of(data: &[u8]) -> String {
    let s = std::str::from_utf8(data).unwrap();
    s.split('|').next().unwrap().to_owned()
}

#[test]
#[ignore = "child process of writer_killed_mid_batch_loses_and_duplicates_nothing"]
fn child_writer() {
    let Some(db) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let run = std::env::var(CHILD_RUN_ENV).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = EmbeddedConfig {
            durability: Durability::Full,
            ..Default::default()
        };
        let stream = EmbeddedStream::open_with(&db, names::EVENTS, Some(SHARDS), config)
            .await
            .unwrap();
        let mut out = std::io::stdout().lock();
        for batch in 0.. {
            let ids: Vec<String> = (0..BATCH)
                .map(|i| format!("r{run}-b{batch}-i{i}"))
                .collect();
            let records: Vec<PutRecord> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| PutRecord::new(format!("system-{}", i % 7), payload(id)))
                .collect();
            let outcomes = stream.put_records(&records).await.unwrap();
            assert!(
                outcomes
                    .iter()
                    .all(|o| matches!(o, PutOutcome::Written { .. }))
            );
            writeln!(out, "ACK {}", ids.join(" ")).unwrap();
            out.flush().unwrap();
        }
    });
}

/// The ids of an acknowledgement line. The test harness may print `test child_writer ... `
/// on the same line before the first one.
fn acked_ids(line: &str) -> Option<impl Iterator<Item = String>> {
    let (_, ids) = line.split_once("ACK ")?;
    Some(
        ids.split(' ')
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

/// Runs the child until it acknowledged `kill_after` batches, then kills it; returns the ids
/// it acknowledged.
fn run_child_and_kill(db: &std::path::Path, run: usize, kill_after: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stream_durability::child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, db)
        .env(CHILD_RUN_ENV, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Lines arrive through a thread, so a stuck child fails the test instead of hanging it.
    let rx = line_channel(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut batches = 0;
    while batches < kill_after {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                if let Some(ids) = acked_ids(&line) {
                    acked.extend(ids);
                    batches += 1;
                }
            }
            other => {
                let _ = child.kill();
                panic!(
                    "child stopped after {batches} batches ({other:?}), status {:?}",
                    child.wait()
                );
            }
        }
    }
    // The child is writing its next batch (a few milliseconds): kill it at a random point
    // of it. SIGKILL on unix.
    std::thread::sleep(Duration::from_micros(rand::rng().random_range(0..8_000)));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child should have been killed: {status:?}"
    );
    // Acknowledgements printed after the last one read but before the kill count too.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        if let Some(ids) = acked_ids(&line) {
            acked.extend(ids);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_mid_batch_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("streams.db");
    let mut acked_total: Vec<String> = Vec::new();
    for (run, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let db2 = db.clone();
        let acked = tokio::task::spawn_blocking(move || run_child_and_kill(&db2, run, kill_after))
            .await
            .unwrap();
        assert!(acked.len() >= kill_after * BATCH);
        acked_total.extend(acked);

        let stream = EmbeddedStream::open_existing(&db, names::EVENTS)
            .await
            .unwrap();
        let mut present: Vec<String> = Vec::new();
        for shard in stream.list_shards().await.unwrap() {
            let mut cursor = stream
                .open(&shard.id, StartPosition::TrimHorizon)
                .await
                .unwrap();
            let mut last_seq = 0;
            loop {
                let batch = cursor.next_batch(1_000).await.unwrap();
                if batch.records.is_empty() {
                    break;
                }
                for r in batch.records {
                    let seq = r.sequence.as_u64().unwrap();
                    assert!(
                        seq > last_seq,
                        "sequence numbers must increase in {}",
                        shard.id
                    );
                    last_seq = seq;
                    present.push(id_of(&r.data));
                }
            }
        }
        let unique: HashSet<&String> = present.iter().collect();
        assert_eq!(
            unique.len(),
            present.len(),
            "run {run}: duplicate ids in the stream"
        );
        let missing: Vec<&String> = acked_total
            .iter()
            .filter(|id| !unique.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "run {run}: {} acknowledged ids lost: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );

        // Batches are atomic: every batch in the stream is there whole (the killed one is
        // there whole or not at all).
        let mut per_batch: HashMap<&str, usize> = HashMap::new();
        for id in &present {
            let batch = id.rsplit_once("-i").unwrap().0;
            *per_batch.entry(batch).or_default() += 1;
        }
        let partial: Vec<_> = per_batch.iter().filter(|(_, n)| **n != BATCH).collect();
        assert!(partial.is_empty(), "run {run}: partial batches {partial:?}");
        // Nothing beyond the acknowledged batches but, at most, the one being written at
        // each kill.
        assert!(
            present.len() <= acked_total.len() + (run + 1) * BATCH,
            "run {run}: records nobody wrote"
        );
    }
}
