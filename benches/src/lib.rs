//! # bikeshare-benches
//!
//! Inputs shared by the criterion benchmarks (`benches/processor.rs`) and the end-to-end
//! replay benchmark (`src/bin/replay-bench.rs`).
//!
//! [`MinuteFeed`] turns the producers' city simulator into the densest realistic input: every
//! station reports every minute, at the minute (`last_reported` = the minute), whether or not
//! its state changed. Live feeds report on change or on a heartbeat, so this is an upper
//! bound on the event rate per station. The envelopes are built directly instead of through
//! `Envelope::new`: their `event_id` is a fixed placeholder (the processor never reads it),
//! which keeps the generator out of the way of what is measured; decoding is benchmarked on
//! its own.

use bikeshare_simulator::{City, CityConfig, SimulatorError};
use bikeshare_types::contracts::{ENVELOPE_SCHEMA_VERSION, Envelope, Event};
use bikeshare_types::{EventId, SystemId, Timestamp};

/// 2024-06-05 04:00 UTC: midnight in Toronto, the simulated city's time zone, a Wednesday.
pub const START_MS: i64 = 1_717_560_000_000;

/// The source of every generated envelope.
pub const SOURCE: &str = "bench";

/// Every station of a simulated city reporting every minute.
#[derive(Debug)]
pub struct MinuteFeed {
    city: City,
    system: SystemId,
    event_id: EventId,
}

impl MinuteFeed {
    /// A city of `stations` stations (seed `seed`) starting at `start` (a whole hour).
    pub fn new(stations: u32, seed: u64, start: Timestamp) -> Result<Self, SimulatorError> {
        let config = CityConfig {
            system_id: "bench".into(),
            seed,
            stations,
            // Keep the density of the default city (300 stations in 6 km) roughly constant.
            radius_km: (6.0 * (f64::from(stations) / 300.0).sqrt()).clamp(1.0, 200.0),
            ..CityConfig::default()
        };
        let system = SystemId::new(config.system_id.clone());
        Ok(Self {
            city: City::new(config, start)?,
            system,
            event_id: EventId::new("0".repeat(32)),
        })
    }

    pub fn stations(&self) -> usize {
        self.city.station_count()
    }

    /// The city's current minute.
    pub fn now(&self) -> Timestamp {
        self.city.now()
    }

    fn envelope(&self, t: Timestamp, event: Event) -> Envelope {
        Envelope {
            schema_version: ENVELOPE_SCHEMA_VERSION,
            event_id: self.event_id.clone(),
            system_id: self.system.clone(),
            source: SOURCE.into(),
            event_time: t,
            ingest_time: t,
            event,
        }
    }

    /// What comes before the first reports: the system, every station's information and the
    /// current hour's weather, at the current minute.
    pub fn preamble(&self) -> Vec<Envelope> {
        let t = self.city.now();
        let mut out = vec![self.envelope(t, Event::SystemInfo(self.city.system_information()))];
        for info in self.city.station_information() {
            out.push(self.envelope(t, Event::StationInfo(info)));
        }
        out.push(self.envelope(t, Event::Weather(self.city.weather(t))));
        out
    }

    /// Every station's report at the current minute, in station order (and, on a full
    /// hour, the hour's weather first).
    pub fn reports(&self, out: &mut Vec<Envelope>) {
        let t = self.city.now();
        if t.millis().rem_euclid(Timestamp::HOUR_MS) == 0 {
            out.push(self.envelope(t, Event::Weather(self.city.weather(t))));
        }
        for i in 0..self.city.station_count() {
            if let Some(mut s) = self.city.status_of(i) {
                s.last_reported = t;
                out.push(self.envelope(t, Event::StationStatus(s)));
            }
        }
    }

    /// Steps the city one minute.
    pub fn step(&mut self) {
        self.city.step();
    }
}
