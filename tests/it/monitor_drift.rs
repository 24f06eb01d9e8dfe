//! `bikeshare monitor`: a baseline of two hours of feature rows, then a check of a third hour
//! drawn the same way (quiet, exit 0 with --fail-on-violations) and of a fourth hour where
//! one feature moved (flagged: exit 3, a baseline_drift_check violation for that feature in
//! constraint_violations.json, and no other feature flagged).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use bikeshare_lake::staging::Staging;
use bikeshare_lake::{EpochWriter, LakeConfig, open_store};
use bikeshare_stream_processor::{FeatureSchema, ProcessorConfig};
use bikeshare_types::contracts::FeatureVector;
use bikeshare_types::splitmix::SplitMix64;
use bikeshare_types::{StationId, SystemId, Timestamp};

const T0: i64 = 1_775_541_600_000; // 2026-04-07T06:00:00Z

/// One hour of rows (a row a minute for 40 stations); feature `shifted` moved by `by`.
fn hour(
    schema: &FeatureSchema,
    h: i64,
    rng: &mut SplitMix64,
    shifted: usize,
    by: f32,
) -> Vec<FeatureVector> {
    let mut rows = Vec::new();
    for m in 0..60 {
        for s in 0..40 {
            let values = (0..schema.len())
                .map(|f| {
                    let v = rng.unit_f32() * 10.0 + f as f32;
                    Some(if f == shifted { v + by } else { v })
                })
                .collect();
            rows.push(FeatureVector {
                system_id: SystemId::new("sim"),
                station_id: StationId::new(format!("S{s:03}")),
                as_of: Timestamp(T0 + h * Timestamp::HOUR_MS + m * 60_000),
                schema_id: schema.id().clone(),
                values,
            });
        }
    }
    rows
}

#[tokio::test]
async fn monitor_flags_a_shifted_feature_and_stays_quiet_on_an_unshifted_hour() {
    let dir = tempfile::tempdir().unwrap();
    let schema = FeatureSchema::current(&ProcessorConfig::default().window_minutes);
    let shifted = 3;
    let store = open_store(&LakeConfig::default(), dir.path()).unwrap();
    let writer = EpochWriter::new(store, "processor");
    writer.recover(0).await.unwrap();
    let mut rng = SplitMix64::new(7);
    for (epoch, h, by) in [(1, 0, 0.0), (2, 1, 0.0), (3, 2, 0.0), (4, 3, 8.0)] {
        let mut s = Staging::default();
        s.features.push(hour(&schema, h, &mut rng, shifted, by));
        writer.commit(epoch, s).await.unwrap();
    }
    let at = |h: i64| Timestamp(T0 + h * Timestamp::HOUR_MS).to_rfc3339();
    let base = dir.path().join("baseline");
    let out = support::ok(support::bikeshare(dir.path()).args([
        "monitor",
        "baseline",
        "--until",
        &at(2),
        "--output",
        base.to_str().unwrap(),
    ]));
    assert!(out.is_empty(), "{out}");
    assert!(base.join("statistics.json").is_file());
    assert!(base.join("constraints.json").is_file());

    // `monitor check` against the baseline from `since`, failing on violations.
    let monitor_check = |since: i64| {
        let mut c = support::bikeshare(dir.path());
        c.args(["monitor", "check", "--baseline", base.to_str().unwrap()])
            .args(["--since", &at(since), "--fail-on-violations"]);
        c
    };
    let check = |from: i64, to: i64, name: &str| {
        let out_dir = dir.path().join(name);
        let o = monitor_check(from)
            .args(["--until", &at(to), "--output", out_dir.to_str().unwrap()])
            .output()
            .unwrap();
        let file = std::fs::read(out_dir.join("constraint_violations.json")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&file).unwrap();
        (
            o.status.code(),
            v,
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };

    let (code, v, stdout) = check(2, 3, "same");
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
    assert!(
        stdout.starts_with("2400 rows checked, 0 violations"),
        "{stdout}"
    );

    // A range with no rows is an error, not a quiet "no violations".
    let empty = monitor_check(10).output().unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no feature rows"));

    let (code, v, stdout) = check(3, 4, "moved");
    assert_eq!(code, Some(3), "{stdout}");
    let violations = v["violations"].as_array().unwrap();
    let name = schema.names().nth(shifted).unwrap();
    assert_eq!(violations.len(), 1, "{v}");
    assert_eq!(violations[0]["feature_name"], name);
    assert_eq!(
        violations[0]["constraint_check_type"],
        "baseline_drift_check"
    );
}
