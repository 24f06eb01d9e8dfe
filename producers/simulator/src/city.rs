//! A deterministic bikeshare city: stations, riders, trucks and weather, stepped one
//! event-time minute at a time. Pure logic: no I/O, no wall clock.
//!
//! # Layout
//! Stations are placed around the centre: the **core** (business district) in the inner
//! 30 % of the radius, **leisure** stations clustered around four parks, and
//! **residential** stations on the rest of the disc. Each station has a capacity (about
//! 19 ± 5 docks within `capacity_min..=capacity_max`, core stations a few more) and a
//! popularity *weight* (log-normal, mean 1), so a few stations are busy and many are quiet.
//! It starts with 0.6–1.4 × `bikes_per_dock` of its docks holding bikes, `ebike_share` of
//! them e-bikes; then the city runs `warm_up_hours` before its start, so it starts in the
//! state its own dynamics lead to (drained and filled stations, trucks on the road).
//!
//! # Demand
//! Rentals in each zone are a Poisson process whose rate, per minute, is
//! `trips_per_station_per_day / 1440 × Σ weights × zone volume × hourly profile × weather`:
//!
//! - the **hourly profile** depends on the local hour (`timezone`) and the day type:
//!   on weekdays residential stations peak in the morning (commuters leave) and the core in
//!   the evening (they go home); on weekends every zone has a broad midday peak and leisure
//!   stations the most volume ([`demand`] holds the tables);
//! - the **weather factor** ([`demand_factor`]) lowers demand in rain (−20 % for any, more
//!   per millimetre), in cold (falling linearly below 15 °C) and in strong wind.
//!
//! A rental picks a station in the zone by weight. If it is empty or not renting, the
//! rental is lost (demand is censored, as in reality). Riders prefer e-bikes when there is
//! a choice (half of them). Each trip lasts a log-normal time (median 12 min, 2–90 min)
//! and ends at a destination chosen by zone — with an hourly *attraction* profile (the core
//! attracts in the weekday morning, residential areas in the evening) — then by *return
//! weight*: the station's weight times a log-normal factor of spread `station_imbalance`,
//! scaled so each zone's total is its rental weight. Stations whose factor is below 1 lose
//! bikes day after day, the others gain them, and only trucks even them out.
//! The attraction profiles are scaled so that each zone's inflow over a day equals its
//! outflow, so the commute drains residential stations in the morning and fills them
//! again in the evening without a systematic drift. A rider who finds the destination full
//! (or not returning) tries up to three other stations in the same zone, then rides on for
//! another minute. Bikes are conserved: every rented bike is in a dock or on a trip.
//!
//! # Operations
//! - **Rebalancing** (on by default): every `rebalancing_interval_minutes`, trucks take
//!   bikes from the fullest stations (≤ 15 % free docks) to the emptiest (≤ 15 % bikes),
//!   bringing both towards half full, at most `truck_capacity` bikes per move and
//!   `rebalancing_moves_per_100_stations` moves per round. A truck loads at once and
//!   unloads `truck_minutes` later (what does not fit waits on the truck a minute); a station
//!   a truck is on its way to is not chosen again.
//! - **Breakdowns**: a returned bike is reported broken with probability
//!   `breakdown_per_trip` and stays disabled in its dock (mean 6 h until repaired); free
//!   docks break at `dock_failures_per_dock_day` (mean 24 h until repaired).
//! - **Outages**: a station stops renting and returning at `outages_per_station_day`, for
//!   30 min to 4 h.
//!
//! # Reports
//! Like real feeds, a station reports *on change*: its `last_reported` advances (to a
//! random whole second within the minute) only in a minute in which its state changed, plus a
//! heartbeat after about `heartbeat_minutes` (±20 %) without one — except while the
//! station is empty: empty stations go quiet, as in recorded feeds. Station status is
//! always the state at the last report. With the defaults the median time between two
//! reports of a station is about 16 min (Bluebikes: 11–12 min), 10 % of gaps are over an
//! hour.
//!
//! # Calibration
//! Against the recorded Bluebikes change log, by the processor's own labels (the share of
//! 5-minute ticks that go empty / full within 30 minutes; the crate README has the table
//! and the commands): January 2021 3.4 % / 1.2 %, June 2021 9.5 % / 6.7 %; the default city
//! gives 8.9 % / 4.5 % on a June weekday and 3.9 % / 1.8 % on a January one. Over a simulated
//! June week (seed 42) about 10 % of station-time is empty and 4 % full, about 140 rentals
//! per station per week are served and about 17 % of wanted rentals are lost to empty
//! stations.
//!
//! # Cost
//! A station is about 40 bytes. A step costs O(events) (rentals, returns, reports), plus
//! O(stations) for a rebalancing round, so 250 000 stations are fine; building the status
//! list is O(stations).
//!
//! # Determinism
//! One ChaCha8 stream for the layout and another for the dynamics, consumed in a fixed
//! order, one minute at a time: the same configuration and start give the same state at
//! every minute, on every run, however the city is advanced (one `advance_to` for a week or
//! one per minute).

use bikeshare_types::contracts::{
    StationInfo, StationStatus, SystemInfo, VehicleTypeCount, WeatherObs,
};
use bikeshare_types::{StationId, SystemId, Timestamp};
use chrono::{Datelike, Timelike, Weekday};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal, Poisson};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::SimulatorError;
use super::climate::{Climate, ClimateConfig, demand_factor};
use super::demand::{self, DayType, Zone};

/// The id of the classic (mechanical) bike vehicle type.
pub const CLASSIC_VEHICLE_TYPE: &str = "classic";
/// The id of the e-bike vehicle type.
pub const EBIKE_VEHICLE_TYPE: &str = "ebike";

/// Minutes of look-ahead in the trip and heartbeat wheels; trips and heartbeat intervals
/// are shorter.
const WHEEL: usize = 128;
const MAX_TRIP_MINUTES: f64 = 90.0;
const MAX_CAPACITY: u8 = 250;
const BIKE_REPAIR_MEAN_MINUTES: f64 = 360.0;
const DOCK_REPAIR_MEAN_MINUTES: f64 = 1440.0;
const REDIRECT_TRIES: usize = 3;
const MAX_TRUCK_MINUTES: u32 = 24 * 60;
const MAX_WARM_UP_HOURS: u32 = 24 * 14;

