//! Rows waiting for the next checkpoint, grouped by dataset and hour, and their encoding
//! into Parquet files (pure: no I/O). Model Monitor's lines wait here too
//! ([`MonitorStaging`]); this module depends on [`crate::model_monitor`], not the reverse.

use std::collections::BTreeMap;

use bikeshare_types::contracts::{DeadLetter, Envelope, FeatureVector, Label, Prediction};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::LakeError;
pub use crate::layout::EncodedFile;

use crate::dataset::{CuratedStatus, LakeRecord};
use crate::layout::{Hour, file_path};
use crate::model_monitor::MonitorStaging;

/// Rows per Parquet row group: large enough for dictionaries and zstd to pay off (an hour of
/// 250,000 stations' predictions is a few groups), small enough to read one without the file.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// zstd level of the lake's files: 3 (zstd's default) compresses hex ids and repeated names
/// far better than Snappy at a cost the writer can afford (decision 074).
pub const ZSTD_LEVEL: i32 = 3;

/// How the lake's files are written: zstd, dictionary encoding, row groups of
/// [`ROW_GROUP_ROWS`].
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default(),
        ))
        .set_dictionary_enabled(true)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .build()
}

/// Encodes `rows` as one Parquet file ([`writer_properties`]).
pub fn encode_parquet<T: LakeRecord>(rows: &[T]) -> Result<Vec<u8>, LakeError> {
    let batch = T::encode(rows)?;
    let err = |e: parquet::errors::ParquetError| LakeError::Encode {
        dataset: T::DATASET.name(),
        message: e.to_string(),
    };
    let mut out = Vec::with_capacity(rows.len() * 32 + 1024);
    let mut w =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties())).map_err(err)?;
    w.write(&batch).map_err(err)?;
    w.close().map_err(err)?;
    Ok(out)
}

/// Rows of one dataset by hour.
#[derive(Debug)]
pub struct Staged<T> {
    parts: BTreeMap<Hour, Vec<T>>,
    rows: usize,
}

impl<T> Default for Staged<T> {
    fn default() -> Self {
        Self {
            parts: BTreeMap::new(),
            rows: 0,
        }
    }
}

impl<T: LakeRecord> Staged<T> {
    pub fn push(&mut self, rows: impl IntoIterator<Item = T>) {
        for r in rows {
            self.parts
                .entry(Hour::of(r.event_time()))
                .or_default()
                .push(r);
            self.rows += 1;
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Every staged row, hour by hour.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.values().flatten()
    }

    /// One file per hour, named after `writer` and `epoch`.
    pub fn encode(&self, writer: &str, epoch: u64) -> Result<Vec<EncodedFile>, LakeError> {
        self.parts
            .iter()
            .map(|(hour, rows)| {
                Ok(EncodedFile {
                    path: file_path(T::DATASET, *hour, writer, epoch),
                    dataset: T::DATASET,
                    hour: *hour,
                    rows: rows.len(),
                    bytes: Bytes::from(encode_parquet(rows)?),
                })
            })
            .collect()
    }
}

/// Everything staged since the last checkpoint, for every dataset.
#[derive(Debug, Default)]
pub struct Staging {
    pub raw_events: Staged<Envelope>,
    pub station_status: Staged<CuratedStatus>,
    pub features: Staged<FeatureVector>,
    pub predictions: Staged<Prediction>,
    pub labels: Staged<Label>,
    pub dead_letters: Staged<DeadLetter>,
    /// Model Monitor's data capture and ground truth (inert unless configured).
    pub model_monitor: MonitorStaging,
}

impl Staging {
    pub fn rows(&self) -> usize {
        self.raw_events.rows()
            + self.station_status.rows()
            + self.features.rows()
            + self.predictions.rows()
            + self.labels.rows()
            + self.dead_letters.rows()
            + self.model_monitor.rows()
    }

    /// An input event: into `raw_events`, and into `station_status` when it is a report.
    pub fn push_event(&mut self, env: Envelope) {
        if let Some(s) = CuratedStatus::from_envelope(&env) {
            self.station_status.push([s]);
        }
        self.raw_events.push([env]);
    }

    /// Every staged row as files of `writer`'s epoch `epoch`.
    pub fn encode(&self, writer: &str, epoch: u64) -> Result<Vec<EncodedFile>, LakeError> {
        let mut files = self.raw_events.encode(writer, epoch)?;
        files.extend(self.station_status.encode(writer, epoch)?);
        files.extend(self.features.encode(writer, epoch)?);
        files.extend(self.predictions.encode(writer, epoch)?);
        files.extend(self.labels.encode(writer, epoch)?);
        files.extend(self.dead_letters.encode(writer, epoch)?);
        files.extend(self.model_monitor.encode(writer, epoch));
        Ok(files)
    }
}
