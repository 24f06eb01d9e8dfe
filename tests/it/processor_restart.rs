//! Kill-and-restore equivalence: the processor SIGKILLed at random points and restarted from
//! its checkpoint emits the same predictions and labels (compared by id and content) as an
//! uninterrupted run over the same input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{History, ok_with_cpu_time, run_with_kills, stream_records};

/// Output records of `stream`, keyed by their id field; duplicates must be identical.
fn outputs(data_dir: &Path, stream: &str, id_field: &str) -> BTreeMap<String, serde_json::Value> {
    support::by_id(stream_records(data_dir, stream), stream, id_field)
}

#[test]
fn sigkilled_processor_restarts_from_its_checkpoint_with_identical_outputs() {
    // Big enough that processing, not start-up, is most of a run (the calibrated city reports
    // less often per station than the old one: 80 stations × 8 h was 1,708 records, and a
    // run could finish before its second kill).
    let history = History::simulate(240, 11, "2026-03-02T06:00:00Z", "2026-03-02T16:00:00Z");
    let straight = history.replayed("straight");
    let killed = history.replayed("killed");

    // Kill points are fractions of the uninterrupted run's CPU time, so they land mid-run
    // however fast and however busy this machine is.
    let (_, full_run) = ok_with_cpu_time(&straight, &["process", "--until-caught-up"]);

    // Kill at pseudo-random points until a run finishes by itself.
    let kills = run_with_kills(
        &killed,
        &["process", "--until-caught-up"],
        full_run,
        0x9e37_79b9_7f4a_7c15,
    );
    assert!(
        kills >= 2,
        "the processor was killed only {kills} times: the input is too small to test restarts"
    );

    let (p1, p2) = (
        outputs(&straight, "predictions", "prediction_id"),
        outputs(&killed, "predictions", "prediction_id"),
    );
    let (l1, l2) = (
        outputs(&straight, "labels", "prediction_id"),
        outputs(&killed, "labels", "prediction_id"),
    );
    assert!(
        p1.len() > 1000 && l1.len() > 500,
        "too few outputs: {} predictions, {} labels",
        p1.len(),
        l1.len()
    );
    assert_eq!(p1.len(), p2.len(), "predictions after {kills} kills");
    assert!(p1 == p2, "predictions differ after {kills} kills");
    assert_eq!(l1.len(), l2.len(), "labels after {kills} kills");
    assert!(l1 == l2, "labels differ after {kills} kills");
}

/// A replay killed part-way and run again publishes its first records twice (the stream is
/// at-least-once, as Kinesis): the processor drops the second copies, so the predictions and
/// labels are those of one replay, by id, content and count.
#[test]
fn a_replay_interrupted_and_run_again_changes_no_prediction_or_label() {
    let history = History::simulate(120, 5, "2026-03-02T06:00:00Z", "2026-03-02T12:00:00Z");
    let once = history.replayed("once");
    let again = history.dir().join("again");
    let args = [
        "replay",
        "--format",
        "jsonl",
        history.file().to_str().unwrap(),
    ];
    // Killed once it has published part of its records (its stream has grown by a quarter of
    // a whole replay's: a replay reads its whole file before it publishes), then run again to
    // the end: a replay starts over, it does not resume. The killed run is paced (its six
    // hours in about two seconds; event time decides every output, so pacing changes none):
    // as fast as possible, a loaded machine could let it finish between two looks.
    let whole = support::stream_bytes(&once);
    let base = support::stream_bytes(&again);
    let paced = [&args[..], &["--speed", "10800"]].concat();
    assert!(
        support::run_and_kill_when(&again, &paced, |_| {
            support::stream_bytes(&again) >= base + whole / 4
        }),
        "the replay was never interrupted"
    );
    support::ok(support::bikeshare(&again).args(args));
    let published = |d: &Path| stream_records(d, "events").len();
    assert!(
        published(&again) > published(&once),
        "the second replay published no record twice"
    );
    for d in [&once, &again] {
        support::ok(support::bikeshare(d).args(["process", "--until-caught-up"]));
    }
    for (stream, id) in [
        ("predictions", "prediction_id"),
        ("labels", "prediction_id"),
    ] {
        let (a, b) = (outputs(&once, stream, id), outputs(&again, stream, id));
        assert!(a.len() > 300, "{stream}: only {}", a.len());
        assert!(a == b, "{stream} differ after a replay ran again");
        assert_eq!(
            stream_records(&once, stream).len(),
            stream_records(&again, stream).len(),
            "{stream}: records published"
        );
    }
}
