//! Demand profiles of the simulated city: when trips start, and where they end.
//!
//! Pure tables and functions; [`crate::city`] documents how they are used.
//! Profile values are given at each full local hour and interpolated linearly in between,
//! so the integral over a day is the sum of the 24 values.

use serde::{Deserialize, Serialize};

/// What a station's neighbourhood is like; it decides the station's daily rhythm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    /// The periphery: commuters leave in the morning and come back in the evening.
    Residential,
    /// The business core: the opposite rhythm.
    Core,
    /// Parks and waterfront: afternoons, evenings and weekends.
    Leisure,
}

impl Zone {
    pub const ALL: [Zone; 3] = [Zone::Residential, Zone::Core, Zone::Leisure];

    pub fn index(self) -> usize {
        match self {
            Zone::Residential => 0,
            Zone::Core => 1,
            Zone::Leisure => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Zone::Residential => "residential",
            Zone::Core => "core",
            Zone::Leisure => "leisure",
        }
    }
}

/// Weekday or weekend (holidays are not modelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayType {
    Weekday,
    Weekend,
}

impl DayType {
    pub fn index(self) -> usize {
        match self {
            DayType::Weekday => 0,
            DayType::Weekend => 1,
        }
    }
}

type Profile = [f64; 24];

/// Relative rental intensity by local hour, `[day type][zone]`.
const RENTALS: [[Profile; 3]; 2] = [
    [
        // Weekday residential: the morning commute out, a smaller evening peak.
        [
            0.10, 0.05, 0.03, 0.03, 0.10, 0.45, 1.50, 3.20, 3.40, 1.70, 0.80, 0.80, //
            0.90, 0.80, 0.80, 1.00, 1.20, 1.40, 1.30, 1.00, 0.80, 0.60, 0.40, 0.20,
        ],
        // Weekday core: lunch and the evening commute home.
        [
            0.20, 0.10, 0.05, 0.05, 0.05, 0.20, 0.50, 0.80, 0.90, 0.80, 0.80, 1.20, //
            1.60, 1.20, 1.00, 1.30, 2.50, 3.40, 2.60, 1.50, 1.10, 0.90, 0.60, 0.40,
        ],
        // Weekday leisure: afternoon and early evening.
        [
            0.10, 0.05, 0.03, 0.03, 0.05, 0.20, 0.50, 0.80, 0.80, 0.80, 1.00, 1.30, //
            1.50, 1.60, 1.60, 1.70, 1.90, 2.00, 1.90, 1.60, 1.20, 0.80, 0.50, 0.30,
        ],
    ],
    [
        // Weekend: a broad midday peak everywhere.
        [
            0.30, 0.20, 0.10, 0.05, 0.05, 0.10, 0.20, 0.40, 0.70, 1.10, 1.50, 1.70, //
            1.80, 1.80, 1.80, 1.70, 1.60, 1.50, 1.30, 1.10, 0.90, 0.70, 0.50, 0.40,
        ],
        [
            0.40, 0.30, 0.20, 0.10, 0.05, 0.10, 0.20, 0.30, 0.50, 0.80, 1.10, 1.40, //
            1.60, 1.70, 1.70, 1.70, 1.70, 1.60, 1.50, 1.40, 1.20, 1.00, 0.80, 0.60,
        ],
        [
            0.20, 0.10, 0.05, 0.03, 0.03, 0.10, 0.20, 0.40, 0.70, 1.10, 1.60, 2.00, //
            2.30, 2.40, 2.40, 2.30, 2.10, 1.80, 1.50, 1.20, 0.90, 0.60, 0.40, 0.30,
        ],
    ],
];

