//! The keyed event-time processor: one state per system (the stream's partition key).
//!
//! For each system:
//!
//! 1. **Watermark.** `max event time seen − lateness` (heartbeats count). An event older than
//!    the watermark when it arrives is *late*: it is emitted as [`Emitted::Rejected`] with
//!    the reason, never dropped silently.
//! 2. **Reorder buffer.** Events wait in a buffer ordered by `(event time, arrival)` and are
//!    applied once the watermark passes them, so every station's state moves forward in event
//!    time and the outcome depends only on the input order of the shard: a restore that
//!    replays from the checkpointed position gives the same outputs. With `lateness = 0`
//!    (in-order replays) events are applied as they arrive.
//! 3. **Ticks.** On an epoch-aligned grid (default every 5 minutes), once the watermark passes
//!    a tick, every active station gets a feature row at that time ([`PredictionTrigger::Tick`]),
//!    so quiet stations stay scored; a station already scored at that exact time by an update
//!    is not scored twice. Due labels are emitted at the same sweep.
//! 4. **Updates.** A station report is applied to the station's [`StationHistory`] (a
//!    duplicate is rejected), then the station gets a feature row at the report's time
//!    ([`PredictionTrigger::Update`]).
//! 5. **Labels.** Every row is a prediction to be labelled; at the first tick at or after
//!    `as_of + horizon`, [`crate::labels::outcome`] reads the station's history and a
//!    [`Label`] is emitted with the prediction's deterministic id.
//!
//! Scoring rows into predictions is not done here: the row carries its prediction id, and
//! the I/O edge scores it (in process or remotely), so this module stays pure.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bikeshare_common::contracts::{
    Envelope, Event, FeatureVector, LABEL_SCHEMA_VERSION, Label, Prediction, PredictionTrigger,
    StationInfo, StationStatus, WeatherObs,
};
use bikeshare_common::{EventId, StationId, SystemId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::features::{self, FeatureContext};
use crate::labels;
use crate::neighbours;
use crate::schema::FeatureSchema;
use crate::window::{Rejected, Report, StationHistory};

const MIN_MS: i64 = 60_000;

/// Settings of the processor. Changing windows changes the feature schema id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessorConfig {
    pub window_minutes: Vec<u32>,
    pub horizon_minutes: u32,
    /// How far behind the newest event time an event may arrive and still be applied.
    pub lateness_ms: i64,
    /// The regular scoring grid, aligned to the epoch.
    pub tick_ms: i64,
    /// A station is active (scored on ticks) if it reported within this long.
    pub active_within_ms: i64,
    pub neighbours_k: usize,
    pub neighbour_radius_m: f64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            window_minutes: vec![5, 15, 30, 60],
            horizon_minutes: 30,
            lateness_ms: 2 * MIN_MS,
            tick_ms: 5 * MIN_MS,
            active_within_ms: 6 * 60 * MIN_MS,
            neighbours_k: 8,
            neighbour_radius_m: 1000.0,
        }
    }
}

/// A feature row to score, with the id its prediction will have.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub vector: FeatureVector,
    pub trigger: PredictionTrigger,
    pub prediction_id: EventId,
}

/// Why an input event was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Older than the watermark when it arrived.
    Late,
    /// The same report as the station's latest.
    Duplicate,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Late => "late",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What the processor emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Emitted {
    Row(FeatureRow),
    Label(Label),
    Rejected {
        reason: RejectReason,
        envelope: Box<Envelope>,
    },
}

/// One station's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Station {
    pub id: StationId,
    pub coords: Option<(f64, f64)>,
    pub capacity: Option<u16>,
    pub history: StationHistory,
    pub ebikes: Option<u16>,
    pub bikes_disabled: Option<u16>,
    pub docks_disabled: Option<u16>,
    /// When the station last stopped being empty / full.
    pub empty_ended: Option<i64>,
    pub full_ended: Option<i64>,
    /// `as_of` of predictions not yet labelled, oldest first.
    pub pending: VecDeque<i64>,
}

/// One system's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SystemState {
    pub timezone: String,
    pub stations: Vec<Station>,
    pub index: HashMap<StationId, u32>,
    pub neighbours: Vec<Vec<u32>>,
    pub neighbours_dirty: bool,
    /// Recent weather observations, oldest first.
    pub weather: VecDeque<WeatherObs>,
    pub max_event_time: Option<i64>,
    pub buffer: BTreeMap<(i64, u64), Envelope>,
    pub arrivals: u64,
    pub next_tick: Option<i64>,
}

