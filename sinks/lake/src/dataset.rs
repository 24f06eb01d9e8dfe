//! The datasets of the lake, their Arrow/Parquet schemas, and the conversion of contract
//! records to and from Arrow record batches.
//!
//! | dataset | one row per | event time (partition) | record type |
//! | --- | --- | --- | --- |
//! | `raw_events` | input event (every kind) | `event_time` | [`Envelope`] |
//! | `station_status` | station report | `last_reported` | [`CuratedStatus`] |
//! | `features` | feature vector | `as_of` | [`FeatureVector`] |
//! | `predictions` | prediction | `as_of` | [`Prediction`] |
//! | `labels` | label | `as_of` (of its prediction) | [`Label`] |
//! | `dead_letters` | dead letter | `at` | [`DeadLetter`] |
//!
//! Column types are the ones Athena and DuckDB both read: strings, `int`/`bigint`, `float`,
//! `boolean`, and timestamps in milliseconds, UTC, stored without a time-zone annotation
//! (Parquet `isAdjustedToUTC = false`, so DuckDB and Athena read a plain `timestamp`).
//! Unsigned contract fields are stored signed (Athena has no unsigned types). Each
//! dataset's columns are listed in the crate README and in `infra/athena/*.sql`.

use std::sync::{Arc, LazyLock};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, TimestampMillisecondType};
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Int32Array, ListArray, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bikeshare_types::contracts::{
    DeadLetter, Envelope, Event, FeatureSchemaId, FeatureVector, Label, ModelRef, Prediction,
    PredictionTrigger, StationStatus,
};
use bikeshare_types::{EventId, StationId, SystemId, Timestamp};

use crate::LakeError;

/// One dataset of the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dataset {
    RawEvents,
    StationStatus,
    Features,
    Predictions,
    Labels,
    DeadLetters,
}

impl Dataset {
    pub const ALL: [Dataset; 6] = [
        Self::RawEvents,
        Self::StationStatus,
        Self::Features,
        Self::Predictions,
        Self::Labels,
        Self::DeadLetters,
    ];

