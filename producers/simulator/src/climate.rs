//! The simulated weather: one station, hourly, a pure function of the seed and the hour.
//!
//! Every quantity is a sum of smooth *value noise* (random values on a coarse grid of hours,
//! hashed from the seed, joined with a smoothstep) and deterministic cycles, so the weather
//! of any hour can be computed on its own, in any order, and is the same every time:
//!
//! - **temperature**: a seasonal cosine (coldest around 20 January, flipped in the southern
//!   hemisphere), a diurnal cosine peaking at 15:00 local solar time (damped under cloud),
//!   and synoptic noise (36 h and 9 h grids);
//! - **wetness**: noise on 30 h and 5 h grids; it rains in the hours where wetness is above
//!   a threshold calibrated (per seed) so that a `rain_probability` share of hours are wet,
//!   and the amount grows with the excess. Below 0.5 °C precipitation falls as snow;
//! - **cloud** follows wetness and gives the Meteostat condition code (`coco`): 1 clear,
//!   2 fair, 3 cloudy, 4 overcast, 5 fog, 7–9 rain, 14–16 snowfall, 25 thunderstorm;
//! - humidity (higher when wet, lower in the afternoon), dew point (Magnus formula), wind
//!   speed and direction, and pressure (lower when wet) come from further noise channels.
//!
//! [`demand_factor`] turns an hour's weather into the multiplier the city applies to its
//! rental demand: rain and cold keep riders at home.

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::WeatherObs;
use bikeshare_types::splitmix::splitmix64;
use chrono::{Datelike, Timelike};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// The climate of the simulated city (defaults: Toronto).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct ClimateConfig {
    /// Mean annual temperature, °C.
    #[default(9.0)]
    pub mean_temp_c: f64,
    /// Half the difference between the mean July and the mean January temperature, °C.
    #[default(13.5)]
    pub annual_amplitude_c: f64,
    /// Half the mean daily temperature range, °C.
    #[default(4.5)]
    pub diurnal_amplitude_c: f64,
    /// Share of hours with precipitation, 0–1.
    #[default(0.09)]
    pub rain_probability: f64,
}

/// One hour at the weather station, in Meteostat's units and field names: °C, %, mm,
/// degrees, km/h, hPa; `None` is a missing value.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyWeather {
    /// Start of the hour, UTC.
    pub time: Timestamp,
    pub temp: f64,
    pub dwpt: f64,
    pub rhum: f64,
    pub prcp: f64,
    pub snow: Option<f64>,
    pub wdir: f64,
    pub wspd: f64,
    pub wpgt: Option<f64>,
    pub pres: f64,
    pub tsun: Option<f64>,
    pub coco: u8,
}

/// A seeded climate at one place; cheap to clone.
#[derive(Debug, Clone)]
pub struct Climate {
    config: ClimateConfig,
    seed: u64,
    lat: f64,
    lon: f64,
    rain_threshold: f64,
}

// Noise channels: one per quantity, so they are independent.
const CH_SYNOPTIC: u64 = 1;
const CH_SYNOPTIC_FAST: u64 = 2;
const CH_WET: u64 = 3;
const CH_WET_FAST: u64 = 4;
const CH_WIND: u64 = 5;
const CH_WIND_FAST: u64 = 6;
const CH_WIND_DIR: u64 = 7;
const CH_PRESSURE: u64 = 8;
const CH_HUMIDITY: u64 = 9;

/// Hours sampled to calibrate the rain threshold.
const CALIBRATION_HOURS: i64 = 24 * 365 * 2;

impl Climate {
    /// The climate at (`lat`, `lon`) for `seed`. Calibrates the rain threshold, which costs
    /// a few milliseconds: build it once.
    pub fn new(config: &ClimateConfig, seed: u64, lat: f64, lon: f64) -> Self {
        let mut climate = Self {
            config: config.clone(),
            seed,
            lat,
            lon,
            rain_threshold: f64::INFINITY,
        };
        climate.rain_threshold = climate.calibrate_rain_threshold();
        climate
    }

