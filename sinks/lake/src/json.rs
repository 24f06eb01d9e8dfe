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

use crate::dataset::LakeRecord;

/// A lake row as one JSON object (no newline): every dataset's record is one, its columns
/// written from its column table ([`LakeRecord::COLUMNS`]).
pub trait JsonRow: LakeRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        crate::column::write_json(Self::COLUMNS, self, out);
    }

    /// The row as one line of newline-delimited JSON: the object and `'\n'`.
    fn json_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out.push(b'\n');
        out
    }
}

impl<T: LakeRecord> JsonRow for T {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Dataset;
    use bikeshare_types::contracts::{
        DeadLetter, FeatureVector, Label, ModelRef, Prediction, PredictionTrigger, ScoredBy,
    };
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
            revision: 0,
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
