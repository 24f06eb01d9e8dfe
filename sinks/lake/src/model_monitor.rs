//! SageMaker Model Monitor's inputs, written with the lake's epochs: data capture from
//! predictions and their feature vectors, ground truth from labels.
//!
//! **Data capture** — one JSON object per line, as a SageMaker endpoint with data capture
//! writes it:
//!
//! ```json
//! {"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"3,,0.5,...","encoding":"CSV"},
//!                 "endpointOutput":{"observedContentType":"text/csv","mode":"OUTPUT","data":"0.12,0.01","encoding":"CSV"}},
//!  "eventMetadata":{"eventId":"<id>","inferenceId":"<prediction_id>","inferenceTime":"2026-03-02T07:05:00Z"},
//!  "eventVersion":"0"}
//! ```
//!
//! The input is the feature row as `bikeshare serve-model` takes it (`text/csv`, the model's
//! schema order, an empty field for a missing value); the output is its answer,
//! `p_empty,p_full` (so a model-quality job reads `probability_attribute` 0 for *empty*, 1 for
//! *full*). `inferenceId` is the prediction id; `inferenceTime` is the prediction's `as_of`
//! (event time, so a replay writes the same files). Predictions nobody scored
//! (`scored_by = unavailable`) have no output and are not captured.
//! Files: `<data_capture_prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<writer>-<epoch>.jsonl`.
//!
//! **Ground truth** — Model Monitor's merge format, one file tree per target:
//!
//! ```json
//! {"groundTruthData":{"data":"1","encoding":"CSV"},"eventMetadata":{"eventId":"<prediction_id>"},"eventVersion":"0"}
//! ```
//!
//! `eventId` is the `inferenceId` of the captured prediction, which is how Model Monitor
//! joins them. Files: `<ground_truth_prefix>/<empty|full>/yyyy/mm/dd/hh/<writer>-<epoch>.jsonl`,
//! the hour being when the label became known (`as_of` + horizon, event time).
//!
//! Both are staged with the lake's rows ([`crate::staging::Staging`]) and written in the same
//! epoch, listed in the same manifest ([`crate::writer`]): a restart neither duplicates nor
//! loses a line.
//!
//! **One record per inference id, its first revision.** With the processor's update trigger
//! a prediction may be published twice: early, when its report arrives (revision 0), and
//! corrected (same id, revision 1, other scores) once the watermark passes it, about the
//! lateness (2 min) later — many 10-second epochs later. The capture holds the revision-0
//! row only: what the endpoint answered when the prediction was asked for, as a SageMaker
//! endpoint's capture records an invocation at inference time; a correction is not
//! captured. So each id is captured once across epochs and restarts with no state carried
//! from one epoch to the next (revision 0 is emitted once per id, and a restore replays the
//! rows after its checkpoint only). Model Monitor thus measures the answers served first,
//! while the Athena queries and live quality read each id's last revision (decision 087).
//! An id whose first row nobody scored (`unavailable`) is not captured even if a
//! correction scores it; its ground truth then has no capture to join and is ignored.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{FeatureVector, Label, Prediction};
use bikeshare_types::ids::deterministic_id;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use crate::dataset::Dataset;
use crate::layout::{EncodedFile, Hour};

/// The `[lake.model_monitor]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct ModelMonitorConfig {
    /// Write data capture and ground truth (with the processor's lake rows).
    #[default(true)]
    pub enabled: bool,
    /// Under the lake's root (`s3://bucket/lake/<this>` on S3).
    #[default("model-monitor/data-capture")]
    pub data_capture_prefix: String,
    #[default("model-monitor/ground-truth")]
    pub ground_truth_prefix: String,
    /// The endpoint and variant names of the capture's path, as SageMaker would write them.
    #[default("bikeshare-stockout")]
    pub endpoint_name: String,
    #[default("AllTraffic")]
    pub variant: String,
    /// Percent of scored predictions captured, 0 to 100: SageMaker's
    /// `DataCaptureConfig.InitialSamplingPercentage`. Which ones is decided by a hash of the
    /// prediction id ([`Self::samples`]), so a rerun captures the same predictions and a
    /// label's ground truth is written exactly when its prediction was captured.
    #[default(DEFAULT_SAMPLING_PERCENTAGE)]
    pub sampling_percentage: u8,
}

