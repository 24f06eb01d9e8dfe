//! Auto-discovery: `gbfs.json`, the file that lists a system's feeds.
//!
//! Two layouts exist:
//!
//! - GBFS 1.x/2.x: `data.{language}.feeds[]`, one list per language. We take the configured
//!   language, else English (`en`, `en-*`), else the first language (in the sorted order of the
//!   JSON object's keys, so the choice is deterministic).
//! - GBFS 3.0: `data.feeds[]`, one list (text is localised inside the feeds instead).
//!
//! The layout is recognised by shape rather than by the declared version (a `feeds` list
//! directly under `data` is the 3.0 layout), since real feeds mix them up. Each entry is
//! `{name, url}`; a malformed entry is [`Rejected`] and the others are kept. A discovery
//! file that lists no feed at all is a whole-feed error: nothing can be polled from it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields::{self, get, required};
use super::model::{FeedError, FeedHeader, FeedKind, ParseContext, Rejected, parse_header};
use super::rules::{RuleViolation, rule};

/// What `gbfs.json` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub header: FeedHeader,
    /// The language whose feed list was used (`None` for the 3.0 layout).
    pub language: Option<String>,
    /// Feed name (`station_status`) → URL, as written (may be relative).
    pub feeds: BTreeMap<String, String>,
    /// Entries that were not `{name: string, url: string}`.
    pub rejected: Vec<Rejected>,
}

impl Discovery {
    /// The URL of a feed, when listed.
    pub fn url(&self, feed: FeedKind) -> Option<&str> {
        self.feeds.get(feed.name()).map(String::as_str)
    }
}

/// Parses `gbfs.json`. `ctx.language` selects the language of a 1.x/2.x file.
pub fn parse_discovery(root: &Value, ctx: &ParseContext<'_>) -> Result<Discovery, FeedError> {
    let (header, data) = parse_header(root, ctx)?;
    let (language, list) = if let Some(feeds) = get(data, "feeds") {
        (None, feeds)
    } else {
        let languages: Vec<(&String, &Value)> = data.iter().collect();
        let Some((language, value)) =
            fields::pick_language(&languages, ctx.language, |(k, _)| Some(k.as_str())).copied()
        else {
            return Err(FeedError::Invalid(RuleViolation::new(
                rule::FIELD_MISSING,
                "gbfs.json: `data` has neither `feeds` (3.0) nor a language with `feeds` (1.x/2.x)",
            )));
        };
        let what = format!("gbfs.json data.{language}");
        let Some(obj) = value.as_object() else {
            return Err(FeedError::Invalid(fields::wrong_type(
                &what,
                "",
                "an object",
                value,
            )));
        };
        (
            Some(language.clone()),
            required(obj, "feeds", &what).map_err(FeedError::Invalid)?,
        )
    };
    let Some(list) = list.as_array() else {
        return Err(FeedError::Invalid(fields::wrong_type(
            "gbfs.json",
            "feeds",
            "a list",
            list,
        )));
    };
    let mut feeds = BTreeMap::new();
    let mut rejected = vec![];
    for (i, entry) in list.iter().enumerate() {
        match feed_entry(i, entry) {
            Ok((name, url)) => {
                feeds
                    .entry(name.to_owned())
                    .or_insert_with(|| url.to_owned());
            }
            Err(v) => rejected.push(Rejected::new(v, entry)),
        }
    }
    if feeds.is_empty() {
        return Err(FeedError::Invalid(RuleViolation::new(
            rule::FIELD_MISSING,
            format!(
                "gbfs.json lists no usable feed{}",
                language
                    .as_deref()
                    .map(|l| format!(" for language {l:?}"))
                    .unwrap_or_default()
            ),
        )));
    }
    Ok(Discovery {
        header,
        language,
        feeds,
        rejected,
    })
}

fn feed_entry(i: usize, entry: &Value) -> Result<(&str, &str), RuleViolation> {
    let what = format!("gbfs.json feeds[{i}]");
    let Some(obj): Option<&Map<String, Value>> = entry.as_object() else {
        return Err(fields::wrong_type(&what, "", "an object", entry));
    };
    let name = fields::as_str(required(obj, "name", &what)?, &what, "name")?;
    let url = fields::as_str(required(obj, "url", &what)?, &what, "url")?;
    Ok((name, url))
}

#[cfg(test)]
mod tests {
    use bikeshare_types::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::gbfs::version::GbfsVersion;

    fn ctx(language: Option<&str>) -> ParseContext<'_> {
        ParseContext {
            language,
            ..ParseContext::new(Timestamp::from_secs(1_700_000_000))
        }
    }

    fn v2() -> Value {
        json!({"last_updated": 1_600_000_000, "ttl": 60, "version": "2.3", "data": {
            "fr": {"feeds": [{"name": "station_status", "url": "https://x/fr/ss.json"}]},
            "en": {"feeds": [
                {"name": "station_status", "url": "https://x/en/ss.json"},
                {"name": "system_information", "url": "https://x/en/si.json"},
                {"name": "broken"}
            ]}
        }})
    }

    #[test]
    fn language_selection() {
        let d = parse_discovery(&v2(), &ctx(None)).unwrap();
        assert_eq!(d.language.as_deref(), Some("en"));
        assert_eq!(d.url(FeedKind::StationStatus), Some("https://x/en/ss.json"));
        assert_eq!(d.header.ttl, 60);
        assert_eq!(d.header.version, GbfsVersion::V2_3);
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].rule, rule::FIELD_MISSING);

        let fr = parse_discovery(&v2(), &ctx(Some("fr"))).unwrap();
        assert_eq!(
            fr.url(FeedKind::StationStatus),
            Some("https://x/fr/ss.json")
        );

        let mut no_en = v2();
        no_en["data"] = json!({
            "nb": {"feeds": [{"name": "station_status", "url": "nb"}]},
            "de": {"feeds": [{"name": "station_status", "url": "de"}]}
        });
        let first = parse_discovery(&no_en, &ctx(Some("es"))).unwrap();
        assert_eq!(first.language.as_deref(), Some("de"), "first in key order");
    }

    #[test]
    fn v3_layout() {
        let doc = json!({"last_updated": "2023-07-17T13:34:13+02:00", "ttl": 0, "version": "3.0",
            "data": {"feeds": [{"name": "station_status", "url": "https://x/ss"}]}});
        let d = parse_discovery(&doc, &ctx(Some("fr"))).unwrap();
        assert_eq!(d.language, None);
        assert_eq!(d.url(FeedKind::StationStatus), Some("https://x/ss"));
        assert_eq!(d.url(FeedKind::StationInformation), None);
    }

    #[test]
    fn unusable_discovery_files_fail_whole() {
        let c = ctx(None);
        let base = |data: Value| json!({"last_updated": 1_600_000_000, "ttl": 0, "data": data});
        for (data, want) in [
            (json!({}), rule::FIELD_MISSING),
            (json!({"en": {"feeds": []}}), rule::FIELD_MISSING),
            (json!({"en": {}}), rule::FIELD_MISSING),
            (json!({"en": []}), rule::TYPE),
            (json!({"feeds": {}}), rule::TYPE),
            (
                json!({"feeds": [{"name": 1, "url": "x"}]}),
                rule::FIELD_MISSING,
            ),
        ] {
            let err = parse_discovery(&base(data.clone()), &c).unwrap_err();
            assert_eq!(err.rule(), want, "{data}: {err}");
        }
    }
}
