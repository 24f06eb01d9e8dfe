//! The weather producer: for each bikeshare system, the nearest weather station's new hours.
//!
//! Each poll, for every system: find its weather station if not yet known (the API's
//! `stations/nearby`, or the nearest of the bulk station list, fetched once), fetch that
//! station's observations of the last `lookback_hours` (once per station per poll, however
//! many systems share it), and emit every hour not emitted before for this system as
//! `Envelope::new(system, "meteostat:<mode>", observed_at, now, Event::Weather(..))`. An hour
//! is remembered only once the output has taken it, so a failed publish is retried by the next
//! poll; rejected rows become dead letters once, the same way. Hours after "now" (model
//! forecasts) are not observations and are skipped until they are past.
//!
//! A failure for one system (no station, a request that kept failing) is logged and counted;
//! the other systems are still polled and the next poll tries again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use bikeshare_types::contracts::{DeadLetter, Envelope, Event, WEATHER_FEED, WEATHER_PERIOD_SECS};
use bikeshare_types::error::{Classify, chain};
use bikeshare_types::{EventId, SharedClock, SystemId, Timestamp};
use tokio::time::MissedTickBehavior;

use super::config::{WeatherConfig, WeatherMode};
use super::meteostat::{
    ApiKey, BulkStation, HourlyBatch, MeteostatClient, WeatherError, WeatherStation,
    nearest_station,
};
use crate::output::Output;

/// Remembered dead letters without an hour are forgotten past this many per system.
const MAX_REMEMBERED_UNTIMED: usize = 10_000;

/// A bikeshare system to find weather for.
#[derive(Debug, Clone, PartialEq)]
pub struct WeatherSystem {
    pub system_id: SystemId,
    pub lat: f64,
    pub lon: f64,
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    pub events: usize,
    pub dead_letters: usize,
    /// Systems that could not be polled this time (logged with the cause).
    pub systems_failed: usize,
}

#[derive(Debug)]
struct SystemState {
    system: WeatherSystem,
    station: Option<WeatherStation>,
    /// (weather station, hour) already emitted, within the lookback.
    seen: BTreeSet<(Timestamp, String)>,
    /// Dead letters of rows without a readable hour, already emitted.
    seen_untimed: HashSet<EventId>,
    /// The newest hour observed, and when it arrived (freshness).
    news: Option<(Timestamp, Timestamp)>,
}

/// Polls Meteostat for a set of systems and emits [`WeatherObs`](bikeshare_types::contracts::WeatherObs) events.
#[derive(Debug)]
pub struct WeatherProducer {
    config: WeatherConfig,
    client: MeteostatClient,
    clock: SharedClock,
    systems: Vec<SystemState>,
    bulk_stations: Option<Arc<Vec<BulkStation>>>,
    source: String,
}

impl WeatherProducer {
    /// A producer with the API key from `METEOSTAT_API_KEY` (required in API mode).
    pub fn new(
        config: WeatherConfig,
        systems: Vec<WeatherSystem>,
        clock: SharedClock,
    ) -> Result<Self, WeatherError> {
        let client = MeteostatClient::new(&config, ApiKey::from_env())?;
        Ok(Self::with_client(config, client, systems, clock))
    }

    /// A producer with a client of the caller's (tests, or a key from elsewhere).
    pub fn with_client(
        config: WeatherConfig,
        client: MeteostatClient,
        systems: Vec<WeatherSystem>,
        clock: SharedClock,
    ) -> Self {
        let source = match config.mode {
            WeatherMode::Api => "meteostat:api",
            WeatherMode::Bulk => "meteostat:bulk",
        }
        .to_owned();
        let systems = systems
            .into_iter()
            .map(|system| SystemState {
                system,
                station: None,
                seen: BTreeSet::new(),
                seen_untimed: HashSet::new(),
                news: None,
            })
            .collect();
        Self {
            config,
            client,
            clock,
            systems,
            bulk_stations: None,
            source,
        }
    }

