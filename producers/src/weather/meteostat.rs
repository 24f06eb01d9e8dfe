//! The Meteostat client: the JSON API and the bulk data, and the mapping of both to
//! [`WeatherObs`].
//!
//! JSON API (RapidAPI; key in `x-rapidapi-key`, never logged):
//! - `GET {api_base}/stations/nearby?lat=..&lon=..&limit=1` → `{"data":[{"id":..,"name":{"en":..},"distance":..}]}`
//! - `GET {api_base}/stations/hourly?station=..&start=YYYY-MM-DD&end=YYYY-MM-DD` →
//!   `{"data":[{"time":"YYYY-MM-DD HH:MM:SS","temp":..,"rhum":..,"prcp":..,"wspd":..,"coco":..,..}]}`
//!   (times in UTC, any value may be null).
//!
//! Bulk data (no key):
//! - `GET {bulk_base}/stations/lite.json.gz` → gzip JSON array of stations with `location`;
//! - `GET {bulk_base}/hourly/{id}.csv.gz` → gzip CSV without header:
//!   `date,hour,temp,dwpt,rhum,prcp,snow,wdir,wspd,wpgt,pres,tsun,coco` (empty = missing).
//!
//! Units are Meteostat's: °C, mm, km/h, %. Each request has a timeout and a body cap; failures
//! that may pass (network, timeouts, 408/429/5xx, a malformed body) are retried with the
//! configured [`Backoff`]. A row that cannot be read or fails [`check_ranges`] is returned as a
//! [`RejectedRow`] for the caller to dead-letter; it never fails the request.

use std::fmt;
use std::io::Read;

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::WeatherObs;
use bikeshare_types::error::{Classify, ErrorClass, chain};
use bikeshare_types::retry::{Backoff, Failure};
use bytes::Bytes;
use chrono::{NaiveDate, NaiveDateTime};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::config::{WeatherConfig, WeatherMode};
use super::{check_ranges, rule};
use crate::input::{CsvRow, CsvRows, read_capped};
use crate::output::OutputError;

/// The environment variable holding the RapidAPI key.
pub const API_KEY_ENV: &str = "METEOSTAT_API_KEY";
/// The RapidAPI host header of the Meteostat API.
pub const RAPIDAPI_HOST: &str = "meteostat.p.rapidapi.com";
/// A gzip body may expand at most this many times (guards against gzip bombs).
const MAX_EXPANSION: u64 = 16;
/// The most of an error body quoted in an error message.
const ERROR_BODY_PREVIEW: usize = 300;

/// A Meteostat API key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// `METEOSTAT_API_KEY`, when set and not blank.
    pub fn from_env() -> Option<Self> {
        std::env::var(API_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| Self(k.trim().to_owned()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why a weather request or poll failed.
#[derive(Debug, thiserror::Error)]
pub enum WeatherError {
    #[error(
        "{API_KEY_ENV} is not set: the Meteostat JSON API needs it (or set weather mode = \"bulk\")"
    )]
    MissingApiKey,
    #[error("invalid weather configuration: {0}")]
    Config(String),
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("GET {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("GET {url}: malformed body: {message}")]
    Malformed { url: String, message: String },
    #[error("no weather station near ({lat}, {lon})")]
    NoStation { lat: f64, lon: f64 },
    #[error("weather output failed")]
    Output(#[from] OutputError),
}

impl Classify for WeatherError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::MissingApiKey | Self::Config(_) => ErrorClass::User,
            Self::Client(_) => ErrorClass::Internal,
            Self::Status {
                status: 400 | 401 | 403 | 404,
                ..
            } => ErrorClass::User,
            Self::Request { .. }
            | Self::Status { .. }
            | Self::TooLarge { .. }
            | Self::Malformed { .. }
            | Self::NoStation { .. }
            | Self::Output(_) => ErrorClass::External,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Request { .. } | Self::Malformed { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            Self::Output(e) => matches!(e, OutputError::Publish(_)),
            _ => false,
        }
    }
}

/// A weather station chosen for a location.
#[derive(Debug, Clone, PartialEq)]
pub struct WeatherStation {
    pub id: String,
    pub name: Option<String>,
    /// Distance from the location, metres.
    pub distance_m: Option<f64>,
}

/// A station of the bulk station list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BulkStation {
    pub id: String,
    /// The English name (another language when English is absent).
    #[serde(default, deserialize_with = "localized")]
    pub name: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub location: Option<BulkLocation>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Where a bulk station is.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct BulkLocation {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(default)]
    pub elevation: Option<f64>,
}

