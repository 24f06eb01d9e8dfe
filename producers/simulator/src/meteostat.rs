//! Meteostat-compatible documents for the city's single weather station, as pure functions.
//!
//! - JSON API: `stations/nearby` → `{"meta":{},"data":[{"id","name":{"en"},"distance"}]}`
//!   (distance in metres) and `stations/hourly` → `{"meta":{"generated"},"data":[{"time",
//!   "temp","dwpt","rhum","prcp","snow","wdir","wspd","wpgt","pres","tsun","coco"}]}` with
//!   times `YYYY-MM-DD HH:MM:SS` in UTC and `null` for missing values.
//! - Bulk: `hourly/<id>.csv.gz`, a gzip CSV without header
//!   (`date,hour,temp,dwpt,rhum,prcp,snow,wdir,wspd,wpgt,pres,tsun,coco`, empty = missing),
//!   and `stations/lite.json.gz`, a gzip JSON array of station metadata.

use std::io::Write;

use bikeshare_types::Timestamp;
use chrono::NaiveDate;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use super::CityConfig;
use super::SimulatorError;
use super::climate::HourlyWeather;

/// The most days one `stations/hourly` request may span (inclusive of both ends).
pub const MAX_HOURLY_DAYS: i64 = 31;

/// The weather station of a simulated city.
#[derive(Debug, Clone, PartialEq)]
pub struct WeatherStation {
    pub id: String,
    pub name: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub elevation_m: f64,
    pub timezone: String,
}

impl WeatherStation {
    /// The station at the centre of the city.
    pub fn of_city(city: &CityConfig) -> Self {
        Self {
            id: city.weather_station_id.clone(),
            name: city.name.clone(),
            country: city.country.clone(),
            lat: city.centre_lat,
            lon: city.centre_lon,
            elevation_m: city.elevation_m,
            timezone: city.timezone.clone(),
        }
    }
}

/// Meteostat's time format, UTC.
pub fn format_time(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Great-circle distance in metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_000.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// `stations/nearby`: the one station, with its distance from (`lat`, `lon`), unless
/// `limit` is 0.
pub fn nearby(station: &WeatherStation, lat: f64, lon: f64, limit: u32) -> Value {
    let data: Vec<Value> = if limit == 0 {
        Vec::new()
    } else {
        let d = (distance_m(lat, lon, station.lat, station.lon) * 10.0).round() / 10.0;
        vec![json!({"id": station.id, "name": {"en": station.name}, "distance": d})]
    };
    json!({"meta": {}, "data": data})
}

/// Why an hourly request is refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HourlyRequestError {
    #[error("invalid {field} date {value:?}: expected YYYY-MM-DD")]
    Date { field: &'static str, value: String },
    #[error("end {end} is before start {start}")]
    Order { start: NaiveDate, end: NaiveDate },
    #[error("at most {MAX_HOURLY_DAYS} days per request")]
    TooLong,
}

/// The hours a `stations/hourly` request asks for, `[first, last]` (start 00:00 to end
/// 23:00, UTC).
pub fn hourly_range(start: &str, end: &str) -> Result<(Timestamp, Timestamp), HourlyRequestError> {
    let date = |field: &'static str, value: &str| {
        NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| HourlyRequestError::Date {
            field,
            value: value.to_owned(),
        })
    };
    let (s, e) = (date("start", start)?, date("end", end)?);
    if e < s {
        return Err(HourlyRequestError::Order { start: s, end: e });
    }
    if (e - s).num_days() >= MAX_HOURLY_DAYS {
        return Err(HourlyRequestError::TooLong);
    }
    let midnight =
        |d: NaiveDate| Timestamp::from_datetime(d.and_time(chrono::NaiveTime::MIN).and_utc());
    Ok((
        midnight(s),
        midnight(e).plus_millis(23 * Timestamp::HOUR_MS),
    ))
}

