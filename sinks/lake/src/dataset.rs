//! The datasets of the lake, their columns, and the conversion of contract records to and
//! from Arrow record batches.
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
//! Each record type declares its dataset's columns once, as a table of [`Column`]s
//! ([`LakeRecord::COLUMNS`]): the Arrow schema ([`Dataset::schema`]), the encoding, the JSON
//! row ([`crate::json`]) and the Athena table ([`crate::athena::tables_sql`]) are derived
//! from it, and `decode` reads the same columns back by name.
//!
//! Column types are the ones Athena and DuckDB both read: strings, `int`/`bigint`, `float`,
//! `boolean`, and timestamps in milliseconds, UTC, stored without a time-zone annotation
//! (Parquet `isAdjustedToUTC = false`, so DuckDB and Athena read a plain `timestamp`).
//! Unsigned contract fields are stored signed (Athena has no unsigned types). Each
//! dataset's columns are also listed in the crate README.

use std::sync::{Arc, LazyLock};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_schema::{Field, Schema, SchemaRef};
use bikeshare_types::contracts::{
    DeadLetter, Envelope, Event, FeatureSchemaId, FeatureVector, Label, ModelRef, Prediction,
    PredictionTrigger, StationStatus,
};
use bikeshare_types::{EventId, SourceName, StationId, SystemId, Timestamp};

use crate::LakeError;
use crate::column::{self, Column, Columns, opt_prob, opt_str, opt_uint, uint, version};

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
    /// The dataset's columns, in file order: the one declaration of its schema.
    const COLUMNS: &'static [Column<Self>];
    /// The event time that decides the record's hourly partition.
    fn event_time(&self) -> Timestamp;
    /// `rows` as one record batch of [`Self::DATASET`]'s schema.
    fn encode(rows: &[Self]) -> Result<RecordBatch, LakeError> {
        column::encode(
            Self::DATASET.name(),
            Self::DATASET.schema(),
            Self::COLUMNS,
            rows,
        )
    }
    fn decode(batch: &RecordBatch) -> Result<Vec<Self>, LakeError>;
}

fn fields(d: Dataset) -> Vec<Field> {
    match d {
        Dataset::RawEvents => column::fields(Envelope::COLUMNS),
        Dataset::StationStatus => column::fields(CuratedStatus::COLUMNS),
        Dataset::Features => column::fields(FeatureVector::COLUMNS),
        Dataset::Predictions => column::fields(Prediction::COLUMNS),
        Dataset::Labels => column::fields(Label::COLUMNS),
        Dataset::DeadLetters => column::fields(DeadLetter::COLUMNS),
    }
}

/// The event's payload as JSON text: `Event` is tagged `{kind, payload}`, the kind has its
/// own column.
fn payload(e: &Envelope) -> String {
    serde_json::to_value(&e.event)
        .ok()
        .and_then(|mut v| v.get_mut("payload").map(serde_json::Value::take))
        .map(|p| p.to_string())
        .unwrap_or_default()
}

impl LakeRecord for Envelope {
    const DATASET: Dataset = Dataset::RawEvents;
    const COLUMNS: &'static [Column<Self>] = &[
        Column::str("event_id", |e| e.event_id.as_str()),
        Column::str("system_id", |e| e.system_id.as_str()),
        Column::str("source", |e| e.source.as_str()),
        Column::str("kind", |e| e.kind().as_str()),
        Column::time("event_time", |e| e.event_time),
        Column::time("ingest_time", |e| e.ingest_time),
        Column::int("schema_version", |e| e.schema_version.into()),
        Column::text("payload", payload),
    ];
    fn event_time(&self) -> Timestamp {
        self.event_time
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = Columns::new(Self::DATASET.name(), b);
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
        c.rows()
            .map(|i| {
                let tagged = format!(
                    r#"{{"kind":{},"payload":{}}}"#,
                    serde_json::Value::from(kind.value(i)),
                    payload.value(i)
                );
                let event: Event =
                    serde_json::from_str(&tagged).map_err(|e| c.err("payload", &e.to_string()))?;
                Ok(Envelope {
                    schema_version: version(ver.value(i)),
                    event_id: EventId::new(id.value(i)),
                    system_id: SystemId::new(sys.value(i)),
                    source: SourceName::new(src.value(i)),
                    event_time: Timestamp(et.value(i)),
                    ingest_time: Timestamp(it.value(i)),
                    event,
                })
            })
            .collect()
    }
}

/// The station's vehicle counts as JSON text; null when there are none.
fn vehicle_types_json(r: &CuratedStatus) -> Option<String> {
    let v = &r.status.vehicle_types_available;
    (!v.is_empty()).then(|| serde_json::to_string(v).unwrap_or_default())
}

