//! Station and system payloads, normalised across GBFS 1.x, 2.x and 3.0.

use serde::{Deserialize, Serialize};

use crate::ids::{StationId, SystemId, VehicleTypeId};
use crate::time::Timestamp;

/// `system_information`: what the processor needs to know about a system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub system_id: SystemId,
    pub name: String,
    /// IANA time zone, e.g. `America/New_York`: time-of-day features use it.
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The GBFS version the feed declared (`1.0` when it declared none).
    pub gbfs_version: String,
}

/// `station_information`: the static description of a station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StationInfo {
    pub station_id: StationId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_name: Option<String>,
    pub lat: f64,
    pub lon: f64,
    /// Number of docks; optional in GBFS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
    #[serde(default)]
    pub is_virtual_station: bool,
}

/// Count of available vehicles of one type (GBFS 2.1+ `vehicle_types_available`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VehicleTypeCount {
    pub vehicle_type_id: VehicleTypeId,
    pub count: u32,
}

/// `station_status`: one station report. Its event time is `last_reported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StationStatus {
    pub station_id: StationId,
    /// Bikes available to rent (`num_vehicles_available` in GBFS 3.0).
    pub num_bikes_available: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ebikes_available: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_bikes_disabled: Option<u32>,
    /// Empty docks; optional only for virtual stations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_docks_available: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_docks_disabled: Option<u32>,
    pub is_installed: bool,
    pub is_renting: bool,
    pub is_returning: bool,
    pub last_reported: Timestamp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vehicle_types_available: Vec<VehicleTypeCount>,
}

impl StationStatus {
    /// True when a rider cannot rent here: no bike while renting.
    pub fn is_empty(&self) -> bool {
        self.is_renting && self.num_bikes_available == 0
    }
    /// True when a rider cannot return here: no dock while returning.
    pub fn is_full(&self) -> bool {
        self.is_returning && self.num_docks_available == Some(0)
    }
    /// Whether the report differs from `other` in anything but identity.
    pub fn same_report(&self, other: &Self) -> bool {
        self == other
    }
}