    pub fn config(&self) -> &ClimateConfig {
        &self.config
    }

    fn calibrate_rain_threshold(&self) -> f64 {
        let p = self.config.rain_probability;
        if p.is_nan() || p <= 0.0 {
            return f64::INFINITY;
        }
        if p >= 1.0 {
            return f64::NEG_INFINITY;
        }
        let mut w: Vec<f64> = (0..CALIBRATION_HOURS).map(|k| self.wetness(k)).collect();
        w.sort_by(f64::total_cmp);
        // The smallest value above which a share p of the sample lies.
        let idx = (((1.0 - p) * w.len() as f64) as usize).min(w.len() - 1);
        w[idx]
    }

    fn wetness(&self, hour: i64) -> f64 {
        0.7 * smooth_noise(self.seed, CH_WET, hour, 30)
            + 0.3 * smooth_noise(self.seed, CH_WET_FAST, hour, 5)
    }

    /// The weather of the hour containing `t`.
    pub fn hourly(&self, t: Timestamp) -> HourlyWeather {
        let time = t.floor_to(Timestamp::HOUR_MS);
        let k = time.millis().div_euclid(Timestamp::HOUR_MS);
        let dt = time.to_datetime();
        let c = &self.config;

        // Seasons: coldest around day 20 in the north, half a year later in the south.
        let doy = f64::from(dt.ordinal0());
        let season_shift = if self.lat < 0.0 { 182.6 } else { 0.0 };
        let season = -(std::f64::consts::TAU * (doy - 20.0 - season_shift) / 365.25).cos();

        let wet = self.wetness(k);
        let raining = wet > self.rain_threshold;
        let cloud = (0.5 + 0.7 * wet).clamp(0.0, 1.0);

        // Local solar time from the longitude; the diurnal cycle peaks at 15:00.
        let solar_hour = (f64::from(dt.hour()) + self.lon / 15.0).rem_euclid(24.0);
        let diurnal = (std::f64::consts::TAU * (solar_hour - 15.0) / 24.0).cos();
        let temp = c.mean_temp_c
            + c.annual_amplitude_c * season
            + c.diurnal_amplitude_c * (1.0 - 0.5 * cloud) * diurnal
            + 5.0 * smooth_noise(self.seed, CH_SYNOPTIC, k, 36)
            + 1.5 * smooth_noise(self.seed, CH_SYNOPTIC_FAST, k, 9);

        let prcp = if raining {
            let excess = ((wet - self.rain_threshold) / (1.0 - self.rain_threshold).max(0.05))
                .clamp(0.0, 1.0);
            (0.1 + 9.0 * excess.powf(1.6)).min(25.0)
        } else {
            0.0
        };

        let mut rhum = 68.0 + 22.0 * cloud - 10.0 * diurnal
            + 6.0 * smooth_noise(self.seed, CH_HUMIDITY, k, 12);
        if raining {
            rhum = rhum.max(88.0);
        }
        let rhum = rhum.clamp(18.0, 100.0);

        let wspd = (13.0
            + 7.0 * smooth_noise(self.seed, CH_WIND, k, 18)
            + 3.0 * smooth_noise(self.seed, CH_WIND_FAST, k, 3)
            + if raining { 6.0 } else { 0.0 })
        .max(0.0);
        let wdir = (220.0 + 150.0 * smooth_noise(self.seed, CH_WIND_DIR, k, 48)).rem_euclid(360.0);
        let pres = 1014.0 + 11.0 * smooth_noise(self.seed, CH_PRESSURE, k, 60) - 9.0 * wet.max(0.0);

        let temp = round1(temp);
        let rhum = rhum.round();
        let prcp = round1(prcp);
        let wspd = round1(wspd);
        let coco = condition_code(raining, prcp, temp, cloud, rhum, wspd);
        HourlyWeather {
            time,
            temp,
            dwpt: round1(dew_point(temp, rhum)),
            rhum,
            prcp,
            snow: None,
            wdir: wdir.round().rem_euclid(360.0),
            wspd,
            wpgt: None,
            pres: round1(pres),
            tsun: None,
            coco,
        }
    }