    /// The dataset's folder (and Glue table) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RawEvents => "raw_events",
            Self::StationStatus => "station_status",
            Self::Features => "features",
            Self::Predictions => "predictions",
            Self::Labels => "labels",
            Self::DeadLetters => "dead_letters",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The Arrow schema of the dataset's files (partition columns live in the path).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 6]> =
            LazyLock::new(|| Dataset::ALL.map(|d| Arc::new(Schema::new(fields(d))) as SchemaRef));
        SCHEMAS[self as usize].clone()
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn fields(d: Dataset) -> Vec<Field> {
    let int = |n: &str| Field::new(n, DataType::Int32, false);
    let opt_int = |n: &str| Field::new(n, DataType::Int32, true);
    let boolean = |n: &str| Field::new(n, DataType::Boolean, false);
    let time = |n: &str| Field::new(n, ts(), false);
    match d {
        Dataset::RawEvents => vec![
            utf8("event_id"),
            utf8("system_id"),
            utf8("source"),
            utf8("kind"),
            time("event_time"),
            time("ingest_time"),
            int("schema_version"),
            utf8("payload"),
        ],
        Dataset::StationStatus => vec![
            utf8("event_id"),
            utf8("system_id"),
            utf8("station_id"),
            time("last_reported"),
            time("ingest_time"),
            int("num_bikes_available"),
            opt_int("num_ebikes_available"),
            opt_int("num_bikes_disabled"),
            opt_int("num_docks_available"),
            opt_int("num_docks_disabled"),
            boolean("is_installed"),
            boolean("is_renting"),
            boolean("is_returning"),
            boolean("is_empty"),
            boolean("is_full"),
            Field::new("vehicle_types_json", DataType::Utf8, true),
        ],
        Dataset::Features => vec![
            utf8("system_id"),
            utf8("station_id"),
            time("as_of"),
            utf8("schema_id"),
            Field::new(
                "feature_values",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                false,
            ),
        ],
        Dataset::Predictions => vec![
            utf8("prediction_id"),
            utf8("system_id"),
            utf8("station_id"),
            time("as_of"),
            int("horizon_minutes"),
            // Null when nobody scored (`scored_by = unavailable`; NaN in the contract).
            Field::new("p_empty", DataType::Float32, true),
            Field::new("p_full", DataType::Float32, true),
            utf8("model_name"),
            utf8("model_version"),
            utf8("feature_schema_id"),
            utf8("trigger"),
            utf8("scored_by"),
            int("schema_version"),
        ],
        Dataset::Labels => vec![
            utf8("prediction_id"),
            utf8("system_id"),
            utf8("station_id"),
            time("as_of"),
            int("horizon_minutes"),
            boolean("went_empty"),
            boolean("went_full"),
            boolean("empty_at_as_of"),
            boolean("full_at_as_of"),
            int("observations"),
            int("schema_version"),
        ],
        Dataset::DeadLetters => vec![
            utf8("dead_letter_id"),
            utf8("system_id"),
            utf8("source"),
            utf8("rule"),
            utf8("message"),
            utf8("raw"),
            boolean("raw_truncated"),
            time("at"),
            int("schema_version"),
        ],
    }
}

/// A station report as the curated `station_status` dataset holds it: the report, its
/// system and event id, when it was ingested, and the derived empty/full flags.
#[derive(Debug, Clone, PartialEq)]
pub struct CuratedStatus {
    pub event_id: EventId,
    pub system_id: SystemId,
    pub ingest_time: Timestamp,
    pub status: StationStatus,
}

impl CuratedStatus {
    /// The curated row of a `station_status` event; `None` for other kinds.
    pub fn from_envelope(env: &Envelope) -> Option<Self> {
        match &env.event {
            Event::StationStatus(s) => Some(Self {
                event_id: env.event_id.clone(),
                system_id: env.system_id.clone(),
                ingest_time: env.ingest_time,
                status: s.clone(),
            }),
            _ => None,
        }
    }
}

/// A record type that is the row of one dataset.
pub trait LakeRecord: Sized + Clone + Send + Sync + 'static {
    const DATASET: Dataset;
    /// The event time that decides the record's hourly partition.
    fn event_time(&self) -> Timestamp;
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError>;
    fn decode(batch: &RecordBatch) -> Result<Vec<Self>, LakeError>;
}

fn batch(d: Dataset, columns: Vec<ArrayRef>) -> Result<RecordBatch, LakeError> {
    RecordBatch::try_new(d.schema(), columns).map_err(|e| LakeError::Encode {
        dataset: d.name(),
        message: e.to_string(),
    })
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}
fn times(it: impl Iterator<Item = Timestamp>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(it.map(|t| t.0)))
}
fn ints(it: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(
        it.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
    ))
}
fn opt_ints(it: impl Iterator<Item = Option<u32>>) -> ArrayRef {
    Arc::new(Int32Array::from_iter(
        it.map(|v| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))),
    ))
}
fn bools(it: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(it.map(Some)))
}
/// NaN (a probability nobody computed) is stored as null.
fn opt_floats(it: impl Iterator<Item = f32>) -> ArrayRef {
    Arc::new(Float32Array::from_iter(
        it.map(|v| (!v.is_nan()).then_some(v)),
    ))
}

