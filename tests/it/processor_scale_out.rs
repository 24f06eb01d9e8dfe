//! Scale-out on Kinesis: two `bikeshare process` instances share a 4-shard kinesis-mock
//! stream, with their shard leases in DynamoDB and their per-shard checkpoints in S3 (both
//! moto). One is SIGKILLed mid-run; the other takes its leases once they expire, resumes
//! those shards from their checkpoints and finishes. The union of both instances' outputs
//! equals an uninterrupted single run's outputs, compared by id and content.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bikeshare_stream::{shard_for_key, uniform_ranges};
use bikeshare_testkit::lines::line_channel;
use support::{bikeshare, emulator, ok, replay, stream_records};

const SHARDS: u32 = 4;

/// Output records parsed from JSON lines, keyed by `id_field`; duplicates (re-emitted after a
/// take-over) must be identical.
fn by_id(
    lines: impl IntoIterator<Item = serde_json::Value>,
    what: &str,
    id_field: &str,
) -> BTreeMap<String, serde_json::Value> {
    let mut map = BTreeMap::new();
    for v in lines {
        let id = v[id_field].as_str().unwrap().to_owned();
        if let Some(prev) = map.insert(id.clone(), v.clone()) {
            assert_eq!(prev, v, "{what}: {id} re-emitted with different content");
        }
    }
    map
}

/// The environment of every command of the Kinesis run.
struct Aws {
    kinesis: String,
    moto: String,
    name: String,
}

impl Aws {
    fn command(&self, data_dir: &Path) -> Command {
        let mut c = bikeshare(data_dir);
        c.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("BIKESHARE_STREAM__BACKEND", "kinesis")
            .env("BIKESHARE_STREAM__KINESIS__ENDPOINT_URL", &self.kinesis)
            .env("BIKESHARE_STREAM__KINESIS__REGION", "us-east-1")
            .env(
                "BIKESHARE_STREAM__KINESIS__STREAM_PREFIX",
                format!("{}-", self.name),
            )
            .env("BIKESHARE_STREAM__KINESIS__CREATE_MISSING", "true")
            .env(
                "BIKESHARE_STREAM__KINESIS__CREATE_SHARDS",
                SHARDS.to_string(),
            )
            .env("BIKESHARE_RUNNER__LEASES__STORE", "dynamodb")
            .env("BIKESHARE_RUNNER__LEASES__TABLE", &self.name)
            .env("BIKESHARE_RUNNER__LEASES__ENDPOINT_URL", &self.moto)
            .env("BIKESHARE_RUNNER__LEASES__CREATE_TABLE", "true")
            .env("BIKESHARE_RUNNER__LEASES__DURATION_MS", "3000")
            .env("BIKESHARE_RUNNER__CHECKPOINTS__STORE", "s3")
            .env("BIKESHARE_RUNNER__CHECKPOINTS__S3__BUCKET", &self.name)
            .env(
                "BIKESHARE_RUNNER__CHECKPOINTS__S3__ENDPOINT_URL",
                &self.moto,
            )
            .env("BIKESHARE_RUNNER__CHECKPOINTS__S3__CREATE_BUCKET", "true")
            .env("BIKESHARE_RUNNER__CHECKPOINT_INTERVAL_MS", "400")
            .env("BIKESHARE_RUNNER__BATCH", "20");
        c
    }

    fn outputs(
        &self,
        dir: &Path,
        stream: &str,
        id_field: &str,
    ) -> BTreeMap<String, serde_json::Value> {
        let out = ok(self
            .command(dir)
            .args(["tail", "--stream", stream, "--from-start"]));
        by_id(
            out.lines().map(|l| serde_json::from_str(l).unwrap()),
            stream,
            id_field,
        )
    }
}

