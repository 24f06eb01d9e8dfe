//! Where things are in the lake: pure functions over names and times, and the
//! [`EncodedFile`] that is put at such a place.
//!
//! ```text
//! <dataset>/year=YYYY/month=MM/day=DD/hour=HH/<writer>-<epoch, 12 digits>.parquet
//! _epochs/<writer>/epoch-<epoch, 12 digits>.json      (the files an epoch is writing)
//! ```
//!
//! Partitions are the UTC hour of each record's event time (Hive style, so Athena partition
//! projection and DuckDB's `hive_partitioning` read them). A file's name depends only on the
//! writer and the checkpoint epoch, so rewriting an epoch replaces its files.

use bytes::Bytes;
use chrono::{Datelike, Timelike};

use crate::dataset::Dataset;
use bikeshare_types::Timestamp;

/// The UTC hour a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl Hour {
    pub fn of(t: Timestamp) -> Self {
        let d = t.to_datetime();
        Self {
            year: d.year(),
            month: d.month(),
            day: d.day(),
            hour: d.hour(),
        }
    }

    /// `year=YYYY/month=MM/day=DD/hour=HH`
    pub fn path(&self) -> String {
        format!(
            "year={:04}/month={:02}/day={:02}/hour={:02}",
            self.year, self.month, self.day, self.hour
        )
    }

    /// Parses the four `key=value` folders of [`Hour::path`].
    pub fn parse(parts: &[&str]) -> Option<Self> {
        let [y, m, d, h] = parts else { return None };
        let v = |p: &str, k: &str| p.strip_prefix(k)?.strip_prefix('=')?.parse::<i64>().ok();
        Some(Self {
            year: i32::try_from(v(y, "year")?).ok()?,
            month: u32::try_from(v(m, "month")?).ok()?,
            day: u32::try_from(v(d, "day")?).ok()?,
            hour: u32::try_from(v(h, "hour")?).ok()?,
        })
    }
}

/// One encoded file (Parquet, or JSON lines for Model Monitor), ready to be put at `path`.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    pub path: String,
    /// The dataset its rows come from.
    pub dataset: Dataset,
    pub hour: Hour,
    pub rows: usize,
    pub bytes: Bytes,
}

/// A writer id is one path segment: letters, digits, `-` and `_`.
pub fn valid_writer(writer: &str) -> bool {
    !writer.is_empty()
        && writer.len() <= 64
        && writer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The file of `writer`'s epoch `epoch` in one partition of `dataset`.
pub fn file_path(dataset: Dataset, hour: Hour, writer: &str, epoch: u64) -> String {
    format!(
        "{}/{}/{writer}-{epoch:012}.parquet",
        dataset.name(),
        hour.path()
    )
}

/// The folder of `writer`'s epoch manifests.
pub fn epochs_dir(writer: &str) -> String {
    format!("_epochs/{writer}")
}

/// The manifest of `writer`'s epoch `epoch`.
pub fn manifest_path(writer: &str, epoch: u64) -> String {
    format!("{}/epoch-{epoch:012}.json", epochs_dir(writer))
}

/// The epoch of a manifest file name (`epoch-000000000012.json`).
pub fn manifest_epoch(name: &str) -> Option<u64> {
    name.strip_prefix("epoch-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// A data file's dataset and partition, from its path in the lake.
pub fn parse_file_path(path: &str) -> Option<(Dataset, Hour)> {
    let parts: Vec<&str> = path.split('/').collect();
    let [dataset, y, m, d, h, file] = parts.as_slice() else {
        return None;
    };
    if !file.ends_with(".parquet") {
        return None;
    }
    Some((Dataset::from_name(dataset)?, Hour::parse(&[y, m, d, h])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_partition_of_an_event_time_round_trips() {
        let t = Timestamp::parse_rfc3339("2026-03-02T07:59:59.999Z").unwrap();
        let h = Hour::of(t);
        assert_eq!(h.path(), "year=2026/month=03/day=02/hour=07");
        let p = file_path(Dataset::Predictions, h, "processor", 12);
        assert_eq!(
            p,
            "predictions/year=2026/month=03/day=02/hour=07/processor-000000000012.parquet"
        );
        assert_eq!(parse_file_path(&p), Some((Dataset::Predictions, h)));
        assert_eq!(parse_file_path("predictions/x.parquet"), None);
        assert_eq!(
            Hour::of(Timestamp::parse_rfc3339("2026-03-02T08:00:00Z").unwrap()).hour,
            8
        );
    }

    #[test]
    fn manifests_and_writer_names() {
        assert_eq!(manifest_path("w", 3), "_epochs/w/epoch-000000000003.json");
        assert_eq!(manifest_epoch("epoch-000000000003.json"), Some(3));
        assert_eq!(manifest_epoch("epoch-x.json"), None);
        assert!(valid_writer("processor-0"));
        assert!(!valid_writer("a/b"));
        assert!(!valid_writer(""));
    }
}