/// Typed column access for decoding, with a clear error when a file does not match.
struct Columns<'a> {
    dataset: Dataset,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn err(&self, column: &str, what: &str) -> LakeError {
        LakeError::Decode {
            dataset: self.dataset.name(),
            message: format!("column {column}: {what}"),
        }
    }
    fn col(&self, name: &str) -> Result<&'a ArrayRef, LakeError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| self.err(name, "missing"))
    }
    fn str(&self, name: &str) -> Result<&'a StringArray, LakeError> {
        self.col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.err(name, "not a string column"))
    }
    fn int(&self, name: &str) -> Result<&'a Int32Array, LakeError> {
        self.col(name)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| self.err(name, "not an int32 column"))
    }
    fn float(&self, name: &str) -> Result<&'a Float32Array, LakeError> {
        self.col(name)?
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| self.err(name, "not a float32 column"))
    }
    fn time(&self, name: &str) -> Result<&'a TimestampMillisecondArray, LakeError> {
        self.col(name)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| self.err(name, "not a millisecond timestamp column"))
    }
    fn bool(&self, name: &str) -> Result<&'a BooleanArray, LakeError> {
        self.col(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.err(name, "not a boolean column"))
    }
    fn list(&self, name: &str) -> Result<&'a ListArray, LakeError> {
        self.col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.err(name, "not a list column"))
    }
}

fn cols(dataset: Dataset, batch: &RecordBatch) -> Columns<'_> {
    Columns { dataset, batch }
}

fn uint(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}
fn opt_uint(a: &Int32Array, i: usize) -> Option<u32> {
    a.is_valid(i).then(|| uint(a.value(i)))
}
fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

use arrow_array::Array;

impl LakeRecord for Envelope {
    const DATASET: Dataset = Dataset::RawEvents;
    fn event_time(&self) -> Timestamp {
        self.event_time
    }
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        let payloads: Vec<String> = rows
            .iter()
            .map(|e| {
                // `Event` is tagged {kind, payload}: keep only the payload.
                serde_json::to_value(&e.event)
                    .ok()
                    .and_then(|mut v| v.get_mut("payload").map(serde_json::Value::take))
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            })
            .collect();
        batch(
            Self::DATASET,
            vec![
                strings(rows.iter().map(|e| e.event_id.as_str())),
                strings(rows.iter().map(|e| e.system_id.as_str())),
                strings(rows.iter().map(|e| e.source.as_str())),
                strings(rows.iter().map(|e| e.kind().as_str())),
                times(rows.iter().map(|e| e.event_time)),
                times(rows.iter().map(|e| e.ingest_time)),
                ints(rows.iter().map(|e| i64::from(e.schema_version))),
                strings(payloads.iter().map(String::as_str)),
            ],
        )
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = cols(Self::DATASET, b);
        let (id, sys, src, kind) = (
            c.str("event_id")?,
            c.str("system_id")?,
            c.str("source")?,
            c.str("kind")?,
        );
        let (et, it, ver, payload) = (
            c.time("event_time")?,
            c.time("ingest_time")?,
            c.int("schema_version")?,
            c.str("payload")?,
        );
        (0..b.num_rows())
            .map(|i| {
                let tagged = format!(
                    r#"{{"kind":{},"payload":{}}}"#,
                    serde_json::Value::from(kind.value(i)),
                    payload.value(i)
                );
                let event: Event =
                    serde_json::from_str(&tagged).map_err(|e| c.err("payload", &e.to_string()))?;
                Ok(Envelope {
                    schema_version: u16::try_from(ver.value(i)).unwrap_or(0),
                    event_id: EventId::new(id.value(i)),
                    system_id: SystemId::new(sys.value(i)),
                    source: src.value(i).to_owned(),
                    event_time: Timestamp(et.value(i)),
                    ingest_time: Timestamp(it.value(i)),
                    event,
                })
            })
            .collect()
    }
}