/// How the city is built and behaves. Every field has a default (a Toronto-like city of
/// 300 stations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct CityConfig {
    #[default("sim-city")]
    pub system_id: String,
    #[default("Sim City")]
    pub name: String,
    #[default(42)]
    pub seed: u64,
    #[default(300)]
    pub stations: u32,
    #[default(43.65)]
    pub centre_lat: f64,
    #[default(-79.38)]
    pub centre_lon: f64,
    #[default(6.0)]
    pub radius_km: f64,
    /// IANA time zone: local hours drive demand.
    #[default("America/Toronto")]
    pub timezone: String,
    #[default("en")]
    pub language: String,
    /// The weather station's id, country and elevation (Meteostat metadata).
    #[default("SIM01")]
    pub weather_station_id: String,
    #[default("CA")]
    pub country: String,
    #[default(76.0)]
    pub elevation_m: f64,
    #[default(11)]
    pub capacity_min: u8,
    #[default(40)]
    pub capacity_max: u8,
    /// Mean rentals per station per day at a station of weight 1, before zone volume and
    /// weather.
    #[default(26.0)]
    pub trips_per_station_per_day: f64,
    /// Bikes per dock at the start, on average, 0–1 (each station starts between 0.6 and
    /// 1.4 times this full). Fewer bikes per dock: more empty stations, fewer full ones.
    #[default(0.43)]
    pub bikes_per_dock: f64,
    /// Share of the fleet that are e-bikes, 0–1.
    #[default(0.15)]
    pub ebike_share: f64,
    #[default(true)]
    pub rebalancing: bool,
    #[default(30)]
    pub rebalancing_interval_minutes: u32,
    #[default(0.6)]
    pub rebalancing_moves_per_100_stations: f64,
    #[default(15)]
    pub truck_capacity: u8,
    /// Minutes between a truck loading bikes at a full station and unloading them at an
    /// empty one (0: at once).
    #[default(30)]
    pub truck_minutes: u32,
    /// Spread (log-normal σ) of each station's share of returns against its share of
    /// rentals: stations uphill or away from transit lose bikes day after day, others
    /// gain them, and only trucks even them out. 0: every station as balanced as its zone.
    #[default(0.5)]
    pub station_imbalance: f64,
    /// Hours the city runs before `start` so that it starts in the state its own dynamics
    /// lead to (drained and filled stations, trucks on the road), not freshly stocked.
    #[default(48)]
    pub warm_up_hours: u32,
    /// A station reports at least this often (±20 %), even without a change.
    #[default(60)]
    pub heartbeat_minutes: u32,
    #[default(0.003)]
    pub breakdown_per_trip: f64,
    #[default(0.0005)]
    pub dock_failures_per_dock_day: f64,
    #[default(0.003)]
    pub outages_per_station_day: f64,
    pub climate: ClimateConfig,
}

impl CityConfig {
    /// Checks the values `City::new` relies on.
    pub fn validate(&self) -> Result<Tz, SimulatorError> {
        let bad =
            |field: &'static str, message: String| Err(SimulatorError::Config { field, message });
        if self.system_id.is_empty() {
            return bad("city.system_id", "must not be empty".into());
        }
        if !(1..=2_000_000).contains(&self.stations) {
            return bad(
                "city.stations",
                format!("{} is not in 1..=2000000", self.stations),
            );
        }
        if !(-85.0..=85.0).contains(&self.centre_lat)
            || !(-180.0..=180.0).contains(&self.centre_lon)
        {
            return bad(
                "city.centre_lat",
                format!("({}, {}) is not a place", self.centre_lat, self.centre_lon),
            );
        }
        if !(self.radius_km > 0.0 && self.radius_km <= 200.0) {
            return bad(
                "city.radius_km",
                format!("{} is not in (0, 200]", self.radius_km),
            );
        }
        if self.capacity_min < 2
            || self.capacity_min > self.capacity_max
            || self.capacity_max > MAX_CAPACITY
        {
            return bad(
                "city.capacity_min",
                format!("need 2 <= capacity_min <= capacity_max <= {MAX_CAPACITY}"),
            );
        }
        let rates = [
            (
                "city.trips_per_station_per_day",
                self.trips_per_station_per_day,
                10_000.0,
            ),
            ("city.ebike_share", self.ebike_share, 1.0),
            ("city.bikes_per_dock", self.bikes_per_dock, 0.7),
            ("city.station_imbalance", self.station_imbalance, 3.0),
            (
                "city.rebalancing_moves_per_100_stations",
                self.rebalancing_moves_per_100_stations,
                100.0,
            ),
            ("city.breakdown_per_trip", self.breakdown_per_trip, 1.0),
            (
                "city.dock_failures_per_dock_day",
                self.dock_failures_per_dock_day,
                10.0,
            ),
            (
                "city.outages_per_station_day",
                self.outages_per_station_day,
                10.0,
            ),
            (
                "city.climate.rain_probability",
                self.climate.rain_probability,
                1.0,
            ),
        ];
        for (field, v, max) in rates {
            if !(0.0..=max).contains(&v) {
                return bad(field, format!("{v} is not in [0, {max}]"));
            }
        }
        if self.truck_minutes > MAX_TRUCK_MINUTES {
            return bad(
                "city.truck_minutes",
                format!("{} is not in 0..={MAX_TRUCK_MINUTES}", self.truck_minutes),
            );
        }
        if self.warm_up_hours > MAX_WARM_UP_HOURS {
            return bad(
                "city.warm_up_hours",
                format!("{} is not in 0..={MAX_WARM_UP_HOURS}", self.warm_up_hours),
            );
        }
        if self.rebalancing_interval_minutes == 0 {
            return bad(
                "city.rebalancing_interval_minutes",
                "must be at least 1".into(),
            );
        }
        if !(5..=90).contains(&self.heartbeat_minutes) {
            return bad(
                "city.heartbeat_minutes",
                format!("{} is not in 5..=90", self.heartbeat_minutes),
            );
        }
        self.timezone
            .parse::<Tz>()
            .map_err(|e| SimulatorError::Config {
                field: "city.timezone",
                message: e.to_string(),
            })
    }
}

/// Counters since the city was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CityStats {
    pub steps: u64,
    pub rentals: u64,
    /// Rentals wanted at a station that was empty or not renting.
    pub lost_rentals: u64,
    pub returns: u64,
    /// Returns that had to go to another station than the one intended.
    pub redirected_returns: u64,
    pub rebalanced_bikes: u64,
    pub reports: u64,
    pub heartbeats: u64,
    pub outages: u64,
    pub breakdowns: u64,
}

/// How many stations are empty or full right now (the definitions of
/// [`StationStatus::is_empty`] and [`StationStatus::is_full`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub stations: u32,
    pub empty: u32,
    pub full: u32,
    pub bikes_available: u64,
    pub bikes_in_use: u64,
    /// Bikes loaded on a rebalancing truck, not yet unloaded.
    pub bikes_on_trucks: u64,
}