impl LakeRecord for CuratedStatus {
    const DATASET: Dataset = Dataset::StationStatus;
    const COLUMNS: &'static [Column<Self>] = &[
        Column::str("event_id", |r| r.event_id.as_str()),
        Column::str("system_id", |r| r.system_id.as_str()),
        Column::str("station_id", |r| r.status.station_id.as_str()),
        Column::time("last_reported", |r| r.status.last_reported),
        Column::time("ingest_time", |r| r.ingest_time),
        Column::int("num_bikes_available", |r| {
            r.status.num_bikes_available.into()
        }),
        Column::opt_int("num_ebikes_available", |r| r.status.num_ebikes_available),
        Column::opt_int("num_bikes_disabled", |r| r.status.num_bikes_disabled),
        Column::opt_int("num_docks_available", |r| r.status.num_docks_available),
        Column::opt_int("num_docks_disabled", |r| r.status.num_docks_disabled),
        Column::bool("is_installed", |r| r.status.is_installed),
        Column::bool("is_renting", |r| r.status.is_renting),
        Column::bool("is_returning", |r| r.status.is_returning),
        Column::bool("is_empty", |r| r.status.is_empty()),
        Column::bool("is_full", |r| r.status.is_full()),
        Column::opt_text("vehicle_types_json", vehicle_types_json),
    ];
    fn event_time(&self) -> Timestamp {
        self.status.last_reported
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = Columns::new(Self::DATASET.name(), b);
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
        c.rows()
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
    const COLUMNS: &'static [Column<Self>] = &[
        Column::str("system_id", |f| f.system_id.as_str()),
        Column::str("station_id", |f| f.station_id.as_str()),
        Column::time("as_of", |f| f.as_of),
        Column::str("schema_id", |f| &f.schema_id.0),
        Column::floats("feature_values", |f| &f.values),
    ];
    fn event_time(&self) -> Timestamp {
        self.as_of
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = Columns::new(Self::DATASET.name(), b);
        let (sys, st, as_of, schema, values) = (
            c.str("system_id")?,
            c.str("station_id")?,
            c.time("as_of")?,
            c.str("schema_id")?,
            c.list("feature_values")?,
        );
        c.rows()
            .map(|i| {
                let v = values.value(i);
                let v = v
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| c.err("feature_values", "items are not float32"))?;
                Ok(FeatureVector {
                    system_id: SystemId::new(sys.value(i)),
                    station_id: StationId::new(st.value(i)),
                    as_of: Timestamp(as_of.value(i)),
                    schema_id: FeatureSchemaId::new(schema.value(i)),
                    values: v.iter().collect(),
                })
            })
            .collect()
    }
}

fn trigger_str(t: PredictionTrigger) -> &'static str {
    match t {
        PredictionTrigger::Update => "update",
        PredictionTrigger::Tick => "tick",
    }
}

/// The columns that identify a prediction, first in both `predictions` and `labels` (a
/// label has its prediction's id, station, time and horizon).
struct PredictionKey<'a> {
    id: &'a arrow_array::StringArray,
    system: &'a arrow_array::StringArray,
    station: &'a arrow_array::StringArray,
    as_of: &'a arrow_array::TimestampMillisecondArray,
    horizon: &'a arrow_array::Int32Array,
}

impl<'a> PredictionKey<'a> {
    fn read(c: &Columns<'a>) -> Result<Self, LakeError> {
        Ok(Self {
            id: c.str("prediction_id")?,
            system: c.str("system_id")?,
            station: c.str("station_id")?,
            as_of: c.time("as_of")?,
            horizon: c.int("horizon_minutes")?,
        })
    }
    fn at(&self, i: usize) -> (EventId, SystemId, StationId, Timestamp, u32) {
        (
            EventId::new(self.id.value(i)),
            SystemId::new(self.system.value(i)),
            StationId::new(self.station.value(i)),
            Timestamp(self.as_of.value(i)),
            uint(self.horizon.value(i)),
        )
    }
}