/// A row that could not become an observation: the rule it failed and the raw text.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    pub rule: &'static str,
    pub message: String,
    pub raw: String,
    /// The hour it is about, when readable (to report it once).
    pub observed_at: Option<Timestamp>,
}

/// Observations of one station, and the rows that were rejected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourlyBatch {
    pub observations: Vec<WeatherObs>,
    pub rejected: Vec<RejectedRow>,
}

impl HourlyBatch {
    fn push(&mut self, row: Result<WeatherObs, RejectedRow>) {
        match row {
            Ok(obs) => self.observations.push(obs),
            Err(r) => self.rejected.push(r),
        }
    }
}

/// The Meteostat client: one `reqwest::Client`, both endpoints, one retry owner.
#[derive(Debug, Clone)]
pub struct MeteostatClient {
    http: reqwest::Client,
    api_base: String,
    bulk_base: String,
    /// `x-rapidapi-key` (marked sensitive) and `x-rapidapi-host`; empty without a key.
    api_headers: HeaderMap,
    max_body_bytes: u64,
    retry: Backoff,
    bearer: Option<crate::gbfs::Bearer>,
}

impl MeteostatClient {
    /// A client for `config`; `key` is required in API mode.
    pub fn new(config: &WeatherConfig, key: Option<ApiKey>) -> Result<Self, WeatherError> {
        config.validate().map_err(WeatherError::Config)?;
        if config.mode == WeatherMode::Api && key.is_none() {
            return Err(WeatherError::MissingApiKey);
        }
        let mut api_headers = HeaderMap::new();
        if let Some(ApiKey(k)) = &key {
            let mut value = HeaderValue::from_str(k).map_err(|_| {
                WeatherError::Config(format!(
                    "{API_KEY_ENV} has characters not allowed in a header"
                ))
            })?;
            value.set_sensitive(true);
            api_headers.insert("x-rapidapi-key", value);
            api_headers.insert("x-rapidapi-host", HeaderValue::from_static(RAPIDAPI_HOST));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(std::time::Duration::from_secs(10)))
            .user_agent(concat!("bikeshare-producers/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WeatherError::Client)?;
        Ok(Self {
            http,
            api_base: config.api_base.trim_end_matches('/').to_owned(),
            bulk_base: config.bulk_base.trim_end_matches('/').to_owned(),
            api_headers,
            max_body_bytes: config.max_body_bytes,
            retry: config.retry,
            bearer: config.bearer.clone(),
        })
    }

    /// Like [`MeteostatClient::new`] with the key from `METEOSTAT_API_KEY`.
    pub fn from_env(config: &WeatherConfig) -> Result<Self, WeatherError> {
        Self::new(config, ApiKey::from_env())
    }

    fn api_request(&self, path: &str) -> Result<(String, reqwest::RequestBuilder), WeatherError> {
        if self.api_headers.is_empty() {
            return Err(WeatherError::MissingApiKey);
        }
        let url = format!("{}{path}", self.api_base);
        let request = self.http.get(&url).headers(self.api_headers.clone());
        Ok((url, request))
    }

    /// The station nearest to (`lat`, `lon`) by the JSON API.
    pub async fn nearby_station(&self, lat: f64, lon: f64) -> Result<WeatherStation, WeatherError> {
        let (url, request) = self.api_request("/stations/nearby")?;
        let request = request.query(&[
            ("lat", lat.to_string()),
            ("lon", lon.to_string()),
            ("limit", "1".into()),
        ]);
        self.fetch(&url, request, |body| {
            parse_nearby(body)
                .map_err(Ok)?
                .ok_or(Err(WeatherError::NoStation { lat, lon }))
        })
        .await
    }

    /// Hourly observations of `station` on the UTC days `start..=end` by the JSON API.
    pub async fn hourly(
        &self,
        station: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<HourlyBatch, WeatherError> {
        let (url, request) = self.api_request("/stations/hourly")?;
        let request = request.query(&[
            ("station", station.to_owned()),
            ("start", start.format("%Y-%m-%d").to_string()),
            ("end", end.format("%Y-%m-%d").to_string()),
        ]);
        self.fetch(&url, request, |body| {
            parse_hourly_json(station, body).map_err(Ok)
        })
        .await
    }

    /// The bulk station list.
    pub async fn bulk_stations(&self) -> Result<Vec<BulkStation>, WeatherError> {
        let url = format!("{}/stations/lite.json.gz", self.bulk_base);
        let request = self.bulk_get(&url);
        let limit = self.max_body_bytes.saturating_mul(MAX_EXPANSION);
        self.fetch(&url, request, |body| {
            let text = gunzip_capped(body, limit)?;
            serde_json::from_slice(&text).map_err(|e| Ok(e.to_string()))
        })
        .await
    }

    /// Hourly observations of `station` from its bulk CSV, at or after `since`.
    pub async fn bulk_hourly(
        &self,
        station: &str,
        since: Timestamp,
    ) -> Result<HourlyBatch, WeatherError> {
        let url = format!("{}/hourly/{station}.csv.gz", self.bulk_base);
        let request = self.bulk_get(&url);
        let limit = self.max_body_bytes.saturating_mul(MAX_EXPANSION);
        self.fetch(&url, request, |body| {
            parse_bulk_csv(station, body, since, limit).map_err(Ok)
        })
        .await
    }

    /// A GET of bulk data, with the bearer token when `url` is on its origin.
    fn bulk_get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match (&self.bearer, reqwest::Url::parse(url)) {
            (Some(b), Ok(u)) if b.applies_to(&u) => match b.header_value() {
                Some(v) => request.header(reqwest::header::AUTHORIZATION, v),
                None => request,
            },
            _ => request,
        }
    }

    /// Sends `request` and parses its body, retrying what may pass. `parse` returns
    /// `Err(Ok(message))` for a malformed body (retried) or `Err(Err(e))` for a final answer.
    async fn fetch<T>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        parse: impl Fn(&[u8]) -> Result<T, Result<String, WeatherError>>,
    ) -> Result<T, WeatherError> {
        let (request, parse) = (&request, &parse);
        let attempt = move || async move {
            let once = async {
                let request = request.try_clone().ok_or_else(|| {
                    WeatherError::Config(format!("request to {url} cannot be repeated"))
                })?;
                let body = self.fetch_once(url, request).await?;
                parse(&body).map_err(|e| match e {
                    Ok(message) => WeatherError::Malformed {
                        url: url.to_owned(),
                        message,
                    },
                    Err(e) => e,
                })
            };
            once.await.map_err(|error| Failure {
                retryable: error.retryable(),
                error,
            })
        };
        let on_retry = |attempt, delay: std::time::Duration, err: &WeatherError| {
            tracing::warn!(error = %chain(err), attempt, ?delay, "meteostat request failed; retrying");
        };
        self.retry
            .retry(attempt, tokio::time::sleep, on_retry)
            .await
            .map_err(|gave_up| gave_up.error)
    }

    async fn fetch_once(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Bytes, WeatherError> {
        let request_err = |source| WeatherError::Request {
            url: url.to_owned(),
            source,
        };
        let mut response = request.send().await.map_err(request_err)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            let body =
                String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_PREVIEW)]).into_owned();
            return Err(WeatherError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        let too_large = || WeatherError::TooLarge {
            url: url.to_owned(),
            limit: self.max_body_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body_bytes)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_err)? {
            if (body.len() + chunk.len()) as u64 > self.max_body_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }
}

