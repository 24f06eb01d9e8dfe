//! Backfill equals online: `bikeshare backfill` over a history writes, for every prediction
//! the online processor labelled, exactly the features and label the online processor
//! computed (plus the last few predictions, which online labels once newer data arrives).
//! A live processor with the update trigger (on by default) publishes a report's row when it
//! arrives and, when the on-time row differs, a correction with the same id later in the
//! stream: the comparison reads the last row of each prediction, as every consumer does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use support::{bikeshare, ok, replay, simulated_history, stream_records};

type Key = (String, i64);
type Row = (Vec<Option<f32>>, (bool, bool));

fn parse_f32(s: &str) -> Option<f32> {
    (!s.is_empty()).then(|| s.parse::<f32>().unwrap())
}

#[test]
fn backfill_rows_are_the_online_features_with_the_online_labels() {
    let dir = tempfile::tempdir().unwrap();
    let history = simulated_history(
        dir.path(),
        60,
        5,
        // 06:00 to 12:00 in the city: the morning rush (trucks clear the night's stockouts).
        "2026-04-07T10:00:00Z",
        "2026-04-07T16:00:00Z",
    );
    let online = dir.path().join("online");
    replay(&online, &history);
    ok(bikeshare(&online).args(["process", "--until-caught-up", "--features"]));

    let key = |v: &serde_json::Value| -> Key {
        let t = bikeshare_types::Timestamp::parse_rfc3339(v["as_of"].as_str().unwrap()).unwrap();
        (v["station_id"].as_str().unwrap().to_owned(), t.millis())
    };
    // The last row of each prediction (the stream keeps a station's rows in order).
    let mut features: BTreeMap<Key, Vec<Option<f32>>> = BTreeMap::new();
    let mut online_schema = BTreeSet::new();
    for v in stream_records(&online, "features") {
        online_schema.insert(v["schema_id"].as_str().unwrap().to_owned());
        let values = v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect();
        features.insert(key(&v), values);
    }
    let labels: BTreeMap<Key, (bool, bool)> = stream_records(&online, "labels")
        .iter()
        .map(|v| {
            (
                key(v),
                (
                    v["went_empty"].as_bool().unwrap(),
                    v["went_full"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert!(labels.len() > 1000, "only {} labels online", labels.len());

    let csv_path = dir.path().join("rows.csv");
    ok(bikeshare(dir.path()).args([
        "backfill",
        "--format",
        "jsonl",
        history.to_str().unwrap(),
        "-o",
        csv_path.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = text.lines();
    // Backfill's rows carry the schema the online processor used.
    let online_schema = Vec::from_iter(online_schema);
    assert_eq!(online_schema.len(), 1, "{online_schema:?}");
    assert_eq!(
        lines.next().unwrap(),
        format!("# feature_schema_id={}", online_schema[0])
    );
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let first_feature = header.iter().position(|h| *h == "bikes").unwrap();
    let mut rows: BTreeMap<Key, Row> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), header.len());
        let k = (f[1].to_owned(), f[2].parse().unwrap());
        let values = f[first_feature..].iter().map(|s| parse_f32(s)).collect();
        rows.insert(k, (values, (f[5] == "1", f[6] == "1")));
    }

    // Online, the watermark trails the newest event by the lateness; backfill reaches the end
    // of the history and labels the last few predictions too. Everything online is in the
    // backfill, and the extra rows are all newer than every online label.
    let only_online: Vec<&Key> = labels
        .keys()
        .filter(|k| !rows.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        only_online.is_empty(),
        "labelled online but missing from the backfill: {only_online:?}"
    );
    let newest_online = labels.keys().map(|k| k.1).max().unwrap();
    let extras: Vec<&Key> = rows.keys().filter(|k| !labels.contains_key(*k)).collect();
    assert!(
        extras.iter().all(|k| k.1 > newest_online),
        "backfill-only rows must be at the end of the history: {:?}",
        extras
            .iter()
            .filter(|k| k.1 <= newest_online)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        extras.len() * 20 < rows.len(),
        "{} of {} rows only in the backfill",
        extras.len(),
        rows.len()
    );
    let mut positives = 0;
    for (k, (values, label)) in rows.iter().filter(|(k, _)| labels.contains_key(*k)) {
        let online_values = features
            .get(k)
            .unwrap_or_else(|| panic!("no online features for {k:?}"));
        assert_eq!(values, online_values, "features of {k:?}");
        assert_eq!(label, &labels[k], "label of {k:?}");
        positives += usize::from(label.0 || label.1);
    }
    assert!(
        positives > 0,
        "no stockout at all in the history: the comparison is too weak"
    );
}