const RENTING: u8 = 1;
const RETURNING: u8 = 2;
const DIRTY: u8 = 4;
/// A truck is on its way to unload here.
const AWAITING_TRUCK: u8 = 8;

/// One station, kept small: bikes and docks are counts, the id and name are derived.
#[derive(Debug, Clone)]
struct Station {
    lat: f64,
    lon: f64,
    weight: f32,
    /// Minute (city step) of the next heartbeat.
    heartbeat_due: u32,
    last_reported: i64,
    capacity: u8,
    zone: Zone,
    classic: u8,
    ebike: u8,
    bikes_disabled: u8,
    docks_disabled: u8,
    flags: u8,
}

impl Station {
    fn bikes(&self) -> u8 {
        self.classic + self.ebike
    }
    fn docks_available(&self) -> u8 {
        self.capacity - self.classic - self.ebike - self.bikes_disabled - self.docks_disabled
    }
    fn renting(&self) -> bool {
        self.flags & RENTING != 0
    }
    fn returning(&self) -> bool {
        self.flags & RETURNING != 0
    }
}

/// A bike on its way to a station.
#[derive(Debug, Clone, Copy)]
struct Trip {
    dest: u32,
    ebike: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    Classic,
    Ebike,
    Dock,
}

/// Stations of one zone with their cumulative weights, for picking by weight: as a
/// rental's start (`weight`) and as a trip's end (return weight, the same total).
#[derive(Debug, Clone, Default)]
struct ZoneIndex {
    stations: Vec<u32>,
    cumulative: Vec<f64>,
    total: f64,
    return_cumulative: Vec<f64>,
}

impl ZoneIndex {
    /// A station to rent from.
    fn pick(&self, u: f64) -> Option<u32> {
        self.pick_in(&self.cumulative, u)
    }

    /// A station to return to.
    fn pick_return(&self, u: f64) -> Option<u32> {
        self.pick_in(&self.return_cumulative, u)
    }

    fn pick_in(&self, cumulative: &[f64], u: f64) -> Option<u32> {
        let total = *cumulative.last()?;
        let target = u * total;
        let i = cumulative
            .partition_point(|&c| c <= target)
            .min(self.stations.len() - 1);
        Some(self.stations[i])
    }
}

/// Bikes loaded on a truck, due at a station.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    due: u32,
    station: u32,
    classic: u8,
    ebike: u8,
}

/// The city. See the module docs for the model.
#[derive(Debug, Clone)]
pub struct City {
    config: CityConfig,
    tz: Tz,
    climate: Climate,
    stations: Vec<Station>,
    zones: [ZoneIndex; 3],
    destination_factors: [[f64; 3]; 2],
    rng: ChaCha8Rng,
    trip_minutes: LogNormal<f64>,
    now: Timestamp,
    minute: u32,
    trips: Vec<Vec<Trip>>,
    heartbeats: Vec<Vec<u32>>,
    broken: Vec<(u32, Broken)>,
    outages: Vec<(u32, u32)>,
    dirty: Vec<u32>,
    reported: Vec<u32>,
    weather_hour: Option<(Timestamp, f64)>,
    stats: CityStats,
    in_use: u64,
    on_trucks: u64,
    deliveries: Vec<Delivery>,
    move_credit: f64,
}

impl City {
    /// Builds the city as it is at `start` (floored to the minute): every station has just
    /// reported.
    pub fn new(config: CityConfig, start: Timestamp) -> Result<Self, SimulatorError> {
        let tz = config.validate()?;
        let climate = Climate::new(
            &config.climate,
            config.seed,
            config.centre_lat,
            config.centre_lon,
        );
        let mut layout_rng = ChaCha8Rng::seed_from_u64(config.seed);
        layout_rng.set_stream(1);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(2);

        let now = start.floor_to(Timestamp::MINUTE_MS);
        let stations = layout(&config, &mut layout_rng, now)?;

        let mut zones: [ZoneIndex; 3] = Default::default();
        for (i, s) in stations.iter().enumerate() {
            let z = &mut zones[s.zone.index()];
            z.total += f64::from(s.weight);
            z.stations.push(i as u32);
            z.cumulative.push(z.total);
        }
        // Return weights: each station's weight times a log-normal bias of mean 1, from
        // its own random stream (the layout stays what it was), scaled so that each zone
        // receives what it did without bias (the zones' daily balance holds).
        let mut bias_rng = ChaCha8Rng::seed_from_u64(config.seed);
        bias_rng.set_stream(3);
        let sigma = config.station_imbalance;
        let bias = LogNormal::<f64>::new(-sigma * sigma / 2.0, sigma)
            .map_err(|e| internal(e.to_string()))?;
        for z in &mut zones {
            let raw: Vec<f64> = z
                .stations
                .iter()
                .map(|&i| f64::from(stations[i as usize].weight) * bias.sample(&mut bias_rng))
                .collect();
            let scale = z.total / raw.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            let mut acc = 0.0;
            z.return_cumulative = raw
                .iter()
                .map(|w| {
                    acc += w * scale;
                    acc
                })
                .collect();
        }
        let destination_factors =
            demand::balance_destinations(std::array::from_fn(|z| zones[z].total));
        let trip_minutes = LogNormal::new(12f64.ln(), 0.6).map_err(|e| internal(e.to_string()))?;

        let warm_up = i64::from(config.warm_up_hours) * 60;
        let mut city = Self {
            tz,
            climate,
            zones,
            destination_factors,
            rng,
            trip_minutes,
            now,
            minute: 0,
            trips: vec![Vec::new(); WHEEL],
            heartbeats: vec![Vec::new(); WHEEL],
            broken: Vec::new(),
            outages: Vec::new(),
            dirty: Vec::new(),
            reported: (0..stations.len() as u32).collect(),
            weather_hour: None,
            stats: CityStats::default(),
            in_use: 0,
            on_trucks: 0,
            deliveries: Vec::new(),
            move_credit: 0.0,
            stations,
            config,
        };
        // Spread the first heartbeats over the first interval.
        let hb = city.config.heartbeat_minutes;
        for i in 0..city.stations.len() {
            let due = city.rng.random_range(1..=hb);
            city.stations[i].heartbeat_due = due;
            city.heartbeats[due as usize % WHEEL].push(i as u32);
        }
        if warm_up > 0 {
            // Run the warm-up from `start − warm_up`, then begin at `start` as if every
            // station had just reported, with fresh counters.
            city.now = now.plus_minutes(-warm_up);
            city.advance_to(now);
            let t = now.millis();
            for st in &mut city.stations {
                st.last_reported = t;
            }
            city.reported = (0..city.stations.len() as u32).collect();
            city.stats = CityStats::default();
        }
        Ok(city)
    }

