//! The lake after SIGKILLs: the processor and the archiver, killed at random points (mid-hour
//! of event time, mid-epoch) and restarted from their checkpoints, leave exactly the rows of
//! an uninterrupted run in every dataset — no duplicate, no missing row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::fmt::Debug;
use std::path::Path;

use bikeshare_lake::{CuratedStatus, LakeRecord};
use bikeshare_types::contracts::{Envelope, FeatureVector, Label, Prediction};
use support::{History, bikeshare, lake_rows, ok, ok_with_cpu_time, run_with_kills};

/// Every row of `T`'s dataset, as sorted debug strings (a multiset: duplicates stay).
fn rows<T: LakeRecord + Debug>(data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = lake_rows::<T>(data_dir)
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    v.sort();
    v
}

/// Every line of Model Monitor's data capture and ground truth files, sorted (a multiset).
fn monitor_lines(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join("lake/model-monitor")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(data_dir)
                    .unwrap()
                    .parent()
                    .unwrap()
                    .to_owned();
                for l in std::fs::read_to_string(&p).unwrap().lines() {
                    out.push(format!("{} {l}", rel.display()));
                }
            }
        }
    }
    out.sort();
    out
}

fn same<T: LakeRecord + Debug>(straight: &Path, killed: &Path, min: usize) {
    let (a, b) = (rows::<T>(straight), rows::<T>(killed));
    let name = T::DATASET;
    assert!(
        a.len() >= min,
        "{name}: only {} rows in the straight run",
        a.len()
    );
    let mut dedup = b.clone();
    dedup.dedup();
    assert_eq!(
        dedup.len(),
        b.len(),
        "{name}: duplicate rows after restarts"
    );
    assert_eq!(a.len(), b.len(), "{name}: row count after restarts");
    assert!(a == b, "{name}: rows differ after restarts");
}

#[test]
fn sigkilled_writers_leave_every_row_exactly_once() {
    let history = History::simulate(300, 7, "2026-03-02T06:10:00Z", "2026-03-02T15:40:00Z");
    let straight = history.replayed("straight");
    let killed = history.replayed("killed");

    let mut kills = 0;
    for (args, seed) in [
        (&["process", "--until-caught-up"][..], 0x9e37_79b9_7f4a_7c15),
        (
            &["lake", "write", "--until-caught-up"][..],
            0x2545_f491_4f6c_dd1d,
        ),
    ] {
        let (_, full_run) = ok_with_cpu_time(&straight, args);
        // First a crash in the window between an epoch's files and its checkpoint, with long
        // epochs (they span hours of event time, so the replay's shorter epochs cannot simply
        // overwrite them by name)...
        let crashed = bikeshare(&killed)
            .args(args)
            .env("BIKESHARE_LAKE_ABORT_AFTER_EPOCH", "1")
            .env("BIKESHARE_RUNNER__CHECKPOINT_INTERVAL_MS", "400")
            .env("BIKESHARE_LAKE__CHECKPOINT_INTERVAL_MS", "60")
            .output()
            .unwrap();
        assert!(
            !crashed.status.success(),
            "{args:?} did not hit the fail point: {}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        // ...then SIGKILLs at random points.
        let k = run_with_kills(&killed, args, full_run, seed);
        assert!(
            k >= 2,
            "{args:?} was killed only {k} times: input too small"
        );
        eprintln!("{args:?}: {k} kills");
        kills += k;
    }
    eprintln!("{kills} kills");

    same::<Prediction>(&straight, &killed, 1000);
    same::<Label>(&straight, &killed, 500);
    same::<FeatureVector>(&straight, &killed, 1000);
    same::<Envelope>(&straight, &killed, 1000);
    same::<CuratedStatus>(&straight, &killed, 1000);
    // Model Monitor's capture and ground truth ride the same epochs: once each, too.
    let (a, b) = (monitor_lines(&straight), monitor_lines(&killed));
    assert!(a.len() >= 1500, "only {} Model Monitor lines", a.len());
    assert_eq!(a.len(), b.len(), "Model Monitor lines after restarts");
    assert!(a == b, "Model Monitor lines differ after restarts");

    // The lake holds what the streams hold: every prediction the processor published.
    let published = support::stream_records(&straight, "predictions").len();
    assert_eq!(rows::<Prediction>(&straight).len(), published);
    // `bikeshare lake ls` reports the same counts.
    let ls = ok(bikeshare(&killed).args(["lake", "ls", "--dataset", "predictions"]));
    assert!(
        ls.contains(&format!("{} rows", rows::<Prediction>(&killed).len())),
        "{ls}"
    );
}