/// Captured share of predictions by default: every prediction's capture line is ~1 KB (75
/// features as CSV), 25 times the Parquet row of the prediction itself (decision 074).
pub const DEFAULT_SAMPLING_PERCENTAGE: u8 = 5;

impl ModelMonitorConfig {
    /// A configuration error for a value SageMaker would refuse too.
    pub fn validate(&self) -> Result<(), crate::LakeError> {
        if self.sampling_percentage > 100 {
            return Err(crate::LakeError::Config(format!(
                "[lake.model_monitor] sampling_percentage = {}: use 0 to 100",
                self.sampling_percentage
            )));
        }
        Ok(())
    }

    /// Whether the prediction `prediction_id` is captured (and its labels' ground truth
    /// written): the XXH3 hash of the id, modulo 100, below [`Self::sampling_percentage`].
    pub fn samples(&self, prediction_id: &str) -> bool {
        match self.sampling_percentage {
            0 => false,
            p if p >= 100 => true,
            p => xxhash_rust::xxh3::xxh3_64(prediction_id.as_bytes()) % 100 < u64::from(p),
        }
    }

    /// Where the data capture files are: `<data_capture_prefix>/<endpoint>/<variant>`.
    pub fn capture_root(&self) -> String {
        format!(
            "{}/{}/{}",
            self.data_capture_prefix.trim_matches('/'),
            self.endpoint_name,
            self.variant
        )
    }

    /// Where the ground truth of `target` is: `<ground_truth_prefix>/<target>`.
    pub fn ground_truth_root(&self, target: Target) -> String {
        format!(
            "{}/{}",
            self.ground_truth_prefix.trim_matches('/'),
            target.name()
        )
    }
}

/// The two targets, each its own ground truth (a model-quality job monitors one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Empty,
    Full,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Empty, Target::Full];

    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Full => "full",
        }
    }
}

/// `yyyy/mm/dd/hh`, SageMaker's hourly folders (UTC).
pub fn hour_path(h: Hour) -> String {
    format!("{:04}/{:02}/{:02}/{:02}", h.year, h.month, h.day, h.hour)
}

/// `2026-03-02T07:05:00Z`: SageMaker's `inferenceTime` (seconds, UTC).
fn inference_time(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointData<'a> {
    observed_content_type: &'static str,
    mode: &'static str,
    data: &'a str,
    encoding: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CaptureData<'a> {
    endpoint_input: EndpointData<'a>,
    endpoint_output: EndpointData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CaptureMetadata<'a> {
    event_id: &'a str,
    inference_id: &'a str,
    inference_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CaptureRecord<'a> {
    capture_data: CaptureData<'a>,
    event_metadata: CaptureMetadata<'a>,
    event_version: &'static str,
}

#[derive(Serialize)]
struct GroundTruthData<'a> {
    data: &'a str,
    encoding: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroundTruthMetadata<'a> {
    event_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroundTruthRecord<'a> {
    ground_truth_data: GroundTruthData<'a>,
    event_metadata: GroundTruthMetadata<'a>,
    event_version: &'static str,
}

/// A feature row as `text/csv`: shortest round-trip decimals, an empty field when missing.
pub fn features_csv(values: &[Option<f32>]) -> String {
    let mut out = String::with_capacity(values.len() * 6);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(v) = v {
            let _ = write!(out, "{v}");
        }
    }
    out
}

fn line(record: &impl Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec(record).unwrap_or_default();
    out.push(b'\n');
    out
}

/// One data-capture line for a scored prediction and its features; `None` when nobody
/// scored it.
pub fn capture_line(
    config: &ModelMonitorConfig,
    features: &[Option<f32>],
    p: &Prediction,
) -> Option<Vec<u8>> {
    if !p.is_available() {
        return None;
    }
    let input = features_csv(features);
    let output = format!("{},{}", p.p_empty, p.p_full);
    let event_id = deterministic_id(&[
        b"data-capture",
        config.endpoint_name.as_bytes(),
        config.variant.as_bytes(),
        p.prediction_id.as_str().as_bytes(),
    ]);
    Some(line(&CaptureRecord {
        capture_data: CaptureData {
            endpoint_input: EndpointData {
                observed_content_type: "text/csv",
                mode: "INPUT",
                data: &input,
                encoding: "CSV",
            },
            endpoint_output: EndpointData {
                observed_content_type: "text/csv",
                mode: "OUTPUT",
                data: &output,
                encoding: "CSV",
            },
        },
        event_metadata: CaptureMetadata {
            event_id: event_id.as_str(),
            inference_id: p.prediction_id.as_str(),
            inference_time: inference_time(p.as_of),
        },
        event_version: "0",
    }))
}