fn hour_json(w: &HourlyWeather) -> Value {
    json!({
        "time": format_time(w.time),
        "temp": w.temp,
        "dwpt": w.dwpt,
        "rhum": w.rhum,
        "prcp": w.prcp,
        "snow": w.snow,
        "wdir": w.wdir,
        "wspd": w.wspd,
        "wpgt": w.wpgt,
        "pres": w.pres,
        "tsun": w.tsun,
        "coco": w.coco,
    })
}

/// `stations/hourly`: the given hours, generated at `generated`.
pub fn hourly(hours: &[HourlyWeather], generated: Timestamp) -> Value {
    json!({
        "meta": {"generated": format_time(generated)},
        "data": hours.iter().map(hour_json).collect::<Vec<_>>(),
    })
}

fn field(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_default()
}

/// The bulk hourly CSV (not compressed): one line per hour, no header.
pub fn bulk_hourly_csv(hours: &[HourlyWeather]) -> String {
    let mut out = String::with_capacity(hours.len() * 64);
    for w in hours {
        let dt = w.time.to_datetime();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            dt.format("%Y-%m-%d"),
            chrono::Timelike::hour(&dt),
            field(Some(w.temp)),
            field(Some(w.dwpt)),
            field(Some(w.rhum)),
            field(Some(w.prcp)),
            field(w.snow),
            field(Some(w.wdir)),
            field(Some(w.wspd)),
            field(w.wpgt),
            field(Some(w.pres)),
            field(w.tsun),
            w.coco,
        ));
    }
    out
}

/// The bulk station list (not compressed).
pub fn lite_stations(station: &WeatherStation) -> Value {
    json!([{
        "id": station.id,
        "name": {"en": station.name},
        "country": station.country,
        "location": {
            "latitude": station.lat,
            "longitude": station.lon,
            "elevation": station.elevation_m,
        },
        "timezone": station.timezone,
    }])
}

/// Gzip-compresses `bytes`.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, SimulatorError> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::default(),
    );
    enc.write_all(bytes)
        .and_then(|()| enc.finish())
        .map_err(|e| SimulatorError::Internal(format!("gzip: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Climate, ClimateConfig};

    #[test]
    fn shapes() {
        let station = WeatherStation::of_city(&CityConfig::default());
        let n = nearby(&station, 43.66, -79.38, 5);
        assert_eq!(n["meta"], json!({}));
        assert_eq!(n["data"][0]["id"], "SIM01");
        assert_eq!(n["data"][0]["name"]["en"], "Sim City");
        let d = n["data"][0]["distance"].as_f64().unwrap();
        assert!((1000.0..1200.0).contains(&d), "{d}");

        let c = Climate::new(&ClimateConfig::default(), 1, 43.65, -79.38);
        let (from, to) = hourly_range("2024-06-01", "2024-06-02").unwrap();
        let hours = c.hours(from, to);
        assert_eq!(hours.len(), 48);
        let h = hourly(&hours, to);
        assert_eq!(h["data"][0]["time"], "2024-06-01 00:00:00");
        assert_eq!(h["meta"]["generated"], "2024-06-02 23:00:00");
        assert!(h["data"][0]["snow"].is_null() && h["data"][0]["coco"].is_u64());

        let csv = bulk_hourly_csv(&hours[..2]);
        let first: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        assert_eq!(first.len(), 13);
        assert_eq!((first[0], first[1], first[6]), ("2024-06-01", "0", ""));
        assert_eq!(lite_stations(&station)[0]["location"]["elevation"], 76.0);
    }

    #[test]
    fn bad_hourly_requests() {
        assert!(matches!(
            hourly_range("2024-13-01", "2024-06-02"),
            Err(HourlyRequestError::Date { .. })
        ));
        assert!(matches!(
            hourly_range("2024-06-02", "2024-06-01"),
            Err(HourlyRequestError::Order { .. })
        ));
        assert!(matches!(
            hourly_range("2024-01-01", "2024-03-01"),
            Err(HourlyRequestError::TooLong)
        ));
        assert!(hourly_range("2024-01-01", "2024-01-31").is_ok());
    }
}