/// The body, gunzipped when it is gzip (a server may already have decoded it), at most
/// `limit` bytes.
fn gunzip_capped(body: &[u8], limit: u64) -> Result<Vec<u8>, Result<String, WeatherError>> {
    if body.starts_with(&[0x1f, 0x8b]) {
        read_capped(flate2::read::MultiGzDecoder::new(body), limit)
            .map_err(|e| Ok(format!("gzip: {e}")))
    } else {
        Ok(body.to_vec())
    }
}

/// Parses the `stations/nearby` answer: its first station, if any.
pub fn parse_nearby(body: &[u8]) -> Result<Option<WeatherStation>, String> {
    #[derive(Deserialize)]
    struct Answer {
        data: Option<Vec<Nearby>>,
    }
    #[derive(Deserialize)]
    struct Nearby {
        id: String,
        #[serde(default, deserialize_with = "localized")]
        name: Option<String>,
        #[serde(default)]
        distance: Option<f64>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(answer
        .data
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|s| WeatherStation {
            id: s.id,
            name: s.name,
            distance_m: s.distance,
        }))
}

/// A localized name: `{"en": "Boston"}` → `Boston` (another language when English is absent),
/// or a plain string.
fn localized<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(english_name))
}

fn english_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m
            .get("en")
            .or_else(|| m.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Parses a `stations/hourly` answer. The body must be a JSON object with a `data` array (else
/// it is malformed); each row is mapped on its own, and a bad row is rejected, not fatal.
pub fn parse_hourly_json(station: &str, body: &[u8]) -> Result<HourlyBatch, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let rows = match doc.get("data") {
        Some(Value::Array(rows)) => rows.as_slice(),
        Some(Value::Null) => &[],
        _ => return Err("no \"data\" array".into()),
    };
    let mut batch = HourlyBatch::default();
    for row in rows {
        batch.push(map_json_row(station, row));
    }
    Ok(batch)
}

#[derive(Deserialize)]
struct ApiRow {
    time: String,
    temp: Option<f64>,
    rhum: Option<f64>,
    prcp: Option<f64>,
    wspd: Option<f64>,
    coco: Option<f64>,
}

fn map_json_row(station: &str, row: &Value) -> Result<WeatherObs, RejectedRow> {
    let reject = |rule, message: String, observed_at| RejectedRow {
        rule,
        message,
        raw: row.to_string(),
        observed_at,
    };
    let parsed = ApiRow::deserialize(row)
        .map_err(|e| reject(rule::PARSE, format!("{station}: {e}"), None))?;
    let observed_at = parse_hour(&parsed.time).ok_or_else(|| {
        reject(
            rule::PARSE,
            format!(
                "{station}: time {:?} is not YYYY-MM-DD HH:MM:SS",
                parsed.time
            ),
            None,
        )
    })?;
    let condition = condition(station, observed_at, parsed.coco)
        .map_err(|m| reject(rule::RANGE, m, Some(observed_at)))?;
    let obs = WeatherObs {
        weather_station: station.to_owned(),
        observed_at,
        temperature_c: parsed.temp,
        precipitation_mm: parsed.prcp,
        wind_speed_kmh: parsed.wspd,
        humidity_pct: parsed.rhum,
        condition,
    };
    check_ranges(&obs).map_err(|m| reject(rule::RANGE, m, Some(observed_at)))?;
    Ok(obs)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn parse_hour(s: &str) -> Option<Timestamp> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| Timestamp::from_datetime(t.and_utc()))
}

