//! Every dataset's rows as newline-delimited JSON, with the columns of its Parquet schema.
//!
//! This is what the Firehose sink sends (one JSON object and `'\n'` per record): Firehose's
//! record-format conversion turns it into Parquet with the dataset's Glue schema, so the keys
//! are the column names of [`Dataset::schema`](crate::Dataset::schema), in the same order,
//! with the same types:
//! - timestamps are integer milliseconds since the epoch, UTC (the Hive JSON SerDe reads
//!   them with `TimestampFormats: ["millis"]`);
//! - a probability nobody computed (NaN) and a missing feature value are `null`;
//! - floats are written in their shortest `f32` form, so a row reads back bit-identical.
//!
//! Partition columns (`year, month, day, hour`) are not in the rows: Firehose puts them in
//! the S3 key (`!{timestamp:...}` prefixes, or dynamic partitioning on the event time).

use bikeshare_types::contracts::{DeadLetter, Envelope, FeatureVector, Label, Prediction};
use serde::Serialize;

use crate::dataset::{CuratedStatus, LakeRecord};

/// A lake row as one JSON object (no newline).
pub trait JsonRow: LakeRecord {
    fn write_json(&self, out: &mut Vec<u8>);

    /// The row as one line of newline-delimited JSON: the object and `'\n'`.
    fn json_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out.push(b'\n');
        out
    }
}

fn write(out: &mut Vec<u8>, row: &impl Serialize) {
    // Serialising these plain structs into a Vec cannot fail (no maps with non-string keys,
    // no I/O); an empty object would be caught by the schema tests.
    if serde_json::to_writer(&mut *out, row).is_err() {
        out.extend_from_slice(b"{}");
    }
}

fn prob(p: f32) -> Option<f32> {
    (!p.is_nan()).then_some(p)
}

#[derive(Serialize)]
struct RawEventRow<'a> {
    event_id: &'a str,
    system_id: &'a str,
    source: &'a str,
    kind: &'a str,
    event_time: i64,
    ingest_time: i64,
    schema_version: u16,
    /// The event's payload as JSON text (a string column, as in Parquet).
    payload: String,
}

impl JsonRow for Envelope {
    fn write_json(&self, out: &mut Vec<u8>) {
        let payload = serde_json::to_value(&self.event)
            .ok()
            .and_then(|mut v| v.get_mut("payload").map(serde_json::Value::take))
            .map(|p| p.to_string())
            .unwrap_or_default();
        write(
            out,
            &RawEventRow {
                event_id: self.event_id.as_str(),
                system_id: self.system_id.as_str(),
                source: &self.source,
                kind: self.kind().as_str(),
                event_time: self.event_time.0,
                ingest_time: self.ingest_time.0,
                schema_version: self.schema_version,
                payload,
            },
        );
    }
}

#[derive(Serialize)]
struct StationStatusRow<'a> {
    event_id: &'a str,
    system_id: &'a str,
    station_id: &'a str,
    last_reported: i64,
    ingest_time: i64,
    num_bikes_available: u32,
    num_ebikes_available: Option<u32>,
    num_bikes_disabled: Option<u32>,
    num_docks_available: Option<u32>,
    num_docks_disabled: Option<u32>,
    is_installed: bool,
    is_renting: bool,
    is_returning: bool,
    is_empty: bool,
    is_full: bool,
    vehicle_types_json: Option<String>,
}

impl JsonRow for CuratedStatus {
    fn write_json(&self, out: &mut Vec<u8>) {
        let s = &self.status;
        write(
            out,
            &StationStatusRow {
                event_id: self.event_id.as_str(),
                system_id: self.system_id.as_str(),
                station_id: s.station_id.as_str(),
                last_reported: s.last_reported.0,
                ingest_time: self.ingest_time.0,
                num_bikes_available: s.num_bikes_available,
                num_ebikes_available: s.num_ebikes_available,
                num_bikes_disabled: s.num_bikes_disabled,
                num_docks_available: s.num_docks_available,
                num_docks_disabled: s.num_docks_disabled,
                is_installed: s.is_installed,
                is_renting: s.is_renting,
                is_returning: s.is_returning,
                is_empty: s.is_empty(),
                is_full: s.is_full(),
                vehicle_types_json: (!s.vehicle_types_available.is_empty())
                    .then(|| serde_json::to_string(&s.vehicle_types_available).unwrap_or_default()),
            },
        );
    }
}

#[derive(Serialize)]
struct FeatureRow<'a> {
    system_id: &'a str,
    station_id: &'a str,
    as_of: i64,
    schema_id: &'a str,
    feature_values: &'a [Option<f32>],
}

impl JsonRow for FeatureVector {
    fn write_json(&self, out: &mut Vec<u8>) {
        write(
            out,
            &FeatureRow {
                system_id: self.system_id.as_str(),
                station_id: self.station_id.as_str(),
                as_of: self.as_of.0,
                schema_id: &self.schema_id.0,
                feature_values: &self.values,
            },
        );
    }
}

#[derive(Serialize)]
struct PredictionRow<'a> {
    prediction_id: &'a str,
    system_id: &'a str,
    station_id: &'a str,
    as_of: i64,
    horizon_minutes: u32,
    p_empty: Option<f32>,
    p_full: Option<f32>,
    model_name: &'a str,
    model_version: &'a str,
    feature_schema_id: &'a str,
    trigger: &'static str,
    scored_by: &'static str,
    schema_version: u16,
}