impl SystemState {
    fn new() -> Self {
        Self {
            timezone: "UTC".into(),
            stations: Vec::new(),
            index: HashMap::new(),
            neighbours: Vec::new(),
            neighbours_dirty: false,
            weather: VecDeque::new(),
            max_event_time: None,
            buffer: BTreeMap::new(),
            arrivals: 0,
            next_tick: None,
        }
    }

    fn watermark(&self, lateness_ms: i64) -> Option<i64> {
        self.max_event_time.map(|t| t - lateness_ms)
    }
}

/// A snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("processor snapshot: {0}")]
pub struct SnapshotError(String);

/// Counters, for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorStats {
    pub events: u64,
    pub applied: u64,
    pub late: u64,
    pub duplicates: u64,
    pub rows: u64,
    pub labels: u64,
    pub ticks: u64,
}

/// The processor: all systems' state. Serialisable as a whole for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processor {
    config: ProcessorConfig,
    #[serde(skip, default = "placeholder_schema")]
    schema: FeatureSchema,
    systems: BTreeMap<SystemId, SystemState>,
    stats: ProcessorStats,
}

fn placeholder_schema() -> FeatureSchema {
    FeatureSchema::v1(&[])
}

impl Processor {
    pub fn new(config: ProcessorConfig) -> Self {
        let schema = FeatureSchema::v1(&config.window_minutes);
        Self {
            config,
            schema,
            systems: BTreeMap::new(),
            stats: ProcessorStats::default(),
        }
    }