/// The condition code `coco` of `station` at `observed_at`, when given: a whole number in
/// 1..=27, or a message for a [`rule::RANGE`] rejection.
fn condition(
    station: &str,
    observed_at: Timestamp,
    coco: Option<f64>,
) -> Result<Option<u8>, String> {
    let Some(c) = coco else {
        return Ok(None);
    };
    (c.fract() == 0.0 && (1.0..=27.0).contains(&c))
        .then_some(Some(c as u8))
        .ok_or_else(|| format!("{station} at {observed_at}: condition code {c} is not 1..=27"))
}

/// Columns of a bulk hourly CSV row.
const BULK_COLUMNS: usize = 13;

/// Parses a bulk hourly CSV (gzip or plain), keeping rows at or after `since`. Rows before
/// `since` are skipped by their date prefix before any parsing (a file holds decades).
pub fn parse_bulk_csv(
    station: &str,
    body: &[u8],
    since: Timestamp,
    limit: u64,
) -> Result<HourlyBatch, String> {
    let since_day = since.to_datetime().format("%Y-%m-%d").to_string();
    let reader: Box<dyn Read> = if body.starts_with(&[0x1f, 0x8b]) {
        let decoder = flate2::read::MultiGzDecoder::new(body);
        Box::new(decoder.take(limit.saturating_add(1)))
    } else {
        Box::new(body)
    };
    let mut rows = CsvRows::new(reader);
    let mut batch = HourlyBatch::default();
    while let Some(row) = rows.next_row().map_err(|e| format!("gzip: {e}"))? {
        if row
            .raw
            .get(..10)
            .is_some_and(|day| day < since_day.as_str())
        {
            continue;
        }
        match map_csv_row(station, &row) {
            Ok(obs) if obs.observed_at < since => {}
            Err(r) if r.observed_at.is_some_and(|t| t < since) => {}
            row => batch.push(row),
        }
    }
    if rows.bytes_read() > limit {
        return Err(format!("more than {limit} bytes after decompression"));
    }
    Ok(batch)
}