/// Relative attraction of a zone as a trip's destination, by local hour, `[day type][zone]`.
/// Scaled per zone by [`balance_destinations`] so that each zone's inflow over a day
/// matches its outflow.
const DESTINATIONS: [[Profile; 3]; 2] = [
    [
        // Weekday residential: people come home in the evening.
        [
            1.00, 1.00, 1.00, 1.00, 0.80, 0.50, 0.30, 0.25, 0.25, 0.40, 0.70, 0.80, //
            0.80, 0.80, 0.90, 1.10, 1.60, 2.20, 2.40, 2.00, 1.60, 1.40, 1.20, 1.10,
        ],
        // Weekday core: people arrive at work in the morning.
        [
            0.40, 0.30, 0.30, 0.30, 0.60, 1.20, 2.20, 3.00, 3.00, 2.20, 1.40, 1.30, //
            1.30, 1.20, 1.10, 1.00, 0.80, 0.60, 0.60, 0.60, 0.60, 0.50, 0.50, 0.40,
        ],
        // Weekday leisure.
        [
            0.50, 0.40, 0.40, 0.40, 0.40, 0.50, 0.60, 0.70, 0.70, 0.80, 1.00, 1.20, //
            1.30, 1.40, 1.40, 1.50, 1.60, 1.70, 1.70, 1.60, 1.30, 1.00, 0.80, 0.60,
        ],
    ],
    [
        [
            1.20, 1.20, 1.20, 1.10, 1.00, 0.90, 0.80, 0.80, 0.80, 0.80, 0.80, 0.90, //
            1.00, 1.00, 1.00, 1.10, 1.20, 1.30, 1.40, 1.40, 1.40, 1.30, 1.30, 1.20,
        ],
        [
            0.80, 0.80, 0.70, 0.60, 0.60, 0.60, 0.70, 0.80, 0.90, 1.00, 1.10, 1.20, //
            1.30, 1.30, 1.30, 1.20, 1.10, 1.00, 1.00, 1.00, 1.00, 0.90, 0.90, 0.80,
        ],
        [
            0.40, 0.30, 0.30, 0.30, 0.30, 0.40, 0.60, 0.90, 1.20, 1.50, 1.80, 2.00, //
            2.10, 2.10, 2.00, 1.90, 1.60, 1.30, 1.00, 0.80, 0.70, 0.60, 0.50, 0.50,
        ],
    ],
];

/// Daily rental volume of a zone relative to the city's mean, `[day type][zone]`.
const ZONE_VOLUME: [[f64; 3]; 2] = [[0.9, 1.25, 0.8], [0.75, 0.7, 1.5]];

fn interpolate(profile: &Profile, local_hour: f64) -> f64 {
    let x = local_hour.rem_euclid(24.0);
    let h = x.floor();
    let frac = x - h;
    let i = (h as usize).min(23);
    profile[i] * (1.0 - frac) + profile[(i + 1) % 24] * frac
}

fn mean(profile: &Profile) -> f64 {
    profile.iter().sum::<f64>() / 24.0
}

/// Rentals per day at a station of weight 1 in `zone` are `trips_per_station_per_day`
/// times this daily volume; [`rental_intensity`] spreads it over the day.
pub fn zone_volume(day: DayType, zone: Zone) -> f64 {
    ZONE_VOLUME[day.index()][zone.index()]
}

/// The rental rate of a zone at `local_hour` relative to its daily mean (mean 1 over a day),
/// times the zone's daily volume.
pub fn rental_intensity(day: DayType, zone: Zone, local_hour: f64) -> f64 {
    let p = &RENTALS[day.index()][zone.index()];
    zone_volume(day, zone) * interpolate(p, local_hour) / mean(p)
}

/// The unscaled attraction of `zone` as a destination at `local_hour`.
pub fn destination_attraction(day: DayType, zone: Zone, local_hour: f64) -> f64 {
    interpolate(&DESTINATIONS[day.index()][zone.index()], local_hour)
}

