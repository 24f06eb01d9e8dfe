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

use std::collections::VecDeque;
use std::io::Write;

use bikeshare_types::contracts::{
    Envelope, FeatureSchemaId, FeatureVector, Label, PredictionTrigger,
};
use bikeshare_types::{EventId, StationId, SystemId};

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

/// A row waiting for its label: what the label does not carry, and its `as_of` to keep its
/// station's rows in order. The label has the row's system, station and `as_of` (the
/// prediction id is made of them), and the schema id is the processor's, so those are taken
/// from there at the join; the system and station are held once per station ([`Pending`]).
#[derive(Debug)]
struct PendingRow {
    prediction_id: EventId,
    /// Kept for the order of its station's rows (the label has it too).
    as_of: i64,
    /// The row's values as [`to_bits`] keeps them: 4 bytes a value instead of 8, so the
    /// rows that wait (hundreds of thousands) take half the memory (decision 103).
    values: Box<[u32]>,
    trigger: PredictionTrigger,
    horizon_minutes: u32,
    revision: u32,
}

impl PendingRow {
    /// `row`'s system and station (what it waits under), and what waits.
    fn of(row: FeatureRow) -> (SystemId, StationId, Self) {
        let held = Self {
            prediction_id: row.prediction_id,
            as_of: row.vector.as_of.millis(),
            values: row.vector.values.iter().copied().map(to_bits).collect(),
            trigger: row.trigger,
            horizon_minutes: row.horizon_minutes,
            revision: row.revision,
        };
        (row.vector.system_id, row.vector.station_id, held)
    }

    /// The whole row again, with what its `label` (of the same prediction id) carries.
    fn with(self, label: &Label, schema_id: &FeatureSchemaId) -> FeatureRow {
        FeatureRow {
            vector: FeatureVector {
                system_id: label.system_id.clone(),
                station_id: label.station_id.clone(),
                as_of: label.as_of,
                schema_id: schema_id.clone(),
                values: self.values.iter().copied().map(from_bits).collect(),
            },
            trigger: self.trigger,
            prediction_id: self.prediction_id,
            horizon_minutes: self.horizon_minutes,
            revision: self.revision,
        }
    }
}

/// A missing value among those that wait: a signalling NaN with a payload. Arithmetic never
/// gives one (it gives quiet NaNs), so every `Option<f32>` a row had, a NaN, a -0 or an
/// infinity included, comes back bit for bit, all but a value of exactly these bits (only
/// made from bits, never computed; a debug build stops on one).
const MISSING: u32 = 0x7F80_0B1E;
// All exponent bits set, the quiet bit (22) clear, a payload: a signalling NaN.
const _: () = assert!(
    MISSING & 0x7F80_0000 == 0x7F80_0000
        && MISSING & 0x0040_0000 == 0
        && MISSING & 0x003F_FFFF != 0
);

fn to_bits(x: Option<f32>) -> u32 {
    x.map_or(MISSING, |v| {
        debug_assert_ne!(
            v.to_bits(),
            MISSING,
            "a feature value is the missing marker"
        );
        v.to_bits()
    })
}

fn from_bits(b: u32) -> Option<f32> {
    (b != MISSING).then(|| f32::from_bits(b))
}

/// The rows waiting for their label, by station, each station's in `as_of` order: a row is
/// appended at its station's end (or replaces the row of the same prediction id, a
/// correction), and a station's labels come in `as_of` order, so the row a label finds is
/// almost always its station's first. A small table of stations (hashed with XXH3 of the
/// station id) and short queues, instead of one table of every waiting row by prediction id
/// (hundreds of thousands, so each look-up missed the cache; decision 102).
#[derive(Default)]
struct Pending {
    stations: hashbrown::HashTable<StationRows>,
    len: usize,
}

#[derive(Debug)]
struct StationRows {
    system: SystemId,
    station: StationId,
    rows: VecDeque<PendingRow>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} rows)", self.len)
    }
}

fn station_hash(station: &StationId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(station.as_str().as_bytes())
}

impl Pending {
    /// Holds `row` of `system`'s `station`, replacing a row of the same prediction id (a
    /// correction).
    fn insert(&mut self, system: &SystemId, station: &StationId, row: PendingRow) {
        let held = self
            .stations
            .entry(
                station_hash(station),
                |s| s.station == *station && s.system == *system,
                |s| station_hash(&s.station),
            )
            .or_insert_with(|| StationRows {
                system: system.clone(),
                station: station.clone(),
                rows: VecDeque::new(),
            })
            .into_mut();
        // From the end: the rows are in `as_of` order, and a new row is almost always last.
        let after = held
            .rows
            .iter()
            .rposition(|r| r.as_of <= row.as_of)
            .map_or(0, |i| i + 1);
        let same = held
            .rows
            .range(..after)
            .rev()
            .take_while(|r| r.as_of == row.as_of)
            .position(|r| r.prediction_id == row.prediction_id);
        match same {
            Some(back) => held.rows[after - 1 - back] = row,
            None => {
                held.rows.insert(after, row);
                self.len += 1;
            }
        }
    }