fn map_csv_row(station: &str, row: &CsvRow<'_>) -> Result<WeatherObs, RejectedRow> {
    let f = &row.fields;
    let reject = |rule, message: String, observed_at| RejectedRow {
        rule,
        message,
        raw: row.raw.clone().into_owned(),
        observed_at,
    };
    if f.len() < BULK_COLUMNS {
        return Err(reject(
            rule::PARSE,
            format!("{station}: {} columns, expected {BULK_COLUMNS}", f.len()),
            None,
        ));
    }
    let day = NaiveDate::parse_from_str(f[0].trim(), "%Y-%m-%d").ok();
    let hour = f[1].trim().parse::<u32>().ok();
    let observed_at = day
        .zip(hour)
        .and_then(|(d, h)| d.and_hms_opt(h, 0, 0))
        .map(|t| Timestamp::from_datetime(t.and_utc()))
        .ok_or_else(|| {
            reject(
                rule::PARSE,
                format!("{station}: date {:?} hour {:?} unreadable", f[0], f[1]),
                None,
            )
        })?;
    let number = |i: usize, name: &str| {
        let v = f[i].trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<f64>().map(Some).map_err(|_| {
            reject(
                rule::PARSE,
                format!("{station} at {observed_at}: {name} {v:?} is not a number"),
                Some(observed_at),
            )
        })
    };
    let condition = condition(station, observed_at, number(12, "coco")?)
        .map_err(|m| reject(rule::RANGE, m, Some(observed_at)))?;
    let obs = WeatherObs {
        weather_station: station.to_owned(),
        observed_at,
        temperature_c: number(2, "temp")?,
        precipitation_mm: number(5, "prcp")?,
        wind_speed_kmh: number(8, "wspd")?,
        humidity_pct: number(4, "rhum")?,
        condition,
    };
    check_ranges(&obs).map_err(|m| reject(rule::RANGE, m, Some(observed_at)))?;
    Ok(obs)
}