/// Per-zone factors for [`destination_attraction`] such that, with the given total station
/// weight per zone, each zone receives as many trips over a day as it starts, for each day
/// type (iterative proportional fitting; trips in progress at midnight are ignored).
pub fn balance_destinations(zone_weight: [f64; 3]) -> [[f64; 3]; 2] {
    let mut factors = [[1.0; 3]; 2];
    for day in [DayType::Weekday, DayType::Weekend] {
        let d = day.index();
        let outflow: [f64; 3] = std::array::from_fn(|z| {
            zone_weight[z]
                * (0..24)
                    .map(|h| rental_intensity(day, Zone::ALL[z], h as f64))
                    .sum::<f64>()
        });
        for _ in 0..200 {
            let mut inflow = [0.0; 3];
            for h in 0..24 {
                let x = h as f64;
                let total: f64 = (0..3).map(|z| outflow_at(day, zone_weight, z, x)).sum();
                let attract: [f64; 3] = std::array::from_fn(|z| {
                    zone_weight[z] * factors[d][z] * destination_attraction(day, Zone::ALL[z], x)
                });
                let norm: f64 = attract.iter().sum();
                if norm > 0.0 {
                    for z in 0..3 {
                        inflow[z] += total * attract[z] / norm;
                    }
                }
            }
            let mut converged = true;
            for z in 0..3 {
                if inflow[z] > 0.0 && outflow[z] > 0.0 {
                    let ratio = outflow[z] / inflow[z];
                    converged &= (ratio - 1.0).abs() < 1e-9;
                    factors[d][z] *= ratio;
                }
            }
            // Keep the factors on a fixed scale (only their ratios matter).
            let max = factors[d].iter().copied().fold(0.0, f64::max);
            if max > 0.0 {
                factors[d].iter_mut().for_each(|f| *f /= max);
            }
            if converged {
                break;
            }
        }
    }
    factors
}

fn outflow_at(day: DayType, zone_weight: [f64; 3], z: usize, x: f64) -> f64 {
    zone_weight[z] * rental_intensity(day, Zone::ALL[z], x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_have_the_commuter_shape() {
        let wd = DayType::Weekday;
        assert!(
            rental_intensity(wd, Zone::Residential, 8.0)
                > 2.0 * rental_intensity(wd, Zone::Core, 8.0)
        );
        assert!(
            rental_intensity(wd, Zone::Core, 17.5)
                > 2.0 * rental_intensity(wd, Zone::Residential, 17.5)
        );
        assert!(
            destination_attraction(wd, Zone::Core, 8.0)
                > destination_attraction(wd, Zone::Residential, 8.0)
        );
        let mean = (0..24)
            .map(|h| rental_intensity(wd, Zone::Core, h as f64))
            .sum::<f64>()
            / 24.0;
        assert!((mean - zone_volume(wd, Zone::Core)).abs() < 1e-9);
        // Interpolation is continuous across midnight.
        let a = rental_intensity(wd, Zone::Core, 23.999);
        let b = rental_intensity(wd, Zone::Core, 0.0);
        assert!((a - b).abs() < 1e-2);
    }

    #[test]
    fn balanced_destinations_equalise_daily_flows() {
        let weights = [160.0, 90.0, 40.0];
        let f = balance_destinations(weights);
        for day in [DayType::Weekday, DayType::Weekend] {
            for z in 0..3 {
                let out: f64 = (0..24).map(|h| outflow_at(day, weights, z, h as f64)).sum();
                let inflow: f64 = (0..24)
                    .map(|h| {
                        let x = h as f64;
                        let total: f64 = (0..3).map(|k| outflow_at(day, weights, k, x)).sum();
                        let a = |k: usize| {
                            weights[k]
                                * f[day.index()][k]
                                * destination_attraction(day, Zone::ALL[k], x)
                        };
                        total * a(z) / (a(0) + a(1) + a(2))
                    })
                    .sum();
                assert!(
                    (out - inflow).abs() / out < 1e-3,
                    "{day:?} zone {z}: {out} vs {inflow}"
                );
            }
        }
    }

    #[test]
    fn balancing_tolerates_empty_zones() {
        let f = balance_destinations([10.0, 0.0, 0.0]);
        assert!(f.iter().flatten().all(|x| x.is_finite()));
    }
}