/// One ground-truth line of `target` for a label.
pub fn ground_truth_line(label: &Label, target: Target) -> Vec<u8> {
    let happened = match target {
        Target::Empty => label.went_empty,
        Target::Full => label.went_full,
    };
    line(&GroundTruthRecord {
        ground_truth_data: GroundTruthData {
            data: if happened { "1" } else { "0" },
            encoding: "CSV",
        },
        event_metadata: GroundTruthMetadata {
            event_id: label.prediction_id.as_str(),
        },
        event_version: "0",
    })
}

/// The hour a label became known: its prediction's `as_of` plus the horizon.
pub fn label_hour(label: &Label) -> Hour {
    Hour::of(Timestamp(
        label.as_of.0 + i64::from(label.horizon_minutes) * 60_000,
    ))
}

type StationKey = (String, String, i64);

/// Capture and ground-truth lines waiting for the next checkpoint (inside a
/// [`crate::staging::Staging`]; inert without a configuration).
#[derive(Debug, Default)]
pub struct MonitorStaging {
    config: Option<Arc<ModelMonitorConfig>>,
    /// The latest feature rows, until their predictions arrive (the processor hands both
    /// over together).
    inputs: HashMap<StationKey, Vec<Option<f32>>>,
    /// Capture lines by hour, one per inference id (its first revision).
    capture: BTreeMap<Hour, Vec<Vec<u8>>>,
    ground_truth: BTreeMap<(Target, Hour), (usize, Vec<u8>)>,
    /// Scored predictions that came without their feature row (not captured).
    pub missing_inputs: usize,
}

fn key(system: &str, station: &str, as_of: Timestamp) -> StationKey {
    (system.to_owned(), station.to_owned(), as_of.0)
}