    /// The row `label` is for, if one waits.
    fn remove(&mut self, label: &Label) -> Option<PendingRow> {
        let held = self
            .stations
            .find_mut(station_hash(&label.station_id), |s| {
                s.station == label.station_id && s.system == label.system_id
            })?;
        let i = held
            .rows
            .iter()
            .position(|r| r.prediction_id == label.prediction_id)?;
        self.len -= 1;
        held.rows.remove(i)
    }

    fn len(&self) -> usize {
        self.len
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
                    let (system, station, row) = PendingRow::of(row);
                    self.pending.insert(&system, &station, row);
                }
                Emitted::Label(label) => {
                    if let Some(held) = self.pending.remove(&label) {
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

#[cfg(test)]
mod tests {
    use bikeshare_types::Timestamp;
    use bikeshare_types::contracts::{LABEL_SCHEMA_VERSION, Prediction};

    use super::*;

    fn id(station: &str, as_of: i64) -> EventId {
        Prediction::id_for(
            &SystemId::new("sys"),
            &StationId::new(station),
            Timestamp(as_of),
            30,
        )
    }

    fn row(station: &str, as_of: i64, value: f32) -> (SystemId, StationId, PendingRow) {
        let held = PendingRow {
            prediction_id: id(station, as_of),
            as_of,
            values: [to_bits(Some(value))].into(),
            trigger: PredictionTrigger::Tick,
            horizon_minutes: 30,
            revision: 0,
        };
        (SystemId::new("sys"), StationId::new(station), held)
    }

    fn label(station: &str, as_of: i64) -> Label {
        Label {
            schema_version: LABEL_SCHEMA_VERSION,
            prediction_id: id(station, as_of),
            system_id: SystemId::new("sys"),
            station_id: StationId::new(station),
            as_of: Timestamp(as_of),
            horizon_minutes: 30,
            went_empty: false,
            went_full: false,
            empty_at_as_of: false,
            full_at_as_of: false,
            observations: 1,
        }
    }

    /// What a table of every row by prediction id answered: each label finds its row whatever
    /// the order rows came in, a row of the same id replaces the one held, and a row found
    /// is gone.
    #[test]
    fn a_label_finds_its_rows_last_version_in_any_order() {
        let mut pending = Pending::default();
        for (station, as_of, value) in [
            ("a", 60, 1.0),
            ("b", 60, 2.0),
            ("a", 180, 3.0),
            ("a", 120, 4.0), // before the last one of its station
            ("a", 0, 5.0),   // before every one
            ("a", 120, 6.0), // a correction
            ("b", 60, 7.0),  // a correction of the other station's
        ] {
            let (system, station, held) = row(station, as_of, value);
            pending.insert(&system, &station, held);
        }
        assert_eq!(pending.len(), 5);
        let value = |p: Option<PendingRow>| p.map(|r| from_bits(r.values[0]));
        assert_eq!(value(pending.remove(&label("a", 180))), Some(Some(3.0)));
        assert_eq!(value(pending.remove(&label("a", 120))), Some(Some(6.0)));
        assert_eq!(value(pending.remove(&label("a", 120))), None);
        assert_eq!(value(pending.remove(&label("c", 60))), None);
        assert_eq!(value(pending.remove(&label("b", 60))), Some(Some(7.0)));
        assert_eq!(value(pending.remove(&label("a", 0))), Some(Some(5.0)));
        assert_eq!(pending.len(), 1);
        assert_eq!(value(pending.remove(&label("a", 60))), Some(Some(1.0)));
        assert_eq!(pending.len(), 0);
    }

    /// Every value a row can have comes back bit for bit from its wait: a 0 and a -0,
    /// infinities, NaNs (quiet, negative, with a payload), a subnormal and missing values.
    #[test]
    fn waiting_values_come_back_bit_for_bit() {
        let given = vec![
            None,
            Some(0.0),
            Some(-0.0),
            Some(f32::INFINITY),
            Some(f32::NEG_INFINITY),
            Some(f32::NAN),
            Some(-f32::NAN),
            Some(f32::from_bits(0x7FC0_0001)),
            Some(f32::from_bits(0x7F80_0001)), // another signalling NaN
            Some(f32::from_bits(MISSING ^ 1)),
            Some(f32::MIN_POSITIVE / 2.0),
            Some(1.5),
            None,
        ];
        let schema = FeatureSchemaId::new("s");
        let label = label("a", 60);
        let row = FeatureRow {
            vector: FeatureVector {
                system_id: label.system_id.clone(),
                station_id: label.station_id.clone(),
                as_of: label.as_of,
                schema_id: schema.clone(),
                values: given.clone(),
            },
            trigger: PredictionTrigger::Update,
            prediction_id: label.prediction_id.clone(),
            horizon_minutes: 30,
            revision: 1,
        };
        let (_, _, held) = PendingRow::of(row.clone());
        let back = held.with(&label, &schema);
        let bits = |v: &[Option<f32>]| -> Vec<Option<u32>> {
            v.iter().map(|x| x.map(f32::to_bits)).collect()
        };
        assert_eq!(bits(&back.vector.values), bits(&given));
        assert_eq!(back.revision, row.revision);
        assert_eq!(back.trigger, row.trigger);
    }
}