impl LakeRecord for Prediction {
    const DATASET: Dataset = Dataset::Predictions;
    const COLUMNS: &'static [Column<Self>] = &[
        Column::str("prediction_id", |p| p.prediction_id.as_str()),
        Column::str("system_id", |p| p.system_id.as_str()),
        Column::str("station_id", |p| p.station_id.as_str()),
        Column::time("as_of", |p| p.as_of),
        Column::int("horizon_minutes", |p| p.horizon_minutes.into()),
        // Null when nobody scored (`scored_by = unavailable`; NaN in the contract).
        Column::prob("p_empty", |p| p.p_empty),
        Column::prob("p_full", |p| p.p_full),
        Column::str("model_name", |p| &p.model.name),
        Column::str("model_version", |p| &p.model.version),
        Column::str("feature_schema_id", |p| &p.feature_schema_id.0),
        Column::str("trigger", |p| trigger_str(p.trigger)),
        Column::str("scored_by", |p| p.scored_by.as_str()),
        Column::int("schema_version", |p| p.schema_version.into()),
        // The last revision of a prediction id is its answer (decision 087).
        Column::int("revision", |p| p.revision.into()),
    ];
    fn event_time(&self) -> Timestamp {
        self.as_of
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = Columns::new(Self::DATASET.name(), b);
        let key = PredictionKey::read(&c)?;
        let (pe, pf, mn, mv, fs, tr, sb, ver) = (
            c.float("p_empty")?,
            c.float("p_full")?,
            c.str("model_name")?,
            c.str("model_version")?,
            c.str("feature_schema_id")?,
            c.str("trigger")?,
            c.str("scored_by")?,
            c.int("schema_version")?,
        );
        // Files written before schema 3 have no revision column: their rows are revision 0.
        let rev = c.opt_int("revision")?;
        c.rows()
            .map(|i| {
                let trigger = match tr.value(i) {
                    "update" => PredictionTrigger::Update,
                    "tick" => PredictionTrigger::Tick,
                    other => return Err(c.err("trigger", &format!("unknown value {other:?}"))),
                };
                let (prediction_id, system_id, station_id, as_of, horizon_minutes) = key.at(i);
                Ok(Prediction {
                    schema_version: version(ver.value(i)),
                    prediction_id,
                    system_id,
                    station_id,
                    as_of,
                    horizon_minutes,
                    p_empty: opt_prob(pe, i),
                    p_full: opt_prob(pf, i),
                    model: ModelRef {
                        name: mn.value(i).to_owned(),
                        version: mv.value(i).to_owned(),
                    },
                    feature_schema_id: FeatureSchemaId::new(fs.value(i)),
                    trigger,
                    scored_by: serde_json::from_value(serde_json::Value::from(sb.value(i)))
                        .map_err(|e| c.err("scored_by", &e.to_string()))?,
                    revision: rev.map_or(0, |r| uint(r.value(i))),
                })
            })
            .collect()
    }
}

impl LakeRecord for Label {
    const DATASET: Dataset = Dataset::Labels;
    const COLUMNS: &'static [Column<Self>] = &[
        Column::str("prediction_id", |l| l.prediction_id.as_str()),
        Column::str("system_id", |l| l.system_id.as_str()),
        Column::str("station_id", |l| l.station_id.as_str()),
        Column::time("as_of", |l| l.as_of),
        Column::int("horizon_minutes", |l| l.horizon_minutes.into()),
        Column::bool("went_empty", |l| l.went_empty),
        Column::bool("went_full", |l| l.went_full),
        Column::bool("empty_at_as_of", |l| l.empty_at_as_of),
        Column::bool("full_at_as_of", |l| l.full_at_as_of),
        Column::int("observations", |l| l.observations.into()),
        Column::int("schema_version", |l| l.schema_version.into()),
    ];
    fn event_time(&self) -> Timestamp {
        self.as_of
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = Columns::new(Self::DATASET.name(), b);
        let key = PredictionKey::read(&c)?;
        let (we, wf, ea, fa, obs, ver) = (
            c.bool("went_empty")?,
            c.bool("went_full")?,
            c.bool("empty_at_as_of")?,
            c.bool("full_at_as_of")?,
            c.int("observations")?,
            c.int("schema_version")?,
        );
        Ok(c.rows()
            .map(|i| {
                let (prediction_id, system_id, station_id, as_of, horizon_minutes) = key.at(i);
                Label {
                    schema_version: version(ver.value(i)),
                    prediction_id,
                    system_id,
                    station_id,
                    as_of,
                    horizon_minutes,
                    went_empty: we.value(i),
                    went_full: wf.value(i),
                    empty_at_as_of: ea.value(i),
                    full_at_as_of: fa.value(i),
                    observations: uint(obs.value(i)),
                }
            })
            .collect())
    }
}

impl LakeRecord for DeadLetter {
    const DATASET: Dataset = Dataset::DeadLetters;
    const COLUMNS: &'static [Column<Self>] = &[
        Column::str("dead_letter_id", |d| d.dead_letter_id.as_str()),
        Column::str("system_id", |d| d.system_id.as_str()),
        Column::str("source", |d| &d.source),
        Column::str("rule", |d| &d.rule),
        Column::str("message", |d| &d.message),
        Column::str("raw", |d| &d.raw),
        Column::bool("raw_truncated", |d| d.raw_truncated),
        Column::time("at", |d| d.at),
        Column::int("schema_version", |d| d.schema_version.into()),
    ];
    fn event_time(&self) -> Timestamp {
        self.at
    }
    fn decode(b: &RecordBatch) -> Result<Vec<Self>, LakeError> {
        let c = Columns::new(Self::DATASET.name(), b);
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
        Ok(c.rows()
            .map(|i| DeadLetter {
                schema_version: version(ver.value(i)),
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
