//! Labelled training rows as Parquet: what `bikeshare backfill -o rows.parquet` writes and
//! `bikeshare train --rows rows.parquet` reads.
//!
//! One row per labelled prediction, columns as the backfill CSV's (keys, labels, then every
//! feature of the schema as a nullable `Float32`: null = missing, never 0), zstd-compressed
//! (the features plain-encoded, without a dictionary), in row groups of [`ROW_GROUP_ROWS`];
//! the feature schema id is in the file's key-value metadata (`feature_schema_id`). The
//! writer holds one row group of columns at most, so its memory does not grow with the
//! history.
//!
//! [`read_training_data`] reads the file column by column, batch by batch, straight into
//! [`TrainingData`]'s one row-major `f32` matrix, sized once from the file's row count: no
//! text parsing, no per-row allocation, no second copy. [`read_training_data_sampled`]
//! keeps only a share of the easy training rows ([`LoadSample`]), weighted, so the matrix
//! holds only the kept rows: a first pass reads the `as_of` column alone to find where the
//! split will cut, the second reads the rows.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Int64Builder, StringBuilder, UInt32Builder,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_stream_processor::backfill::TrainingRow;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{FeatureSchemaId, PredictionTrigger};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::dataset::{DataError, LoadSample, RowLabel, SplitConfig, TrainingData};

/// Rows per row group (and per batch the writer buffers).
pub const ROW_GROUP_ROWS: usize = 65_536;
/// Rows whose features wait, row by row, before they go to their columns a block at a time.
const BLOCK_ROWS: usize = 64;
/// Bytes a row of room for each of the system and station id columns (more only grows).
const KEY_BYTES_PER_ROW: usize = 16;
/// The key-value metadata key of the feature schema id.
pub const SCHEMA_ID_KEY: &str = "feature_schema_id";
/// The key columns, before the features.
pub const KEY_COLUMNS: &[&str] = &[
    "system_id",
    "station_id",
    "as_of_ms",
    "trigger",
    "went_empty",
    "went_full",
    "empty_at_as_of",
    "full_at_as_of",
    "observations",
];

fn io(what: &str, e: impl std::fmt::Display) -> DataError {
    DataError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The Arrow schema of rows of `schema`.
pub fn arrow_schema(schema: &FeatureSchema) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("system_id", DataType::Utf8, false),
        Field::new("station_id", DataType::Utf8, false),
        Field::new("as_of_ms", DataType::Int64, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("went_empty", DataType::Boolean, false),
        Field::new("went_full", DataType::Boolean, false),
        Field::new("empty_at_as_of", DataType::Boolean, false),
        Field::new("full_at_as_of", DataType::Boolean, false),
        Field::new("observations", DataType::UInt32, false),
    ];
    fields.extend(
        schema
            .names()
            .map(|n| Field::new(n, DataType::Float32, true)),
    );
    Arc::new(
        Schema::new(fields)
            .with_metadata([(SCHEMA_ID_KEY.to_owned(), schema.id().0.to_string())].into()),
    )
}

/// Writes labelled rows to a Parquet file, a row group at a time.
pub struct RowsWriter {
    schema: Arc<Schema>,
    writer: ArrowWriter<File>,
    system: StringBuilder,
    station: StringBuilder,
    as_of: Int64Builder,
    trigger: StringBuilder,
    flags: [BooleanBuilder; 4],
    observations: UInt32Builder,
    features: Vec<Float32Builder>,
    /// The features of the last rows (fewer than [`BLOCK_ROWS`]), row after row.
    block: Vec<Option<f32>>,
    buffered: usize,
    written: u64,
}

impl std::fmt::Debug for RowsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowsWriter")
            .field("buffered", &self.buffered)
            .field("written", &self.written)
            .finish()
    }
}

