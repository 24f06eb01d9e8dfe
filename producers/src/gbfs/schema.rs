//! Validation against the official GBFS JSON schemas, when a schema directory is configured.
//!
//! The schemas are MobilityData's `gbfs-json-schema` repository laid out as
//! `<dir>/v<version>/<feed>.json` (`v2.3/station_status.json`). The project does not vendor
//! them; configuration (`schema_dir`) points at a copy, and tests point it at `../shared/data`.
//!
//! Each `(declared version, feed)` schema is compiled once, on first use, and cached. A feed's
//! errors are split by where they are: an error under `/data/stations/<i>` belongs to station
//! record `i` alone (it is rejected as `gbfs.schema`, the rest of the feed flows); any other
//! error (header, discovery, `system_information`) fails the whole feed.
//!
//! A version for which the directory has no schema (an unreleased candidate, say) is not
//! validated: that is logged once per `(version, feed)`, and typed parsing still applies.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bikeshare_types::error::{Classify, ErrorClass};
use serde_json::Value;

use super::feed::FeedKind;

/// Schema errors of station records, by index in `data.stations`.
pub type RecordErrors = BTreeMap<usize, Vec<String>>;

/// Messages kept per record and per feed; more are counted in the last message.
const MAX_MESSAGES: usize = 10;

/// What the official schema said about one feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// False when no schema exists for the feed's version (nothing was checked).
    pub checked: bool,
    /// Errors under `/data/stations/<i>`, by `i`.
    pub record_errors: RecordErrors,
    /// Errors anywhere else: the whole feed is invalid.
    pub feed_errors: Vec<String>,
}

impl SchemaReport {
    pub fn is_valid(&self) -> bool {
        self.record_errors.is_empty() && self.feed_errors.is_empty()
    }
}

/// Why a schema could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema directory {0} does not exist")]
    NoDirectory(PathBuf),
    #[error("reading schema {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("schema {path} is not JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("schema {path} does not compile: {message}")]
    Compile { path: PathBuf, message: String },
}

impl Classify for SchemaError {
    fn class(&self) -> ErrorClass {
        // The directory is configuration.
        ErrorClass::User
    }
    fn retryable(&self) -> bool {
        false
    }
}

type CacheKey = (String, FeedKind);

/// The compiled official schemas of one directory, shared by every poller.
#[derive(Debug)]
pub struct SchemaRegistry {
    dir: PathBuf,
    cache: Mutex<HashMap<CacheKey, Option<Arc<jsonschema::Validator>>>>,
}

impl SchemaRegistry {
    /// A registry over `dir` (which must exist); schemas compile lazily.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SchemaError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(SchemaError::NoDirectory(dir));
        }
        Ok(Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The schema file of `feed` in `declared_version`.
    pub fn path_for(&self, declared_version: &str, feed: FeedKind) -> PathBuf {
        self.dir
            .join(format!("v{declared_version}"))
            .join(format!("{}.json", feed.name()))
    }

    /// The compiled schema, or `None` when the directory has none for this version.
    pub fn validator(
        &self,
        declared_version: &str,
        feed: FeedKind,
    ) -> Result<Option<Arc<jsonschema::Validator>>, SchemaError> {
        let key = (declared_version.to_owned(), feed);
        // A poisoned lock only means another thread panicked while compiling: the map is
        // still consistent (entries are inserted whole), so keep using it.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.clone());
        }
        let compiled = self.compile(declared_version, feed)?;
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    fn compile(
        &self,
        declared_version: &str,
        feed: FeedKind,
    ) -> Result<Option<Arc<jsonschema::Validator>>, SchemaError> {
        let path = self.path_for(declared_version, feed);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    version = declared_version,
                    feed = feed.name(),
                    path = %path.display(),
                    "no official JSON schema for this GBFS version; validating types and rules only"
                );
                return Ok(None);
            }
            Err(source) => return Err(SchemaError::Read { path, source }),
        };
        let schema: Value = serde_json::from_slice(&text).map_err(|source| SchemaError::Json {
            path: path.clone(),
            source,
        })?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| SchemaError::Compile {
                path,
                message: e.to_string(),
            })?;
        Ok(Some(Arc::new(validator)))
    }

    /// Validates `doc` (a whole feed) and sorts the errors into records and feed.
    pub fn check(
        &self,
        declared_version: &str,
        feed: FeedKind,
        doc: &Value,
    ) -> Result<SchemaReport, SchemaError> {
        let Some(validator) = self.validator(declared_version, feed)? else {
            return Ok(SchemaReport::default());
        };
        let mut report = SchemaReport {
            checked: true,
            ..SchemaReport::default()
        };
        let mut extra_feed = 0usize;
        let mut extra_record: BTreeMap<usize, usize> = BTreeMap::new();
        for error in validator.iter_errors(doc) {
            let path = error.instance_path().as_str().to_owned();
            let message = format!("{}: {error}", if path.is_empty() { "/" } else { &path });
            match station_index(&path).filter(|_| feed.has_station_records()) {
                Some(i) => {
                    let list = report.record_errors.entry(i).or_default();
                    if list.len() < MAX_MESSAGES {
                        list.push(message);
                    } else {
                        *extra_record.entry(i).or_default() += 1;
                    }
                }
                None if report.feed_errors.len() < MAX_MESSAGES => report.feed_errors.push(message),
                None => extra_feed += 1,
            }
        }
        if extra_feed > 0 {
            report.feed_errors.push(format!("… {extra_feed} more"));
        }
        for (i, n) in extra_record {
            report
                .record_errors
                .entry(i)
                .or_default()
                .push(format!("… {n} more"));
        }
        Ok(report)
    }
}

