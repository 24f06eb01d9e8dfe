//! `bikeshare backfill` writes Parquet rows equal to its CSV rows, `train` reads them, and a
//! recording without a time zone is refused before any row is written (issue 15).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use bikeshare_models::dataset::TrainingData;
use bikeshare_models::rows_parquet::read_training_data;
use support::{History, backfill, bikeshare, ok};

#[test]
fn parquet_rows_equal_csv_rows_and_train_reads_them() {
    let history = History::simulate(40, 3, "2026-04-07T10:00:00Z", "2026-04-07T18:00:00Z");
    let dir = history.dir();
    let csv = dir.join("rows.csv");
    let parquet = dir.join("rows.parquet");
    for out in [&csv, &parquet] {
        ok(&mut backfill(dir, "jsonl", history.file(), out));
    }
    let from_csv = TrainingData::from_backfill_csv(
        std::io::BufReader::new(std::fs::File::open(&csv).unwrap()),
        "rows.csv",
        30,
    )
    .unwrap();
    let from_parquet = read_training_data(&parquet, 30).unwrap();
    assert!(from_csv.len() > 3000, "{} rows", from_csv.len());
    assert_eq!(from_parquet.len(), from_csv.len());
    assert_eq!(from_parquet.schema_id(), from_csv.schema_id());
    for i in 0..from_csv.len() {
        assert_eq!(from_parquet.meta(i), from_csv.meta(i), "row {i}");
        assert_eq!(from_parquet.station_id(i), from_csv.station_id(i));
        let (a, b) = (from_parquet.row(i), from_csv.row(i));
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "row {i}: {a:?} vs {b:?}"
        );
    }
    let model = dir.join("model");
    ok(bikeshare(dir).args([
        "train",
        "--rows",
        parquet.to_str().unwrap(),
        "--max-rounds",
        "5",
        "-o",
        model.to_str().unwrap(),
    ]));
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["data"]["rows"], from_csv.len());
    // Eight hours are too few for whole weeks: fractions of the span, the horizon as gap.
    assert_eq!(card["split"]["method"], "fractions");
    assert_eq!(card["split"]["gap_minutes"], 30);
    for t in ["new_empty", "new_full"] {
        assert!(
            card["evaluation"]["model"][t]["n"].as_u64().unwrap() > 0,
            "{t}"
        );
    }
    assert_eq!(card["evaluation"]["logistic"]["scorer"]["name"], "logistic");
}

#[test]
fn a_recording_without_a_time_zone_is_refused_and_leaves_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("station_status.csv");
    std::fs::write(
        &log,
        "station_id,num_bikes_available,num_docks_available,is_installed,is_renting,is_returning,last_reported\n\
         1,3,7,1,1,1,1609477200\n1,2,8,1,1,1,1609477800\n",
    )
    .unwrap();
    let rows = dir.path().join("rows.parquet");
    let out = backfill(dir.path(), "bluebikes", &log, &rows)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--time-zone"), "{stderr}");
    assert!(!rows.exists(), "no rows file is left behind");
    ok(backfill(dir.path(), "bluebikes", &log, &rows).args(["--time-zone", "America/New_York"]));
    assert!(rows.exists());
}
