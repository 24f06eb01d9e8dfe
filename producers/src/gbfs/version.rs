//! GBFS versions: which layout a feed uses, from its `version` field.
//!
//! Every GBFS file carries the version it conforms to in a top-level `version` string
//! (added in 1.1; a 1.0 feed has none, so a missing field means 1.0). The version decides
//! where things are: `data.{language}.feeds` or `data.feeds` in `gbfs.json`, POSIX seconds or
//! RFC 3339 for timestamps, `num_bikes_available` or `num_vehicles_available`, plain or
//! localised names.
//!
//! Release candidates of 3.1 (`3.1-RC`, `3.1-RC2`, …) and `3.1` are read with the 3.0 layout:
//! GBFS minor versions are backward compatible, and 3.1 only adds optional fields to the
//! feeds we read. [`DeclaredVersion::is_exact`] tells the caller when the layout is borrowed,
//! so it can warn; JSON-schema validation still uses the schema of the declared version.
//! Any other value — `"4.0"`, `"0.9"`, a number instead of a string — is a
//! [`VersionError`] with the rule name [`rule::VERSION`].

use std::fmt;

use serde_json::Value;

use super::rules::rule;

/// A GBFS version whose layout this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GbfsVersion {
    V1_0,
    V1_1,
    V2_0,
    V2_1,
    V2_2,
    V2_3,
    V3_0,
}

impl GbfsVersion {
    /// Every known version, oldest first.
    pub const ALL: [GbfsVersion; 7] = [
        Self::V1_0,
        Self::V1_1,
        Self::V2_0,
        Self::V2_1,
        Self::V2_2,
        Self::V2_3,
        Self::V3_0,
    ];

    /// The version as GBFS writes it (`"2.3"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V2_0 => "2.0",
            Self::V2_1 => "2.1",
            Self::V2_2 => "2.2",
            Self::V2_3 => "2.3",
            Self::V3_0 => "3.0",
        }
    }

    /// The major version (1, 2 or 3).
    pub fn major(self) -> u8 {
        match self {
            Self::V1_0 | Self::V1_1 => 1,
            Self::V2_0 | Self::V2_1 | Self::V2_2 | Self::V2_3 => 2,
            Self::V3_0 => 3,
        }
    }

    /// 3.0 layout: `data.feeds` in discovery, RFC 3339 times, localised names,
    /// `num_vehicles_available`.
    pub fn is_v3(self) -> bool {
        self.major() >= 3
    }

    /// Parses a version string. `3.1` and `3.1-RC*` map to [`GbfsVersion::V3_0`] (see the
    /// module docs); use [`DeclaredVersion::from_field`] to keep the declared string.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        Ok(DeclaredVersion::parse_str(s)?.layout)
    }
}

impl fmt::Display for GbfsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version a feed declared, and the layout used to read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeclaredVersion {
    /// The layout this crate reads the feed with.
    pub layout: GbfsVersion,
    /// What the feed said (`"1.0"` when it said nothing).
    pub declared: String,
}

impl DeclaredVersion {
    /// The version of a feed from its top-level `version` field (`None` when absent).
    pub fn from_field(field: Option<&Value>) -> Result<Self, VersionError> {
        match field {
            None => Ok(Self {
                layout: GbfsVersion::V1_0,
                declared: "1.0".to_owned(),
            }),
            Some(Value::String(s)) => Self::parse_str(s),
            Some(other) => Err(VersionError::NotAString {
                found: other.to_string(),
            }),
        }
    }

    fn parse_str(s: &str) -> Result<Self, VersionError> {
        let layout = match s {
            "1.0" => GbfsVersion::V1_0,
            "1.1" => GbfsVersion::V1_1,
            "2.0" => GbfsVersion::V2_0,
            "2.1" => GbfsVersion::V2_1,
            "2.2" => GbfsVersion::V2_2,
            "2.3" => GbfsVersion::V2_3,
            "3.0" => GbfsVersion::V3_0,
            "3.1" => GbfsVersion::V3_0,
            s if s
                .strip_prefix("3.1-RC")
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())) =>
            {
                GbfsVersion::V3_0
            }
            other => {
                return Err(VersionError::Unknown {
                    found: other.to_owned(),
                });
            }
        };
        Ok(Self {
            layout,
            declared: s.to_owned(),
        })
    }

    /// True when the declared version is exactly the layout used (no borrowed 3.0 layout).
    pub fn is_exact(&self) -> bool {
        self.declared == self.layout.as_str()
    }
}

/// A `version` field this crate cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("unknown GBFS version {found:?} (known: 1.0, 1.1, 2.0, 2.1, 2.2, 2.3, 3.0, 3.1-RC*)")]
    Unknown { found: String },
    #[error("GBFS `version` must be a string such as \"2.3\", found {found}")]
    NotAString { found: String },
}

impl VersionError {
    /// The rule name dead letters and metrics carry.
    pub fn rule(&self) -> &'static str {
        rule::VERSION
    }
}

impl bikeshare_types::error::Classify for VersionError {
    fn class(&self) -> bikeshare_types::error::ErrorClass {
        bikeshare_types::error::ErrorClass::User
    }
    fn retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn missing_version_is_1_0() {
        let v = DeclaredVersion::from_field(None).unwrap();
        assert_eq!(v.layout, GbfsVersion::V1_0);
        assert_eq!(v.declared, "1.0");
        assert!(v.is_exact());
    }

    #[test]
    fn every_known_version_round_trips() {
        for v in GbfsVersion::ALL {
            assert_eq!(GbfsVersion::parse(v.as_str()).unwrap(), v);
        }
        assert!(GbfsVersion::V3_0.is_v3());
        assert!(!GbfsVersion::V2_3.is_v3());
    }

    #[test]
    fn release_candidates_of_3_1_borrow_the_3_0_layout() {
        for s in ["3.1-RC", "3.1-RC2", "3.1-RC3", "3.1"] {
            let v = DeclaredVersion::from_field(Some(&json!(s))).unwrap();
            assert_eq!(v.layout, GbfsVersion::V3_0, "{s}");
            assert!(!v.is_exact());
            assert_eq!(v.declared, s);
        }
    }

    #[test]
    fn unknown_versions_and_non_strings_are_errors() {
        for bad in [
            json!("4.0"),
            json!("0.9"),
            json!("3.1-RCx"),
            json!(""),
            json!("2.3 "),
        ] {
            let err = DeclaredVersion::from_field(Some(&bad)).unwrap_err();
            assert!(matches!(err, VersionError::Unknown { .. }), "{bad}: {err}");
            assert_eq!(err.rule(), rule::VERSION);
        }
        for bad in [json!(2.3), json!(2), json!(null), json!(["2.3"])] {
            let err = DeclaredVersion::from_field(Some(&bad)).unwrap_err();
            assert!(
                matches!(err, VersionError::NotAString { .. }),
                "{bad}: {err}"
            );
        }
    }
}