    pub fn config(&self) -> &CityConfig {
        &self.config
    }

    pub fn climate(&self) -> &Climate {
        &self.climate
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The event time the city has reached (a whole minute).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn stats(&self) -> &CityStats {
        &self.stats
    }

    pub fn station_count(&self) -> usize {
        self.stations.len()
    }

    /// The id of the station at `index`.
    pub fn station_id(index: usize) -> StationId {
        StationId::new(format!("S{:06}", index + 1))
    }

    pub fn zone_of(&self, index: usize) -> Option<Zone> {
        self.stations.get(index).map(|s| s.zone)
    }

    /// Steps the city one minute at a time until the next step would pass `t`. Times at or
    /// before [`City::now`] change nothing.
    pub fn advance_to(&mut self, t: Timestamp) {
        while self.now.plus_minutes(1) <= t {
            self.step();
        }
    }

    /// Advances exactly one minute.
    pub fn step(&mut self) {
        self.now = self.now.plus_minutes(1);
        self.minute = self.minute.wrapping_add(1);
        self.stats.steps += 1;
        self.reported.clear();
        let m = self.minute;

        // The middle of the minute just simulated, in local time.
        let local = self
            .now
            .plus_millis(-30_000)
            .to_datetime()
            .with_timezone(&self.tz);
        let day = match local.weekday() {
            Weekday::Sat | Weekday::Sun => DayType::Weekend,
            _ => DayType::Weekday,
        };
        let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0 + 0.5 / 60.0;
        let weather = self.weather_factor(self.now.plus_millis(-1));

        self.arrivals(m);
        self.deliveries(m);
        self.rentals(m, day, hour, weather);
        self.breakdowns_and_repairs();
        self.outages(m);
        if self.config.rebalancing && m.is_multiple_of(self.config.rebalancing_interval_minutes) {
            self.rebalance(m);
        }
        self.reports(m);
    }

    fn weather_factor(&mut self, t: Timestamp) -> f64 {
        let hour = t.floor_to(Timestamp::HOUR_MS);
        match self.weather_hour {
            Some((h, f)) if h == hour => f,
            _ => {
                let f = demand_factor(&self.climate.hourly(hour));
                self.weather_hour = Some((hour, f));
                f
            }
        }
    }

    fn mark(&mut self, s: u32) {
        let st = &mut self.stations[s as usize];
        if st.flags & DIRTY == 0 {
            st.flags |= DIRTY;
            self.dirty.push(s);
        }
    }

    fn arrivals(&mut self, m: u32) {
        let mut due = std::mem::take(&mut self.trips[m as usize % WHEEL]);
        for trip in due.drain(..) {
            if self.dock(trip.dest, trip.ebike) {
                continue;
            }
            let zone = self.stations[trip.dest as usize].zone.index();
            let mut docked = false;
            for _ in 0..REDIRECT_TRIES {
                let u = self.rng.random::<f64>();
                if let Some(alt) = self.zones[zone].pick_return(u)
                    && self.dock(alt, trip.ebike)
                {
                    docked = true;
                    break;
                }
            }
            if docked {
                self.stats.redirected_returns += 1;
            } else {
                self.trips[(m as usize + 1) % WHEEL].push(trip);
            }
        }
        // Keep the allocation for the next time round the wheel.
        let slot = &mut self.trips[m as usize % WHEEL];
        if slot.is_empty() {
            *slot = due;
        }
    }

    fn dock(&mut self, s: u32, ebike: bool) -> bool {
        let st = &self.stations[s as usize];
        if !st.returning() || st.docks_available() == 0 {
            return false;
        }
        let broken = self.rng.random::<f64>() < self.config.breakdown_per_trip;
        let st = &mut self.stations[s as usize];
        match (broken, ebike) {
            (true, e) => {
                st.bikes_disabled += 1;
                self.broken
                    .push((s, if e { Broken::Ebike } else { Broken::Classic }));
                self.stats.breakdowns += 1;
            }
            (false, true) => st.ebike += 1,
            (false, false) => st.classic += 1,
        }
        self.in_use = self.in_use.saturating_sub(1);
        self.stats.returns += 1;
        self.mark(s);
        true
    }

    fn rentals(&mut self, m: u32, day: DayType, hour: f64, weather: f64) {
        let per_minute = self.config.trips_per_station_per_day / 1440.0 * weather;
        let attraction: [f64; 3] = std::array::from_fn(|z| {
            self.zones[z].total
                * self.destination_factors[day.index()][z]
                * demand::destination_attraction(day, Zone::ALL[z], hour)
        });
        let attraction_total: f64 = attraction.iter().sum();
        for zone in Zone::ALL {
            let z = zone.index();
            let rate = per_minute * self.zones[z].total * demand::rental_intensity(day, zone, hour);
            let n = poisson(&mut self.rng, rate);
            for _ in 0..n {
                let u = self.rng.random::<f64>();
                let Some(s) = self.zones[z].pick(u) else {
                    break;
                };
                let st = &mut self.stations[s as usize];
                if !st.renting() || st.bikes() == 0 {
                    self.stats.lost_rentals += 1;
                    continue;
                }
                let want_ebike = self.rng.random_bool(0.5);
                let ebike = st.ebike > 0 && (want_ebike || st.classic == 0);
                if ebike {
                    st.ebike -= 1;
                } else {
                    st.classic -= 1;
                }
                self.mark(s);
                self.stats.rentals += 1;
                self.in_use += 1;

                let minutes = self
                    .trip_minutes
                    .sample(&mut self.rng)
                    .clamp(2.0, MAX_TRIP_MINUTES);
                let dest_zone = pick_index(&attraction, attraction_total, self.rng.random::<f64>());
                let u = self.rng.random::<f64>();
                let dest = self.zones[dest_zone].pick_return(u).unwrap_or(s);
                let slot = (m as usize + minutes.round() as usize) % WHEEL;
                self.trips[slot].push(Trip { dest, ebike });
            }
        }
    }

    fn breakdowns_and_repairs(&mut self) {
        let n = self.stations.len();
        // Free docks break.
        let docks: f64 = f64::from(self.config.stations)
            * f64::from(self.config.capacity_max + self.config.capacity_min)
            / 2.0;
        let failures = poisson(
            &mut self.rng,
            docks * self.config.dock_failures_per_dock_day / 1440.0,
        );
        for _ in 0..failures {
            let s = self.rng.random_range(0..n) as u32;
            let st = &mut self.stations[s as usize];
            if st.docks_available() > 0 {
                st.docks_disabled += 1;
                self.broken.push((s, Broken::Dock));
                self.mark(s);
            }
        }
        // Repairs: each broken item is fixed at its kind's rate (thinning from the bike rate).
        let repairs = poisson(
            &mut self.rng,
            self.broken.len() as f64 / BIKE_REPAIR_MEAN_MINUTES,
        );
        for _ in 0..repairs {
            if self.broken.is_empty() {
                break;
            }
            let i = self.rng.random_range(0..self.broken.len());
            let (s, kind) = self.broken[i];
            if kind == Broken::Dock
                && self.rng.random::<f64>() > BIKE_REPAIR_MEAN_MINUTES / DOCK_REPAIR_MEAN_MINUTES
            {
                continue;
            }
            self.broken.swap_remove(i);
            let st = &mut self.stations[s as usize];
            match kind {
                Broken::Classic => {
                    st.bikes_disabled -= 1;
                    st.classic += 1;
                }
                Broken::Ebike => {
                    st.bikes_disabled -= 1;
                    st.ebike += 1;
                }
                Broken::Dock => st.docks_disabled -= 1,
            }
            self.mark(s);
        }
    }

    fn outages(&mut self, m: u32) {
        let mut ended = Vec::new();
        self.outages.retain(|&(s, until)| {
            let over = until == m;
            if over {
                ended.push(s);
            }
            !over
        });
        for s in ended {
            self.stations[s as usize].flags |= RENTING | RETURNING;
            self.mark(s);
        }
        let n = self.stations.len();
        let starts = poisson(
            &mut self.rng,
            n as f64 * self.config.outages_per_station_day / 1440.0,
        );
        for _ in 0..starts {
            let s = self.rng.random_range(0..n) as u32;
            let minutes = self.rng.random_range(30..=240u32);
            let st = &mut self.stations[s as usize];
            if st.flags & (RENTING | RETURNING) != (RENTING | RETURNING) {
                continue;
            }
            st.flags &= !(RENTING | RETURNING);
            self.outages.push((s, m.wrapping_add(minutes)));
            self.stats.outages += 1;
            self.mark(s);
        }
    }

    fn rebalance(&mut self, m: u32) {
        // Fractional moves per round accumulate, so small cities get a truck now and then.
        self.move_credit +=
            self.stations.len() as f64 * self.config.rebalancing_moves_per_100_stations / 100.0;
        let moves = self.move_credit.floor().max(0.0) as usize;
        self.move_credit -= moves as f64;
        if moves == 0 {
            return;
        }
        // (fill ratio, index): donors are nearly full, receivers nearly empty.
        let mut donors: Vec<(f32, u32)> = Vec::new();
        let mut receivers: Vec<(f32, u32)> = Vec::new();
        for (i, st) in self.stations.iter().enumerate() {
            if !st.renting() || !st.returning() {
                continue;
            }
            let cap = f32::from(st.capacity);
            let threshold = (0.15 * cap).max(2.0);
            if f32::from(st.docks_available()) <= threshold && st.bikes() > 0 {
                donors.push((f32::from(st.docks_available()) / cap, i as u32));
            } else if f32::from(st.bikes()) <= threshold
                && st.docks_available() > 0
                && st.flags & AWAITING_TRUCK == 0
            {
                receivers.push((f32::from(st.bikes()) / cap, i as u32));
            }
        }
        let most_extreme = |v: &mut Vec<(f32, u32)>| {
            let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if v.len() > moves {
                v.select_nth_unstable_by(moves, by);
                v.truncate(moves);
            }
            v.sort_unstable_by(by);
        };
        most_extreme(&mut donors);
        most_extreme(&mut receivers);
        let truck = self.config.truck_capacity;
        for (&(_, d), &(_, r)) in donors.iter().zip(receivers.iter()) {
            let (ds, rs) = (&self.stations[d as usize], &self.stations[r as usize]);
            let give = ds.bikes().saturating_sub(ds.capacity / 2);
            let take = (rs.capacity / 2)
                .saturating_sub(rs.bikes())
                .min(rs.docks_available());
            let n = give.min(take).min(truck);
            if n == 0 {
                continue;
            }
            let ds = &mut self.stations[d as usize];
            let classic = n.min(ds.classic);
            let ebike = n - classic;
            ds.classic -= classic;
            ds.ebike -= ebike;
            self.mark(d);
            self.on_trucks += u64::from(n);
            self.stats.rebalanced_bikes += u64::from(n);
            self.stations[r as usize].flags |= AWAITING_TRUCK;
            self.deliveries.push(Delivery {
                due: m.wrapping_add(self.config.truck_minutes),
                station: r,
                classic,
                ebike,
            });
        }
        if self.config.truck_minutes == 0 {
            self.deliveries(m);
        }
    }

    /// Trucks due this minute unload what fits; the rest waits on the truck a minute.
    fn deliveries(&mut self, m: u32) {
        let mut i = 0;
        while i < self.deliveries.len() {
            let d = self.deliveries[i];
            if d.due != m {
                i += 1;
                continue;
            }
            let st = &mut self.stations[d.station as usize];
            let space = if st.returning() {
                st.docks_available()
            } else {
                0
            };
            let classic = d.classic.min(space);
            let ebike = d.ebike.min(space - classic);
            st.classic += classic;
            st.ebike += ebike;
            self.on_trucks -= u64::from(classic + ebike);
            if classic + ebike > 0 {
                self.mark(d.station);
            }
            let left = &mut self.deliveries[i];
            left.classic -= classic;
            left.ebike -= ebike;
            if left.classic + left.ebike == 0 {
                self.stations[d.station as usize].flags &= !AWAITING_TRUCK;
                self.deliveries.swap_remove(i);
            } else {
                left.due = m.wrapping_add(1);
                i += 1;
            }
        }
    }

    fn reports(&mut self, m: u32) {
        let dirty = std::mem::take(&mut self.dirty);
        for &s in &dirty {
            self.stations[s as usize].flags &= !DIRTY;
            self.report(s, m);
        }
        self.dirty = dirty;
        self.dirty.clear();

        let mut due = std::mem::take(&mut self.heartbeats[m as usize % WHEEL]);
        for &s in &due {
            let st = &self.stations[s as usize];
            if st.heartbeat_due != m {
                continue;
            }
            if st.renting() && st.bikes() == 0 {
                // Empty stations go quiet, as in real feeds: skip this heartbeat.
                self.schedule_heartbeat(s, m);
            } else {
                self.report(s, m);
                self.stats.heartbeats += 1;
            }
        }
        due.clear();
        let slot = &mut self.heartbeats[m as usize % WHEEL];
        if slot.is_empty() {
            *slot = due;
        }
    }

    fn report(&mut self, s: u32, m: u32) {
        // Whole seconds, as GBFS 2.3 can carry them (POSIX seconds).
        let jitter = self.rng.random_range(0..60i64) * 1000;
        self.stations[s as usize].last_reported = self.now.millis() - jitter;
        self.schedule_heartbeat(s, m);
        self.reported.push(s);
        self.stats.reports += 1;
    }

    fn schedule_heartbeat(&mut self, s: u32, m: u32) {
        let hb = f64::from(self.config.heartbeat_minutes) * self.rng.random_range(0.8..1.2);
        let due = m.wrapping_add((hb.round() as u32).max(1));
        self.stations[s as usize].heartbeat_due = due;
        self.heartbeats[due as usize % WHEEL].push(s);
    }

    /// Indices of the stations that reported in the last step (or, before the first step,
    /// all of them), in the order they reported.
    pub fn reported_last_step(&self) -> &[u32] {
        &self.reported
    }

    /// The current report of the station at `index`.
    pub fn status_of(&self, index: usize) -> Option<StationStatus> {
        self.stations.get(index).map(|st| StationStatus {
            station_id: Self::station_id(index),
            num_bikes_available: u32::from(st.bikes()),
            num_ebikes_available: Some(u32::from(st.ebike)),
            num_bikes_disabled: Some(u32::from(st.bikes_disabled)),
            num_docks_available: Some(u32::from(st.docks_available())),
            num_docks_disabled: Some(u32::from(st.docks_disabled)),
            is_installed: true,
            is_renting: st.renting(),
            is_returning: st.returning(),
            last_reported: Timestamp(st.last_reported),
            vehicle_types_available: vec![
                VehicleTypeCount {
                    vehicle_type_id: CLASSIC_VEHICLE_TYPE.into(),
                    count: u32::from(st.classic),
                },
                VehicleTypeCount {
                    vehicle_type_id: EBIKE_VEHICLE_TYPE.into(),
                    count: u32::from(st.ebike),
                },
            ],
        })
    }

    /// Every station's current report, in station order.
    pub fn station_status(&self) -> Vec<StationStatus> {
        (0..self.stations.len())
            .filter_map(|i| self.status_of(i))
            .collect()
    }

    /// Every station's static description, in station order.
    pub fn station_information(&self) -> Vec<StationInfo> {
        self.stations
            .iter()
            .enumerate()
            .map(|(i, st)| StationInfo {
                station_id: Self::station_id(i),
                name: station_name(self.config.seed, i, st.zone),
                short_name: Some(format!("{:04}", i + 1)),
                lat: st.lat,
                lon: st.lon,
                capacity: Some(u32::from(st.capacity)),
                region_id: None,
                is_virtual_station: false,
            })
            .collect()
    }

    /// The system's description. `gbfs_version` is the newest version the simulator serves.
    pub fn system_information(&self) -> SystemInfo {
        SystemInfo {
            system_id: SystemId::new(self.config.system_id.clone()),
            name: self.config.name.clone(),
            timezone: self.config.timezone.clone(),
            language: Some(self.config.language.clone()),
            gbfs_version: "3.0".into(),
        }
    }

    /// The weather observation for the hour containing `t`.
    pub fn weather(&self, t: Timestamp) -> WeatherObs {
        self.climate.observation(&self.config.weather_station_id, t)
    }

    /// How many stations are empty or full now; cheap (no allocation).
    pub fn occupancy(&self) -> Occupancy {
        let mut o = Occupancy {
            stations: self.stations.len() as u32,
            bikes_in_use: self.in_use,
            bikes_on_trucks: self.on_trucks,
            ..Occupancy::default()
        };
        for st in &self.stations {
            o.bikes_available += u64::from(st.bikes());
            if st.renting() && st.bikes() == 0 {
                o.empty += 1;
            }
            if st.returning() && st.docks_available() == 0 {
                o.full += 1;
            }
        }
        o
    }
}

fn internal(message: String) -> SimulatorError {
    SimulatorError::Internal(message)
}

/// A Poisson draw; 0 for a rate that is not positive.
fn poisson(rng: &mut ChaCha8Rng, rate: f64) -> u64 {
    if rate.is_nan() || rate <= 0.0 || !rate.is_finite() {
        return 0;
    }
    match Poisson::new(rate) {
        Ok(p) => p.sample(rng) as u64,
        Err(_) => 0,
    }
}

/// Picks index i with probability weights[i] / total.
fn pick_index(weights: &[f64; 3], total: f64, u: f64) -> usize {
    let mut target = u * total;
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return i;
        }
        target -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

const KM_PER_DEGREE: f64 = 111.32;

fn layout(
    config: &CityConfig,
    rng: &mut ChaCha8Rng,
    now: Timestamp,
) -> Result<Vec<Station>, SimulatorError> {
    let r = config.radius_km;
    let parks: Vec<(f64, f64)> = (0..4)
        .map(|_| {
            let d = r * rng.random_range(0.45..0.9);
            let a = rng.random_range(0.0..std::f64::consts::TAU);
            (d * a.cos(), d * a.sin())
        })
        .collect();
    let capacity = Normal::<f64>::new(19.0, 5.0).map_err(|e| internal(e.to_string()))?;
    let weight = LogNormal::<f64>::new(-0.405, 0.9).map_err(|e| internal(e.to_string()))?;
    let park_spread = Normal::<f64>::new(0.0, 0.08 * r).map_err(|e| internal(e.to_string()))?;
    let cos_lat = config.centre_lat.to_radians().cos().max(0.05);
    let (cmin, cmax) = (config.capacity_min, config.capacity_max);

    let mut stations = Vec::with_capacity(config.stations as usize);
    for _ in 0..config.stations {
        let u = rng.random::<f64>();
        let zone = if u < 0.3 {
            Zone::Core
        } else if u < 0.42 {
            Zone::Leisure
        } else {
            Zone::Residential
        };
        let (x, y) = match zone {
            Zone::Core => polar(rng, 0.0, 0.3 * r),
            Zone::Residential => polar(rng, 0.3 * r, r),
            Zone::Leisure => {
                let (px, py) = parks[rng.random_range(0..parks.len())];
                (px + park_spread.sample(rng), py + park_spread.sample(rng))
            }
        };
        let extra = if zone == Zone::Core { 4.0 } else { 0.0 };
        let cap = (capacity.sample(rng) + extra)
            .round()
            .clamp(f64::from(cmin), f64::from(cmax)) as u8;
        let fill = rng.random_range(0.6..1.4) * config.bikes_per_dock;
        let bikes = (f64::from(cap) * fill).round() as u8;
        let ebike = (0..bikes)
            .filter(|_| rng.random_bool(config.ebike_share))
            .count() as u8;
        let lat = round6(config.centre_lat + y / KM_PER_DEGREE).clamp(-89.9, 89.9);
        let lon = round6(config.centre_lon + x / (KM_PER_DEGREE * cos_lat));
        let lon = if lon > 180.0 {
            lon - 360.0
        } else if lon < -180.0 {
            lon + 360.0
        } else {
            lon
        };
        stations.push(Station {
            lat,
            lon,
            weight: weight.sample(rng).clamp(0.1, 6.0) as f32,
            heartbeat_due: 0,
            last_reported: now.millis(),
            capacity: cap,
            zone,
            classic: bikes - ebike,
            ebike,
            bikes_disabled: 0,
            docks_disabled: 0,
            flags: RENTING | RETURNING,
        });
    }
    Ok(stations)
}

/// A uniformly distributed point in the ring between radii `r0` and `r1` (km).
fn polar(rng: &mut ChaCha8Rng, r0: f64, r1: f64) -> (f64, f64) {
    let d = (r0 * r0 + (r1 * r1 - r0 * r0) * rng.random::<f64>()).sqrt();
    let a = rng.random_range(0.0..std::f64::consts::TAU);
    (d * a.cos(), d * a.sin())
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

const STREETS: [&str; 24] = [
    "King St",
    "Queen St",
    "Dundas St",
    "College St",
    "Bloor St",
    "Front St",
    "Richmond St",
    "Adelaide St",
    "Wellington St",
    "Gerrard St",
    "Carlton St",
    "Harbord St",
    "Davenport Rd",
    "Dupont St",
    "Lakeshore Blvd",
    "Eglinton Ave",
    "St Clair Ave",
    "Danforth Ave",
    "Gerrard Sq",
    "Wellesley St",
    "Elm St",
    "Grosvenor St",
    "Bremner Blvd",
    "Mill St",
];
const AVENUES: [&str; 24] = [
    "Yonge St",
    "Bay St",
    "University Ave",
    "Spadina Ave",
    "Bathurst St",
    "Church St",
    "Jarvis St",
    "Sherbourne St",
    "Parliament St",
    "Ossington Ave",
    "Dufferin St",
    "Sumach St",
    "Simcoe St",
    "John St",
    "Peter St",
    "Portland St",
    "Augusta Ave",
    "Markham St",
    "Christie St",
    "Shaw St",
    "Broadview Ave",
    "Logan Ave",
    "Pape Ave",
    "Jones Ave",
];
const PARKS: [&str; 8] = [
    "Trinity Bellwoods",
    "High Park",
    "Riverdale Park",
    "Christie Pits",
    "Grange Park",
    "Harbourfront",
    "Sugar Beach",
    "Corktown Common",
];

fn station_name(seed: u64, index: usize, zone: Zone) -> String {
    let h = bikeshare_types::splitmix::splitmix64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    let street = STREETS[(h % 24) as usize];
    let avenue = AVENUES[((h >> 8) % 24) as usize];
    match zone {
        Zone::Leisure => format!("{} - {street}", PARKS[((h >> 16) % 8) as usize]),
        _ => format!("{avenue} / {street}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Monday 2024-06-03 00:00 in Toronto.
    fn monday() -> Timestamp {
        Timestamp::from_datetime(
            chrono_tz::America::Toronto
                .with_ymd_and_hms(2024, 6, 3, 0, 0, 0)
                .unwrap()
                .with_timezone(&chrono::Utc),
        )
    }

    fn city(seed: u64, stations: u32) -> City {
        City::new(
            CityConfig {
                seed,
                stations,
                ..CityConfig::default()
            },
            monday(),
        )
        .unwrap()
    }

    #[test]
    fn same_seed_same_sequence_other_seed_differs() {
        let (mut a, mut b, mut c) = (city(1, 80), city(1, 80), city(2, 80));
        assert_eq!(a.station_information(), b.station_information());
        for h in 1..=24 {
            let t = monday().plus_minutes(h * 60);
            a.advance_to(t);
            b.advance_to(t);
            c.advance_to(t);
            assert_eq!(a.station_status(), b.station_status(), "hour {h}");
        }
        assert_ne!(a.station_status(), c.station_status());
        assert_ne!(a.station_information(), c.station_information());
        assert_eq!(a.stats(), b.stats());
    }

    #[test]
    fn advancing_in_one_go_or_minute_by_minute_is_the_same() {
        let (mut a, mut b) = (city(5, 50), city(5, 50));
        a.advance_to(monday().plus_minutes(600));
        for m in 1..=600 {
            b.advance_to(monday().plus_minutes(m).plus_millis(59_999));
        }
        assert_eq!(a.station_status(), b.station_status());
        assert_eq!(a.now(), monday().plus_minutes(600));
        a.advance_to(monday());
        assert_eq!(
            a.now(),
            monday().plus_minutes(600),
            "the past changes nothing"
        );
    }

    #[test]
    fn counts_are_conserved() {
        let mut c = city(3, 200);
        let caps: Vec<u32> = c
            .station_information()
            .iter()
            .map(|s| s.capacity.unwrap())
            .collect();
        let fleet = |c: &City| {
            c.stations
                .iter()
                .map(|s| u64::from(s.bikes() + s.bikes_disabled))
                .sum::<u64>()
                + c.in_use
                + c.on_trucks
        };
        let fleet0 = fleet(&c);
        for h in 1..=(24 * 7) {
            let before: Vec<Timestamp> =
                c.station_status().iter().map(|s| s.last_reported).collect();
            c.advance_to(monday().plus_minutes(h * 60));
            for (i, s) in c.station_status().iter().enumerate() {
                let total = s.num_bikes_available
                    + s.num_bikes_disabled.unwrap()
                    + s.num_docks_available.unwrap()
                    + s.num_docks_disabled.unwrap();
                assert_eq!(total, caps[i], "{s:?}");
                assert!(s.num_ebikes_available.unwrap() <= s.num_bikes_available);
                assert!(s.last_reported >= before[i] && s.last_reported <= c.now());
                assert_eq!(s.last_reported.millis() % 1000, 0, "whole seconds");
                let types: u32 = s.vehicle_types_available.iter().map(|v| v.count).sum();
                assert_eq!(types, s.num_bikes_available);
            }
            assert_eq!(fleet(&c), fleet0, "bikes are neither made nor lost");
        }
        let st = c.stats();
        assert!(
            st.breakdowns > 0 && st.outages > 0 && st.rebalanced_bikes > 0,
            "{st:?}"
        );
    }

    /// Share of station-minutes empty or full over a simulated week.
    fn stockout_share(cfg: CityConfig) -> (f64, f64, CityStats) {
        let mut c = City::new(cfg, monday()).unwrap();
        let (mut empty, mut full, mut total) = (0u64, 0u64, 0u64);
        for m in 1..=(7 * 24 * 60) {
            c.advance_to(monday().plus_minutes(m));
            let o = c.occupancy();
            empty += u64::from(o.empty);
            full += u64::from(o.full);
            total += u64::from(o.stations);
        }
        (
            empty as f64 / total as f64,
            full as f64 / total as f64,
            *c.stats(),
        )
    }

    #[test]
    fn stockouts_happen_at_realistic_rates() {
        let (empty, full, stats) = stockout_share(CityConfig::default());
        let share = empty + full;
        eprintln!("empty {empty:.4} full {full:.4} {stats:?}");
        // Recorded Bluebikes station-time at 5-minute ticks: January 2021 2.9 % empty and
        // 0.9 % full, June 2021 6.9 % and 5.1 %; a week of the simulated June within twice that.
        assert!(
            (0.02..=0.24).contains(&share),
            "empty {empty:.4} + full {full:.4}"
        );
        assert!(
            empty > 0.002 && full > 0.002,
            "empty {empty:.4}, full {full:.4}"
        );
        assert!(stats.lost_rentals < stats.rentals / 4, "{stats:?}");
    }

    #[test]
    fn rebalancing_reduces_stockouts() {
        let (e1, f1, _) = stockout_share(CityConfig {
            stations: 150,
            ..CityConfig::default()
        });
        let (e0, f0, _) = stockout_share(CityConfig {
            stations: 150,
            rebalancing: false,
            ..CityConfig::default()
        });
        assert!(
            e0 + f0 > e1 + f1,
            "without {:.4} with {:.4}",
            e0 + f0,
            e1 + f1
        );
    }

    #[test]
    fn residential_stations_lose_bikes_in_the_weekday_morning() {
        let cfg = CityConfig {
            stations: 400,
            rebalancing: false,
            ..CityConfig::default()
        };
        let mut c = City::new(cfg, monday()).unwrap();
        let by_zone = |c: &City| {
            let mut sums = [0i64; 3];
            for (i, s) in c.station_status().iter().enumerate() {
                sums[c.zone_of(i).unwrap().index()] += i64::from(s.num_bikes_available);
            }
            sums
        };
        // Tuesday 06:00 and 10:00 local.
        c.advance_to(monday().plus_minutes((24 + 6) * 60));
        let early = by_zone(&c);
        c.advance_to(monday().plus_minutes((24 + 10) * 60));
        let late = by_zone(&c);
        let (res, core) = (Zone::Residential.index(), Zone::Core.index());
        assert!(
            late[res] < early[res] - 100,
            "residential {} -> {}",
            early[res],
            late[res]
        );
        assert!(
            late[core] > early[core] + 100,
            "core {} -> {}",
            early[core],
            late[core]
        );
        // And the evening commute brings them back.
        c.advance_to(monday().plus_minutes((24 + 21) * 60));
        let night = by_zone(&c);
        assert!(
            night[res] > late[res] + 100,
            "residential {} -> {}",
            late[res],
            night[res]
        );
    }

    #[test]
    fn rain_lowers_rentals() {
        let run = |rain_probability: f64| {
            let climate = ClimateConfig {
                rain_probability,
                ..ClimateConfig::default()
            };
            let mut c = City::new(
                CityConfig {
                    stations: 100,
                    climate,
                    ..CityConfig::default()
                },
                monday(),
            )
            .unwrap();
            c.advance_to(monday().plus_minutes(7 * 24 * 60));
            c.stats().rentals + c.stats().lost_rentals
        };
        let (dry, wet) = (run(0.0), run(0.5));
        assert!((wet as f64) < 0.85 * dry as f64, "dry {dry} wet {wet}");
    }

    #[test]
    fn reports_come_on_change_with_heartbeats() {
        let mut c = city(9, 300);
        let mut last: Vec<Timestamp> = c.station_status().iter().map(|s| s.last_reported).collect();
        let mut gaps = Vec::new();
        let mut max_quiet = 0i64;
        for m in 1..=(3 * 24 * 60) {
            c.advance_to(monday().plus_minutes(m));
            for &s in c.reported_last_step() {
                let t = c.status_of(s as usize).unwrap().last_reported;
                let gap = t.millis() - last[s as usize].millis();
                assert!(gap > 0);
                gaps.push(gap);
                last[s as usize] = t;
            }
            if m % 60 == 0 {
                for (i, t) in last.iter().enumerate() {
                    let status = c.status_of(i).unwrap();
                    assert_eq!(status.last_reported, *t, "reported without saying so");
                    if !status.is_empty() {
                        max_quiet = max_quiet.max(c.now().millis() - t.millis());
                    }
                }
            }
        }
        gaps.sort_unstable();
        let median_min = gaps[gaps.len() / 2] as f64 / 60_000.0;
        eprintln!("median gap {median_min:.1} min, {} reports", gaps.len());
        assert!(
            (3.0..=30.0).contains(&median_min),
            "median gap {median_min} min"
        );
        assert!(
            max_quiet <= 75 * Timestamp::MINUTE_MS,
            "a station was quiet {max_quiet} ms"
        );
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = [
            CityConfig {
                stations: 0,
                ..CityConfig::default()
            },
            CityConfig {
                timezone: "Mars/Olympus".into(),
                ..CityConfig::default()
            },
            CityConfig {
                capacity_min: 30,
                capacity_max: 20,
                ..CityConfig::default()
            },
            CityConfig {
                ebike_share: 1.5,
                ..CityConfig::default()
            },
            CityConfig {
                radius_km: f64::NAN,
                ..CityConfig::default()
            },
        ];
        for cfg in bad {
            assert!(matches!(
                City::new(cfg, monday()),
                Err(SimulatorError::Config { .. })
            ));
        }
    }

    #[test]
    fn one_station_city_works() {
        let mut c = city(11, 1);
        c.advance_to(monday().plus_minutes(3 * 24 * 60));
        assert_eq!(c.station_status().len(), 1);
    }
}
