//! SageMaker Model Monitor's inputs from a small run of the real binary: data capture and
//! ground truth parse back in SageMaker's formats, in its hourly layout, and every label's
//! ground truth joins exactly one captured inference by `inferenceId`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bikeshare_lake::LakeConfig;
use bikeshare_types::contracts::{Label, Prediction};
use serde_json::Value;
use support::{History, bikeshare, lake_rows, ok};

/// Every `.jsonl` file under `dir`, with its path relative to `dir`.
fn jsonl_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    out
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{}", path.display());
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `yyyy/mm/dd/hh/<file>.jsonl`, the hour of `t` (RFC 3339) when given.
fn assert_hourly(rel: &str, t: Option<&str>) {
    let parts: Vec<&str> = rel.split('/').collect();
    let [y, m, d, h, file] = parts.as_slice() else {
        panic!("{rel}: not yyyy/mm/dd/hh/file");
    };
    assert!(
        file.ends_with(".jsonl") && file.starts_with("processor-"),
        "{rel}"
    );
    assert_eq!((y.len(), m.len(), d.len(), h.len()), (4, 2, 2, 2), "{rel}");
    if let Some(t) = t {
        assert_eq!(&t[..13], format!("{y}-{m}-{d}T{h}"), "{rel}");
    }
}

#[test]
fn capture_and_ground_truth_join_one_to_one_in_sagemakers_formats() {
    let history = History::simulate(25, 11, "2026-03-02T06:10:00Z", "2026-03-02T09:20:00Z");
    let data = history.replayed("data");
    ok(bikeshare(&data).args(["process", "--until-caught-up"]));

    // The capture holds each id's first revision (decision 087).
    let predictions: BTreeMap<String, Prediction> = lake_rows::<Prediction>(&data)
        .into_iter()
        .filter(|p| p.revision == 0)
        .map(|p| (p.prediction_id.as_str().to_owned(), p))
        .collect();
    let labels = lake_rows::<Label>(&data);
    assert!(
        predictions.len() > 500 && labels.len() > 200,
        "{} {}",
        predictions.len(),
        labels.len()
    );

    // Data capture: one record per scored prediction, SageMaker's fields exactly.
    let root = data.join("lake/model-monitor/data-capture/bikeshare-stockout/AllTraffic");
    let mut captured: BTreeMap<String, Value> = BTreeMap::new();
    for (rel, path) in jsonl_files(&root) {
        for v in lines(&path) {
            let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, ["captureData", "eventMetadata", "eventVersion"]);
            assert_eq!(v["eventVersion"], "0");
            let input = &v["captureData"]["endpointInput"];
            let output = &v["captureData"]["endpointOutput"];
            for (e, mode) in [(input, "INPUT"), (output, "OUTPUT")] {
                let mut keys: Vec<_> = e.as_object().unwrap().keys().cloned().collect();
                keys.sort();
                assert_eq!(keys, ["data", "encoding", "mode", "observedContentType"]);
                assert_eq!(e["mode"], mode);
                assert_eq!(e["encoding"], "CSV");
                assert_eq!(e["observedContentType"], "text/csv");
            }
            let meta = &v["eventMetadata"];
            let id = meta["inferenceId"].as_str().unwrap().to_owned();
            assert!(!meta["eventId"].as_str().unwrap().is_empty());
            let time = meta["inferenceTime"].as_str().unwrap();
            assert_eq!(time.len(), 20, "{time}: yyyy-mm-ddThh:mm:ssZ");
            assert_hourly(&rel, Some(time));
            let p = predictions
                .get(&id)
                .unwrap_or_else(|| panic!("capture of unknown {id}"));
            // The output is what the model answered; the input, a CSV row of the schema.
            assert_eq!(
                output["data"].as_str().unwrap(),
                format!("{},{}", p.p_empty, p.p_full)
            );
            let fields: Vec<&str> = input["data"].as_str().unwrap().split(',').collect();
            assert!(fields.len() > 10, "{fields:?}");
            for f in fields.iter().filter(|f| !f.is_empty()) {
                f.parse::<f32>().unwrap();
            }
            assert!(
                captured.insert(id.clone(), v.clone()).is_none(),
                "{id} captured twice"
            );
        }
    }
    // Sampled by prediction id at the default `sampling_percentage`: exactly those.
    let config = LakeConfig::default().model_monitor;
    let sampled: Vec<&String> = predictions
        .iter()
        .filter(|(id, p)| p.is_available() && config.samples(id))
        .map(|(id, _)| id)
        .collect();
    assert!(!sampled.is_empty() && sampled.len() < predictions.len());
    assert_eq!(
        captured.keys().collect::<Vec<_>>(),
        sampled,
        "every sampled scored prediction captured once, no other"
    );
    let labels: Vec<Label> = labels
        .into_iter()
        .filter(|l| config.samples(l.prediction_id.as_str()))
        .collect();

    // Ground truth, per target: one record per label of a captured prediction, joined 1:1
    // by inferenceId.
    for (target, went) in [
        ("empty", (|l: &Label| l.went_empty) as fn(&Label) -> bool),
        ("full", |l: &Label| l.went_full),
    ] {
        let root = data.join("lake/model-monitor/ground-truth").join(target);
        let mut truth: BTreeMap<String, String> = BTreeMap::new();
        for (rel, path) in jsonl_files(&root) {
            assert_hourly(&rel, None);
            for v in lines(&path) {
                let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
                keys.sort();
                assert_eq!(keys, ["eventMetadata", "eventVersion", "groundTruthData"]);
                assert_eq!(v["eventVersion"], "0");
                let mut keys: Vec<_> = v["groundTruthData"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                keys.sort();
                assert_eq!(keys, ["data", "encoding"]);
                assert_eq!(v["groundTruthData"]["encoding"], "CSV");
                assert_eq!(v["eventMetadata"].as_object().unwrap().len(), 1);
                let id = v["eventMetadata"]["eventId"].as_str().unwrap().to_owned();
                let data = v["groundTruthData"]["data"].as_str().unwrap().to_owned();
                assert!(
                    truth.insert(id.clone(), data).is_none(),
                    "{target}: {id} twice"
                );
            }
        }
        assert_eq!(
            truth.len(),
            labels.len(),
            "{target}: one ground truth per label"
        );
        for l in &labels {
            let id = l.prediction_id.as_str();
            let expected = if went(l) { "1" } else { "0" };
            assert_eq!(
                truth.get(id).map(String::as_str),
                Some(expected),
                "{target} {id}"
            );
            assert!(
                captured.contains_key(id),
                "{target}: label {id} has no captured inference"
            );
        }
    }

    // `lake ls` lists the capture and the ground truth with their lines.
    let ls = ok(bikeshare(&data).args(["lake", "ls"]));
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("no {name} in lake ls:\n{ls}"))
            .to_owned()
    };
    assert!(
        line("data_capture").contains(&format!(" {} rows,", captured.len())),
        "{ls}"
    );
    for t in ["ground_truth_empty", "ground_truth_full"] {
        assert!(
            line(t).contains(&format!(" {} rows,", labels.len())),
            "{ls}"
        );
    }
}
