//! Backfill: a recorded or simulated history through the *same* processor, into
//! point-in-time-correct training rows.
//!
//! Every feature row the processor emits is held until its label is emitted (once the
//! horizon has passed in event time); the two are joined by prediction id into a
//! [`TrainingRow`]. A waiting row keeps only what its label does not carry (values, trigger,
//! prediction id: the system, station and `as_of` come back from the label, decision 097). The features are exactly the online ones (same operator code, same event
//! order), and a label only reads reports after `as_of`, so no feature sees the future and
//! every label is the truth the online processor would have recorded. Rows whose horizon
//! extends past the end of the history have no label and are counted, not written.

use std::io::Write;

use bikeshare_types::EventId;
use bikeshare_types::contracts::{
    Envelope, FeatureSchemaId, FeatureVector, Label, PredictionTrigger,
};

use crate::processor::{Emitted, FeatureRow, Processor, RejectReason};
use crate::schema::FeatureSchema;

/// A feature row with its observed outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRow {
    pub row: FeatureRow,
    pub label: Label,
}

/// Counters of a backfill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillStats {
    pub events: u64,
    pub rows: u64,
    pub unlabelled: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Weather observations older than every one kept.
    pub superseded: u64,
}

/// A row waiting for its label: what the label does not carry. The label has the row's
/// system, station and `as_of` (the prediction id is made of them), and the schema id is the
/// processor's, so those are taken from there at the join instead of being held per row (a
/// third of the memory of a whole [`FeatureRow`] and three allocations fewer to free).
#[derive(Debug)]
struct PendingRow {
    prediction_id: EventId,
    values: Vec<Option<f32>>,
    trigger: PredictionTrigger,
    horizon_minutes: u32,
    revision: u32,
}

impl PendingRow {
    fn of(row: FeatureRow) -> Self {
        Self {
            prediction_id: row.prediction_id,
            values: row.vector.values,
            trigger: row.trigger,
            horizon_minutes: row.horizon_minutes,
            revision: row.revision,
        }
    }

    /// The whole row again, with what its `label` (of the same prediction id) carries.
    fn with(self, label: &Label, schema_id: &FeatureSchemaId) -> FeatureRow {
        FeatureRow {
            vector: FeatureVector {
                system_id: label.system_id.clone(),
                station_id: label.station_id.clone(),
                as_of: label.as_of,
                schema_id: schema_id.clone(),
                values: self.values,
            },
            trigger: self.trigger,
            prediction_id: self.prediction_id,
            horizon_minutes: self.horizon_minutes,
            revision: self.revision,
        }
    }
}

/// The rows waiting for their label, found by prediction id: a hash table of the rows
/// themselves (the id is in the row), hashed with XXH3 (the ids are hashes already; SipHash
/// of a 32-digit id cost more than the lookup).
#[derive(Default)]
struct Pending(hashbrown::HashTable<PendingRow>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} rows)", self.0.len())
    }
}

fn id_hash(id: &EventId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

impl Pending {
    /// Holds `row`, replacing a row of the same prediction id (a correction).
    fn insert(&mut self, row: PendingRow) {
        let hash = id_hash(&row.prediction_id);
        match self.0.entry(
            hash,
            |r| r.prediction_id == row.prediction_id,
            |r| id_hash(&r.prediction_id),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut held) => *held.get_mut() = row,
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(row);
            }
        }
    }

    fn remove(&mut self, id: &EventId) -> Option<PendingRow> {
        self.0
            .find_entry(id_hash(id), |r| r.prediction_id == *id)
            .ok()
            .map(|held| held.remove().0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Feeds events to a processor and joins its rows with their labels.
#[derive(Debug)]
pub struct Backfill {
    processor: Processor,
    pending: Pending,
    emitted: Vec<Emitted>,
    stats: BackfillStats,
}

impl Backfill {
    pub fn new(processor: Processor) -> Self {
        Self {
            processor,
            pending: Pending::default(),
            emitted: Vec::new(),
            stats: BackfillStats::default(),
        }
    }

    pub fn schema(&self) -> &FeatureSchema {
        self.processor.schema()
    }

    pub fn stats(&self) -> BackfillStats {
        self.stats
    }

    /// Processes one event; joined rows go to `out`.
    pub fn push(&mut self, env: Envelope, out: &mut impl FnMut(TrainingRow)) {
        self.stats.events += 1;
        self.processor.process(env, &mut self.emitted);
        self.join(out);
    }

    /// Applies what the reorder buffer still holds; rows still without a label are counted.
    pub fn finish(mut self, out: &mut impl FnMut(TrainingRow)) -> BackfillStats {
        self.processor.drain(&mut self.emitted);
        self.join(out);
        self.stats.unlabelled = self.pending.len() as u64;
        self.stats
    }

    fn join(&mut self, out: &mut impl FnMut(TrainingRow)) {
        for e in self.emitted.drain(..) {
            match e {
                Emitted::Row(row) => {
                    self.pending.insert(PendingRow::of(row));
                }
                Emitted::Label(label) => {
                    if let Some(held) = self.pending.remove(&label.prediction_id) {
                        let row = held.with(&label, self.processor.schema().id());
                        self.stats.rows += 1;
                        out(TrainingRow { row, label });
                    }
                }
                Emitted::Rejected {
                    reason: RejectReason::Late,
                    ..
                } => self.stats.late += 1,
                Emitted::Rejected {
                    reason: RejectReason::Duplicate,
                    ..
                } => self.stats.duplicates += 1,
                Emitted::Rejected {
                    reason: RejectReason::Superseded,
                    ..
                } => self.stats.superseded += 1,
            }
        }
    }
}

/// The CSV columns before the features.
pub const CSV_KEY_COLUMNS: &[&str] = &[
    "system_id",
    "station_id",
    "as_of_ms",
    "trigger",
    "prediction_id",
    "went_empty",
    "went_full",
    "empty_at_as_of",
    "full_at_as_of",
    "observations",
];

/// Writes the header: key columns, then the feature names in schema order. A comment line
/// first names the feature schema id.
pub fn write_csv_header(w: &mut impl Write, schema: &FeatureSchema) -> std::io::Result<()> {
    writeln!(w, "# feature_schema_id={}", schema.id().0)?;
    let names: Vec<&str> = CSV_KEY_COLUMNS
        .iter()
        .copied()
        .chain(schema.names())
        .collect();
    writeln!(w, "{}", names.join(","))
}

/// Writes one row; a missing feature is an empty field (never a zero). Floats print in their
/// shortest form that reads back to the same `f32`.
pub fn write_csv_row(w: &mut impl Write, r: &TrainingRow) -> std::io::Result<()> {
    let v = &r.row.vector;
    let trigger = match r.row.trigger {
        bikeshare_types::contracts::PredictionTrigger::Update => "update",
        bikeshare_types::contracts::PredictionTrigger::Tick => "tick",
    };
    let b = |x: bool| if x { "1" } else { "0" };
    write!(
        w,
        "{},{},{},{},{},{},{},{},{},{}",
        csv_field(v.system_id.as_str()),
        csv_field(v.station_id.as_str()),
        v.as_of.millis(),
        trigger,
        r.row.prediction_id,
        b(r.label.went_empty),
        b(r.label.went_full),
        b(r.label.empty_at_as_of),
        b(r.label.full_at_as_of),
        r.label.observations
    )?;
    for x in &v.values {
        match x {
            Some(f) => write!(w, ",{f}")?,
            None => w.write_all(b",")?,
        }
    }
    w.write_all(b"\n")
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}