impl LakeRecord for CuratedStatus {
    const DATASET: Dataset = Dataset::StationStatus;
    fn event_time(&self) -> Timestamp {
        self.status.last_reported
    }
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        let s = || rows.iter().map(|r| &r.status);
        let vehicle: Vec<Option<String>> = s()
            .map(|s| {
                (!s.vehicle_types_available.is_empty())
                    .then(|| serde_json::to_string(&s.vehicle_types_available).unwrap_or_default())
            })
            .collect();
        batch(
            Self::DATASET,
            vec![
                strings(rows.iter().map(|r| r.event_id.as_str())),
                strings(rows.iter().map(|r| r.system_id.as_str())),
                strings(s().map(|s| s.station_id.as_str())),
                times(s().map(|s| s.last_reported)),
                times(rows.iter().map(|r| r.ingest_time)),
                ints(s().map(|s| i64::from(s.num_bikes_available))),
                opt_ints(s().map(|s| s.num_ebikes_available)),
                opt_ints(s().map(|s| s.num_bikes_disabled)),
                opt_ints(s().map(|s| s.num_docks_available)),
                opt_ints(s().map(|s| s.num_docks_disabled)),
                bools(s().map(|s| s.is_installed)),
                bools(s().map(|s| s.is_renting)),
                bools(s().map(|s| s.is_returning)),
                bools(s().map(StationStatus::is_empty)),
                bools(s().map(StationStatus::is_full)),
                Arc::new(StringArray::from(vehicle)),
            ],
        )
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = cols(Self::DATASET, b);
        let (id, sys, st, lr, it) = (
            c.str("event_id")?,
            c.str("system_id")?,
            c.str("station_id")?,
            c.time("last_reported")?,
            c.time("ingest_time")?,
        );
        let (bikes, ebikes, bdis, docks, ddis) = (
            c.int("num_bikes_available")?,
            c.int("num_ebikes_available")?,
            c.int("num_bikes_disabled")?,
            c.int("num_docks_available")?,
            c.int("num_docks_disabled")?,
        );
        let (inst, rent, ret, veh) = (
            c.bool("is_installed")?,
            c.bool("is_renting")?,
            c.bool("is_returning")?,
            c.str("vehicle_types_json")?,
        );
        (0..b.num_rows())
            .map(|i| {
                let vehicle_types_available = match opt_str(veh, i) {
                    Some(j) => serde_json::from_str(j)
                        .map_err(|e| c.err("vehicle_types_json", &e.to_string()))?,
                    None => Vec::new(),
                };
                Ok(CuratedStatus {
                    event_id: EventId::new(id.value(i)),
                    system_id: SystemId::new(sys.value(i)),
                    ingest_time: Timestamp(it.value(i)),
                    status: StationStatus {
                        station_id: StationId::new(st.value(i)),
                        num_bikes_available: uint(bikes.value(i)),
                        num_ebikes_available: opt_uint(ebikes, i),
                        num_bikes_disabled: opt_uint(bdis, i),
                        num_docks_available: opt_uint(docks, i),
                        num_docks_disabled: opt_uint(ddis, i),
                        is_installed: inst.value(i),
                        is_renting: rent.value(i),
                        is_returning: ret.value(i),
                        last_reported: Timestamp(lr.value(i)),
                        vehicle_types_available,
                    },
                })
            })
            .collect()
    }
}

impl LakeRecord for FeatureVector {
    const DATASET: Dataset = Dataset::Features;
    fn event_time(&self) -> Timestamp {
        self.as_of
    }
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        let values = ListArray::from_iter_primitive::<Float32Type, _, _>(
            rows.iter().map(|r| Some(r.values.iter().copied())),
        );
        batch(
            Self::DATASET,
            vec![
                strings(rows.iter().map(|r| r.system_id.as_str())),
                strings(rows.iter().map(|r| r.station_id.as_str())),
                times(rows.iter().map(|r| r.as_of)),
                strings(rows.iter().map(|r| r.schema_id.0.as_str())),
                Arc::new(values),
            ],
        )
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = cols(Self::DATASET, b);
        let (sys, st, as_of, schema, values) = (
            c.str("system_id")?,
            c.str("station_id")?,
            c.time("as_of")?,
            c.str("schema_id")?,
            c.list("feature_values")?,
        );
        (0..b.num_rows())
            .map(|i| {
                let v = values.value(i);
                let v = v
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| c.err("feature_values", "items are not float32"))?;
                Ok(FeatureVector {
                    system_id: SystemId::new(sys.value(i)),
                    station_id: StationId::new(st.value(i)),
                    as_of: Timestamp(as_of.value(i)),
                    schema_id: FeatureSchemaId(schema.value(i).to_owned()),
                    values: v.iter().collect(),
                })
            })
            .collect()
    }
}

