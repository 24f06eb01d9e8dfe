//! Labelled feature rows for training and evaluation, and their time-based split.
//!
//! [`TrainingData`] is one table whatever the rows came from: one loader per source fills it
//! through [`TrainingData::push`], so a new source (the Parquet lake) is one more loader.
//! Loaders today:
//!
//! - [`TrainingData::from_events`]: any history of input events (a simulated city, a replayed
//!   recording) through the processor's [`Backfill`], which joins every feature row with its
//!   label by prediction id — the exact online features, labels from after `as_of` only;
//! - [`TrainingData::from_rows`]: already joined [`TrainingRow`]s;
//! - [`TrainingData::from_backfill_csv`]: the CSV that `bikeshare backfill` writes.
//!
//! Rows are kept in `as_of` order, so a [`Split`] is three contiguous ranges: train on the
//! earlier days, validate and test on the later ones, never shuffled. Rows whose label window
//! `(as_of, as_of + horizon]` crosses a boundary are purged from the earlier part, so no
//! training label reads the validation period (nor a validation label the test period).

use std::io::BufRead;
use std::ops::Range;

use bikeshare_stream_processor::backfill::{Backfill, BackfillStats, CSV_KEY_COLUMNS, TrainingRow};
use bikeshare_stream_processor::{FeatureSchema, Processor, ProcessorConfig};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{Envelope, FeatureSchemaId};
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 24 * Timestamp::HOUR_MS;

/// Why rows could not be loaded or split.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}, line {line}: {message}")]
    Parse {
        what: String,
        line: u64,
        message: String,
    },
    #[error("rows of feature schema {found} cannot join rows of {expected}")]
    Schema { expected: String, found: String },
    #[error("not enough data: {0}")]
    TooLittle(String),
    #[error("invalid split: {0}")]
    Split(String),
}

impl bikeshare_types::error::Classify for DataError {
    fn class(&self) -> bikeshare_types::error::ErrorClass {
        match self {
            Self::Io { .. } => bikeshare_types::error::ErrorClass::External,
            _ => bikeshare_types::error::ErrorClass::User,
        }
    }
    fn retryable(&self) -> bool {
        false
    }
}

/// What is known about a row besides its features.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMeta {
    /// The station, an index into the table's station ids ([`TrainingData::station_id`]).
    pub station: u32,
    pub as_of: Timestamp,
    pub went_empty: bool,
    pub went_full: bool,
    pub empty_now: bool,
    pub full_now: bool,
    /// Local hour of day (0–23) from the `hour_sin`/`hour_cos` features, else the UTC hour.
    pub hour: u8,
    /// How many rows of the source this row stands for: 1, or `1 / keep` for an easy row
    /// kept by a sampled load ([`LoadSample`]), the inverse of its inclusion probability.
    pub weight: f32,
}

/// Features of the schema that a drift check leaves out of the distribution comparison,
/// and why (written into `constraints.json`). Completeness and type are still checked.
pub const NOT_COMPARED_FOR_DRIFT: &[(&str, &str)] = &[
    ("hour_sin", HOUR_REASON),
    ("hour_cos", HOUR_REASON),
    ("dow_sin", DAY_REASON),
    ("dow_cos", DAY_REASON),
    ("is_weekend", DAY_REASON),
    ("temperature_c", WEATHER_REASON),
    ("precipitation_mm", WEATHER_REASON),
    ("wind_speed_kmh", WEATHER_REASON),
    ("humidity_pct", WEATHER_REASON),
];
/// Features a drift check neither compares nor requires (see
/// `BaselineBuilder::optional`), and why.
pub const OPTIONAL_FOR_DRIFT: &[(&str, &str)] = &[
    ("minutes_since_empty", SINCE_REASON),
    ("minutes_since_full", SINCE_REASON),
];
const HOUR_REASON: &str = "the clock of the window, not data: a window holds the hours it \
     covers, the baseline every hour (the other features are compared hour by hour, \
     statistics_by_hour.json)";
const DAY_REASON: &str = "the day of the window, not data: a window of hours holds one day, the \
     baseline every day of the training weeks";
const WEATHER_REASON: &str = "one observation per city and hour: a window of an hour holds one \
     draw of the weather, the baseline every hour of the training days";
const SINCE_REASON: &str = "bounded by how long the processor has watched the station, and \
     missing until it has seen the state once: a processor younger than the training history \
     shows smaller values and more missing ones on a healthy system";

/// The drift threshold for rows of `stations` stations: the two-sample Kolmogorov-Smirnov
/// critical value at 1 % for one independent draw per station (a window's rows are 5-minute
/// ticks of the same stations, so an hour holds about one independent draw each), and never
/// below Model Monitor's default 0.1.
pub fn drift_threshold(stations: usize) -> f64 {
    let n = stations.max(1) as f64;
    (1.63 * (2.0 / n).sqrt()).clamp(bikeshare_monitor::drift::DEFAULT_DRIFT_THRESHOLD, 1.0)
}