    /// The weather station chosen for each system so far.
    pub fn stations(&self) -> impl Iterator<Item = (&SystemId, Option<&WeatherStation>)> {
        self.systems
            .iter()
            .map(|s| (&s.system.system_id, s.station.as_ref()))
    }

    /// Polls every system once. Fails only when the output fails; other failures are per
    /// system, logged and counted in [`PollStats::systems_failed`].
    pub async fn poll_once(&mut self, output: &dyn Output) -> Result<PollStats, WeatherError> {
        let now = self.clock.now();
        let since = now
            .plus_millis(-i64::from(self.config.lookback_hours) * Timestamp::HOUR_MS)
            .floor_to(Timestamp::HOUR_MS);
        let mut stats = PollStats::default();
        let mut fetched: HashMap<String, Arc<HourlyBatch>> = HashMap::new();
        for i in 0..self.systems.len() {
            let batch = match self.station_batch(i, since, now, &mut fetched).await {
                Ok(batch) => batch,
                Err(e) => {
                    let system = &self.systems[i].system.system_id;
                    tracing::warn!(%system, error = %chain(&e), "weather poll failed for system");
                    stats.systems_failed += 1;
                    continue;
                }
            };
            let (events, dead) = self.emit(i, &batch, since, now, output).await?;
            // Weather's freshness: the newest hour observed and when it arrived, against the
            // hourly step. (`seen` holds (observed_at, station): the last is the newest.)
            let state = &mut self.systems[i];
            if let Some(&(newest, _)) = state.seen.last() {
                if state.news.is_none_or(|(t, _)| newest > t) {
                    state.news = Some((newest, now));
                }
                let arrived = state.news.map_or(now, |(_, at)| at);
                bikeshare_types::metrics::feed_age(
                    state.system.system_id.as_str(),
                    WEATHER_FEED,
                    now.millis() - newest.millis(),
                    now.millis() - arrived.millis(),
                    i64::from(WEATHER_PERIOD_SECS) * 1000,
                );
            }
            stats.events += events;
            stats.dead_letters += dead;
        }
        Ok(stats)
    }

    /// The resolved station's observations for system `i` (fetched once per poll per station).
    async fn station_batch(
        &mut self,
        i: usize,
        since: Timestamp,
        now: Timestamp,
        fetched: &mut HashMap<String, Arc<HourlyBatch>>,
    ) -> Result<Arc<HourlyBatch>, WeatherError> {
        let station = match self.systems[i].station.clone() {
            Some(s) => s,
            None => {
                let system = self.systems[i].system.clone();
                let s = self.resolve(&system).await?;
                tracing::info!(
                    system = %self.systems[i].system.system_id,
                    station = %s.id,
                    name = s.name.as_deref().unwrap_or(""),
                    distance_m = s.distance_m.unwrap_or(f64::NAN),
                    "weather station chosen"
                );
                self.systems[i].station = Some(s.clone());
                s
            }
        };
        if let Some(batch) = fetched.get(&station.id) {
            return Ok(batch.clone());
        }
        let batch = Arc::new(match self.config.mode {
            WeatherMode::Api => {
                let (start, end) = (
                    since.to_datetime().date_naive(),
                    now.to_datetime().date_naive(),
                );
                self.client.hourly(&station.id, start, end).await?
            }
            WeatherMode::Bulk => self.client.bulk_hourly(&station.id, since).await?,
        });
        fetched.insert(station.id.clone(), batch.clone());
        Ok(batch)
    }

    async fn resolve(&mut self, system: &WeatherSystem) -> Result<WeatherStation, WeatherError> {
        match self.config.mode {
            WeatherMode::Api => self.client.nearby_station(system.lat, system.lon).await,
            WeatherMode::Bulk => {
                let list = match &self.bulk_stations {
                    Some(list) => list.clone(),
                    None => {
                        let list = Arc::new(self.client.bulk_stations().await?);
                        self.bulk_stations = Some(list.clone());
                        list
                    }
                };
                nearest_station(&list, system.lat, system.lon).ok_or(WeatherError::NoStation {
                    lat: system.lat,
                    lon: system.lon,
                })
            }
        }
    }