pub(crate) fn trigger_str(t: PredictionTrigger) -> &'static str {
    match t {
        PredictionTrigger::Update => "update",
        PredictionTrigger::Tick => "tick",
    }
}

impl LakeRecord for Prediction {
    const DATASET: Dataset = Dataset::Predictions;
    fn event_time(&self) -> Timestamp {
        self.as_of
    }
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        batch(
            Self::DATASET,
            vec![
                strings(rows.iter().map(|p| p.prediction_id.as_str())),
                strings(rows.iter().map(|p| p.system_id.as_str())),
                strings(rows.iter().map(|p| p.station_id.as_str())),
                times(rows.iter().map(|p| p.as_of)),
                ints(rows.iter().map(|p| i64::from(p.horizon_minutes))),
                opt_floats(rows.iter().map(|p| p.p_empty)),
                opt_floats(rows.iter().map(|p| p.p_full)),
                strings(rows.iter().map(|p| p.model.name.as_str())),
                strings(rows.iter().map(|p| p.model.version.as_str())),
                strings(rows.iter().map(|p| p.feature_schema_id.0.as_str())),
                strings(rows.iter().map(|p| trigger_str(p.trigger))),
                strings(rows.iter().map(|p| p.scored_by.as_str())),
                ints(rows.iter().map(|p| i64::from(p.schema_version))),
            ],
        )
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = cols(Self::DATASET, b);
        let (id, sys, st, as_of, h) = (
            c.str("prediction_id")?,
            c.str("system_id")?,
            c.str("station_id")?,
            c.time("as_of")?,
            c.int("horizon_minutes")?,
        );
        let (pe, pf, mn, mv, fs, tr, ver) = (
            c.float("p_empty")?,
            c.float("p_full")?,
            c.str("model_name")?,
            c.str("model_version")?,
            c.str("feature_schema_id")?,
            c.str("trigger")?,
            c.int("schema_version")?,
        );
        let sb = c.str("scored_by")?;
        (0..b.num_rows())
            .map(|i| {
                let trigger = match tr.value(i) {
                    "update" => PredictionTrigger::Update,
                    "tick" => PredictionTrigger::Tick,
                    other => return Err(c.err("trigger", &format!("unknown value {other:?}"))),
                };
                Ok(Prediction {
                    schema_version: u16::try_from(ver.value(i)).unwrap_or(0),
                    prediction_id: EventId::new(id.value(i)),
                    system_id: SystemId::new(sys.value(i)),
                    station_id: StationId::new(st.value(i)),
                    as_of: Timestamp(as_of.value(i)),
                    horizon_minutes: uint(h.value(i)),
                    p_empty: if pe.is_valid(i) {
                        pe.value(i)
                    } else {
                        f32::NAN
                    },
                    p_full: if pf.is_valid(i) {
                        pf.value(i)
                    } else {
                        f32::NAN
                    },
                    model: ModelRef {
                        name: mn.value(i).to_owned(),
                        version: mv.value(i).to_owned(),
                    },
                    feature_schema_id: FeatureSchemaId(fs.value(i).to_owned()),
                    trigger,
                    scored_by: serde_json::from_value(serde_json::Value::from(sb.value(i)))
                        .map_err(|e| c.err("scored_by", &e.to_string()))?,
                })
            })
            .collect()
    }
}