/// The drift baseline builder for rows of this schema's `names` from `stations` stations:
/// [`NOT_COMPARED_FOR_DRIFT`] and [`OPTIONAL_FOR_DRIFT`] left out, [`drift_threshold`]. Training uses it for the
/// baseline saved with a model; `bikeshare monitor baseline` for lake rows.
pub fn drift_baseline_builder(
    names: &[String],
    stations: usize,
) -> bikeshare_monitor::drift::BaselineBuilder {
    let mut b = bikeshare_monitor::drift::BaselineBuilder::new(names.iter())
        .drift_threshold(drift_threshold(stations));
    for (f, reason) in NOT_COMPARED_FOR_DRIFT {
        if names.iter().any(|n| n == f) {
            b = b.not_compared(f, *reason);
        }
    }
    for (f, reason) in OPTIONAL_FOR_DRIFT {
        if names.iter().any(|n| n == f) {
            b = b.optional(f, *reason);
        }
    }
    b
}

/// Which of the two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    WentEmpty,
    WentFull,
}

impl Target {
    pub const BOTH: [Target; 2] = [Target::WentEmpty, Target::WentFull];
    /// The file stem of its model in a model directory.
    pub fn stem(self) -> &'static str {
        match self {
            Self::WentEmpty => "empty",
            Self::WentFull => "full",
        }
    }
    pub fn label(self, m: &RowMeta) -> bool {
        match self {
            Self::WentEmpty => m.went_empty,
            Self::WentFull => m.went_full,
        }
    }
    /// The state now that persistence carries forward.
    pub fn state_now(self, m: &RowMeta) -> bool {
        match self {
            Self::WentEmpty => m.empty_now,
            Self::WentFull => m.full_now,
        }
    }
}

/// Labelled rows of one feature schema, in `as_of` order. Features are stored dense,
/// row-major, with `NaN` for a missing value (never 0: "0 bikes" is a value).
#[derive(Debug, Clone)]
pub struct TrainingData {
    schema_id: FeatureSchemaId,
    feature_names: Vec<String>,
    horizon_minutes: u32,
    hour_idx: Option<(usize, usize)>,
    values: Vec<f32>,
    meta: Vec<RowMeta>,
    /// Station ids, each once ([`RowMeta::station`] indexes them).
    stations: Vec<String>,
    station_index: std::collections::HashMap<String, u32>,
    sorted: bool,
    /// How the rows were sampled while loading, if they were, and the first and last `as_of`
    /// of the source (the split is cut on those, so a sampled load splits where a full one
    /// does).
    sampled: Option<(LoadSample, Timestamp, Timestamp)>,
}

impl TrainingData {
    /// An empty table for `schema` and a label horizon.
    pub fn new(schema: &FeatureSchema, horizon_minutes: u32) -> Self {
        Self::with_names(
            schema.id().clone(),
            schema.names().map(str::to_owned).collect(),
            horizon_minutes,
        )
    }

    fn with_names(
        schema_id: FeatureSchemaId,
        feature_names: Vec<String>,
        horizon_minutes: u32,
    ) -> Self {
        Self::with_capacity(schema_id, feature_names, horizon_minutes, 0)
    }

    /// An empty table with room for `rows` rows (a loader that knows how many it will add
    /// sizes the matrix once).
    pub fn with_capacity(
        schema_id: FeatureSchemaId,
        feature_names: Vec<String>,
        horizon_minutes: u32,
        rows: usize,
    ) -> Self {
        let find = |n: &str| feature_names.iter().position(|f| f == n);
        let hour_idx = find("hour_sin").zip(find("hour_cos"));
        let width = feature_names.len();
        Self {
            schema_id,
            feature_names,
            horizon_minutes,
            hour_idx,
            values: Vec::with_capacity(rows.saturating_mul(width)),
            meta: Vec::with_capacity(rows),
            stations: Vec::new(),
            station_index: std::collections::HashMap::new(),
            sorted: true,
            sampled: None,
        }
    }

    /// Records that the rows were sampled while loading by `sample` from a source whose rows
    /// span `first..=last` (their weights say how many rows each stands for).
    pub(crate) fn set_sampled(&mut self, sample: LoadSample, first: Timestamp, last: Timestamp) {
        self.sampled = Some((sample, first, last));
    }

    /// How the rows were sampled while loading (`None`: every row of the source is here).
    pub fn load_sample(&self) -> Option<&LoadSample> {
        self.sampled.as_ref().map(|(s, _, _)| s)
    }

    fn station(&mut self, station_id: &str) -> u32 {
        if let Some(&i) = self.station_index.get(station_id) {
            return i;
        }
        let i = u32::try_from(self.stations.len()).unwrap_or(u32::MAX);
        self.stations.push(station_id.to_owned());
        self.station_index.insert(station_id.to_owned(), i);
        i
    }

