//! The whole validation of one GBFS file: JSON, header, official schema, types and rules.
//!
//! [`FeedValidator`] is what the poller (and any other producer reading GBFS bytes) calls.
//! For each file it:
//!
//! 1. parses the JSON and the header (`version`, `last_updated`, `ttl`, `data`);
//! 2. when a [`SchemaRegistry`] is configured, validates the file against the official schema
//!    of its declared version: errors outside station records fail the feed
//!    ([`FeedError::Schema`]), errors inside `data.stations[i]` reject record `i` only;
//! 3. reads each record with the lenient typed parsers of [`model`](super::model) and the
//!    semantic [`rules`](super::rules).
//!
//! A record failing several layers is rejected once, with the most specific rule: typed and
//! semantic rules (`gbfs.counts.negative`) win over the generic `gbfs.schema`.

use std::sync::Arc;

use bikeshare_types::contracts::{StationInfo, StationStatus, SystemInfo};
use bikeshare_types::{SystemId, Timestamp};
use serde_json::Value;

use super::discovery::{Discovery, parse_discovery};
use super::model::{
    FeedError, FeedKind, KnownStations, ParseContext, ParsedFeed, parse_header, parse_json,
    parse_station_information, parse_station_status, parse_system_information,
};
use super::rules::RuleConfig;
use super::schema::{RecordErrors, SchemaRegistry};

/// Validates GBFS files with one configuration.
#[derive(Debug, Clone, Default)]
pub struct FeedValidator {
    rules: RuleConfig,
    language: Option<String>,
    schemas: Option<Arc<SchemaRegistry>>,
}

impl FeedValidator {
    pub fn new(rules: RuleConfig) -> Self {
        Self {
            rules,
            language: None,
            schemas: None,
        }
    }

    /// The preferred language for discovery and localised text.
    pub fn with_language(mut self, language: Option<String>) -> Self {
        self.language = language;
        self
    }

