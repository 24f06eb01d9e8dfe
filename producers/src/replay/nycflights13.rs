//! Real hourly weather of 2013 at the New York airports (EWR, JFK, LGA), from the
//! nycflights13 data set (`weather.csv`, NOAA ISD observations), as [`WeatherObs`].
//!
//! Columns: `origin,year,month,day,hour,temp,dewp,humid,wind_dir,wind_speed,wind_gust,precip,
//! pressure,visib,time_hour`, in US units: °F, mph and inches are converted to °C, km/h and mm
//! (rounded to 0.01). `time_hour` (UTC) is the observed hour; the airport code is the weather
//! station. `NA` is missing. Rows failing [`check_ranges`] — the data set has a famous
//! 1,048 mph wind — are dead letters with rule `weather.range`.

use std::path::Path;

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{Event, WeatherObs};

use super::files::{RecordedCsv, format_error};
use super::{ReplayChunk, ReplayError, ReplayItem, RowContext, source_name};
use crate::input::field;
use crate::weather::{check_ranges, rule};

/// Degrees Fahrenheit to Celsius.
pub fn fahrenheit_to_celsius(f: f64) -> f64 {
    (f - 32.0) * 5.0 / 9.0
}

/// Miles per hour to kilometres per hour.
pub fn mph_to_kmh(mph: f64) -> f64 {
    mph * 1.609_344
}

/// Inches to millimetres.
pub fn inches_to_mm(inches: f64) -> f64 {
    inches * 25.4
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Reads a nycflights13 `weather.csv` into event-time order.
pub fn read_file(path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
    let source = source_name(path);
    let format = format_error(path);
    let mut rows = RecordedCsv::open(path)?;
    let mut chunk = ReplayChunk::default();
    let Some(h) = rows.header()? else {
        return Ok(chunk);
    };
    let origin = h.require("origin").map_err(format)?;
    let time = h.require("time_hour").map_err(format)?;
    let (temp, humid, wind, precip) = (
        h.find(&["temp"]),
        h.find(&["humid"]),
        h.find(&["wind_speed"]),
        h.find(&["precip"]),
    );
    while let Some(row) = rows.next_row()? {
        chunk.rows += 1;
        let f = &row.fields;
        let number = |col: Option<usize>, name: &str| {
            field(f, col)
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| format!("{name} is not a number: {v:?}"))
                })
                .transpose()
        };
        let obs = (|| {
            let station = field(f, Some(origin)).ok_or("origin is missing")?;
            let observed_at = field(f, Some(time))
                .and_then(Timestamp::parse_rfc3339)
                .ok_or("time_hour is missing or not RFC 3339")?;
            Ok::<_, String>(WeatherObs {
                weather_station: station.to_owned(),
                observed_at,
                temperature_c: number(temp, "temp")?.map(fahrenheit_to_celsius).map(round2),
                precipitation_mm: number(precip, "precip")?.map(inches_to_mm).map(round2),
                wind_speed_kmh: number(wind, "wind_speed")?.map(mph_to_kmh).map(round2),
                humidity_pct: number(humid, "humid")?.map(round2),
                condition: None,
            })
        })()
        .map_err(|m| (rule::PARSE, m))
        .and_then(|obs| {
            check_ranges(&obs)
                .map(|()| (obs.observed_at, Event::Weather(obs)))
                .map_err(|m| (rule::RANGE, m))
        });
        chunk.row(ctx, &source, row.line_no, &row.raw, obs);
    }
    chunk.items.sort_by_key(ReplayItem::event_time);
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::tests::ctx;

    const HEADER: &str = "origin,year,month,day,hour,temp,dewp,humid,wind_dir,wind_speed,\
                          wind_gust,precip,pressure,visib,time_hour";

    fn obs(item: &ReplayItem) -> &WeatherObs {
        match item {
            ReplayItem::Fresh {
                event: Event::Weather(w),
                ..
            } => w,
            other => panic!("not weather: {other:?}"),
        }
    }

    #[test]
    fn converts_us_units_and_dead_letters_impossible_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weather.csv");
        // The first rows of the real file (EWR, 2013-01-01), an LGA row an hour earlier, the
        // data set's 1,048 mph wind, and a row with an unreadable temperature.
        let rows = [
            "EWR,2013,1,1,1,39.02,26.06,59.37,270,10.357019999999999,NA,0,1012,10,2013-01-01T06:00:00Z",
            "EWR,2013,1,1,2,39.02,26.96,61.63,250,8.05546,NA,0.01,1012.3,10,2013-01-01T07:00:00Z",
            "LGA,2013,1,1,0,NA,NA,NA,NA,NA,NA,NA,NA,10,2013-01-01T05:00:00Z",
            "EWR,2013,2,12,3,39.02,27.68,63.21,260,1048.36058,1206.4,0,1008.3,10,2013-02-12T08:00:00Z",
            "JFK,2013,1,1,1,warm,26.06,59.37,270,10,NA,0,1012,10,2013-01-01T06:00:00Z",
        ];
        std::fs::write(&p, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
        let chunk = read_file(&p, &ctx()).unwrap();
        assert_eq!(chunk.rows, 5);
        let got: Vec<_> = chunk.items.iter().map(obs).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].weather_station, "LGA", "sorted by time");
        assert_eq!(got[0].temperature_c, None);
        let ewr = got[1];
        assert_eq!(
            ewr.observed_at,
            Timestamp::parse_rfc3339("2013-01-01T06:00:00Z").unwrap()
        );
        assert_eq!(ewr.temperature_c, Some(3.9));
        assert_eq!(ewr.wind_speed_kmh, Some(16.67));
        assert_eq!(ewr.humidity_pct, Some(59.37));
        assert_eq!(ewr.precipitation_mm, Some(0.0));
        assert_eq!(got[2].precipitation_mm, Some(0.25));
        let rules: Vec<_> = chunk.dead_letters.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["weather.range", "weather.parse"]);
        assert!(chunk.dead_letters[0].raw.contains("1048.36058"));
    }

    #[test]
    fn reads_the_real_file_when_present() {
        let Some(data) =
            bikeshare_testkit::shared_data::shared_data_or_skip("nycflights13 weather")
        else {
            return;
        };
        let p = data.join("real/nyc-weather-2013-nycflights13/weather.csv");
        let chunk = read_file(&p, &ctx()).unwrap();
        assert_eq!(chunk.rows, 26_115);
        assert_eq!(chunk.items.len() + chunk.dead_letters.len(), 26_115);
        assert!(chunk.dead_letters.iter().all(|d| d.rule == "weather.range"));
        assert!(!chunk.dead_letters.is_empty(), "the 1,048 mph wind");
        assert!(
            chunk
                .items
                .windows(2)
                .all(|w| w[0].event_time() <= w[1].event_time())
        );
        let temps: Vec<f64> = chunk
            .items
            .iter()
            .filter_map(|i| obs(i).temperature_c)
            .collect();
        assert!(
            temps.iter().all(|t| (-20.0..=40.0).contains(t)),
            "New York in °C"
        );
    }
}