    /// The local hour of row `i`: from its `hour_sin`/`hour_cos` features, else UTC.
    fn hour_of(&self, i: usize, as_of: Timestamp) -> u8 {
        let row = self.row(i);
        self.hour_idx
            .and_then(|(s, c)| local_hour(row[s], row[c]))
            .unwrap_or_else(|| (as_of.millis().rem_euclid(DAY_MS) / Timestamp::HOUR_MS) as u8)
    }

    /// Adds one row (`values` in schema order; `None` = missing). Every loader goes through
    /// here or through [`Self::push_keys`].
    pub fn push(
        &mut self,
        station_id: &str,
        as_of: Timestamp,
        label: RowLabel,
        values: impl IntoIterator<Item = Option<f32>>,
    ) {
        let start = self.values.len();
        self.values
            .extend(values.into_iter().map(|v| v.unwrap_or(f32::NAN)));
        self.values
            .resize(start + self.feature_names.len(), f32::NAN);
        self.push_meta(station_id, as_of, label);
        let i = self.meta.len() - 1;
        let hour = self.hour_of(i, as_of);
        self.meta[i].hour = hour;
    }

    /// [`Self::push`] of a row standing for `weight` rows (what a sampled load keeps).
    #[cfg(test)]
    pub(crate) fn push_weighted(
        &mut self,
        station_id: &str,
        as_of: Timestamp,
        label: RowLabel,
        values: impl IntoIterator<Item = Option<f32>>,
        weight: f32,
    ) {
        self.push(station_id, as_of, label, values);
        if let Some(m) = self.meta.last_mut() {
            m.weight = weight;
        }
    }

    fn push_meta(&mut self, station_id: &str, as_of: Timestamp, label: RowLabel) {
        self.push_weighted_meta(station_id, as_of, label, 1.0);
    }

    fn push_weighted_meta(
        &mut self,
        station_id: &str,
        as_of: Timestamp,
        label: RowLabel,
        weight: f32,
    ) {
        if self.meta.last().is_some_and(|m| m.as_of > as_of) {
            self.sorted = false;
        }
        let station = self.station(station_id);
        self.meta.push(RowMeta {
            station,
            as_of,
            went_empty: label.went_empty,
            went_full: label.went_full,
            empty_now: label.empty_now,
            full_now: label.full_now,
            hour: 0,
            weight,
        });
    }

    /// Adds a row's keys with every feature missing, for a column-wise loader: it then fills
    /// the features with [`Self::set_feature_column`] and calls [`Self::finish_keys`].
    pub(crate) fn push_keys(
        &mut self,
        station_id: &str,
        as_of: Timestamp,
        label: RowLabel,
        weight: f32,
    ) {
        let width = self.feature_names.len();
        self.values.resize(self.values.len() + width, f32::NAN);
        self.push_weighted_meta(station_id, as_of, label, weight);
    }

