//! What is in the lake: datasets, partitions, files and row counts (from the Parquet footers),
//! Model Monitor's data capture and ground truth (lines of its JSON-lines files), and reading a
//! dataset back into its contract records.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::dataset::{Dataset, LakeRecord};
use crate::layout::{Hour, parse_file_path};
use crate::model_monitor::{ModelMonitorConfig, Target};
use crate::{LakeError, store_err};

/// One partition of one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSummary {
    pub dataset: Dataset,
    pub hour: Hour,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

async fn data_files(
    store: &Arc<dyn ObjectStore>,
    dataset: Dataset,
) -> Result<Vec<(Path, Hour, u64)>, LakeError> {
    let metas: Vec<_> = store
        .list(Some(&Path::from(dataset.name())))
        .try_collect()
        .await
        .map_err(store_err(dataset.name()))?;
    let mut files: Vec<_> = metas
        .into_iter()
        .filter_map(|m| {
            let (d, hour) = parse_file_path(m.location.as_ref())?;
            (d == dataset).then_some((m.location, hour, m.size))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

async fn read_bytes(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bytes::Bytes, LakeError> {
    store
        .get(path)
        .await
        .map_err(store_err(path.to_string()))?
        .bytes()
        .await
        .map_err(store_err(path.to_string()))
}

fn decode_err(dataset: Dataset, path: &Path, e: impl std::fmt::Display) -> LakeError {
    LakeError::Decode {
        dataset: dataset.name(),
        message: format!("{path}: {e}"),
    }
}

/// Every partition of every dataset, with its files, rows and bytes, in order.
pub async fn partitions(store: &Arc<dyn ObjectStore>) -> Result<Vec<PartitionSummary>, LakeError> {
    let mut out = Vec::new();
    for dataset in Dataset::ALL {
        let mut parts: BTreeMap<Hour, PartitionSummary> = BTreeMap::new();
        for (path, hour, size) in data_files(store, dataset).await? {
            let bytes = read_bytes(store, &path).await?;
            let meta = ParquetMetaDataReader::new()
                .parse_and_finish(&bytes)
                .map_err(|e| decode_err(dataset, &path, e))?;
            let p = parts.entry(hour).or_insert(PartitionSummary {
                dataset,
                hour,
                files: 0,
                rows: 0,
                bytes: 0,
            });
            p.files += 1;
            p.rows += u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
            p.bytes += size;
        }
        out.extend(parts.into_values());
    }
    Ok(out)
}

/// One of Model Monitor's file trees in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MonitorTree {
    DataCapture,
    GroundTruth(Target),
}

impl MonitorTree {
    pub const ALL: [MonitorTree; 3] = [
        MonitorTree::DataCapture,
        MonitorTree::GroundTruth(Target::Empty),
        MonitorTree::GroundTruth(Target::Full),
    ];

    /// `data_capture`, `ground_truth_empty`, `ground_truth_full`.
    pub fn name(self) -> &'static str {
        match self {
            Self::DataCapture => "data_capture",
            Self::GroundTruth(Target::Empty) => "ground_truth_empty",
            Self::GroundTruth(Target::Full) => "ground_truth_full",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its folder in the lake (above the `yyyy/mm/dd/hh` folders).
    pub fn root(self, config: &ModelMonitorConfig) -> String {
        match self {
            Self::DataCapture => config.capture_root(),
            Self::GroundTruth(t) => config.ground_truth_root(t),
        }
    }
}

impl std::fmt::Display for MonitorTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One hour of one of Model Monitor's trees; `rows` are its JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorPartitionSummary {
    pub tree: MonitorTree,
    pub hour: Hour,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// `yyyy/mm/dd/hh/<file>.jsonl` below a tree's root.
fn monitor_hour(rel: &str) -> Option<Hour> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [y, m, d, h, file] = parts.as_slice() else {
        return None;
    };
    if !file.ends_with(".jsonl") {
        return None;
    }
    let n = |s: &str, len: usize| (s.len() == len).then(|| s.parse::<u32>().ok())?;
    Some(Hour {
        year: i32::try_from(n(y, 4)?).ok()?,
        month: n(m, 2)?,
        day: n(d, 2)?,
        hour: n(h, 2)?,
    })
}

/// Every hour of Model Monitor's data capture and ground truth (as written with `config`),
/// with its files, lines and bytes, tree by tree in time order.
pub async fn monitor_partitions(
    store: &Arc<dyn ObjectStore>,
    config: &ModelMonitorConfig,
) -> Result<Vec<MonitorPartitionSummary>, LakeError> {
    let mut out = Vec::new();
    for tree in MonitorTree::ALL {
        let root = tree.root(config);
        let metas: Vec<_> = store
            .list(Some(&Path::from(root.as_str())))
            .try_collect()
            .await
            .map_err(store_err(root.as_str()))?;
        let mut parts: BTreeMap<Hour, MonitorPartitionSummary> = BTreeMap::new();
        for m in metas {
            let Some(hour) = m
                .location
                .as_ref()
                .strip_prefix(root.as_str())
                .and_then(|r| monitor_hour(r.trim_start_matches('/')))
            else {
                continue;
            };
            let bytes = read_bytes(store, &m.location).await?;
            let p = parts.entry(hour).or_insert(MonitorPartitionSummary {
                tree,
                hour,
                files: 0,
                rows: 0,
                bytes: 0,
            });
            p.files += 1;
            p.rows += bytes.iter().filter(|b| **b == b'\n').count() as u64;
            p.bytes += m.size;
        }
        out.extend(parts.into_values());
    }
    Ok(out)
}

/// Decodes one Parquet file of `T`'s dataset.
pub fn decode_file<T: LakeRecord>(bytes: bytes::Bytes) -> Result<Vec<T>, LakeError> {
    let err = |e: parquet::errors::ParquetError| LakeError::Decode {
        dataset: T::DATASET.name(),
        message: e.to_string(),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(err)?
        .build()
        .map_err(err)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| LakeError::Decode {
            dataset: T::DATASET.name(),
            message: e.to_string(),
        })?;
        rows.extend(T::decode(&batch)?);
    }
    Ok(rows)
}

/// Every row of `T`'s dataset, file by file in path order (partitions in time order).
pub async fn read_dataset<T: LakeRecord>(
    store: &Arc<dyn ObjectStore>,
) -> Result<Vec<T>, LakeError> {
    let mut rows = Vec::new();
    for (path, _, _) in data_files(store, T::DATASET).await? {
        let bytes = read_bytes(store, &path).await?;
        rows.extend(decode_file::<T>(bytes).map_err(|e| decode_err(T::DATASET, &path, e))?);
    }
    Ok(rows)
}

/// The rows of `T`'s dataset in partitions from the hour of `from` on (rows of that hour
/// before `from` included: filter them if it matters), file by file in path order. Reads
/// only those partitions' files, so a check of the last hours does not read the whole lake.
pub async fn read_since<T: LakeRecord>(
    store: &Arc<dyn ObjectStore>,
    from: bikeshare_types::Timestamp,
) -> Result<Vec<T>, LakeError> {
    let first = Hour::of(from);
    let mut rows = Vec::new();
    for (path, _, _) in data_files(store, T::DATASET)
        .await?
        .into_iter()
        .filter(|(_, hour, _)| *hour >= first)
    {
        let bytes = read_bytes(store, &path).await?;
        rows.extend(decode_file::<T>(bytes).map_err(|e| decode_err(T::DATASET, &path, e))?);
    }
    Ok(rows)
}

/// The latest hour that holds a file of `dataset`, if any.
pub async fn latest_hour(
    store: &Arc<dyn ObjectStore>,
    dataset: Dataset,
) -> Result<Option<Hour>, LakeError> {
    Ok(data_files(store, dataset)
        .await?
        .into_iter()
        .map(|(_, hour, _)| hour)
        .max())
}