    /// The whole state as bytes (MessagePack): the operator part of a checkpoint.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        rmp_serde::to_vec_named(self).map_err(|e| SnapshotError(e.to_string()))
    }

    /// A processor from [`Self::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut p: Self = rmp_serde::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        p.schema = FeatureSchema::v1(&p.config.window_minutes);
        Ok(p)
    }

    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }
    pub fn stats(&self) -> ProcessorStats {
        self.stats
    }
    /// Stations tracked, over all systems.
    pub fn stations(&self) -> usize {
        self.systems.values().map(|s| s.stations.len()).sum()
    }
    /// The watermark of a system.
    pub fn watermark(&self, system: &SystemId) -> Option<Timestamp> {
        self.systems
            .get(system)?
            .watermark(self.config.lateness_ms)
            .map(Timestamp)
    }

    fn window_lengths_ms(&self) -> Vec<i64> {
        self.config
            .window_minutes
            .iter()
            .map(|&m| i64::from(m) * MIN_MS)
            .collect()
    }

    fn retention_ms(&self) -> i64 {
        i64::from(self.config.horizon_minutes) * MIN_MS
            + 2 * self.config.tick_ms
            + self.config.lateness_ms
    }

    /// Takes one event, applies whatever the watermark now allows, and appends the outputs.
    pub fn process(&mut self, env: Envelope, out: &mut Vec<Emitted>) {
        self.stats.events += 1;
        let lateness = self.config.lateness_ms;
        let sys = self
            .systems
            .entry(env.system_id.clone())
            .or_insert_with(SystemState::new);
        let t = env.event_time.millis();
        if sys.watermark(lateness).is_some_and(|wm| t < wm) {
            self.stats.late += 1;
            out.push(Emitted::Rejected {
                reason: RejectReason::Late,
                envelope: Box::new(env),
            });
            return;
        }
        sys.max_event_time = Some(sys.max_event_time.map_or(t, |m| m.max(t)));
        if sys.next_tick.is_none() {
            sys.next_tick =
                Some(Timestamp(t).floor_to(self.config.tick_ms).millis() + self.config.tick_ms);
        }
        if !matches!(env.event, Event::FeedHeartbeat(_)) {
            let seq = sys.arrivals;
            sys.arrivals += 1;
            sys.buffer.insert((t, seq), env.clone());
        }
        let system_id = env.system_id;
        let wm = sys.watermark(lateness).unwrap_or(i64::MIN);
        self.release(&system_id, wm, out);
    }

    /// Applies every buffered event (end of a bounded input), without ticking past the last
    /// event time.
    pub fn drain(&mut self, out: &mut Vec<Emitted>) {
        let ids: Vec<SystemId> = self.systems.keys().cloned().collect();
        for id in ids {
            let max = self
                .systems
                .get(&id)
                .and_then(|s| s.max_event_time)
                .unwrap_or(i64::MIN);
            self.release(&id, max, out);
        }
    }

    fn release(&mut self, system_id: &SystemId, wm: i64, out: &mut Vec<Emitted>) {
        loop {
            let Some(sys) = self.systems.get_mut(system_id) else {
                return;
            };
            let next_event = sys
                .buffer
                .first_key_value()
                .map(|(k, _)| k.0)
                .filter(|&t| t <= wm);
            let next_tick = sys.next_tick.filter(|&t| t <= wm);
            match (next_event, next_tick) {
                (Some(te), tick) if tick.is_none_or(|tt| te <= tt) => {
                    if let Some((_, env)) = sys.buffer.pop_first() {
                        self.apply(system_id, env, out);
                    }
                }
                (_, Some(tt)) => {
                    sys.next_tick = Some(tt + self.config.tick_ms);
                    self.tick(system_id, tt, out);
                }
                _ => return,
            }
        }
    }

    fn apply(&mut self, system_id: &SystemId, env: Envelope, out: &mut Vec<Emitted>) {
        let lens = self.window_lengths_ms();
        let retention = self.retention_ms();
        let Some(sys) = self.systems.get_mut(system_id) else {
            return;
        };
        match &env.event {
            Event::SystemInfo(info) => {
                sys.timezone = info.timezone.clone();
                self.stats.applied += 1;
            }
            Event::StationInfo(info) => {
                apply_info(sys, info, &lens, retention);
                self.stats.applied += 1;
            }
            Event::Weather(obs) => {
                sys.weather.push_back(obs.clone());
                while sys.weather.len() > 4 {
                    sys.weather.pop_front();
                }
                self.stats.applied += 1;
            }
            Event::FeedHeartbeat(_) => {}
            Event::StationStatus(status) => {
                let t = env.event_time.millis();
                let idx = station_index(sys, &status.station_id, &lens, retention);
                if sys.neighbours_dirty && sys.neighbours.iter().all(Vec::is_empty) {
                    // First time coordinates are known: build now rather than at the tick.
                    rebuild_neighbours(sys, &self.config);
                }
                match apply_status(&mut sys.stations[idx], status, t) {
                    Ok(()) => {
                        self.stats.applied += 1;
                        let row = make_row(
                            sys,
                            idx,
                            t,
                            PredictionTrigger::Update,
                            system_id,
                            &self.schema,
                            &self.config,
                        );
                        sys.stations[idx].pending.push_back(t);
                        self.stats.rows += 1;
                        out.push(Emitted::Row(row));
                    }
                    Err(Rejected::Duplicate) => {
                        self.stats.duplicates += 1;
                        out.push(Emitted::Rejected {
                            reason: RejectReason::Duplicate,
                            envelope: Box::new(env),
                        });
                    }
                    Err(Rejected::OutOfOrder) => {
                        self.stats.late += 1;
                        out.push(Emitted::Rejected {
                            reason: RejectReason::Late,
                            envelope: Box::new(env),
                        });
                    }
                }
            }
        }
    }

    fn tick(&mut self, system_id: &SystemId, t: i64, out: &mut Vec<Emitted>) {
        self.stats.ticks += 1;
        let horizon_ms = i64::from(self.config.horizon_minutes) * MIN_MS;
        let Some(sys) = self.systems.get_mut(system_id) else {
            return;
        };
        if sys.neighbours_dirty {
            rebuild_neighbours(sys, &self.config);
        }
        // Labels first: everything due at or before this tick.
        for st in &mut sys.stations {
            while let Some(&as_of) = st.pending.front() {
                if as_of + horizon_ms > t {
                    break;
                }
                st.pending.pop_front();
                st.history.advance_to(t);
                if let Some(o) = labels::outcome(&st.history, as_of, horizon_ms) {
                    self.stats.labels += 1;
                    out.push(Emitted::Label(Label {
                        schema_version: LABEL_SCHEMA_VERSION,
                        prediction_id: Prediction::id_for(
                            system_id,
                            &st.id,
                            Timestamp(as_of),
                            self.config.horizon_minutes,
                        ),
                        system_id: system_id.clone(),
                        station_id: st.id.clone(),
                        as_of: Timestamp(as_of),
                        horizon_minutes: self.config.horizon_minutes,
                        went_empty: o.went_empty,
                        went_full: o.went_full,
                        empty_at_as_of: o.empty_at_as_of,
                        full_at_as_of: o.full_at_as_of,
                        observations: o.observations,
                    }));
                }
            }
        }
        for idx in 0..sys.stations.len() {
            let st = &mut sys.stations[idx];
            let Some(latest) = st.history.latest().copied() else {
                continue;
            };
            let active =
                latest.has(Report::INSTALLED) && t - latest.t <= self.config.active_within_ms;
            if !active || st.pending.back() == Some(&t) {
                continue;
            }
            st.history.advance_to(t);
            let row = make_row(
                sys,
                idx,
                t,
                PredictionTrigger::Tick,
                system_id,
                &self.schema,
                &self.config,
            );
            sys.stations[idx].pending.push_back(t);
            self.stats.rows += 1;
            out.push(Emitted::Row(row));
        }
    }
}