    /// Gives back the matrix's spare capacity (a loader that reserved for more rows than it
    /// kept).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.values.shrink_to_fit();
        self.meta.shrink_to_fit();
    }

    /// Sets feature `j` of rows `first..` to `value(r)` for `r = 0, 1, …`.
    pub(crate) fn set_feature_column(
        &mut self,
        first: usize,
        j: usize,
        value: impl Fn(usize) -> f32,
    ) {
        let width = self.feature_names.len();
        for (r, i) in (first..self.meta.len()).enumerate() {
            self.values[i * width + j] = value(r);
        }
    }

    /// Derives the hours of rows `first..` once their features are set.
    pub(crate) fn finish_keys(&mut self, first: usize) {
        for i in first..self.meta.len() {
            let hour = self.hour_of(i, self.meta[i].as_of);
            self.meta[i].hour = hour;
        }
    }

    /// The station id of row `i`.
    pub fn station_id(&self, i: usize) -> &str {
        self.stations
            .get(self.meta[i].station as usize)
            .map_or("", String::as_str)
    }

    /// Joined rows of `schema`.
    pub fn from_rows(
        schema: &FeatureSchema,
        horizon_minutes: u32,
        rows: impl IntoIterator<Item = TrainingRow>,
    ) -> Result<Self, DataError> {
        let mut data = Self::new(schema, horizon_minutes);
        for r in rows {
            data.push_training_row(&r)?;
        }
        data.finish();
        Ok(data)
    }

    fn push_training_row(&mut self, r: &TrainingRow) -> Result<(), DataError> {
        if r.row.vector.schema_id != self.schema_id {
            return Err(DataError::Schema {
                expected: self.schema_id.0.to_string(),
                found: r.row.vector.schema_id.0.to_string(),
            });
        }
        self.push(
            r.row.vector.station_id.as_str(),
            r.row.vector.as_of,
            RowLabel {
                went_empty: r.label.went_empty,
                went_full: r.label.went_full,
                empty_now: r.label.empty_at_as_of,
                full_now: r.label.full_at_as_of,
            },
            r.row.vector.values.iter().copied(),
        );
        Ok(())
    }

    /// A history of input events (event-time order, as a simulation or a replay yields them)
    /// through the processor, offline: the backfill's labelled rows. See [`EventsLoader`]
    /// for histories pushed one event at a time.
    pub fn from_events(
        config: ProcessorConfig,
        events: impl IntoIterator<Item = Envelope>,
    ) -> Result<(Self, BackfillStats), DataError> {
        let mut loader = EventsLoader::new(config);
        for env in events {
            loader.push(env);
        }
        loader.finish()
    }

    /// The CSV of `bikeshare backfill`: a `# feature_schema_id=` comment, a header of the key
    /// columns then the feature names, one row per line, empty field = missing.
    pub fn from_backfill_csv(
        reader: impl BufRead,
        what: &str,
        horizon_minutes: u32,
    ) -> Result<Self, DataError> {
        let parse = |line: u64, message: String| DataError::Parse {
            what: what.to_owned(),
            line,
            message,
        };
        let mut lines = reader.lines();
        let mut next = |n: u64| -> Result<Option<String>, DataError> {
            lines.next().transpose().map_err(|source| DataError::Io {
                what: format!("{what}, line {n}"),
                source,
            })
        };
        let first = next(1)?.ok_or_else(|| parse(1, "empty file".into()))?;
        let schema_id = first
            .strip_prefix("# feature_schema_id=")
            .ok_or_else(|| parse(1, "expected `# feature_schema_id=...`".into()))?
            .trim()
            .to_owned();
        let header = next(2)?.ok_or_else(|| parse(2, "no header".into()))?;
        let columns: Vec<&str> = header.split(',').collect();
        let keys = CSV_KEY_COLUMNS.len();
        if columns.len() <= keys || columns[..keys] != *CSV_KEY_COLUMNS {
            return Err(parse(
                2,
                format!("header must start with {}", CSV_KEY_COLUMNS.join(",")),
            ));
        }
        let names: Vec<String> = columns[keys..].iter().map(|s| (*s).to_owned()).collect();
        let n_features = names.len();
        let mut data = Self::with_names(FeatureSchemaId::new(schema_id), names, horizon_minutes);
        let mut line_no = 2u64;
        let mut fields: Vec<String> = Vec::new();
        while let Some(line) = next(line_no + 1)? {
            line_no += 1;
            if line.is_empty() {
                continue;
            }
            split_csv(&line, &mut fields);
            if fields.len() != keys + n_features {
                return Err(parse(
                    line_no,
                    format!("{} fields, expected {}", fields.len(), keys + n_features),
                ));
            }
            let flag = |i: usize| match fields[i].as_str() {
                "1" => Ok(true),
                "0" => Ok(false),
                other => Err(parse(
                    line_no,
                    format!("{}: {other:?} is not 0 or 1", CSV_KEY_COLUMNS[i]),
                )),
            };
            let as_of: i64 = fields[2]
                .parse()
                .map_err(|_| parse(line_no, format!("as_of_ms: {:?}", fields[2])))?;
            let label = RowLabel {
                went_empty: flag(5)?,
                went_full: flag(6)?,
                empty_now: flag(7)?,
                full_now: flag(8)?,
            };
            let mut values = Vec::with_capacity(n_features);
            for (i, f) in fields[keys..].iter().enumerate() {
                values.push(if f.is_empty() {
                    None
                } else {
                    Some(f.parse::<f32>().map_err(|_| {
                        parse(
                            line_no,
                            format!("{}: {f:?} is not a number", data.feature_names[i]),
                        )
                    })?)
                });
            }
            data.push(&fields[1], Timestamp(as_of), label, values);
        }
        data.finish();
        Ok(data)
    }

    /// Restores `as_of` order (stable: rows of the same instant keep their order), in place:
    /// the permutation is applied cycle by cycle with one spare row, so sorting never holds
    /// a second copy of the matrix.
    pub fn finish(&mut self) {
        if self.sorted {
            return;
        }
        let n = self.feature_names.len();
        let mut order: Vec<u32> = (0..self.meta.len() as u32).collect();
        order.sort_by_key(|&i| self.meta[i as usize].as_of);
        // Row `k` of the result is row `order[k]` of now: follow each cycle once.
        let mut spare = vec![0f32; n];
        const DONE: u32 = u32::MAX;
        for start in 0..order.len() {
            if order[start] == DONE || order[start] as usize == start {
                order[start] = DONE;
                continue;
            }
            spare.copy_from_slice(&self.values[start * n..(start + 1) * n]);
            let spare_meta = self.meta[start].clone();
            let mut k = start;
            loop {
                let from = order[k] as usize;
                order[k] = DONE;
                if from == start {
                    self.values[k * n..(k + 1) * n].copy_from_slice(&spare);
                    self.meta[k] = spare_meta;
                    break;
                }
                self.values.copy_within(from * n..(from + 1) * n, k * n);
                self.meta[k] = self.meta[from].clone();
                k = from;
            }
        }
        self.sorted = true;
    }

    pub fn schema_id(&self) -> &FeatureSchemaId {
        &self.schema_id
    }
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }
    pub fn num_features(&self) -> usize {
        self.feature_names.len()
    }
    pub fn horizon_minutes(&self) -> u32 {
        self.horizon_minutes
    }
    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
    /// Row `i`'s features, `NaN` = missing.
    pub fn row(&self, i: usize) -> &[f32] {
        let n = self.feature_names.len();
        &self.values[i * n..(i + 1) * n]
    }
    /// Row `i`'s features as a [`Scorer`](bikeshare_stream_processor::Scorer) takes them:
    /// `None` = missing.
    pub fn values(&self, i: usize) -> impl Iterator<Item = Option<f32>> + '_ {
        self.row(i)
            .iter()
            .map(|&x| if x.is_nan() { None } else { Some(x) })
    }
    /// Rows `range`, row-major.
    pub fn rows(&self, range: Range<usize>) -> &[f32] {
        let n = self.feature_names.len();
        &self.values[range.start * n..range.end * n]
    }
    /// The data-quality baseline of `rows` (Model Monitor's files, see
    /// [`drift_baseline_builder`]): what a drift check compares live features with.
    pub fn drift_baseline(&self, rows: Range<usize>) -> bikeshare_monitor::drift::Baseline {
        let stations: std::collections::HashSet<u32> =
            self.meta[rows.clone()].iter().map(|m| m.station).collect();
        let mut b = drift_baseline_builder(&self.feature_names, stations.len());
        let mut row = Vec::with_capacity(self.num_features());
        for i in rows {
            row.clear();
            row.extend(self.values(i).map(|v| v.map(f64::from)));
            b.push(&row);
        }
        b.finish()
    }

    pub fn meta(&self, i: usize) -> &RowMeta {
        &self.meta[i]
    }
    /// The weights of rows `range` ([`RowMeta::weight`]), or `None` when every one is 1.
    pub fn weights(&self, range: Range<usize>) -> Option<Vec<f32>> {
        let rows = &self.meta[range];
        rows.iter()
            .any(|m| m.weight != 1.0)
            .then(|| rows.iter().map(|m| m.weight).collect())
    }
    /// The labels of `target` for `range`, as 0/1.
    pub fn labels(&self, target: Target, range: Range<usize>) -> Vec<f32> {
        self.meta[range]
            .iter()
            .map(|m| if target.label(m) { 1.0 } else { 0.0 })
            .collect()
    }
    /// First and last `as_of` of the source (of a sampled load: of every row it read, kept
    /// or not).
    pub fn window(&self) -> Option<(Timestamp, Timestamp)> {
        if let Some((_, first, last)) = &self.sampled {
            return Some((*first, *last));
        }
        Some((self.meta.first()?.as_of, self.meta.last()?.as_of))
    }

    /// Splits by time; see [`SplitConfig`].
    pub fn split(&self, config: &SplitConfig) -> Result<Split, DataError> {
        let (first, last) = self
            .window()
            .ok_or_else(|| DataError::TooLittle("no labelled rows".into()))?;
        let (valid_start, test_start, method) = config.boundaries(first, last);
        let gap_minutes = config.gap_minutes.unwrap_or(self.horizon_minutes);
        if gap_minutes < self.horizon_minutes {
            return Err(DataError::Split(format!(
                "a purge gap of {gap_minutes} minutes is shorter than the {}-minute label \
                 horizon: training labels would read the validation period",
                self.horizon_minutes
            )));
        }
        let gap_ms = i64::from(gap_minutes) * Timestamp::MINUTE_MS;
        // First row at or after t.
        let at_or_after = |t: i64| self.meta.partition_point(|m| m.as_of.millis() < t);
        // First row within the gap before t (its label window may reach past t).
        let label_crosses = |t: i64| {
            self.meta
                .partition_point(|m| m.as_of.millis() + gap_ms <= t)
        };
        let train = 0..label_crosses(valid_start);
        let valid = at_or_after(valid_start)..label_crosses(test_start);
        let test = at_or_after(test_start)..self.meta.len();
        let purged = (valid.start - train.end) + (test.start - valid.end.max(valid.start));
        let split = Split {
            boundaries: SplitBoundaries {
                method,
                first,
                valid_start: Timestamp(valid_start),
                test_start: Timestamp(test_start),
                last,
                purged_rows: purged,
                gap_minutes,
            },
            train,
            valid,
            test,
        };
        for (part, r) in [
            ("train", &split.train),
            ("validation", &split.valid),
            ("test", &split.test),
        ] {
            if r.len() < config.min_rows {
                return Err(DataError::TooLittle(format!(
                    "{} {part} rows (at least {} needed); data from {} to {}",
                    r.len(),
                    config.min_rows,
                    first,
                    last
                )));
            }
        }
        Ok(split)
    }
}