impl RowsWriter {
    /// Creates `path` for rows of `schema`.
    pub fn create(path: &Path, schema: &FeatureSchema) -> Result<Self, DataError> {
        let what = path.display().to_string();
        let file = File::create(path).map_err(|source| DataError::Io {
            what: what.clone(),
            source,
        })?;
        // Feature columns are plain-encoded (zstd still compresses them): a dictionary of
        // float values costs a hash of every value and rarely pays (decision 102). The key
        // columns repeat a few strings per row group and keep theirs. A column's page holds
        // its whole row group (up to the 1 MiB page size; 256 KiB of values for a feature):
        // the default of 20,000 rows a page compressed each in a fresh zstd context, and in
        // larger pages the bench's file is 9 % smaller (a real month's 2 %; decision 103).
        let props = schema
            .names()
            .fold(
                WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
                    .set_max_row_group_size(ROW_GROUP_ROWS)
                    .set_data_page_row_count_limit(ROW_GROUP_ROWS),
                |props, name| props.set_column_dictionary_enabled(ColumnPath::from(name), false),
            )
            .build();
        let arrow = arrow_schema(schema);
        let writer =
            ArrowWriter::try_new(file, arrow.clone(), Some(props)).map_err(|e| io(&what, e))?;
        let mut writer = Self {
            schema: arrow,
            writer,
            system: StringBuilder::new(),
            station: StringBuilder::new(),
            as_of: Int64Builder::new(),
            trigger: StringBuilder::new(),
            flags: std::array::from_fn(|_| BooleanBuilder::new()),
            observations: UInt32Builder::new(),
            features: Vec::new(),
            block: Vec::with_capacity(BLOCK_ROWS * schema.len()),
            buffered: 0,
            written: 0,
        };
        writer.features = (0..schema.len()).map(|_| Float32Builder::new()).collect();
        writer.reserve_row_group();
        Ok(writer)
    }

    /// Gives every column room for a whole row group, so that appending never grows (and
    /// copies) a buffer: `finish` leaves a builder empty, so this runs after each full row group.
    /// Key strings get room for [`KEY_BYTES_PER_ROW`] bytes a row; longer ones grow as
    /// before.
    fn reserve_row_group(&mut self) {
        let rows = ROW_GROUP_ROWS;
        for b in [&mut self.system, &mut self.station] {
            *b = StringBuilder::with_capacity(rows, rows * KEY_BYTES_PER_ROW);
        }
        self.trigger = StringBuilder::with_capacity(rows, rows * "update".len());
        self.as_of = Int64Builder::with_capacity(rows);
        self.flags = std::array::from_fn(|_| BooleanBuilder::with_capacity(rows));
        self.observations = UInt32Builder::with_capacity(rows);
        for b in &mut self.features {
            *b = Float32Builder::with_capacity(rows);
        }
    }

    /// Adds one row (flushed with its row group).
    pub fn push(&mut self, r: &TrainingRow) -> Result<(), DataError> {
        let v = &r.row.vector;
        self.system.append_value(v.system_id.as_str());
        self.station.append_value(v.station_id.as_str());
        self.as_of.append_value(v.as_of.millis());
        self.trigger.append_value(match r.row.trigger {
            PredictionTrigger::Update => "update",
            PredictionTrigger::Tick => "tick",
        });
        for (b, x) in self.flags.iter_mut().zip([
            r.label.went_empty,
            r.label.went_full,
            r.label.empty_at_as_of,
            r.label.full_at_as_of,
        ]) {
            b.append_value(x);
        }
        self.observations.append_value(r.label.observations);
        // A row's features are copied whole (a shorter vector's last ones are missing) and
        // go to their columns with their block: appending one value to each of 75 columns
        // a row was 6.7 % of a backfill's time on one core (decision 103).
        let n = self.features.len();
        let given = &v.values[..v.values.len().min(n)];
        self.block.extend_from_slice(given);
        self.block
            .resize(self.block.len() + (n - given.len()), None);
        if self.block.len() >= BLOCK_ROWS * n {
            self.move_block();
        }
        self.buffered += 1;
        if self.buffered >= ROW_GROUP_ROWS {
            self.flush()?;
            self.reserve_row_group();
        }
        Ok(())
    }