    /// The hours whose start lies in `[from, to]`, in order.
    pub fn hours(&self, from: Timestamp, to: Timestamp) -> Vec<HourlyWeather> {
        let mut t =
            Timestamp(from.millis() + (Timestamp::HOUR_MS - 1)).floor_to(Timestamp::HOUR_MS);
        let mut out = Vec::new();
        while t <= to {
            out.push(self.hourly(t));
            t = t.plus_millis(Timestamp::HOUR_MS);
        }
        out
    }

    /// The hour containing `t` as a [`WeatherObs`] of `station`.
    pub fn observation(&self, station: &str, t: Timestamp) -> WeatherObs {
        to_observation(station, &self.hourly(t))
    }
}

/// Converts an hour to the stream's [`WeatherObs`].
pub fn to_observation(station: &str, w: &HourlyWeather) -> WeatherObs {
    WeatherObs {
        weather_station: station.to_owned(),
        observed_at: w.time,
        temperature_c: Some(w.temp),
        precipitation_mm: Some(w.prcp),
        wind_speed_kmh: Some(w.wspd),
        humidity_pct: Some(w.rhum),
        condition: Some(w.coco),
    }
}

/// The multiplier rain, cold, heat and wind apply to rental demand, in (0, 1].
///
/// Any precipitation takes 20 % off and each further millimetre more (down to a quarter of
/// dry-weather demand); below 15 °C demand falls linearly to a quarter at −10 °C; above
/// 30 °C it falls 3 % per degree; wind above 30 km/h takes 15 % off.
pub fn demand_factor(w: &HourlyWeather) -> f64 {
    let rain = if w.prcp > 0.0 {
        (0.8 * (-0.5 * w.prcp).exp()).max(0.25)
    } else {
        1.0
    };
    let temp = if w.temp >= 30.0 {
        (1.0 - 0.03 * (w.temp - 30.0)).max(0.5)
    } else if w.temp >= 15.0 {
        1.0
    } else {
        (0.25 + 0.75 * (w.temp + 10.0) / 25.0).clamp(0.25, 1.0)
    };
    let wind = if w.wspd > 30.0 { 0.85 } else { 1.0 };
    rain * temp * wind
}

fn condition_code(raining: bool, prcp: f64, temp: f64, cloud: f64, rhum: f64, wspd: f64) -> u8 {
    if raining {
        let snow = temp <= 0.5;
        return match (snow, prcp) {
            (false, p) if p >= 4.0 && temp >= 20.0 => 25,
            (false, p) if p < 1.0 => 7,
            (false, p) if p < 4.0 => 8,
            (false, _) => 9,
            (true, p) if p < 1.0 => 14,
            (true, p) if p < 4.0 => 15,
            (true, _) => 16,
        };
    }
    if rhum >= 97.0 && wspd < 6.0 {
        return 5;
    }
    match cloud {
        c if c < 0.2 => 1,
        c if c < 0.45 => 2,
        c if c < 0.75 => 3,
        _ => 4,
    }
}

