//! Weather observations (Meteostat hourly).

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// One hourly observation at a weather station, mapped to the systems it is nearest to.
/// Every measurement is optional: stations do not report all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherObs {
    /// Meteostat station id (e.g. `72509`).
    pub weather_station: String,
    /// Start of the observed hour.
    pub observed_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precipitation_mm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wind_speed_kmh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub humidity_pct: Option<f64>,
    /// Meteostat weather condition code, 1 (clear) to 27 (storm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<u8>,
}