/// Input events through the processor's [`Backfill`] into [`TrainingData`], one event at a
/// time (for histories that are pushed, like a replay).
#[derive(Debug)]
pub struct EventsLoader {
    backfill: Backfill,
    data: TrainingData,
    error: Option<DataError>,
}

impl EventsLoader {
    pub fn new(config: ProcessorConfig) -> Self {
        let horizon = config.horizon_minutes;
        let backfill = Backfill::new(Processor::new(config));
        let data = TrainingData::new(backfill.schema(), horizon);
        Self {
            backfill,
            data,
            error: None,
        }
    }

    pub fn push(&mut self, env: Envelope) {
        let (data, error) = (&mut self.data, &mut self.error);
        self.backfill.push(env, &mut |r| {
            if error.is_none()
                && let Err(e) = data.push_training_row(&r)
            {
                *error = Some(e);
            }
        });
    }

    /// Rows labelled so far.
    pub fn rows(&self) -> usize {
        self.data.len()
    }

    pub fn finish(self) -> Result<(TrainingData, BackfillStats), DataError> {
        let Self {
            backfill,
            mut data,
            mut error,
        } = self;
        let stats = backfill.finish(&mut |r| {
            if error.is_none()
                && let Err(e) = data.push_training_row(&r)
            {
                error = Some(e);
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        data.finish();
        Ok((data, stats))
    }
}

/// A row's label and current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowLabel {
    pub went_empty: bool,
    pub went_full: bool,
    pub empty_now: bool,
    pub full_now: bool,
}

/// How to split by time.
///
/// With at least `valid_days + test_days + 1` days of rows, the last `test_days` × 24 h (ending
/// at the hour at or after the last row) are the test set, the `valid_days` × 24 h before them the
/// validation set, and everything earlier the training set: by default two weeks each, so
/// every weekday appears twice in validation and in test. With less (a few simulated hours
/// or days), the time span is cut at 60 % and 80 %. Rows within `gap_minutes` before a
/// boundary are purged from the earlier part (the purge gap; by default the label horizon,
/// never less: a label window reaching past the boundary would read the later part). Each
/// part must have `min_rows` rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitConfig {
    pub valid_days: u32,
    pub test_days: u32,
    /// The purge gap before each boundary, minutes (`None`: the label horizon).
    pub gap_minutes: Option<u32>,
    pub min_rows: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            valid_days: 14,
            test_days: 14,
            gap_minutes: None,
            min_rows: 100,
        }
    }
}