/// A running `process` instance whose stderr lines arrive on a channel.
struct Instance {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Instance {
    fn start(aws: &Aws, dir: &Path, owner: &str) -> Self {
        let mut child = aws
            .command(dir)
            .env("BIKESHARE_RUNNER__LEASES__OWNER", owner)
            .env(
                "RUST_LOG",
                "warn,bikeshare_runner=info,bikeshare_stream::consumer=info,bikeshare_stream::lease=info",
            )
            .args(["process", "--until-caught-up"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_channel(child.stderr.take().unwrap());
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Collects log lines until `until` holds for one of them, or `timeout` passes.
    fn wait_for(&mut self, timeout: Duration, until: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    let hit = until(&line);
                    self.log.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    }

    /// The shards of the latest "leases changed" line.
    fn held(&self) -> BTreeSet<String> {
        self.log
            .iter()
            .rev()
            .find(|l| l.contains("leases changed"))
            .map(|l| shard_ids(l))
            .unwrap_or_default()
    }
}

fn shard_ids(line: &str) -> BTreeSet<String> {
    line.match_indices("shardId-")
        .map(|(i, _)| line[i..i + 20].to_owned())
        .collect()
}

/// A simulated history of one system (20 stations, 5 hours) as envelope JSON lines.
fn history(dir: &Path, system: &str, seed: u64) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("history.jsonl");
    ok(bikeshare(dir)
        .env("BIKESHARE_SIMULATOR__CITY__SYSTEM_ID", system)
        .args([
            "simulate",
            "--backfill",
            path.to_str().unwrap(),
            "--station-count",
            "20",
            "--seed",
            &seed.to_string(),
            "--start",
            "2026-03-02T06:00:00Z",
            "--until",
            "2026-03-02T11:00:00Z",
        ]));
    path
}

#[test]
fn two_processors_share_kinesis_shards_and_one_takes_over_after_a_sigkill() {
    let test = "processor_scale_out";
    let Some(kinesis) = emulator("BIKESHARE_TEST_KINESIS_ENDPOINT", test) else {
        return;
    };
    let Some(moto) = emulator("BIKESHARE_TEST_MOTO_ENDPOINT", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // One system per shard: the partition key of `events` is the system id.
    let ranges = uniform_ranges(SHARDS);
    let mut systems: Vec<Option<String>> = vec![None; SHARDS as usize];
    for i in 0.. {
        let id = format!("city-{i}");
        let slot = &mut systems[shard_for_key(&ranges, &id)];
        if slot.is_none() {
            *slot = Some(id);
        }
        if systems.iter().all(Option::is_some) {
            break;
        }
    }
    let systems: Vec<String> = systems.into_iter().map(Option::unwrap).collect();
    let histories: Vec<_> = systems
        .iter()
        .enumerate()
        .map(|(i, system)| history(&dir.path().join(system), system, 20 + i as u64))
        .collect();

    // The uninterrupted reference: one instance, embedded stream.
    let reference = dir.path().join("reference");
    for h in &histories {
        replay(&reference, h);
    }
    ok(bikeshare(&reference).args(["process", "--until-caught-up"]));
    let ref_predictions = by_id(
        stream_records(&reference, "predictions"),
        "reference",
        "prediction_id",
    );
    let ref_labels = by_id(
        stream_records(&reference, "labels"),
        "reference",
        "prediction_id",
    );
    assert!(
        ref_predictions.len() > 1000 && ref_labels.len() > 500,
        "too few outputs: {} predictions, {} labels",
        ref_predictions.len(),
        ref_labels.len()
    );

    // The same events on Kinesis.
    let aws = Aws {
        kinesis,
        moto,
        name: format!("scale-{}", std::process::id()),
    };
    let kdir = dir.path().join("kinesis");
    for h in &histories {
        ok(aws
            .command(&kdir)
            .args(["replay", "--format", "jsonl", h.to_str().unwrap()]));
    }

    // a starts alone and takes every lease; b arrives and steals until they hold two each.
    let mut a = Instance::start(&aws, &kdir.join("a"), "a");
    assert!(
        a.wait_for(Duration::from_secs(60), |l| l.contains("leases changed")),
        "a never took a lease: {:#?}",
        a.log
    );
    let mut b = Instance::start(&aws, &kdir.join("b"), "b");
    assert!(
        b.wait_for(Duration::from_secs(60), |l| l.contains("leases changed")
            && shard_ids(l).len() == 2),
        "b never held two shards ({:?}): {:#?}\na: {:#?}",
        b.child.try_wait(),
        b.log,
        a.log
    );
    // Let a checkpoint its shards at least once more, then kill it mid-run.
    a.wait_for(Duration::from_secs(2), |_| false);
    let a_held = a.held();
    assert_eq!(a_held.len(), 2, "a: {:#?}", a.log);
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "a finished before it could be killed: the input is too small"
    );
    a.child.kill().unwrap(); // SIGKILL: no release, no final checkpoint
    a.child.wait().unwrap();

    // b takes a's shards after their leases expire and resumes them from a's checkpoints.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        b.wait_for(Duration::from_millis(200), |_| false);
        if let Some(status) = b.child.try_wait().unwrap() {
            b.wait_for(Duration::from_secs(2), |_| false);
            break status;
        }
        if Instant::now() > deadline {
            b.child.kill().unwrap();
            panic!("b did not finish within 300 s: {:#?}", b.log);
        }
    };
    assert!(status.success(), "b failed: {:#?}", b.log);
    for shard in &a_held {
        assert!(
            b.log
                .iter()
                .any(|l| l.contains("resuming from its checkpoint") && l.contains(shard.as_str())),
            "b did not resume {shard} from a's checkpoint: {:#?}",
            b.log
        );
    }
    assert_eq!(b.held().len(), SHARDS as usize, "b: {:#?}", b.log);

    let predictions = aws.outputs(&kdir, "predictions", "prediction_id");
    let labels = aws.outputs(&kdir, "labels", "prediction_id");
    assert_eq!(predictions.len(), ref_predictions.len(), "predictions");
    assert!(predictions == ref_predictions, "predictions differ");
    assert_eq!(labels.len(), ref_labels.len(), "labels");
    assert!(labels == ref_labels, "labels differ");
}