impl MonitorStaging {
    pub fn new(config: Arc<ModelMonitorConfig>) -> Self {
        Self {
            config: Some(config),
            ..Self::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// Capture and ground-truth lines staged.
    pub fn rows(&self) -> usize {
        self.capture.values().map(Vec::len).sum::<usize>()
            + self.ground_truth.values().map(|(n, _)| n).sum::<usize>()
    }

    /// Keeps feature rows for the predictions that follow.
    pub fn features(&mut self, rows: &[FeatureVector]) {
        if self.config.is_none() {
            return;
        }
        for r in rows {
            self.inputs.insert(
                key(r.system_id.as_str(), r.station_id.as_str(), r.as_of),
                r.values.clone(),
            );
        }
    }

    /// Captures scored predictions with their feature rows: each id's first revision only
    /// (a correction's feature row is consumed and dropped).
    pub fn predictions(&mut self, predictions: &[Prediction]) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let mut missing = 0usize;
        for p in predictions {
            let k = key(p.system_id.as_str(), p.station_id.as_str(), p.as_of);
            let Some(features) = self.inputs.remove(&k) else {
                if p.is_available() && config.samples(p.prediction_id.as_str()) {
                    missing += 1;
                }
                continue;
            };
            if p.revision > 0 || !config.samples(p.prediction_id.as_str()) {
                continue;
            }
            if let Some(l) = capture_line(&config, &features, p) {
                self.capture.entry(Hour::of(p.as_of)).or_default().push(l);
            }
        }
        self.inputs.clear();
        if missing > 0 {
            self.missing_inputs += missing;
            tracing::warn!(
                missing,
                "model monitor: scored predictions without their feature rows were not captured"
            );
        }
    }

    /// Ground truth of both targets, for the labels of captured predictions.
    pub fn labels(&mut self, labels: &[Label]) {
        let Some(config) = self.config.clone() else {
            return;
        };
        for l in labels
            .iter()
            .filter(|l| config.samples(l.prediction_id.as_str()))
        {
            for t in Target::ALL {
                let e = self.ground_truth.entry((t, label_hour(l))).or_default();
                e.0 += 1;
                e.1.extend_from_slice(&ground_truth_line(l, t));
            }
        }
    }

    /// One file per hour (and target), named after `writer` and `epoch`.
    pub fn encode(&self, writer: &str, epoch: u64) -> Vec<EncodedFile> {
        let Some(c) = &self.config else {
            return Vec::new();
        };
        let name = format!("{writer}-{epoch:012}.jsonl");
        let capture = self.capture.iter().map(|(hour, lines)| EncodedFile {
            path: format!("{}/{}/{name}", c.capture_root(), hour_path(*hour)),
            dataset: Dataset::Predictions,
            hour: *hour,
            rows: lines.len(),
            bytes: Bytes::from(lines.concat()),
        });
        let truth = self
            .ground_truth
            .iter()
            .map(|((target, hour), (rows, bytes))| EncodedFile {
                path: format!(
                    "{}/{}/{name}",
                    c.ground_truth_root(*target),
                    hour_path(*hour)
                ),
                dataset: Dataset::Labels,
                hour: *hour,
                rows: *rows,
                bytes: Bytes::from(bytes.clone()),
            });
        capture.chain(truth).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bikeshare_types::contracts::{FeatureSchemaId, ModelRef, PredictionTrigger, ScoredBy};
    use bikeshare_types::{EventId, StationId, SystemId};

    fn prediction(p_empty: f32) -> Prediction {
        Prediction {
            schema_version: 2,
            prediction_id: EventId::new("pred-1"),
            system_id: SystemId::new("s"),
            station_id: StationId::new("st"),
            as_of: Timestamp::parse_rfc3339("2026-03-02T07:59:30.250Z").unwrap(),
            horizon_minutes: 30,
            p_empty,
            p_full: 0.01,
            model: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            feature_schema_id: FeatureSchemaId("fs".into()),
            trigger: PredictionTrigger::Tick,
            scored_by: ScoredBy::InProcess,
            revision: 0,
        }
    }

    #[test]
    fn capture_record_has_sagemakers_fields_exactly() {
        let c = ModelMonitorConfig::default();
        let l = capture_line(&c, &[Some(3.0), None, Some(0.5)], &prediction(0.12)).unwrap();
        assert_eq!(l.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        let input = &v["captureData"]["endpointInput"];
        assert_eq!(input["observedContentType"], "text/csv");
        assert_eq!(input["mode"], "INPUT");
        assert_eq!(input["data"], "3,,0.5");
        assert_eq!(input["encoding"], "CSV");
        let output = &v["captureData"]["endpointOutput"];
        assert_eq!(output["mode"], "OUTPUT");
        assert_eq!(output["data"], "0.12,0.01");
        assert_eq!(output["encoding"], "CSV");
        assert_eq!(v["eventMetadata"]["inferenceId"], "pred-1");
        assert_eq!(v["eventMetadata"]["inferenceTime"], "2026-03-02T07:59:30Z");
        assert!(v["eventMetadata"]["eventId"].as_str().unwrap().len() >= 16);
        assert_eq!(v["eventVersion"], "0");
        assert!(capture_line(&c, &[], &prediction(f32::NAN)).is_none());
    }

    #[test]
    fn paths_are_sagemakers_hourly_layout() {
        let mut s = MonitorStaging::new(Arc::new(ModelMonitorConfig {
            sampling_percentage: 100,
            ..ModelMonitorConfig::default()
        }));
        let p = prediction(0.5);
        s.features(&[FeatureVector {
            system_id: p.system_id.clone(),
            station_id: p.station_id.clone(),
            as_of: p.as_of,
            schema_id: FeatureSchemaId("fs".into()),
            values: vec![Some(1.0)],
        }]);
        s.predictions(std::slice::from_ref(&p));
        s.labels(&[Label {
            went_empty: true,
            ..bikeshare_testkit::envelopes::label(&p, 2)
        }]);
        let paths: Vec<String> = s
            .encode("processor-shardId-0", 7)
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                "model-monitor/data-capture/bikeshare-stockout/AllTraffic/2026/03/02/07/processor-shardId-0-000000000007.jsonl",
                "model-monitor/ground-truth/empty/2026/03/02/08/processor-shardId-0-000000000007.jsonl",
                "model-monitor/ground-truth/full/2026/03/02/08/processor-shardId-0-000000000007.jsonl",
            ]
        );
        assert_eq!(s.rows(), 3);
        assert_eq!(s.missing_inputs, 0);
        assert_eq!(MonitorStaging::default().encode("w", 1).len(), 0);
    }

    fn all(percent: u8) -> ModelMonitorConfig {
        ModelMonitorConfig {
            sampling_percentage: percent,
            ..ModelMonitorConfig::default()
        }
    }

    /// Stages `n` predictions with their features and labels; the capture's and the ground
    /// truth's inference ids.
    fn staged_ids(config: ModelMonitorConfig, n: usize) -> (Vec<String>, Vec<String>) {
        let mut s = MonitorStaging::new(Arc::new(config));
        let mut preds = Vec::new();
        let mut rows = Vec::new();
        for i in 0..n {
            let mut p = prediction(0.5);
            p.prediction_id = EventId::new(format!("pred-{i}"));
            p.station_id = StationId::new(format!("st-{i}"));
            rows.push(FeatureVector {
                system_id: p.system_id.clone(),
                station_id: p.station_id.clone(),
                as_of: p.as_of,
                schema_id: FeatureSchemaId("fs".into()),
                values: vec![Some(1.0)],
            });
            preds.push(p);
        }
        s.features(&rows);
        s.predictions(&preds);
        let labels: Vec<Label> = preds
            .iter()
            .map(|p| bikeshare_testkit::envelopes::label(p, 2))
            .collect();
        s.labels(&labels);
        assert_eq!(s.missing_inputs, 0);
        let ids = |prefix: &str, key: &str| -> Vec<String> {
            let mut out: Vec<String> = s
                .encode("w", 1)
                .iter()
                .filter(|f| f.path.starts_with(prefix))
                .flat_map(|f| {
                    String::from_utf8(f.bytes.to_vec())
                        .unwrap()
                        .lines()
                        .map(|l| {
                            let v: serde_json::Value = serde_json::from_str(l).unwrap();
                            v["eventMetadata"][key].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            out.sort();
            out
        };
        (
            ids("model-monitor/data-capture", "inferenceId"),
            ids("model-monitor/ground-truth/empty", "eventId"),
        )
    }

    #[test]
    fn capture_is_sampled_by_prediction_id_and_ground_truth_follows_it() {
        let n = 4000;
        let (everything, truth_all) = staged_ids(all(100), n);
        assert_eq!((everything.len(), truth_all.len()), (n, n));
        let (none, truth_none) = staged_ids(all(0), n);
        assert!(none.is_empty() && truth_none.is_empty());

        let (ten, truth_ten) = staged_ids(all(10), n);
        // About a tenth, the same ones on a rerun, and exactly those with ground truth.
        assert!((300..=500).contains(&ten.len()), "{} of {n}", ten.len());
        assert_eq!(staged_ids(all(10), n).0, ten);
        assert_eq!(truth_ten, ten);
        let c = all(10);
        assert!(ten.iter().all(|id| c.samples(id)));
        // A larger percentage captures a superset.
        let (twenty, _) = staged_ids(all(20), n);
        assert!(ten.iter().all(|id| twenty.binary_search(id).is_ok()));
        assert!(twenty.len() > ten.len());
    }

    /// A correction (the update trigger's later row of the same prediction id, revision 1)
    /// is not captured: one record per inference id, its first revision.
    #[test]
    fn a_corrected_prediction_is_captured_once_with_its_first_values() {
        let mut s = MonitorStaging::new(Arc::new(all(100)));
        let p = prediction(0.5);
        for (revision, p_empty, feature) in [(0, 0.2, 1.0), (1, 0.7, 2.0)] {
            s.features(&[FeatureVector {
                system_id: p.system_id.clone(),
                station_id: p.station_id.clone(),
                as_of: p.as_of,
                schema_id: FeatureSchemaId("fs".into()),
                values: vec![Some(feature)],
            }]);
            s.predictions(&[Prediction {
                p_empty,
                revision,
                ..p.clone()
            }]);
        }
        let files = s.encode("w", 1);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].rows, 1);
        let text = String::from_utf8(files[0].bytes.to_vec()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["eventMetadata"]["inferenceId"], "pred-1");
        assert_eq!(lines[0]["captureData"]["endpointInput"]["data"], "1");
        assert_eq!(
            lines[0]["captureData"]["endpointOutput"]["data"],
            "0.2,0.01"
        );
        assert_eq!(s.rows(), 1);
    }

    #[test]
    fn a_sampling_percentage_over_100_is_a_configuration_error() {
        assert!(all(100).validate().is_ok());
        let e = all(101).validate().unwrap_err();
        assert!(e.to_string().contains("sampling_percentage = 101"), "{e}");
        assert_eq!(
            bikeshare_types::error::Classify::class(&e),
            bikeshare_types::error::ErrorClass::User
        );
    }
}