impl SplitConfig {
    /// Where the validation and the test periods start (milliseconds) for rows spanning
    /// `first..=last`, and how that was decided.
    pub fn boundaries(&self, first: Timestamp, last: Timestamp) -> (i64, i64, SplitMethod) {
        let span = last.millis() - first.millis();
        if span >= i64::from(self.valid_days + self.test_days + 1) * DAY_MS {
            let end = last
                .plus_millis(Timestamp::HOUR_MS - 1)
                .floor_to(Timestamp::HOUR_MS)
                .millis();
            let test = end - i64::from(self.test_days) * DAY_MS;
            (
                test - i64::from(self.valid_days) * DAY_MS,
                test,
                SplitMethod::Days,
            )
        } else {
            let at = |f: f64| {
                Timestamp(first.millis() + (span as f64 * f) as i64)
                    .floor_to(Timestamp::MINUTE_MS)
                    .millis()
            };
            (at(0.6), at(0.8), SplitMethod::Fractions)
        }
    }
}

/// Sampling of easy rows while loading, so the table itself shrinks (issue 15 item 1;
/// decision 089).
///
/// A row is **hard** when either target happened or its station was already in that state
/// at `as_of` (empty or full now); every other row is **easy**. Rows before `before` (the
/// start of the validation period: training rows, and those the purge gap drops) that are
/// easy are kept with probability `keep` and weigh `1 / keep`; hard rows and every row from
/// `before` on are kept and weigh 1. The inclusion probability does not depend on the
/// target, so the weighted sums over the kept rows are unbiased estimates of the sums over
/// all rows for both targets (Horvitz–Thompson): the weighted rate of each outcome, and the
/// probabilities a model learns, stay those of all rows. Whether a row is kept is a hash of
/// its station id, `as_of` and `seed`: deterministic, independent of the file's row order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    /// Share of the easy training rows kept, in (0, 1].
    pub keep: f64,
    pub seed: u64,
    /// Rows from here on are never sampled (the validation period starts here).
    pub before: Timestamp,
}

impl LoadSample {
    /// The weight of a row if it is kept, `None` if it is dropped.
    pub fn weight(&self, station_id: &str, as_of: Timestamp, label: &RowLabel) -> Option<f32> {
        let hard = label.went_empty || label.went_full || label.empty_now || label.full_now;
        if hard || as_of >= self.before || self.keep >= 1.0 {
            return Some(1.0);
        }
        (unit_hash(station_id, as_of, self.seed) < self.keep).then(|| (1.0 / self.keep) as f32)
    }
}