    /// Appends the block's rows to the feature columns, one column at a time.
    fn move_block(&mut self) {
        let n = self.features.len();
        if n == 0 {
            self.block.clear();
            return;
        }
        // At most a block (`push` moves one as soon as it is full).
        let rows = (self.block.len() / n).min(BLOCK_ROWS);
        let mut values = [0.0f32; BLOCK_ROWS];
        let mut valid = [false; BLOCK_ROWS];
        for (j, column) in self.features.iter_mut().enumerate() {
            for (row, (value, ok)) in self
                .block
                .chunks_exact(n)
                .zip(values.iter_mut().zip(&mut valid))
            {
                // What `append_null` writes under a null.
                *value = row[j].unwrap_or_default();
                *ok = row[j].is_some();
            }
            column.append_values(&values[..rows], &valid[..rows]);
        }
        self.block.clear();
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if self.buffered == 0 {
            return Ok(());
        }
        self.move_block();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.system.finish()),
            Arc::new(self.station.finish()),
            Arc::new(self.as_of.finish()),
            Arc::new(self.trigger.finish()),
        ];
        columns.extend(
            self.flags
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.observations.finish()));
        columns.extend(
            self.features
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| io("rows", e))?;
        self.writer.write(&batch).map_err(|e| io("rows", e))?;
        self.written += self.buffered as u64;
        self.buffered = 0;
        drop(batch);
        Ok(())
    }

    /// Rows written so far (flushed or buffered).
    pub fn rows(&self) -> u64 {
        self.written + self.buffered as u64
    }

    /// Flushes the last row group and closes the file.
    pub fn finish(mut self) -> Result<u64, DataError> {
        self.flush()?;
        let file = self.writer.into_inner().map_err(|e| io("rows", e))?;
        file.sync_all().map_err(|source| DataError::Io {
            what: "rows".into(),
            source,
        })?;
        Ok(self.written)
    }
}

/// Whether `path` names a Parquet file (by its extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Reads a rows file written by [`RowsWriter`] into one [`TrainingData`].
pub fn read_training_data(path: &Path, horizon_minutes: u32) -> Result<TrainingData, DataError> {
    read_rows(path, horizon_minutes, None)
}

/// How to sample a rows file while reading it: keep this share of the easy rows of the
/// training period that `split` will cut (see [`LoadSample`]).
#[derive(Debug, Clone)]
pub struct Sampling {
    pub keep: f64,
    pub seed: u64,
    pub split: SplitConfig,
}

/// [`read_training_data`] keeping `sampling.keep` of the easy rows before the validation
/// period (the split of `sampling.split` over the file's first and last `as_of`), each
/// weighted by the inverse of that share; validation and test rows are all kept.
pub fn read_training_data_sampled(
    path: &Path,
    horizon_minutes: u32,
    sampling: &Sampling,
) -> Result<TrainingData, DataError> {
    if !(sampling.keep > 0.0 && sampling.keep <= 1.0) {
        return Err(DataError::Split(format!(
            "the share of easy rows to keep must be in (0, 1], not {}",
            sampling.keep
        )));
    }
    if sampling.keep >= 1.0 {
        return read_training_data(path, horizon_minutes);
    }
    let (first, last) = as_of_range(path)?
        .ok_or_else(|| DataError::TooLittle(format!("{}: no rows", path.display())))?;
    let (before, _, _) = sampling.split.boundaries(first, last);
    let sample = LoadSample {
        keep: sampling.keep,
        seed: sampling.seed,
        before: Timestamp(before),
    };
    read_rows(path, horizon_minutes, Some((sample, first, last)))
}