    /// Adds official JSON-schema validation.
    pub fn with_schemas(mut self, schemas: Arc<SchemaRegistry>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    pub fn rules(&self) -> &RuleConfig {
        &self.rules
    }

    pub fn schemas(&self) -> Option<&Arc<SchemaRegistry>> {
        self.schemas.as_ref()
    }

    fn ctx<'a>(
        &'a self,
        now: Timestamp,
        schema_errors: Option<&'a RecordErrors>,
    ) -> ParseContext<'a> {
        ParseContext {
            now,
            rules: self.rules,
            language: self.language.as_deref(),
            schema_errors,
        }
    }

    /// JSON, then the schema: the document and its record-level schema errors.
    fn prepare(
        &self,
        bytes: &[u8],
        feed: FeedKind,
        now: Timestamp,
    ) -> Result<(Value, RecordErrors), FeedError> {
        let doc = parse_json(bytes)?;
        let errors = self.prepare_doc(&doc, feed, now)?;
        Ok((doc, errors))
    }

    /// The header, then the schema: the document's record-level schema errors.
    fn prepare_doc(
        &self,
        doc: &Value,
        feed: FeedKind,
        now: Timestamp,
    ) -> Result<RecordErrors, FeedError> {
        // Header first: an unknown version or a broken header is reported as such, not as a
        // pile of schema errors.
        let (header, _) = parse_header(doc, &self.ctx(now, None))?;
        let Some(schemas) = &self.schemas else {
            return Ok(RecordErrors::new());
        };
        let report = schemas
            .check(&header.declared_version, feed, doc)
            .map_err(FeedError::SchemaUnavailable)?;
        if !report.feed_errors.is_empty() {
            return Err(FeedError::Schema {
                errors: report.feed_errors,
            });
        }
        Ok(report.record_errors)
    }

    /// `gbfs.json`.
    pub fn discovery(&self, bytes: &[u8], now: Timestamp) -> Result<Discovery, FeedError> {
        let (doc, _) = self.prepare(bytes, FeedKind::Discovery, now)?;
        parse_discovery(&doc, &self.ctx(now, None))
    }

    /// `system_information`; the payload carries `system_id`.
    pub fn system_information(
        &self,
        bytes: &[u8],
        system_id: &SystemId,
        now: Timestamp,
    ) -> Result<ParsedFeed<SystemInfo>, FeedError> {
        let (doc, _) = self.prepare(bytes, FeedKind::SystemInformation, now)?;
        parse_system_information(&doc, system_id, &self.ctx(now, None))
    }

    /// `station_information`.
    pub fn station_information(
        &self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<ParsedFeed<StationInfo>, FeedError> {
        let doc = parse_json(bytes)?;
        self.station_information_doc(&doc, now)
    }

    /// `station_status`, checked against `known` stations when given.
    pub fn station_status(
        &self,
        bytes: &[u8],
        now: Timestamp,
        known: Option<&KnownStations>,
    ) -> Result<ParsedFeed<StationStatus>, FeedError> {
        let doc = parse_json(bytes)?;
        self.station_status_doc(&doc, now, known)
    }

    /// [`station_information`](Self::station_information) of a document already parsed
    /// as JSON (a replay reads the header before choosing `now`).
    pub fn station_information_doc(
        &self,
        doc: &Value,
        now: Timestamp,
    ) -> Result<ParsedFeed<StationInfo>, FeedError> {
        let errors = self.prepare_doc(doc, FeedKind::StationInformation, now)?;
        parse_station_information(doc, &self.ctx(now, Some(&errors)))
    }

    /// [`station_status`](Self::station_status) of a document already parsed as JSON.
    pub fn station_status_doc(
        &self,
        doc: &Value,
        now: Timestamp,
        known: Option<&KnownStations>,
    ) -> Result<ParsedFeed<StationStatus>, FeedError> {
        let errors = self.prepare_doc(doc, FeedKind::StationStatus, now)?;
        parse_station_status(doc, &self.ctx(now, Some(&errors)), known)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gbfs::rules::rule;

    const NOW: i64 = 1_700_000_000;

    fn registry() -> (tempfile::TempDir, Arc<SchemaRegistry>) {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v2.3");
        std::fs::create_dir_all(&v).unwrap();
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema",
            "type": "object", "required": ["version"],
            "properties": {"version": {"const": "2.3"}, "ttl": {"maximum": 3600}, "data": {"properties": {"stations": {
                "items": {"properties": {
                    "num_bikes_available": {"type": "integer", "minimum": 0},
                    "num_docks_available": {"type": "integer", "maximum": 99}
                }}
            }}}}
        });
        std::fs::write(v.join("station_status.json"), schema.to_string()).unwrap();
        let reg = Arc::new(SchemaRegistry::new(dir.path()).unwrap());
        (dir, reg)
    }

    fn station(id: &str, bikes: i64, docks: i64) -> Value {
        json!({"station_id": id, "num_bikes_available": bikes, "num_docks_available": docks,
               "is_installed": true, "is_renting": true, "is_returning": true,
               "last_reported": NOW - 5})
    }

    #[test]
    fn schema_rejects_records_and_typed_rules_win() {
        let (_dir, reg) = registry();
        let v = FeedValidator::default().with_schemas(reg);
        let doc = json!({"last_updated": NOW, "ttl": 0, "version": "2.3", "data": {"stations": [
            station("a", 1, 1), station("b", -1, 1), station("c", 1, 100)
        ]}});
        let feed = v
            .station_status(doc.to_string().as_bytes(), Timestamp::from_secs(NOW), None)
            .unwrap();
        assert_eq!(feed.records.len(), 1);
        let rules: Vec<_> = feed.rejected.iter().map(|r| r.rule).collect();
        assert_eq!(rules, [rule::COUNTS_NEGATIVE, rule::SCHEMA]);
        assert!(
            feed.rejected[1]
                .message
                .contains("/data/stations/2/num_docks_available")
        );

        // Without the schema, only the typed rule applies.
        let plain = FeedValidator::default();
        let feed = plain
            .station_status(doc.to_string().as_bytes(), Timestamp::from_secs(NOW), None)
            .unwrap();
        assert_eq!(feed.records.len(), 2);
    }

    #[test]
    fn schema_errors_outside_records_fail_the_feed() {
        let (_dir, reg) = registry();
        let v = FeedValidator::default().with_schemas(reg);
        let doc =
            json!({"last_updated": NOW, "ttl": 0, "version": "2.3", "data": {"stations": []}});
        assert!(
            v.station_status(doc.to_string().as_bytes(), Timestamp::from_secs(NOW), None)
                .is_ok()
        );
        let mut long_ttl = doc.clone();
        long_ttl["ttl"] = json!(7200);
        let err = v
            .station_status(
                long_ttl.to_string().as_bytes(),
                Timestamp::from_secs(NOW),
                None,
            )
            .unwrap_err();
        assert!(matches!(err, FeedError::Schema { .. }), "{err}");
        assert_eq!(err.rule(), rule::SCHEMA);
        // A 1.0 feed has no schema in this directory: typed validation only.
        let v1 = json!({"last_updated": NOW, "ttl": 0, "data": {"stations": [station("a", 1, 1)]}});
        let feed = v
            .station_status(v1.to_string().as_bytes(), Timestamp::from_secs(NOW), None)
            .unwrap();
        assert_eq!(feed.records.len(), 1);
        let err = v
            .station_status(b"[]", Timestamp::from_secs(NOW), None)
            .unwrap_err();
        assert_eq!(err.rule(), rule::TYPE);
    }
}