impl JsonRow for Prediction {
    fn write_json(&self, out: &mut Vec<u8>) {
        write(
            out,
            &PredictionRow {
                prediction_id: self.prediction_id.as_str(),
                system_id: self.system_id.as_str(),
                station_id: self.station_id.as_str(),
                as_of: self.as_of.0,
                horizon_minutes: self.horizon_minutes,
                p_empty: prob(self.p_empty),
                p_full: prob(self.p_full),
                model_name: &self.model.name,
                model_version: &self.model.version,
                feature_schema_id: &self.feature_schema_id.0,
                trigger: crate::dataset::trigger_str(self.trigger),
                scored_by: self.scored_by.as_str(),
                schema_version: self.schema_version,
            },
        );
    }
}

#[derive(Serialize)]
struct LabelRow<'a> {
    prediction_id: &'a str,
    system_id: &'a str,
    station_id: &'a str,
    as_of: i64,
    horizon_minutes: u32,
    went_empty: bool,
    went_full: bool,
    empty_at_as_of: bool,
    full_at_as_of: bool,
    observations: u32,
    schema_version: u16,
}

impl JsonRow for Label {
    fn write_json(&self, out: &mut Vec<u8>) {
        write(
            out,
            &LabelRow {
                prediction_id: self.prediction_id.as_str(),
                system_id: self.system_id.as_str(),
                station_id: self.station_id.as_str(),
                as_of: self.as_of.0,
                horizon_minutes: self.horizon_minutes,
                went_empty: self.went_empty,
                went_full: self.went_full,
                empty_at_as_of: self.empty_at_as_of,
                full_at_as_of: self.full_at_as_of,
                observations: self.observations,
                schema_version: self.schema_version,
            },
        );
    }
}

#[derive(Serialize)]
struct DeadLetterRow<'a> {
    dead_letter_id: &'a str,
    system_id: &'a str,
    source: &'a str,
    rule: &'a str,
    message: &'a str,
    raw: &'a str,
    raw_truncated: bool,
    at: i64,
    schema_version: u16,
}

impl JsonRow for DeadLetter {
    fn write_json(&self, out: &mut Vec<u8>) {
        write(
            out,
            &DeadLetterRow {
                dead_letter_id: self.dead_letter_id.as_str(),
                system_id: self.system_id.as_str(),
                source: &self.source,
                rule: &self.rule,
                message: &self.message,
                raw: &self.raw,
                raw_truncated: self.raw_truncated,
                at: self.at.0,
                schema_version: self.schema_version,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Dataset;
    use bikeshare_types::contracts::{ModelRef, PredictionTrigger, ScoredBy};
    use bikeshare_types::{EventId, StationId, SystemId, Timestamp};

    /// The keys of a JSON line, in order.
    fn keys(line: &[u8]) -> Vec<String> {
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        // Keys in document order: walk a streaming deserializer over the object's entries.
        let text = std::str::from_utf8(line).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let obj = v.as_object().unwrap();
        let mut found: Vec<(usize, String)> = obj
            .keys()
            .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.clone()))
            .collect();
        found.sort();
        found.into_iter().map(|(_, k)| k).collect()
    }

    fn schema_names(d: Dataset) -> Vec<String> {
        d.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn prediction(p_empty: f32) -> Prediction {
        Prediction {
            schema_version: 2,
            prediction_id: EventId::new("p1"),
            system_id: SystemId::new("bluebikes"),
            station_id: StationId::new("s1"),
            as_of: Timestamp(1_700_000_000_123),
            horizon_minutes: 30,
            p_empty,
            p_full: 0.1,
            model: ModelRef {
                name: "m".into(),
                version: "3".into(),
            },
            feature_schema_id: bikeshare_types::contracts::FeatureSchemaId("fs".into()),
            trigger: PredictionTrigger::Tick,
            scored_by: ScoredBy::Endpoint,
        }
    }

    #[test]
    fn every_dataset_row_has_its_schema_columns_in_order() {
        let p = prediction(0.25);
        assert_eq!(keys(&p.json_line()), schema_names(Dataset::Predictions));
        let l = Label {
            schema_version: 1,
            prediction_id: EventId::new("p1"),
            system_id: SystemId::new("s"),
            station_id: StationId::new("st"),
            as_of: Timestamp(5),
            horizon_minutes: 30,
            went_empty: true,
            went_full: false,
            empty_at_as_of: false,
            full_at_as_of: false,
            observations: 3,
        };
        assert_eq!(keys(&l.json_line()), schema_names(Dataset::Labels));
        let f = FeatureVector {
            system_id: SystemId::new("s"),
            station_id: StationId::new("st"),
            as_of: Timestamp(5),
            schema_id: bikeshare_types::contracts::FeatureSchemaId("fs".into()),
            values: vec![Some(0.1), None, Some(3.0)],
        };
        let line = f.json_line();
        assert_eq!(keys(&line), schema_names(Dataset::Features));
        assert!(
            std::str::from_utf8(&line)
                .unwrap()
                .contains(r#""feature_values":[0.1,null,3.0]"#)
        );
        let d = DeadLetter::new(
            SystemId::new("s"),
            "src",
            "r.x",
            "m",
            "{\"a\":1}",
            Timestamp(9),
        );
        assert_eq!(keys(&d.json_line()), schema_names(Dataset::DeadLetters));
    }

    #[test]
    fn timestamps_are_millis_and_nan_is_null() {
        let line = prediction(f32::NAN).json_line();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["as_of"], 1_700_000_000_123_i64);
        assert!(v["p_empty"].is_null());
        assert_eq!(v["p_full"].as_f64().map(|x| x as f32), Some(0.1));
        assert!(
            std::str::from_utf8(&line)
                .unwrap()
                .contains(r#""p_full":0.1,"#)
        );
    }
}