/// Dew point from temperature and relative humidity (Magnus formula).
fn dew_point(temp: f64, rhum: f64) -> f64 {
    const A: f64 = 17.625;
    const B: f64 = 243.04;
    let g = (rhum.max(1.0) / 100.0).ln() + A * temp / (B + temp);
    B * g / (A - g)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A uniform value in [-1, 1) for grid point `j` of `channel`.
fn knot(seed: u64, channel: u64, j: i64) -> f64 {
    let h = splitmix64(
        seed ^ splitmix64(channel.wrapping_mul(0xD6E8_FEB8_6659_FD93))
            ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
    );
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Value noise: random values every `period` hours, joined with a smoothstep.
fn smooth_noise(seed: u64, channel: u64, hour: i64, period: i64) -> f64 {
    let j = hour.div_euclid(period);
    let frac = hour.rem_euclid(period) as f64 / period as f64;
    let (a, b) = (knot(seed, channel, j), knot(seed, channel, j + 1));
    let s = frac * frac * (3.0 - 2.0 * frac);
    a + (b - a) * s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toronto(seed: u64) -> Climate {
        Climate::new(&ClimateConfig::default(), seed, 43.65, -79.38)
    }

    const JAN_2024: i64 = 1_704_067_200_000;
    const JUL_2024: i64 = 1_719_792_000_000;

    #[test]
    fn deterministic_and_seed_dependent() {
        let (a, b, c) = (toronto(1), toronto(1), toronto(2));
        let t = Timestamp(JUL_2024 + 5 * Timestamp::HOUR_MS + 1234);
        assert_eq!(a.hourly(t), b.hourly(t));
        let differs = (0..48).any(|h| {
            let t = Timestamp(JUL_2024).plus_millis(h * Timestamp::HOUR_MS);
            a.hourly(t) != c.hourly(t)
        });
        assert!(differs);
        assert_eq!(
            a.hourly(t).time,
            Timestamp(JUL_2024 + 5 * Timestamp::HOUR_MS)
        );
    }

    #[test]
    fn seasons_rain_share_and_plausible_ranges() {
        let c = toronto(7);
        let month = |start: i64| {
            c.hours(
                Timestamp(start),
                Timestamp(start + 30 * 24 * Timestamp::HOUR_MS),
            )
        };
        let mean = |v: &[HourlyWeather]| v.iter().map(|w| w.temp).sum::<f64>() / v.len() as f64;
        let (jan, jul) = (month(JAN_2024), month(JUL_2024));
        assert!(
            mean(&jan) < 2.0 && mean(&jul) > 15.0,
            "{} {}",
            mean(&jan),
            mean(&jul)
        );

        let year = c.hours(
            Timestamp(JAN_2024),
            Timestamp(JAN_2024 + 365 * 24 * Timestamp::HOUR_MS),
        );
        let wet = year.iter().filter(|w| w.prcp > 0.0).count() as f64 / year.len() as f64;
        assert!((0.04..0.16).contains(&wet), "wet share {wet}");
        for w in &year {
            assert!(
                (0.0..=100.0).contains(&w.rhum) && w.dwpt <= w.temp + 0.2,
                "{w:?}"
            );
            assert!(w.wspd >= 0.0 && (0.0..360.0).contains(&w.wdir) && (1..=27).contains(&w.coco));
            assert_eq!(w.prcp > 0.0, (7..=25).contains(&w.coco), "{w:?}");
        }
        assert!(
            year.iter().any(|w| (14..=16).contains(&w.coco)),
            "no snow in a year"
        );
    }

    #[test]
    fn no_rain_when_probability_is_zero() {
        let cfg = ClimateConfig {
            rain_probability: 0.0,
            ..ClimateConfig::default()
        };
        let c = Climate::new(&cfg, 3, 43.65, -79.38);
        let hours = c.hours(
            Timestamp(JUL_2024),
            Timestamp(JUL_2024 + 60 * 24 * Timestamp::HOUR_MS),
        );
        assert!(hours.iter().all(|w| w.prcp == 0.0));
    }

    #[test]
    fn rain_and_cold_lower_demand() {
        let c = toronto(1);
        let mut dry = c.hourly(Timestamp(JUL_2024));
        dry.prcp = 0.0;
        dry.temp = 22.0;
        dry.wspd = 10.0;
        let wet = HourlyWeather {
            prcp: 2.0,
            ..dry.clone()
        };
        let cold = HourlyWeather {
            temp: -5.0,
            ..dry.clone()
        };
        assert_eq!(demand_factor(&dry), 1.0);
        assert!(demand_factor(&wet) < 0.5);
        assert!(demand_factor(&cold) < 0.5);
        assert!(
            demand_factor(&HourlyWeather {
                prcp: 8.0,
                temp: -5.0,
                ..dry
            }) > 0.0
        );
    }
}