/// A uniform number in [0, 1) from a row's station id, `as_of` and a seed (FNV-1a of the id,
/// then SplitMix64's finaliser).
fn unit_hash(station_id: &str, as_of: Timestamp, seed: u64) -> f64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in station_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= (as_of.millis() as u64).rotate_left(17) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// Whole days at the end for validation and test.
    Days,
    /// 60 % / 20 % / 20 % of the time span (less than enough days).
    Fractions,
}

/// Where the split cut time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBoundaries {
    pub method: SplitMethod,
    pub first: Timestamp,
    pub valid_start: Timestamp,
    pub test_start: Timestamp,
    pub last: Timestamp,
    /// Rows left out because they fall within the purge gap before a boundary.
    pub purged_rows: usize,
    /// The purge gap, minutes (cards written before it was configurable: the horizon).
    #[serde(default)]
    pub gap_minutes: u32,
}

/// Three contiguous, time-ordered row ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Range<usize>,
    pub valid: Range<usize>,
    pub test: Range<usize>,
    pub boundaries: SplitBoundaries,
}

/// The local hour from `sin(2πh/24)` and `cos(2πh/24)`.
fn local_hour(sin: f32, cos: f32) -> Option<u8> {
    if sin.is_nan() || cos.is_nan() {
        return None;
    }
    let h = f64::from(sin).atan2(f64::from(cos)) * 24.0 / std::f64::consts::TAU;
    // A small nudge so 07:00 exactly does not become 6.99999.
    Some(((h + 1e-3).rem_euclid(24.0).floor() as u8).min(23))
}

