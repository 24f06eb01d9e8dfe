//! Labelled training rows as Parquet: what `bikeshare backfill -o rows.parquet` writes and
//! `bikeshare train --rows rows.parquet` reads.
//!
//! One row per labelled prediction, columns as the backfill CSV's (keys, labels, then every
//! feature of the schema as a nullable `Float32`: null = missing, never 0), zstd-compressed,
//! in row groups of [`ROW_GROUP_ROWS`]; the feature schema id is in the file's key-value
//! metadata (`feature_schema_id`). The writer holds one row group of columns at most, so its
//! memory does not grow with the history.
//!
//! [`read_training_data`] reads the file column by column, batch by batch, straight into
//! [`TrainingData`]'s one row-major `f32` matrix, sized once from the file's row count: no
//! text parsing, no per-row allocation, no second copy.

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

use crate::dataset::{DataError, RowLabel, TrainingData};

/// Rows per row group (and per batch the writer buffers).
pub const ROW_GROUP_ROWS: usize = 65_536;
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
            .with_metadata([(SCHEMA_ID_KEY.to_owned(), schema.id().0.clone())].into()),
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
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .build();
        let arrow = arrow_schema(schema);
        let writer =
            ArrowWriter::try_new(file, arrow.clone(), Some(props)).map_err(|e| io(&what, e))?;
        Ok(Self {
            schema: arrow,
            writer,
            system: StringBuilder::new(),
            station: StringBuilder::new(),
            as_of: Int64Builder::new(),
            trigger: StringBuilder::new(),
            flags: std::array::from_fn(|_| BooleanBuilder::new()),
            observations: UInt32Builder::new(),
            features: (0..schema.len()).map(|_| Float32Builder::new()).collect(),
            buffered: 0,
            written: 0,
        })
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
        for (i, b) in self.features.iter_mut().enumerate() {
            b.append_option(v.values.get(i).copied().flatten());
        }
        self.buffered += 1;
        if self.buffered >= ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if self.buffered == 0 {
            return Ok(());
        }
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
    let what = path.display().to_string();
    let file = File::open(path).map_err(|source| DataError::Io {
        what: what.clone(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io(&what, e))?;
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
    const MAX_PREALLOCATED_ROWS: usize = 64 << 20;
    let total = usize::try_from(builder.metadata().file_metadata().num_rows())
        .unwrap_or(0)
        .min(MAX_PREALLOCATED_ROWS);
    let reader = builder
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(|e| io(&what, e))?;
    let mut data =
        TrainingData::with_capacity(FeatureSchemaId(schema_id), features, horizon_minutes, total);
    for batch in reader {
        let batch = batch.map_err(|e| io(&what, e))?;
        read_batch(&batch, &mut data).map_err(parse)?;
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

/// Appends one batch: keys row by row, features column by column into the matrix.
fn read_batch(batch: &RecordBatch, data: &mut TrainingData) -> Result<(), String> {
    let stations: &StringArray = column(batch, 1)?;
    let as_of: &Int64Array = column(batch, 2)?;
    let flag = |i: usize| column::<BooleanArray>(batch, i);
    let (we, wf, en, fu) = (flag(4)?, flag(5)?, flag(6)?, flag(7)?);
    let first = data.len();
    for r in 0..batch.num_rows() {
        let label = RowLabel {
            went_empty: we.value(r),
            went_full: wf.value(r),
            empty_now: en.value(r),
            full_now: fu.value(r),
        };
        data.push_keys(stations.value(r), Timestamp(as_of.value(r)), label);
    }
    let keys = KEY_COLUMNS.len();
    for j in 0..data.num_features() {
        let col: &Float32Array = column(batch, keys + j)?;
        let nulls = col.nulls();
        let values = col.values();
        data.set_feature_column(first, j, |r| match nulls {
            Some(n) if n.is_null(r) => f32::NAN,
            _ => values[r],
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
        // More than a row group, out of as_of order across stations.
        let n = ROW_GROUP_ROWS + 1000;
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

    #[test]
    fn a_file_that_is_not_rows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"not parquet").unwrap();
        assert!(read_training_data(&path, 30).is_err());
        assert!(read_training_data(&dir.path().join("missing.parquet"), 30).is_err());
    }
}
