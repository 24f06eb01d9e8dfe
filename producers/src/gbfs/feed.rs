//! Which GBFS file a read is: the noun both the parser ([`super::model`]) and the schema
//! registry ([`super::schema`]) key by.

/// The GBFS files this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FeedKind {
    /// `gbfs.json`, the auto-discovery file.
    Discovery,
    SystemInformation,
    StationInformation,
    StationStatus,
}

impl FeedKind {
    /// The GBFS file name without extension, as discovery and the JSON schemas name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Discovery => "gbfs",
            Self::SystemInformation => "system_information",
            Self::StationInformation => "station_information",
            Self::StationStatus => "station_status",
        }
    }

    /// Whether the feed is a list of station records under `data.stations`.
    pub fn has_station_records(self) -> bool {
        matches!(self, Self::StationInformation | Self::StationStatus)
    }
}

impl std::fmt::Display for FeedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