fn station_index(sys: &mut SystemState, id: &StationId, lens: &[i64], retention: i64) -> usize {
    if let Some(&i) = sys.index.get(id) {
        return i as usize;
    }
    let i = sys.stations.len();
    sys.stations.push(Station {
        id: id.clone(),
        coords: None,
        capacity: None,
        history: StationHistory::with_retention(lens, retention),
        ebikes: None,
        bikes_disabled: None,
        docks_disabled: None,
        empty_ended: None,
        full_ended: None,
        pending: VecDeque::new(),
    });
    sys.neighbours.push(Vec::new());
    sys.index
        .insert(id.clone(), u32::try_from(i).unwrap_or(u32::MAX));
    i
}

fn apply_info(sys: &mut SystemState, info: &StationInfo, lens: &[i64], retention: i64) {
    let idx = station_index(sys, &info.station_id, lens, retention);
    let st = &mut sys.stations[idx];
    let coords = Some((info.lat, info.lon));
    if st.coords != coords {
        st.coords = coords;
        sys.neighbours_dirty = true;
    }
    st.capacity = info.capacity.map(|c| u16::try_from(c).unwrap_or(u16::MAX));
}

fn rebuild_neighbours(sys: &mut SystemState, config: &ProcessorConfig) {
    let coords: Vec<Option<(f64, f64)>> = sys.stations.iter().map(|s| s.coords).collect();
    sys.neighbours = neighbours::build(&coords, config.neighbours_k, config.neighbour_radius_m);
    sys.neighbours_dirty = false;
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

fn apply_status(st: &mut Station, s: &StationStatus, t: i64) -> Result<(), Rejected> {
    let r = Report::new(
        t,
        clamp_u16(s.num_bikes_available),
        s.num_docks_available.map(clamp_u16),
        s.is_renting,
        s.is_returning,
        s.is_installed,
    );
    let prev = st.history.latest().copied();
    st.history.apply(r)?;
    if let Some(p) = prev {
        if p.is_empty() && !r.is_empty() {
            st.empty_ended = Some(t);
        }
        if p.is_full() && !r.is_full() {
            st.full_ended = Some(t);
        }
    }
    st.ebikes = s.num_ebikes_available.map(clamp_u16);
    st.bikes_disabled = s.num_bikes_disabled.map(clamp_u16);
    st.docks_disabled = s.num_docks_disabled.map(clamp_u16);
    Ok(())
}

fn make_row(
    sys: &SystemState,
    idx: usize,
    t: i64,
    trigger: PredictionTrigger,
    system_id: &SystemId,
    schema: &FeatureSchema,
    config: &ProcessorConfig,
) -> FeatureRow {
    let st = &sys.stations[idx];
    let ctx = FeatureContext {
        timezone: &sys.timezone,
        stations: &sys.stations,
        neighbours: sys.neighbours.get(idx).map_or(&[][..], Vec::as_slice),
        weather: sys
            .weather
            .iter()
            .rev()
            .find(|w| w.observed_at.millis() + 60 * MIN_MS <= t),
        window_minutes: &config.window_minutes,
    };
    let values = features::compute(st, &ctx, t, schema.len());
    FeatureRow {
        prediction_id: Prediction::id_for(system_id, &st.id, Timestamp(t), config.horizon_minutes),
        vector: FeatureVector {
            system_id: system_id.clone(),
            station_id: st.id.clone(),
            as_of: Timestamp(t),
            schema_id: schema.id().clone(),
            values,
        },
        trigger,
    }
}