/// Splits one CSV line into fields (RFC 4180 quotes).
fn split_csv(line: &str, out: &mut Vec<String>) {
    out.clear();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    out.push(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> FeatureSchema {
        FeatureSchema::current(&[5, 15, 30, 60])
    }

    fn label(e: bool) -> RowLabel {
        RowLabel {
            went_empty: e,
            ..RowLabel::default()
        }
    }

    #[test]
    fn hours_come_from_the_cyclic_features() {
        for h in 0..24 {
            let a = std::f64::consts::TAU * f64::from(h) / 24.0;
            assert_eq!(local_hour(a.sin() as f32, a.cos() as f32), Some(h as u8));
            let a = std::f64::consts::TAU * (f64::from(h) + 0.99) / 24.0;
            assert_eq!(local_hour(a.sin() as f32, a.cos() as f32), Some(h as u8));
        }
        assert_eq!(local_hour(f32::NAN, 1.0), None);
    }

    #[test]
    fn rows_are_sorted_and_missing_is_nan_not_zero() {
        let s = schema();
        let mut d = TrainingData::new(&s, 30);
        d.push("b", Timestamp(2000), label(true), [Some(0.0), None]);
        d.push("a", Timestamp(1000), label(false), [Some(1.0)]);
        d.finish();
        assert_eq!(d.station_id(0), "a");
        assert_eq!(d.row(1)[0], 0.0);
        assert!(d.row(1)[1].is_nan() && d.row(1).len() == s.len());
        assert_eq!(d.labels(Target::WentEmpty, 0..2), vec![0.0, 1.0]);
    }

    #[test]
    fn sorting_in_place_keeps_every_row_whole_and_equal_times_in_order() {
        let s = schema();
        let mut d = TrainingData::new(&s, 30);
        // as_of in a scrambled order with ties; feature 0 = arrival number, 1 = as_of.
        let n = 1000i64;
        for k in 0..n {
            let t = (k * 7919) % 331;
            d.push(
                &format!("s{}", k % 13),
                Timestamp(t),
                label(k % 2 == 0),
                [Some(k as f32), Some(t as f32)],
            );
        }
        d.finish();
        for i in 0..d.len() {
            let m = d.meta(i);
            let k = d.row(i)[0] as i64;
            assert_eq!(d.row(i)[1] as i64, m.as_of.millis(), "row {i} whole");
            assert_eq!(d.station_id(i), format!("s{}", k % 13));
            assert_eq!(m.went_empty, k % 2 == 0);
            if i > 0 {
                let prev = d.meta(i - 1).as_of;
                assert!(prev <= m.as_of);
                if prev == m.as_of {
                    assert!(d.row(i - 1)[0] < d.row(i)[0], "stable");
                }
            }
        }
    }

    #[test]
    fn split_is_by_time_and_purges_labels_that_cross_a_boundary() {
        let s = schema();
        let mut d = TrainingData::new(&s, 30);
        let t0 = 1_717_200_000_000i64; // 2024-06-01 00:00 UTC
        // A row every 10 minutes for 4 days.
        for k in 0..(4 * 24 * 6) {
            d.push("s", Timestamp(t0 + k * 600_000), label(k % 2 == 0), []);
        }
        let days = SplitConfig {
            valid_days: 1,
            test_days: 1,
            min_rows: 10,
            ..SplitConfig::default()
        };
        let split = d.split(&days).unwrap();
        assert_eq!(split.boundaries.method, SplitMethod::Days);
        let b = &split.boundaries;
        assert_eq!(b.test_start.millis() - b.valid_start.millis(), DAY_MS);
        let last_train = d.meta(split.train.end - 1).as_of.millis();
        assert!(last_train + 30 * 60_000 <= b.valid_start.millis());
        assert!(d.meta(split.valid.start).as_of >= b.valid_start);
        assert!(d.meta(split.valid.end - 1).as_of.millis() + 30 * 60_000 <= b.test_start.millis());
        assert!(d.meta(split.test.start).as_of >= b.test_start);
        assert_eq!(split.test.end, d.len());
        // Rows at valid_start - 30 min < as_of < valid_start, and the same before test_start:
        // two 10-minute rows each (at -20 and -10 minutes).
        assert_eq!(b.purged_rows, 4);
        assert_eq!(b.gap_minutes, 30);
        assert!(split.train.end < split.valid.start && split.valid.end < split.test.start);
        // A wider gap purges more: an hour before each boundary is 6 rows each.
        let wide = d
            .split(&SplitConfig {
                gap_minutes: Some(60),
                ..days.clone()
            })
            .unwrap();
        assert_eq!(wide.boundaries.purged_rows, 10);
        let last_train = d.meta(wide.train.end - 1).as_of.millis();
        assert!(last_train + 60 * 60_000 <= b.valid_start.millis());
        // A gap shorter than the horizon would leak labels: refused.
        let leaky = SplitConfig {
            gap_minutes: Some(10),
            ..days.clone()
        };
        assert!(matches!(d.split(&leaky), Err(DataError::Split(_))));
        // Four days are too few for the default two weeks each: fractions of the span.
        let weeks = d
            .split(&SplitConfig {
                min_rows: 10,
                ..SplitConfig::default()
            })
            .unwrap();
        assert_eq!(weeks.boundaries.method, SplitMethod::Fractions);
        // Forty days of hourly rows: two weeks of test, two of validation before them.
        let mut long = TrainingData::new(&s, 30);
        for k in 0..(40 * 24) {
            long.push("s", Timestamp(t0 + k * 3_600_000), label(false), []);
        }
        let split = long.split(&SplitConfig::default()).unwrap();
        let b = &split.boundaries;
        assert_eq!(b.method, SplitMethod::Days);
        assert_eq!(b.test_start.millis() - b.valid_start.millis(), 14 * DAY_MS);
        // The test weeks end at the last row (on the hour): rows from test_start to it.
        assert_eq!(b.last.millis() - b.test_start.millis(), 14 * DAY_MS);
        assert_eq!(split.test.len(), 14 * 24 + 1);

        // Too short for whole days: fractions of the span.
        let mut short = TrainingData::new(&s, 30);
        for k in 0..(24 * 6) {
            short.push("s", Timestamp(t0 + k * 600_000), label(false), []);
        }
        let split = short
            .split(&SplitConfig {
                min_rows: 10,
                ..SplitConfig::default()
            })
            .unwrap();
        assert_eq!(split.boundaries.method, SplitMethod::Fractions);
        assert!(split.train.len() > split.test.len());
        assert!(matches!(
            short.split(&SplitConfig::default()),
            Err(DataError::TooLittle(_))
        ));
    }

    #[test]
    fn reads_the_backfill_csv_and_refuses_a_bad_one() {
        let s = schema();
        let mut csv = Vec::new();
        bikeshare_stream_processor::backfill::write_csv_header(&mut csv, &s).unwrap();
        let mut line = String::from("sys,\"st,1\",1000,tick,pid,1,0,1,0,3");
        for i in 0..s.len() {
            line.push(',');
            if i == 0 {
                line.push('0');
            } else if i == 1 {
                line.push_str("2.5");
            }
        }
        csv.extend_from_slice(line.as_bytes());
        csv.push(b'\n');
        let d = TrainingData::from_backfill_csv(&csv[..], "rows.csv", 30).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d.schema_id(), s.id());
        assert_eq!(d.station_id(0), "st,1");
        assert!(d.meta(0).went_empty && d.meta(0).empty_now && !d.meta(0).went_full);
        assert_eq!(&d.row(0)[..2], &[0.0, 2.5]);
        assert!(d.row(0)[2].is_nan());

        let bad = String::from_utf8(csv).unwrap().replace(",2.5,", ",x,");
        let err = TrainingData::from_backfill_csv(bad.as_bytes(), "rows.csv", 30).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(TrainingData::from_backfill_csv(&b"a,b\n"[..], "x", 30).is_err());
    }
}
