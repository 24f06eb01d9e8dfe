//! Scale-out on Kinesis: two `bikeshare process` instances share a 4-shard kinesis-mock
//! stream, with their shard leases in DynamoDB and their per-shard checkpoints in S3 (both
//! moto). One is SIGKILLed mid-run; the other takes its leases once they expire, resumes
//! those shards from their checkpoints and finishes. The union of both instances' outputs
//! equals an uninterrupted single run's outputs, compared by id and content.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, KillOnDrop};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bikeshare_testkit::lines::line_channel;
use support::{OnEmulators, TestEnv, bikeshare, by_id, ok, replay, stream_records};

const SHARDS: u32 = 4;

/// The environment of every command of the Kinesis run: the emulators' deployment, in
/// batches of 20.
struct Aws(OnEmulators);

impl Aws {
    fn command(&self, data_dir: &Path) -> Command {
        let mut c = self.0.command(data_dir);
        c.env("BIKESHARE_RUNNER__BATCH", "20");
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

/// A running `process` instance whose stderr lines arrive on a channel; killed when dropped,
/// so a failed assertion leaves no process behind.
struct Instance {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Instance {
    fn start(aws: &Aws, dir: &Path, owner: &str) -> Self {
        let mut child = KillOnDrop(
            aws.command(dir)
            .env("BIKESHARE_RUNNER__LEASES__OWNER", owner)
            .env(
                "RUST_LOG",
                "warn,bikeshare_runner=info,bikeshare_stream::consumer=info,bikeshare_stream::lease=info",
            )
            .args(["process", "--until-caught-up"])
            .spawn_reading_stderr(),
        );
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

#[test]
fn two_processors_share_kinesis_shards_and_one_takes_over_after_a_sigkill() {
    let test = "processor_scale_out";
    let vars = [
        "BIKESHARE_TEST_KINESIS_ENDPOINT",
        "BIKESHARE_TEST_MOTO_ENDPOINT",
    ];
    let Some([kinesis, moto]) = support::emulators(test, vars) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // One system per shard (20 stations, 5 hours each): the partition key of `events` is the
    // system id.
    let histories: Vec<_> = support::one_system_per_shard(SHARDS)
        .iter()
        .enumerate()
        .map(|(i, system)| {
            let span = ("2026-03-02T06:00:00Z", "2026-03-02T11:00:00Z");
            let dir = dir.path().join(system);
            support::simulated_city_history(&dir, system, 20, 20 + i as u64, span)
        })
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
    let aws = Aws(OnEmulators {
        kinesis,
        moto,
        name: format!("scale-{}", std::process::id()),
        shards: SHARDS,
    });
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