    /// Emits the hours of `batch` in `[since, now]` that system `i` has not emitted yet.
    async fn emit(
        &mut self,
        i: usize,
        batch: &HourlyBatch,
        since: Timestamp,
        now: Timestamp,
        output: &dyn Output,
    ) -> Result<(usize, usize), WeatherError> {
        let state = &mut self.systems[i];
        state.seen = state.seen.split_off(&(since, String::new()));
        let in_window = |t: Timestamp| since <= t && t <= now;
        let system_id = state.system.system_id.clone();

        let mut new_hours = Vec::new();
        let mut events = Vec::new();
        let mut observations: Vec<_> = batch
            .observations
            .iter()
            .filter(|o| in_window(o.observed_at))
            .collect();
        observations.sort_by_key(|o| o.observed_at);
        for obs in observations {
            let key = (obs.observed_at, obs.weather_station.clone());
            if state.seen.contains(&key) || new_hours.contains(&key) {
                continue;
            }
            new_hours.push(key);
            let ingest = self.clock.now();
            events.push(Envelope::new(
                system_id.clone(),
                &self.source,
                obs.observed_at,
                ingest,
                Event::Weather(obs.clone()),
            ));
        }

        let mut new_untimed = Vec::new();
        let mut dead = Vec::new();
        for row in &batch.rejected {
            let dl = DeadLetter::new(
                system_id.clone(),
                &self.source,
                row.rule,
                &row.message,
                &row.raw,
                self.clock.now(),
            );
            match row.observed_at {
                Some(t) if !in_window(t) => continue,
                Some(t) => {
                    let station = state
                        .station
                        .as_ref()
                        .map(|s| s.id.clone())
                        .unwrap_or_default();
                    let key = (t, station);
                    if state.seen.contains(&key) || new_hours.contains(&key) {
                        continue;
                    }
                    new_hours.push(key);
                }
                None => {
                    if state.seen_untimed.contains(&dl.dead_letter_id) {
                        continue;
                    }
                    new_untimed.push(dl.dead_letter_id.clone());
                }
            }
            dead.push(dl);
        }

        let (n_events, n_dead) = (events.len(), dead.len());
        let system = events.first().map(|e| e.system_id.clone());
        let rules: Vec<String> = dead.iter().map(|d| d.rule.clone()).collect();
        if !events.is_empty() {
            output.events(events).await?;
        }
        if let Some(system) = system {
            bikeshare_types::metrics::events_out(
                "weather",
                system.as_str(),
                "weather",
                n_events as u64,
            );
        }
        if !dead.is_empty() {
            output.dead_letters(dead).await?;
        }
        for rule in rules {
            bikeshare_types::metrics::dead_letters("ingest", &rule, 1);
        }
        state.seen.extend(new_hours);
        if state.seen_untimed.len() + new_untimed.len() > MAX_REMEMBERED_UNTIMED {
            state.seen_untimed.clear();
        }
        state.seen_untimed.extend(new_untimed);
        Ok((n_events, n_dead))
    }

    /// Polls now and then every `poll_interval` until `shutdown` completes. Returns early only
    /// when the output is closed.
    pub async fn run(
        mut self,
        output: &dyn Output,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WeatherError> {
        let mut interval = tokio::time::interval(self.config.poll_interval());
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = interval.tick() => {}
            }
            let result = tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = self.poll_once(output) => r,
            };
            match result {
                Ok(stats) => tracing::info!(
                    events = stats.events,
                    dead_letters = stats.dead_letters,
                    systems_failed = stats.systems_failed,
                    "weather poll done"
                ),
                Err(e) if e.retryable() => {
                    tracing::warn!(error = %chain(&e), "weather output failed; the next poll retries");
                }
                Err(e) => return Err(e),
            }
        }
    }
}