/// The number of rows in a rows file (from its footer).
pub fn count_rows(path: &Path) -> Result<u64, DataError> {
    let n = open(path)?.metadata().file_metadata().num_rows();
    Ok(u64::try_from(n).unwrap_or(0))
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, DataError> {
    let what = path.display().to_string();
    let file = File::open(path).map_err(|source| DataError::Io {
        what: what.clone(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(&what, e))
}

/// The first and last `as_of` of a rows file, from its `as_of_ms` column alone.
fn as_of_range(path: &Path) -> Result<Option<(Timestamp, Timestamp)>, DataError> {
    let what = path.display().to_string();
    let builder = open(path)?;
    let index = builder
        .schema()
        .index_of("as_of_ms")
        .map_err(|e| io(&what, e))?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(|e| io(&what, e))?;
    let mut range: Option<(i64, i64)> = None;
    for batch in reader {
        let batch = batch.map_err(|e| io(&what, e))?;
        let col: &Int64Array = column(&batch, 0).map_err(|m| io(&what, m))?;
        for &t in col.values().iter() {
            range = Some(range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        }
    }
    Ok(range.map(|(a, b)| (Timestamp(a), Timestamp(b))))
}

fn read_rows(
    path: &Path,
    horizon_minutes: u32,
    sample: Option<(LoadSample, Timestamp, Timestamp)>,
) -> Result<TrainingData, DataError> {
    let what = path.display().to_string();
    let builder = open(path)?;
    let parse = |message: String| DataError::Parse {
        what: what.clone(),
        line: 0,
        message,
    };
    let arrow = builder.schema().clone();
    let schema_id = arrow
        .metadata()
        .get(SCHEMA_ID_KEY)
        .cloned()
        .ok_or_else(|| parse(format!("no `{SCHEMA_ID_KEY}` in the file's metadata")))?;
    let names: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
    let keys = KEY_COLUMNS.len();
    if names.len() <= keys || names[..keys] != *KEY_COLUMNS {
        return Err(parse(format!(
            "columns must start with {}",
            KEY_COLUMNS.join(",")
        )));
    }
    let features: Vec<String> = names[keys..].iter().map(|s| (*s).to_owned()).collect();
    // The file's own count sizes the matrix once; a damaged footer claiming absurd rows must
    // not allocate them (or abort): beyond this, the matrix grows as rows are actually read.
    // A sampled load reserves as much: pages it never fills are never resident.
    const MAX_PREALLOCATED_ROWS: usize = 64 << 20;
    let total = usize::try_from(builder.metadata().file_metadata().num_rows())
        .unwrap_or(0)
        .min(MAX_PREALLOCATED_ROWS);
    let reader = builder
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(|e| io(&what, e))?;
    let mut data = TrainingData::with_capacity(
        FeatureSchemaId::new(schema_id),
        features,
        horizon_minutes,
        total,
    );
    let mut kept = Vec::with_capacity(ROW_GROUP_ROWS);
    for batch in reader {
        let batch = batch.map_err(|e| io(&what, e))?;
        read_batch(
            &batch,
            &mut data,
            sample.as_ref().map(|(s, _, _)| s),
            &mut kept,
        )
        .map_err(parse)?;
    }
    if let Some((s, first, last)) = sample {
        data.set_sampled(s, first, last);
        data.shrink_to_fit();
    }
    data.finish();
    Ok(data)
}

fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T, String> {
    batch.column(i).as_any().downcast_ref::<T>().ok_or_else(|| {
        format!(
            "column {i} ({}) has the wrong type",
            batch.schema().field(i).name()
        )
    })
}

/// Appends one batch (the rows `sample` keeps, all without one): keys row by row, features
/// column by column into the matrix. `kept` is scratch space for the kept rows' indices.
fn read_batch(
    batch: &RecordBatch,
    data: &mut TrainingData,
    sample: Option<&LoadSample>,
    kept: &mut Vec<usize>,
) -> Result<(), String> {
    let stations: &StringArray = column(batch, 1)?;
    let as_of: &Int64Array = column(batch, 2)?;
    let flag = |i: usize| column::<BooleanArray>(batch, i);
    let (we, wf, en, fu) = (flag(4)?, flag(5)?, flag(6)?, flag(7)?);
    let first = data.len();
    kept.clear();
    for r in 0..batch.num_rows() {
        let label = RowLabel {
            went_empty: we.value(r),
            went_full: wf.value(r),
            empty_now: en.value(r),
            full_now: fu.value(r),
        };
        let (station, t) = (stations.value(r), Timestamp(as_of.value(r)));
        let weight = match sample {
            Some(s) => match s.weight(station, t, &label) {
                Some(w) => w,
                None => continue,
            },
            None => 1.0,
        };
        kept.push(r);
        data.push_keys(station, t, label, weight);
    }
    let keys = KEY_COLUMNS.len();
    for j in 0..data.num_features() {
        let col: &Float32Array = column(batch, keys + j)?;
        let nulls = col.nulls();
        let values = col.values();
        data.set_feature_column(first, j, |k| {
            let r = kept[k];
            match nulls {
                Some(n) if n.is_null(r) => f32::NAN,
                _ => values[r],
            }
        });
    }
    data.finish_keys(first);
    Ok(())
}

#[cfg(test)]
mod tests {
    use bikeshare_stream_processor::processor::FeatureRow;
    use bikeshare_types::contracts::{FeatureVector, LABEL_SCHEMA_VERSION, Label};
    use bikeshare_types::{StationId, SystemId};

    use super::*;

    fn row(schema: &FeatureSchema, station: &str, as_of: i64, k: usize) -> TrainingRow {
        let values: Vec<Option<f32>> = (0..schema.len())
            .map(|i| match (i + k) % 4 {
                0 => None,
                1 => Some(0.0),
                _ => Some((i * 10 + k) as f32 / 7.0),
            })
            .collect();
        let system = SystemId::new("sys");
        let station_id = StationId::new(station);
        let vector = FeatureVector {
            system_id: system.clone(),
            station_id: station_id.clone(),
            as_of: Timestamp(as_of),
            schema_id: schema.id().clone(),
            values,
        };
        let prediction_id = bikeshare_types::contracts::Prediction::id_for(
            &system,
            &station_id,
            Timestamp(as_of),
            30,
        );
        TrainingRow {
            row: FeatureRow {
                prediction_id: prediction_id.clone(),
                trigger: PredictionTrigger::Tick,
                vector,
                horizon_minutes: 30,
                revision: 0,
            },
            label: Label {
                schema_version: LABEL_SCHEMA_VERSION,
                prediction_id,
                system_id: system,
                station_id,
                as_of: Timestamp(as_of),
                horizon_minutes: 30,
                went_empty: k.is_multiple_of(3),
                went_full: k.is_multiple_of(5),
                empty_at_as_of: k.is_multiple_of(6),
                full_at_as_of: false,
                observations: k as u32,
            },
        }
    }

    #[test]
    fn rows_round_trip_through_parquet_equal_to_the_rows_loaded_directly() {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        // More than a row group, out of as_of order across stations, ending in a part of a
        // block.
        let n = ROW_GROUP_ROWS + 1000;
        assert_ne!(n % BLOCK_ROWS, 0);
        let rows: Vec<TrainingRow> = (0..n)
            .map(|k| {
                let station = format!("s{}", k % 7);
                row(
                    &schema,
                    &station,
                    1_700_000_000_000 + ((k * 37) % n) as i64 * 1000,
                    k,
                )
            })
            .collect();
        let mut w = RowsWriter::create(&path, &schema).unwrap();
        for r in &rows {
            w.push(r).unwrap();
        }
        assert_eq!(w.finish().unwrap(), n as u64);
        // The station ids keep a dictionary; the feature values are plain (decision 102).
        let meta = open(&path).unwrap().metadata().clone();
        for group in meta.row_groups() {
            let dictionary = |name: &str| {
                let j = group
                    .columns()
                    .iter()
                    .position(|c| c.column_path().string() == name);
                group.column(j.unwrap()).dictionary_page_offset().is_some()
            };
            assert!(dictionary("station_id"));
            assert!(!schema.names().any(dictionary));
        }
        // One data page per feature column per row group (decision 103), from the offset
        // index: the default of 20,000 rows a page would give 4 in the first row group.
        let file = File::open(&path).unwrap();
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
            .parse_and_finish(&file)
            .unwrap();
        let pages = meta.offset_index().expect("an offset index");
        assert_eq!(pages.len(), 2);
        for group in pages {
            for column in &group[KEY_COLUMNS.len()..] {
                assert_eq!(column.page_locations().len(), 1);
            }
        }
        let read = read_training_data(&path, 30).unwrap();
        let direct = TrainingData::from_rows(&schema, 30, rows).unwrap();
        assert_eq!(read.len(), direct.len());
        assert_eq!(read.schema_id(), direct.schema_id());
        assert_eq!(read.feature_names(), direct.feature_names());
        for i in 0..read.len() {
            assert_eq!(read.meta(i), direct.meta(i), "row {i}");
            assert_eq!(read.station_id(i), direct.station_id(i));
            let (a, b) = (read.row(i), direct.row(i));
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "row {i}: {a:?} vs {b:?}"
            );
        }
        // A 0 stays a 0, a missing value stays missing.
        assert!(read.row(0).contains(&0.0) && read.row(0).iter().any(|x| x.is_nan()));
    }

    /// The features go to their columns a block of rows at a time: whatever the number of
    /// rows, each value lands in its own row and column, and a vector shorter than the
    /// schema has its last features missing (a longer one's extra values are not written).
    #[test]
    fn every_value_lands_in_its_row_and_column_whatever_the_blocks() {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let n = schema.len();
        let dir = tempfile::tempdir().unwrap();
        for count in [
            1,
            BLOCK_ROWS - 1,
            BLOCK_ROWS,
            BLOCK_ROWS + 1,
            3 * BLOCK_ROWS + 5,
        ] {
            let path = dir.path().join(format!("rows{count}.parquet"));
            let mut w = RowsWriter::create(&path, &schema).unwrap();
            let value = |k: usize, j: usize| (k * n + j) as f32;
            for k in 0..count {
                let mut r = row(&schema, "s", 1_700_000_000_000 + k as i64 * 60_000, k);
                r.row.vector.values = (0..n)
                    .map(|j| (!(k + j).is_multiple_of(5)).then(|| value(k, j)))
                    .collect();
                match k % 3 {
                    1 => r.row.vector.values.truncate(n - 2),
                    2 => r.row.vector.values.push(Some(-1.0)),
                    _ => {}
                }
                w.push(&r).unwrap();
            }
            assert_eq!(w.finish().unwrap(), count as u64);
            let missing =
                |k: usize, j: usize| (k + j).is_multiple_of(5) || (k % 3 == 1 && j >= n - 2);
            // In the file, a missing value is a null (never a NaN or a 0).
            let mut k0 = 0;
            for batch in open(&path).unwrap().build().unwrap() {
                let batch = batch.unwrap();
                for j in 0..n {
                    let column = batch.column(KEY_COLUMNS.len() + j);
                    for k in 0..batch.num_rows() {
                        assert_eq!(
                            column.is_null(k),
                            missing(k0 + k, j),
                            "row {} feature {j}",
                            k0 + k
                        );
                    }
                }
                k0 += batch.num_rows();
            }
            assert_eq!(k0, count);
            let read = read_training_data(&path, 30).unwrap();
            assert_eq!(read.len(), count);
            for k in 0..count {
                for (j, x) in read.row(k).iter().enumerate() {
                    if missing(k, j) {
                        assert!(x.is_nan(), "{count} rows: row {k} feature {j} is {x}");
                    } else {
                        assert_eq!(*x, value(k, j), "{count} rows: row {k} feature {j}");
                    }
                }
            }
        }
    }

    /// Rows of `stations` stations every 5 minutes over `days` days: went-empty with a
    /// probability that feature 0 sets (~8 %), other flags rarer.
    fn write_days(path: &Path, schema: &FeatureSchema, stations: usize, days: i64) -> usize {
        let mut w = RowsWriter::create(path, schema).unwrap();
        let mut state = bikeshare_types::lcg::Lcg64::new(3);
        let mut u = move || state.unit_f32();
        let t0 = 1_717_200_000_000i64;
        let ticks = days * 24 * 12;
        for tick in 0..ticks {
            for s in 0..stations {
                let mut r = row(schema, &format!("s{s}"), t0 + tick * 300_000, 1);
                let x = u();
                r.row.vector.values[0] = Some(x);
                r.label.went_empty = u() < 0.16 * x * x * 1.5;
                r.label.went_full = u() < 0.02;
                r.label.empty_at_as_of = u() < 0.03;
                r.label.full_at_as_of = u() < 0.03;
                w.push(&r).unwrap();
            }
        }
        w.finish().unwrap() as usize
    }

    #[test]
    fn a_sampled_load_keeps_every_hard_and_later_row_and_weighs_the_easy_ones() {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let n = write_days(&path, &schema, 20, 5);
        assert_eq!(count_rows(&path).unwrap(), n as u64);
        let split = SplitConfig {
            valid_days: 1,
            test_days: 1,
            min_rows: 10,
            ..SplitConfig::default()
        };
        let sampling = Sampling {
            keep: 0.25,
            seed: 7,
            split: split.clone(),
        };
        let full = read_training_data(&path, 30).unwrap();
        let sampled = read_training_data_sampled(&path, 30, &sampling).unwrap();
        // Deterministic.
        let again = read_training_data_sampled(&path, 30, &sampling).unwrap();
        assert_eq!(sampled.len(), again.len());
        assert!((0..sampled.len()).all(|i| sampled.meta(i) == again.meta(i)));
        // The split cuts where the full load's does.
        let (a, b) = (full.split(&split).unwrap(), sampled.split(&split).unwrap());
        assert_eq!(a.boundaries.valid_start, b.boundaries.valid_start);
        assert_eq!(a.boundaries.test_start, b.boundaries.test_start);
        let before = a.boundaries.valid_start;
        let hard =
            |m: &crate::dataset::RowMeta| m.went_empty || m.went_full || m.empty_now || m.full_now;
        // Every row of the full load is in the sampled one (with its features, bit for bit)
        // unless it is an easy row before the validation period.
        let key = |d: &TrainingData, i: usize| (d.station_id(i).to_owned(), d.meta(i).as_of);
        let kept: std::collections::HashMap<_, usize> =
            (0..sampled.len()).map(|i| (key(&sampled, i), i)).collect();
        let (mut easy, mut easy_kept, mut easy_weight) = (0usize, 0usize, 0.0f64);
        for i in 0..full.len() {
            let m = full.meta(i);
            let found = kept.get(&key(&full, i));
            if m.as_of < before && !hard(m) {
                easy += 1;
                if let Some(&j) = found {
                    easy_kept += 1;
                    easy_weight += f64::from(sampled.meta(j).weight);
                    assert_eq!(sampled.meta(j).weight, 4.0);
                }
            } else {
                let j = *found.unwrap_or_else(|| panic!("row {i} ({m:?}) dropped"));
                assert_eq!(sampled.meta(j).weight, 1.0);
                let (x, y) = (full.row(i), sampled.row(j));
                assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
            }
        }
        assert_eq!(sampled.len(), full.len() - easy + easy_kept);
        // About a quarter of the easy rows, standing for all of them.
        let share = easy_kept as f64 / easy as f64;
        assert!((share - 0.25).abs() < 0.02, "kept {share}");
        assert!(
            (easy_weight / easy as f64 - 1.0).abs() < 0.08,
            "{easy_weight} vs {easy}"
        );
        assert_eq!(sampled.load_sample().unwrap().before, before);
        assert!(full.load_sample().is_none());
        // A share outside (0, 1] is refused; 1 is the full load.
        for keep in [0.0, 1.5, f64::NAN] {
            let bad = Sampling {
                keep,
                ..sampling.clone()
            };
            assert!(read_training_data_sampled(&path, 30, &bad).is_err());
        }
        let all = Sampling {
            keep: 1.0,
            ..sampling
        };
        assert_eq!(
            read_training_data_sampled(&path, 30, &all).unwrap().len(),
            full.len()
        );
    }

    #[test]
    fn a_model_trained_on_a_sampled_load_stays_calibrated() {
        // Weighted by the inverse of their inclusion probability, a fifth of the easy rows
        // give the same mean probability on the (never sampled) validation rows as all of
        // them; unweighted, the rate of the outcome in training would be about 2.5x off.
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        write_days(&path, &schema, 10, 12);
        let split_config = SplitConfig {
            valid_days: 3,
            test_days: 1,
            min_rows: 10,
            ..SplitConfig::default()
        };
        let params = crate::training::TrainParams {
            max_rounds: 60,
            early_stopping_rounds: 10,
            max_depth: 3,
            nthread: 1,
            ..Default::default()
        };
        let mean_predicted = |data: &TrainingData| {
            let split = data.split(&split_config).unwrap();
            let b = crate::training::train_booster(
                data,
                crate::dataset::Target::WentEmpty,
                split.train.clone(),
                split.valid.clone(),
                &params,
                &mut |_| {},
            )
            .unwrap();
            let model = crate::xgboost::XgbModel::from_json(&b.json).unwrap();
            let valid = split.valid.clone();
            let observed = valid.clone().filter(|&i| data.meta(i).went_empty).count() as f64
                / valid.len() as f64;
            let p = valid
                .clone()
                .map(|i| f64::from(model.predict(data.row(i))))
                .sum::<f64>()
                / valid.len() as f64;
            (p, observed, b.best_valid_log_loss, split.train.len())
        };
        let full = read_training_data(&path, 30).unwrap();
        let sampled = read_training_data_sampled(
            &path,
            30,
            &Sampling {
                keep: 0.2,
                seed: 1,
                split: split_config.clone(),
            },
        )
        .unwrap();
        let (p_all, observed, ll_all, n_all) = mean_predicted(&full);
        let (p_sampled, observed_s, ll_sampled, n_sampled) = mean_predicted(&sampled);
        assert_eq!(observed, observed_s, "validation rows are never sampled");
        assert!(
            n_sampled * 3 < n_all * 2,
            "{n_sampled} of {n_all} training rows"
        );
        assert!(
            (p_all - observed).abs() < 0.1 * observed,
            "{p_all} vs {observed}"
        );
        assert!(
            (p_sampled - observed).abs() < 0.15 * observed,
            "{p_sampled} vs {observed}"
        );
        assert!(ll_sampled < ll_all * 1.05, "{ll_sampled} vs {ll_all}");
    }

    #[test]
    fn a_file_that_is_not_rows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"not parquet").unwrap();
        assert!(read_training_data(&path, 30).is_err());
        assert!(read_training_data(&dir.path().join("missing.parquet"), 30).is_err());
    }
}