impl LakeRecord for Label {
    const DATASET: Dataset = Dataset::Labels;
    fn event_time(&self) -> Timestamp {
        self.as_of
    }
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        batch(
            Self::DATASET,
            vec![
                strings(rows.iter().map(|l| l.prediction_id.as_str())),
                strings(rows.iter().map(|l| l.system_id.as_str())),
                strings(rows.iter().map(|l| l.station_id.as_str())),
                times(rows.iter().map(|l| l.as_of)),
                ints(rows.iter().map(|l| i64::from(l.horizon_minutes))),
                bools(rows.iter().map(|l| l.went_empty)),
                bools(rows.iter().map(|l| l.went_full)),
                bools(rows.iter().map(|l| l.empty_at_as_of)),
                bools(rows.iter().map(|l| l.full_at_as_of)),
                ints(rows.iter().map(|l| i64::from(l.observations))),
                ints(rows.iter().map(|l| i64::from(l.schema_version))),
            ],
        )
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = cols(Self::DATASET, b);
        let (id, sys, st, as_of, h) = (
            c.str("prediction_id")?,
            c.str("system_id")?,
            c.str("station_id")?,
            c.time("as_of")?,
            c.int("horizon_minutes")?,
        );
        let (we, wf, ea, fa, obs, ver) = (
            c.bool("went_empty")?,
            c.bool("went_full")?,
            c.bool("empty_at_as_of")?,
            c.bool("full_at_as_of")?,
            c.int("observations")?,
            c.int("schema_version")?,
        );
        Ok((0..b.num_rows())
            .map(|i| Label {
                schema_version: u16::try_from(ver.value(i)).unwrap_or(0),
                prediction_id: EventId::new(id.value(i)),
                system_id: SystemId::new(sys.value(i)),
                station_id: StationId::new(st.value(i)),
                as_of: Timestamp(as_of.value(i)),
                horizon_minutes: uint(h.value(i)),
                went_empty: we.value(i),
                went_full: wf.value(i),
                empty_at_as_of: ea.value(i),
                full_at_as_of: fa.value(i),
                observations: uint(obs.value(i)),
            })
            .collect())
    }
}

impl LakeRecord for DeadLetter {
    const DATASET: Dataset = Dataset::DeadLetters;
    fn event_time(&self) -> Timestamp {
        self.at
    }
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        batch(
            Self::DATASET,
            vec![
                strings(rows.iter().map(|d| d.dead_letter_id.as_str())),
                strings(rows.iter().map(|d| d.system_id.as_str())),
                strings(rows.iter().map(|d| d.source.as_str())),
                strings(rows.iter().map(|d| d.rule.as_str())),
                strings(rows.iter().map(|d| d.message.as_str())),
                strings(rows.iter().map(|d| d.raw.as_str())),
                bools(rows.iter().map(|d| d.raw_truncated)),
                times(rows.iter().map(|d| d.at)),
                ints(rows.iter().map(|d| i64::from(d.schema_version))),
            ],
        )
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = cols(Self::DATASET, b);
        let (id, sys, src, rule, msg, raw, tr, at, ver) = (
            c.str("dead_letter_id")?,
            c.str("system_id")?,
            c.str("source")?,
            c.str("rule")?,
            c.str("message")?,
            c.str("raw")?,
            c.bool("raw_truncated")?,
            c.time("at")?,
            c.int("schema_version")?,
        );
        Ok((0..b.num_rows())
            .map(|i| DeadLetter {
                schema_version: u16::try_from(ver.value(i)).unwrap_or(0),
                dead_letter_id: EventId::new(id.value(i)),
                system_id: SystemId::new(sys.value(i)),
                source: src.value(i).to_owned(),
                rule: rule.value(i).to_owned(),
                message: msg.value(i).to_owned(),
                raw: raw.value(i).to_owned(),
                raw_truncated: tr.value(i),
                at: Timestamp(at.value(i)),
            })
            .collect())
    }
}