/// Great-circle distance in metres (haversine, mean Earth radius).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// The station of `stations` nearest to (`lat`, `lon`); stations without coordinates are
/// ignored.
pub fn nearest_station(stations: &[BulkStation], lat: f64, lon: f64) -> Option<WeatherStation> {
    stations
        .iter()
        .filter_map(|s| {
            let loc = s.location?;
            Some((s, distance_m(lat, lon, loc.latitude?, loc.longitude?)))
        })
        .filter(|(_, d)| d.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(s, d)| WeatherStation {
            id: s.id.clone(),
            name: s.name.clone(),
            distance_m: Some(d),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_redacted() {
        let key = ApiKey::new("secret-123");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        let config = WeatherConfig::default();
        let client = MeteostatClient::new(&config, Some(key)).unwrap();
        assert!(!format!("{client:?}").contains("secret-123"));
    }

    #[test]
    fn missing_key_is_a_user_error_in_api_mode_only() {
        let err = MeteostatClient::new(&WeatherConfig::default(), None).unwrap_err();
        assert!(matches!(err, WeatherError::MissingApiKey));
        assert!(err.to_string().contains(API_KEY_ENV));
        assert_eq!(err.class(), ErrorClass::User);
        assert!(!err.retryable());
        let bulk = WeatherConfig {
            mode: WeatherMode::Bulk,
            ..WeatherConfig::default()
        };
        assert!(MeteostatClient::new(&bulk, None).is_ok());
    }

    #[test]
    fn hourly_json_maps_rows_with_nulls_and_rejects_bad_ones() {
        let body = br#"{"meta":{"generated":"2024-04-06 12:00:00"},"data":[
            {"time":"2024-04-06 10:00:00","temp":8.3,"dwpt":2.1,"rhum":65,"prcp":0.4,"snow":null,"wdir":200,"wspd":14.8,"wpgt":null,"pres":1012.1,"tsun":null,"coco":7},
            {"time":"2024-04-06 11:00:00","temp":null,"dwpt":null,"rhum":null,"prcp":null,"snow":null,"wdir":null,"wspd":null,"wpgt":null,"pres":null,"tsun":null,"coco":null},
            {"time":"2024-04-06 12:00:00","temp":75.0,"rhum":50,"prcp":0,"wspd":5,"coco":1},
            {"time":"yesterday","temp":1.0},
            {"time":"2024-04-06 13:00:00","temp":"warm"}
        ]}"#;
        let batch = parse_hourly_json("72509", body).unwrap();
        assert_eq!(batch.observations.len(), 2);
        let o = &batch.observations[0];
        assert_eq!(
            o.observed_at,
            Timestamp::parse_rfc3339("2024-04-06T10:00:00Z").unwrap()
        );
        assert_eq!(
            (o.temperature_c, o.humidity_pct, o.precipitation_mm),
            (Some(8.3), Some(65.0), Some(0.4))
        );
        assert_eq!(
            (o.wind_speed_kmh, o.condition, o.weather_station.as_str()),
            (Some(14.8), Some(7), "72509")
        );
        assert_eq!(batch.observations[1].temperature_c, None);
        assert_eq!(batch.observations[1].condition, None);
        let rules: Vec<_> = batch.rejected.iter().map(|r| r.rule).collect();
        assert_eq!(rules, ["weather.range", "weather.parse", "weather.parse"]);
        assert!(batch.rejected[0].raw.contains("75.0"));
        assert!(batch.rejected[0].observed_at.is_some());
        assert!(parse_hourly_json("x", b"<html>").is_err());
        assert!(parse_hourly_json("x", br#"{"meta":{}}"#).is_err());
        assert!(
            parse_hourly_json("x", br#"{"data":null}"#)
                .unwrap()
                .observations
                .is_empty()
        );
    }

    #[test]
    fn bulk_csv_maps_columns_skips_old_days_and_rejects_bad_rows() {
        let text = "2020-01-01,5,1.0,,,,,,,,,,\n\
                    2024-04-05,23,3.5,1.0,80,0.2,,180,12.0,,1010.0,,4\n\
                    2024-04-06,0,,,,,,,,,,,\n\
                    2024-04-06,1,2.0,,101,,,,,,,,\n\
                    2024-04-06,2,2.0,,50,,,,,,,,28\n\
                    2024-04-06,3,2.0\n\
                    2024-04-06,4,x,,,,,,,,,,\n";
        let since = Timestamp::parse_rfc3339("2024-04-05T23:00:00Z").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        for body in [body.as_slice(), text.as_bytes()] {
            let batch = parse_bulk_csv("SIM01", body, since, 1 << 20).unwrap();
            assert_eq!(batch.observations.len(), 2);
            let o = &batch.observations[0];
            assert_eq!(o.observed_at, since);
            assert_eq!(
                (o.temperature_c, o.humidity_pct, o.precipitation_mm),
                (Some(3.5), Some(80.0), Some(0.2))
            );
            assert_eq!((o.wind_speed_kmh, o.condition), (Some(12.0), Some(4)));
            assert_eq!(batch.observations[1].temperature_c, None);
            let rules: Vec<_> = batch.rejected.iter().map(|r| r.rule).collect();
            assert_eq!(
                rules,
                [
                    "weather.range",
                    "weather.range",
                    "weather.parse",
                    "weather.parse"
                ]
            );
        }
        assert!(
            parse_bulk_csv("SIM01", text.as_bytes(), since, 100).is_err(),
            "cap"
        );
    }

    #[test]
    fn nearest_station_by_great_circle() {
        let list = br#"[
            {"id":"FAR","name":{"en":"Far"},"country":"US","location":{"latitude":40.0,"longitude":-74.0,"elevation":5},"timezone":"America/New_York"},
            {"id":"NONE","name":{"en":"No location"},"location":{"latitude":null,"longitude":null}},
            {"id":"72509","name":{"en":"Boston"},"country":"US","location":{"latitude":42.36,"longitude":-71.01,"elevation":6},"timezone":"America/New_York"}
        ]"#;
        let stations: Vec<BulkStation> = serde_json::from_slice(list).unwrap();
        let s = nearest_station(&stations, 42.35, -71.06).unwrap();
        assert_eq!(
            (s.id.as_str(), s.name.as_deref()),
            ("72509", Some("Boston"))
        );
        let d = s.distance_m.unwrap();
        assert!((3_000.0..6_000.0).contains(&d), "{d}");
        assert!((distance_m(0.0, 0.0, 0.0, 1.0) - 111_195.0).abs() < 10.0);
        assert_eq!(nearest_station(&[], 0.0, 0.0), None);
    }

    #[test]
    fn nearby_answer() {
        let s = parse_nearby(
            br#"{"meta":{},"data":[{"id":"72509","name":{"en":"Boston"},"distance":1234.5}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            WeatherStation {
                id: "72509".into(),
                name: Some("Boston".into()),
                distance_m: Some(1234.5)
            }
        );
        assert_eq!(parse_nearby(br#"{"meta":{},"data":[]}"#).unwrap(), None);
        assert!(parse_nearby(b"[").is_err());
    }

    #[test]
    fn errors_say_whether_a_retry_helps() {
        let status = |status| WeatherError::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(status(500).retryable());
        assert!(status(429).retryable());
        assert!(!status(401).retryable());
        assert_eq!(status(401).class(), ErrorClass::User);
        assert!(
            WeatherError::Malformed {
                url: "u".into(),
                message: "m".into()
            }
            .retryable()
        );
    }
}
