//! Weather producer configuration. Every field has a default, so an empty section is valid.
//! The Meteostat API key is never configuration: it is read from `METEOSTAT_API_KEY`.

use std::time::Duration;

use bikeshare_types::retry::Backoff;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// The Meteostat JSON API on RapidAPI.
pub const DEFAULT_API_BASE: &str = "https://meteostat.p.rapidapi.com";
/// Meteostat bulk data.
pub const DEFAULT_BULK_BASE: &str = "https://bulk.meteostat.net/v2";
/// The JSON API serves at most this much hourly data per request.
pub const API_MAX_LOOKBACK_HOURS: u32 = 30 * 24;

/// Where observations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeatherMode {
    /// The JSON API (needs `METEOSTAT_API_KEY`).
    #[default]
    Api,
    /// Bulk files: the station list and each station's hourly CSV (no key).
    Bulk,
}

/// How the weather producer polls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct WeatherConfig {
    #[default(WeatherMode::Api)]
    pub mode: WeatherMode,
    /// JSON API base URL (tests and the simulator point it elsewhere).
    #[default(DEFAULT_API_BASE.into())]
    pub api_base: String,
    /// Bulk data base URL.
    #[default(DEFAULT_BULK_BASE.into())]
    pub bulk_base: String,
    /// Seconds between polls.
    #[default(15 * 60)]
    pub poll_interval_secs: u64,
    /// How many hours back each poll looks (observations arrive late).
    #[default(24)]
    pub lookback_hours: u32,
    /// Per-request timeout, seconds.
    #[default(30)]
    pub timeout_secs: u64,
    /// Largest response body accepted, bytes (bulk hourly files hold a station's history).
    #[default(64 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Retries of one request (the client is the only retry owner on this path).
    pub retry: Backoff,
    /// A token for one origin (the built-in simulator's); set by code, never configuration.
    #[serde(skip)]
    pub bearer: Option<crate::gbfs::Bearer>,
}

impl WeatherConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval_secs == 0 {
            return Err("weather.poll_interval_secs must be at least 1".into());
        }
        if self.timeout_secs == 0 {
            return Err("weather.timeout_secs must be at least 1".into());
        }
        if self.lookback_hours == 0 || self.lookback_hours > API_MAX_LOOKBACK_HOURS {
            return Err(format!(
                "weather.lookback_hours must be 1..={API_MAX_LOOKBACK_HOURS}"
            ));
        }
        if self.max_body_bytes == 0 {
            return Err("weather.max_body_bytes must be at least 1".into());
        }
        for (name, url) in [("api_base", &self.api_base), ("bulk_base", &self.bulk_base)] {
            if reqwest::Url::parse(url).is_err() {
                return Err(format!("weather.{name} is not a URL: {url:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gets_defaults_and_values_are_checked() {
        let c: WeatherConfig = serde_json::from_str(r#"{"mode":"bulk"}"#).unwrap();
        assert_eq!(c.mode, WeatherMode::Bulk);
        assert_eq!(c.poll_interval(), Duration::from_secs(900));
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert!(c.validate().is_ok());
        let bad = WeatherConfig {
            lookback_hours: 0,
            ..WeatherConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("lookback_hours"));
        let bad = WeatherConfig {
            bulk_base: "not a url".into(),
            ..WeatherConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("bulk_base"));
    }
}