/// `Some(i)` when a JSON pointer is `/data/stations/<i>` or below it.
fn station_index(pointer: &str) -> Option<usize> {
    let rest = pointer.strip_prefix("/data/stations/")?;
    rest.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_under_a_station_belong_to_it() {
        assert_eq!(station_index("/data/stations/3"), Some(3));
        assert_eq!(
            station_index("/data/stations/12/num_bikes_available"),
            Some(12)
        );
        assert_eq!(station_index("/data/stations"), None);
        assert_eq!(station_index("/data/stations/x"), None);
        assert_eq!(station_index("/last_updated"), None);
        assert_eq!(station_index(""), None);
    }

    fn registry_with(
        version: &str,
        feed: &str,
        schema: Value,
    ) -> (tempfile::TempDir, SchemaRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let vdir = dir.path().join(format!("v{version}"));
        std::fs::create_dir_all(&vdir).unwrap();
        std::fs::write(vdir.join(format!("{feed}.json")), schema.to_string()).unwrap();
        let reg = SchemaRegistry::new(dir.path()).unwrap();
        (dir, reg)
    }

    #[test]
    fn errors_split_between_records_and_feed() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema",
            "type": "object",
            "required": ["ttl", "data"],
            "properties": {
                "ttl": {"type": "integer", "minimum": 0},
                "data": {"type": "object", "properties": {"stations": {"type": "array", "items": {
                    "type": "object", "required": ["station_id"],
                    "properties": {"num_bikes_available": {"type": "integer", "minimum": 0}}
                }}}}
            }
        });
        let (_dir, reg) = registry_with("2.3", "station_status", schema);
        let doc = json!({"ttl": -1, "data": {"stations": [
            {"station_id": "a", "num_bikes_available": 1},
            {"num_bikes_available": -1},
            {"station_id": "c"}
        ]}});
        let report = reg.check("2.3", FeedKind::StationStatus, &doc).unwrap();
        assert!(report.checked);
        assert_eq!(report.feed_errors.len(), 1, "{report:?}");
        assert!(report.feed_errors[0].starts_with("/ttl"), "{report:?}");
        assert_eq!(
            report.record_errors.keys().copied().collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(report.record_errors[&1].len(), 2, "{report:?}");
        // Compiled once: the same Arc comes back.
        let a = reg
            .validator("2.3", FeedKind::StationStatus)
            .unwrap()
            .unwrap();
        let b = reg
            .validator("2.3", FeedKind::StationStatus)
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn station_pointers_fail_the_whole_feed_for_feeds_without_stations() {
        let schema =
            json!({"properties": {"data": {"properties": {"stations": {"type": "string"}}}}});
        let (_dir, reg) = registry_with("2.3", "system_information", schema);
        let doc = json!({"data": {"stations": [1]}});
        let report = reg.check("2.3", FeedKind::SystemInformation, &doc).unwrap();
        assert!(report.record_errors.is_empty());
        assert_eq!(report.feed_errors.len(), 1);
    }

    #[test]
    fn missing_schema_is_not_checked_and_bad_schema_is_an_error() {
        let (_dir, reg) = registry_with("2.3", "station_status", json!({"type": 5}));
        let none = reg
            .check("9.9", FeedKind::StationStatus, &json!({}))
            .unwrap();
        assert!(!none.checked && none.is_valid());
        let err = reg
            .check("2.3", FeedKind::StationStatus, &json!({}))
            .unwrap_err();
        assert!(matches!(err, SchemaError::Compile { .. }), "{err}");
        assert!(SchemaRegistry::new("/nonexistent/gbfs-schemas").is_err());
    }
}
