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
//!    ([`PredictionTrigger::Update`]). With [`ProcessorConfig::score_on_arrival`], a report
//!    that must wait in the buffer is scored when it *arrives*, from the state as it is (the released state, the station's own earlier
//!    buffered reports and this one), so its prediction does not wait for the watermark (an
//!    early firing). Its release moves the state and computes the row again (the on-time
//!    firing), emitted only if it differs: a correction with the same prediction id, scored
//!    later. The last row of each prediction id is the watermark order's, whatever the arrival
//!    order within the lateness. Ticks still follow the watermark.
//! 5. **Labels.** Every row is a prediction to be labelled; at the first tick at or after
//!    `as_of + horizon`, [`crate::labels::outcome`] reads the station's history and a
//!    [`Label`] is emitted with the prediction's deterministic id.
//!
//! Scoring rows into predictions is not done here: the row carries its prediction id, and
//! the I/O edge scores it (in process or remotely), so this module stays pure.
//!
//! ## Cost and memory
//!
//! The processor is sized for 250,000 stations reporting every minute on one core, so the
//! per-event path avoids what does not scale:
//!
//! - **No buffer when it cannot matter.** An event that the watermark releases at once (with
//!   `lateness_ms = 0`, every event that is not late) and finds the buffer empty is applied
//!   directly, after the ticks before it, exactly where the buffer would have put it; the
//!   buffer (and the envelope's move into it) is for out-of-order input only.
//! - **Station lookup** through a hash table of `u32` indices (XXH3 of the id), the ids
//!   themselves held once per system by index ([`StationIds`]), not once in the table and
//!   again in the station; rows and labels share them (a reference count per row, no copy).
//! - **Derived state is not checkpointed**: the parsed time zone, the lookup table, the
//!   neighbours' [`Glance`]s and the local-time cache are rebuilt on restore
//!   ([`SystemState::rebuild`]).
//! - **Pending predictions** cost nothing per report: every applied report made an update
//!   row at its time, so the unlabelled ones are the station's reports from the absolute
//!   index `labelled` on; only tick rows are kept as times (`pending_ticks`), and a station
//!   reporting every minute has none (its report already scored it at the tick).
//! - **Neighbours** are one flat list with offsets (CSR), not a `Vec` per station.

use std::collections::{BTreeMap, VecDeque};

use bikeshare_types::contracts::{
    Envelope, Event, FeatureVector, LABEL_SCHEMA_VERSION, Label, Prediction, PredictionTrigger,
    StationInfo, StationStatus, WeatherObs,
};
use bikeshare_types::{EventId, StationId, SystemId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::features::{self, FeatureContext, Glance};
use crate::labels;
use crate::neighbours;
use crate::quality::{LiveQuality, MAX_PENDING_SCORES, QualityConfig, QualityReport};
use crate::schema::FeatureSchema;
use crate::station::Station;
use crate::window::{Rejected, Report};

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
    /// The rolling live model quality from the processor's own labels.
    pub quality: QualityConfig,
    /// The update trigger: score a report that waits in the reorder buffer when it arrives
    /// (an early firing), and again at release only if that row differs (a correction with
    /// the same prediction id). Off in this library default, so the golden tests describe the
    /// watermark order alone; the app turns it on for the live job (decision 083), and its
    /// consumers read the last row of a prediction id.
    pub score_on_arrival: bool,
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
            score_on_arrival: false,
            quality: QualityConfig::default(),
        }
    }
}

/// A feature row to score, with the id its prediction will have.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub vector: FeatureVector,
    pub trigger: PredictionTrigger,
    pub prediction_id: EventId,
    /// The horizon the prediction id and its label use (the processor's configuration).
    pub horizon_minutes: u32,
    /// [`Prediction::revision`]: 0, or 1 for a correction (the on-time row of a report
    /// whose differing update row was emitted on arrival).
    pub revision: u32,
}

/// Why an input event was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Older than the watermark when it arrived.
    Late,
    /// The same report as the station's latest.
    Duplicate,
    /// A weather observation older than every one kept: it can serve no row.
    Superseded,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Late => "late",
            Self::Duplicate => "duplicate",
            Self::Superseded => "superseded",
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

/// The station ids of a system, by index: the lookup table holds indices, and every row and
/// label made for a station shares its id from here (a reference count, not a copy: decision
/// 102). A checkpoint holds them as one string and the end of each id in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "PackedIds")]
pub(crate) struct StationIds(Vec<StationId>);

impl Serialize for StationIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PackedIds::from(self).serialize(s)
    }
}

impl StationIds {
    pub fn get(&self, i: usize) -> &str {
        self.0.get(i).map_or("", StationId::as_str)
    }
    /// The id of station `i`, shared.
    fn id(&self, i: usize) -> StationId {
        self.0.get(i).cloned().unwrap_or_default()
    }
    fn push(&mut self, id: &StationId) {
        self.0.push(id.clone());
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// [`StationIds`] as a checkpoint holds them: the ids one after another, and where each ends.
#[derive(Serialize, Deserialize)]
struct PackedIds {
    text: String,
    ends: Vec<u32>,
}

impl From<&StationIds> for PackedIds {
    fn from(ids: &StationIds) -> Self {
        let mut packed = Self {
            text: String::new(),
            ends: Vec::with_capacity(ids.0.len()),
        };
        for id in &ids.0 {
            packed.text.push_str(id.as_str());
            packed
                .ends
                .push(u32::try_from(packed.text.len()).unwrap_or(u32::MAX));
        }
        packed
    }
}

impl From<PackedIds> for StationIds {
    fn from(packed: PackedIds) -> Self {
        let mut start = 0;
        Self(
            packed
                .ends
                .iter()
                .map(|&end| {
                    let end = end as usize;
                    let id = packed.text.get(start..end).unwrap_or("");
                    start = end;
                    StationId::new(id)
                })
                .collect(),
        )
    }
}

fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// Station id → index (derived from [`StationIds`]; rebuilt on restore, not compared).
#[derive(Clone, Default)]
pub(crate) struct StationIndex(hashbrown::HashTable<u32>);

impl std::fmt::Debug for StationIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StationIndex({} stations)", self.0.len())
    }
}

impl PartialEq for StationIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl StationIndex {
    fn find(&self, ids: &StationIds, id: &str) -> Option<u32> {
        self.0
            .find(id_hash(id), |&i| ids.get(i as usize) == id)
            .copied()
    }
    fn insert(&mut self, ids: &StationIds, i: u32) {
        self.0.insert_unique(id_hash(ids.get(i as usize)), i, |&j| {
            id_hash(ids.get(j as usize))
        });
    }
    fn rebuild(ids: &StationIds) -> Self {
        let mut index = Self(hashbrown::HashTable::with_capacity(ids.len()));
        for i in 0..ids.len() {
            index.insert(ids, u32::try_from(i).unwrap_or(u32::MAX));
        }
        index
    }
}

/// The local-time features of the last `as_of` asked (rows of one tick, and of one minute's
/// reports, share it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalTimeCache(Option<(i64, [Option<f32>; 5])>);

impl PartialEq for LocalTimeCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl LocalTimeCache {
    fn peek(&self, t: i64) -> Option<[Option<f32>; 5]> {
        self.0.filter(|(at, _)| *at == t).map(|(_, v)| v)
    }
    fn get(&mut self, tz: Option<chrono_tz::Tz>, t: i64) -> [Option<f32>; 5] {
        match self.0 {
            Some((at, v)) if at == t => v,
            _ => {
                let v = features::local_time(tz, t);
                self.0 = Some((t, v));
                v
            }
        }
    }
}

/// Buffer keys of station reports by station id, each list in key order: what an arriving
/// report's early row must see of its own station.
#[derive(Debug, Clone, Default, PartialEq)]
struct BufferedReports(std::collections::HashMap<String, Vec<(i64, u64)>>);

impl BufferedReports {
    fn insert(&mut self, station: &str, key: (i64, u64)) {
        // No `entry`: it would allocate the id even when the station has a list already.
        match self.0.get_mut(station) {
            Some(keys) => {
                let at = keys.partition_point(|k| *k < key);
                keys.insert(at, key);
            }
            None => {
                self.0.insert(station.to_owned(), vec![key]);
            }
        }
    }

    fn remove(&mut self, station: &str, key: (i64, u64)) {
        if let Some(keys) = self.0.get_mut(station) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.0.remove(station);
            }
        }
    }

    fn keys(&self, station: &str) -> &[(i64, u64)] {
        self.0.get(station).map_or(&[], Vec::as_slice)
    }
}

/// One system's state. Fields marked `serde(skip)` are derived and rebuilt on restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SystemState {
    #[serde(skip)]
    pub id: SystemId,
    /// The system's IANA time zone, from its `SystemInfo` (empty until one arrives).
    pub timezone: String,
    /// `timezone` parsed. `None` (no `SystemInfo` yet, or not an IANA name): the local-time
    /// features are missing, never computed in UTC.
    #[serde(skip)]
    pub tz: Option<chrono_tz::Tz>,
    pub stations: Vec<Station>,
    pub ids: StationIds,
    #[serde(skip)]
    index: StationIndex,
    /// What each station shows its neighbours, by index.
    #[serde(skip)]
    glances: Vec<Glance>,
    #[serde(skip)]
    local_time: LocalTimeCache,
    /// Neighbours of station `i`: `neighbours[offsets[i]..offsets[i + 1]]` (none for a
    /// station added since the last build).
    pub neighbour_offsets: Vec<u32>,
    pub neighbours: Vec<u32>,
    pub neighbours_dirty: bool,
    /// Recent weather observations, oldest first.
    pub weather: VecDeque<WeatherObs>,
    pub max_event_time: Option<i64>,
    pub buffer: BTreeMap<(i64, u64), Envelope>,
    /// Buffered reports whose update row was emitted when they arrived (the update
    /// trigger), with a hash of that row's values: their release emits the row again only
    /// when it differs.
    #[serde(default)]
    pub scored_early: BTreeMap<(i64, u64), u64>,
    /// The buffer's station reports by station id (kept only with `score_on_arrival`).
    #[serde(skip)]
    buffered: BufferedReports,
    pub arrivals: u64,
    pub next_tick: Option<i64>,
    /// This system's counters ([`Processor::stats`] sums them), so that the systems of a
    /// processor can be split ([`Processor::snapshot_systems`]) and merged
    /// ([`Processor::absorb`]) without counting anything twice.
    #[serde(default)]
    pub stats: ProcessorStats,
    /// Labelled predictions of the quality window ([`crate::quality`]).
    #[serde(default)]
    pub quality: LiveQuality,
}

impl SystemState {
    fn new(id: SystemId) -> Self {
        Self {
            id,
            tz: None,
            timezone: String::new(),
            stations: Vec::new(),
            ids: StationIds::default(),
            index: StationIndex::default(),
            glances: Vec::new(),
            local_time: LocalTimeCache::default(),
            neighbour_offsets: Vec::new(),
            neighbours: Vec::new(),
            neighbours_dirty: false,
            weather: VecDeque::new(),
            max_event_time: None,
            buffer: BTreeMap::new(),
            scored_early: BTreeMap::new(),
            buffered: BufferedReports::default(),
            arrivals: 0,
            next_tick: None,
            stats: ProcessorStats::default(),
            quality: LiveQuality::default(),
        }
    }

    /// Rebuilds the derived fields after deserialising (`buffered` only for the update
    /// trigger, the one reader of it).
    fn rebuild(&mut self, id: SystemId, trend_wi: Option<usize>, score_on_arrival: bool) {
        self.id = id;
        self.tz = self.timezone.parse().ok();
        self.index = StationIndex::rebuild(&self.ids);
        self.glances = self
            .stations
            .iter()
            .map(|st| Glance::of(&st.history, trend_wi))
            .collect();
        self.local_time = LocalTimeCache::default();
        self.buffered = BufferedReports::default();
        if score_on_arrival {
            for (key, env) in &self.buffer {
                if let Event::StationStatus(s) = &env.event {
                    self.buffered.insert(s.station_id.as_str(), *key);
                }
            }
        }
    }

    fn watermark(&self, lateness_ms: i64) -> Option<i64> {
        self.max_event_time.map(|t| t - lateness_ms)
    }

    fn neighbours_of(&self, i: usize) -> &[u32] {
        match (
            self.neighbour_offsets.get(i),
            self.neighbour_offsets.get(i + 1),
        ) {
            (Some(&a), Some(&b)) => self.neighbours.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn refresh_glance(&mut self, idx: usize, trend_wi: Option<usize>) {
        if let (Some(g), Some(st)) = (self.glances.get_mut(idx), self.stations.get(idx)) {
            *g = Glance::of(&st.history, trend_wi);
        }
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
    /// Weather observations older than every one kept (see [`RejectReason::Superseded`]).
    #[serde(default)]
    pub superseded: u64,
    pub rows: u64,
    pub labels: u64,
    pub ticks: u64,
}

impl ProcessorStats {
    /// Field-wise sum.
    pub fn plus(&self, o: &Self) -> Self {
        Self {
            events: self.events + o.events,
            applied: self.applied + o.applied,
            late: self.late + o.late,
            duplicates: self.duplicates + o.duplicates,
            superseded: self.superseded + o.superseded,
            rows: self.rows + o.rows,
            labels: self.labels + o.labels,
            ticks: self.ticks + o.ticks,
        }
    }
}

/// The processor: all systems' state. Serialisable as a whole for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processor {
    config: ProcessorConfig,
    #[serde(skip, default = "placeholder_schema")]
    schema: FeatureSchema,
    #[serde(skip)]
    derived: Derived,
    systems: BTreeMap<SystemId, SystemState>,
}

fn placeholder_schema() -> FeatureSchema {
    FeatureSchema::current(&[])
}

/// The feature schema a processor with `config` computes.
fn schema_of(config: &ProcessorConfig) -> FeatureSchema {
    FeatureSchema::with_horizon(&config.window_minutes, config.horizon_minutes)
}

/// Values computed once from the config.
#[derive(Debug, Clone, Default, PartialEq)]
struct Derived {
    window_lengths_ms: Vec<i64>,
    retention_ms: i64,
    horizon_ms: i64,
    trend_wi: Option<usize>,
}

impl Derived {
    fn of(config: &ProcessorConfig) -> Self {
        Self {
            window_lengths_ms: config
                .window_minutes
                .iter()
                .map(|&m| i64::from(m) * MIN_MS)
                .collect(),
            retention_ms: i64::from(config.horizon_minutes) * MIN_MS
                + 2 * config.tick_ms
                + config.lateness_ms,
            horizon_ms: i64::from(config.horizon_minutes) * MIN_MS,
            trend_wi: features::trend_window(&config.window_minutes),
        }
    }
}

impl Processor {
    pub fn new(config: ProcessorConfig) -> Self {
        let schema = schema_of(&config);
        Self {
            derived: Derived::of(&config),
            config,
            schema,
            systems: BTreeMap::new(),
        }
    }

    /// The whole state as bytes (MessagePack): the operator part of a checkpoint.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        rmp_serde::to_vec_named(self).map_err(|e| SnapshotError(e.to_string()))
    }

    /// A processor from [`Self::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut p = Self::read_snapshot(bytes)?;
        for (id, sys) in &mut p.systems {
            sys.rebuild(id.clone(), p.derived.trend_wi, p.config.score_on_arrival);
        }
        Ok(p)
    }

    /// A processor from snapshot bytes with its config-derived values, but its systems'
    /// derived fields not rebuilt yet (the caller rebuilds them for the setting it runs
    /// with).
    fn read_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut p: Self = rmp_serde::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        p.schema = schema_of(&p.config);
        p.derived = Derived::of(&p.config);
        Ok(p)
    }

    /// A snapshot (the format of [`Self::snapshot`]) holding only the systems `keep`
    /// accepts, with their counters: what a worker hands over when it gives up some
    /// partitions (systems) to another.
    pub fn snapshot_systems(
        &self,
        keep: impl Fn(&SystemId) -> bool,
    ) -> Result<Vec<u8>, SnapshotError> {
        #[derive(Serialize)]
        struct Part<'a> {
            config: &'a ProcessorConfig,
            systems: BTreeMap<&'a SystemId, &'a SystemState>,
        }
        let part = Part {
            config: &self.config,
            systems: self.systems.iter().filter(|(id, _)| keep(id)).collect(),
        };
        rmp_serde::to_vec_named(&part).map_err(|e| SnapshotError(e.to_string()))
    }

    /// Merges the systems of a snapshot (from [`Self::snapshot`] or
    /// [`Self::snapshot_systems`]) into this processor; counters add up. Refused, with
    /// nothing changed, when the snapshot was taken with another config (its state would not
    /// fit these windows) or holds a system this processor already has (two owners of one
    /// partition: the caller must decide which state wins). The update trigger
    /// (`score_on_arrival`) may differ: it changes when rows are emitted, not the state, so a
    /// checkpoint taken with it off resumes with it on (and back).
    pub fn absorb(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut other = Self::read_snapshot(bytes)?;
        let same_state = ProcessorConfig {
            score_on_arrival: self.config.score_on_arrival,
            ..other.config.clone()
        } == self.config;
        if !same_state {
            return Err(SnapshotError(format!(
                "cannot absorb a snapshot taken with another config ({:?}, this processor has {:?})",
                other.config, self.config
            )));
        }
        if let Some(dup) = other
            .systems
            .keys()
            .find(|id| self.systems.contains_key(*id))
        {
            return Err(SnapshotError(format!(
                "cannot absorb system {dup}: this processor already holds it"
            )));
        }
        // Once, for this processor's setting of the update trigger (the snapshot's may
        // differ).
        for (id, sys) in &mut other.systems {
            sys.rebuild(
                id.clone(),
                self.derived.trend_wi,
                self.config.score_on_arrival,
            );
        }
        self.systems.extend(other.systems);
        Ok(())
    }

    /// The systems (partitions) this processor holds state for.
    pub fn system_ids(&self) -> impl Iterator<Item = &SystemId> {
        self.systems.keys()
    }

    /// Drops the state of the systems `drop` accepts (their partitions moved to another
    /// instance, which restores them from their checkpoint); returns how many.
    pub fn release_systems(&mut self, drop: impl Fn(&SystemId) -> bool) -> usize {
        let before = self.systems.len();
        self.systems.retain(|id, _| !drop(id));
        before - self.systems.len()
    }

    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }
    /// The counters, summed over systems.
    pub fn stats(&self) -> ProcessorStats {
        self.systems
            .values()
            .fold(ProcessorStats::default(), |acc, s| acc.plus(&s.stats))
    }
    /// Stations tracked, over all systems.
    pub fn stations(&self) -> usize {
        self.systems.values().map(|s| s.stations.len()).sum()
    }
    /// The feature vector of a station as of its current time (its last report or tick),
    /// computed exactly as a row at that time would be; `None` for an unknown station. For
    /// inspection and benchmarks: nothing is emitted and no state changes.
    pub fn station_features(
        &self,
        system: &SystemId,
        station: &StationId,
    ) -> Option<FeatureVector> {
        let sys = self.systems.get(system)?;
        let idx = sys.index.find(&sys.ids, station.as_str())? as usize;
        let t = sys.stations[idx].history.now()?;
        let local_time = sys
            .local_time
            .peek(t)
            .unwrap_or_else(|| features::local_time(sys.tz, t));
        Some(make_vector(sys, &local_time, idx, t, &self.schema))
    }

    /// The watermark of a system.
    pub fn watermark(&self, system: &SystemId) -> Option<Timestamp> {
        self.systems
            .get(system)?
            .watermark(self.config.lateness_ms)
            .map(Timestamp)
    }

    /// Remembers the scores of a published prediction until its label arrives (live
    /// quality). Unavailable predictions, unknown stations and predictions outside the
    /// sample are ignored. Call it for a batch's predictions before its labels
    /// ([`Self::record_label`]): a label may answer a prediction of the same batch.
    pub fn record_prediction(&mut self, p: &Prediction) {
        if !p.is_available() || !self.config.quality.sampled(p.prediction_id.as_str()) {
            return;
        }
        let Some(sys) = self.systems.get_mut(&p.system_id) else {
            return;
        };
        let Some(idx) = sys.index.find(&sys.ids, p.station_id.as_str()) else {
            return;
        };
        let Some(st) = sys.stations.get_mut(idx as usize) else {
            return;
        };
        let t = p.as_of.millis();
        match st.scores.back_mut() {
            // The same prediction again: a correction (the update trigger's on-time row) or a
            // replay; the last row of a prediction id is its answer.
            Some(b) if b.0 == t => {
                *b = (t, p.p_empty, p.p_full);
                return;
            }
            // Before the last one: a replayed or out-of-order prediction.
            Some(b) if b.0 > t => return,
            _ => {}
        }
        st.scores.push_back((t, p.p_empty, p.p_full));
        while st.scores.len() > MAX_PENDING_SCORES {
            st.scores.pop_front();
        }
    }

    /// Joins a label with its prediction's scores (if recorded) into the system's live
    /// quality. Scores older than the label are dropped: their labels never came (no state
    /// at `as_of`).
    pub fn record_label(&mut self, l: &Label) {
        let quality = &self.config.quality;
        let Some(sys) = self.systems.get_mut(&l.system_id) else {
            return;
        };
        let Some(idx) = sys.index.find(&sys.ids, l.station_id.as_str()) else {
            return;
        };
        let Some(st) = sys.stations.get_mut(idx as usize) else {
            return;
        };
        let t = l.as_of.millis();
        while st.scores.front().is_some_and(|f| f.0 < t) {
            st.scores.pop_front();
        }
        if let Some(&(_, p_empty, p_full)) = st.scores.front().filter(|f| f.0 == t) {
            st.scores.pop_front();
            sys.quality.push(
                (t, p_empty, p_full, l.went_empty, l.went_full),
                (l.empty_at_as_of, l.full_at_as_of),
                quality,
            );
        }
    }

    /// The live quality of a system over the configured window.
    pub fn quality(&self, system: &SystemId) -> Option<QualityReport> {
        self.systems
            .get(system)
            .map(|s| s.quality.summary(&self.config.quality))
    }

    /// For each system with labelled predictions, the count of those ever joined (it
    /// changes whenever the quality window does; cheap: no measure is computed).
    pub fn quality_versions(&self) -> impl Iterator<Item = (&SystemId, u64)> {
        self.systems
            .iter()
            .filter(|(_, s)| !s.quality.is_empty())
            .map(|(id, s)| (id, s.quality.pushed()))
    }

    /// Takes one event, applies whatever the watermark now allows, and appends the outputs.
    pub fn process(&mut self, env: Envelope, out: &mut Vec<Emitted>) {
        if let Event::FeedHeartbeat(h) = &env.event
            && !h.is_station_status()
        {
            // The information feeds' heartbeats (one per read) are for freshness readers such
            // as the dashboard: their time is a read time, not a point of the status history
            // the watermark follows.
            return;
        }
        let op = Op {
            config: &self.config,
            schema: &self.schema,
            derived: &self.derived,
        };
        // One look-up of the system for every event (a second one only for a new system).
        match self.systems.get_mut(&env.system_id) {
            Some(sys) => op.process(sys, env, out),
            None => {
                let id = env.system_id.clone();
                let sys = self
                    .systems
                    .entry(id.clone())
                    .or_insert_with(|| SystemState::new(id));
                op.process(sys, env, out);
            }
        }
    }

    /// Applies every buffered event (end of a bounded input), without ticking past the last
    /// event time, then labels every prediction whose horizon that time covers
    /// (`as_of + horizon <= ` the system's last event time).
    pub fn drain(&mut self, out: &mut Vec<Emitted>) {
        self.drain_systems(|_| true, out);
    }

    /// [`Processor::drain`] of the systems `which` selects (those of one shard).
    pub fn drain_systems(&mut self, which: impl Fn(&SystemId) -> bool, out: &mut Vec<Emitted>) {
        let op = Op {
            config: &self.config,
            schema: &self.schema,
            derived: &self.derived,
        };
        for (_, sys) in self.systems.iter_mut().filter(|(id, _)| which(id)) {
            let Some(max) = sys.max_event_time else {
                continue;
            };
            op.release(sys, max, out);
            // The input ends at `max`: every prediction whose horizon it covers gets its
            // label now, not only those due at the last tick.
            op.labels_due(sys, max, out);
        }
    }
}

/// A hash of a row's values (bit patterns, `None` apart from every number), to tell whether
/// the on-time row differs from the early one. The bytes (1 then the four bytes of a value, 0
/// for a missing one) are laid out in a stack buffer and hashed in one shot: XXH3 of a
/// concatenation equals its streaming hash, which fed them one `update` at a time (28 % of
/// the update trigger's time in a profile), so checkpointed hashes keep their meaning.
fn values_hash(values: &[Option<f32>]) -> u64 {
    const ON_STACK: usize = 128;
    let mut buf = [0u8; 5 * ON_STACK];
    if values.len() > ON_STACK {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for v in values {
            match v {
                Some(x) => {
                    h.update(&[1]);
                    h.update(&x.to_bits().to_le_bytes());
                }
                None => h.update(&[0]),
            }
        }
        return h.digest();
    }
    let mut n = 0;
    for v in values {
        match v {
            Some(x) => {
                buf[n] = 1;
                buf[n + 1..n + 5].copy_from_slice(&x.to_bits().to_le_bytes());
                n += 5;
            }
            None => n += 1,
        }
    }
    xxhash_rust::xxh3::xxh3_64(&buf[..n])
}

/// Observations kept per system: the newest few hours, whatever order they arrive in.
const WEATHER_KEPT: usize = 4;

/// Keeps `obs` among a system's newest [`WEATHER_KEPT`] observations, ordered by the hour
/// observed. The same observation again is a duplicate (a re-poll, or a restarted producer's
/// look-back); one older than every kept hour of a full buffer can serve no row.
fn keep_weather(kept: &mut VecDeque<WeatherObs>, obs: &WeatherObs) -> Result<(), RejectReason> {
    let at = obs.observed_at;
    let pos = kept.partition_point(|w| w.observed_at < at);
    match kept.get(pos) {
        Some(same) if same.observed_at == at && same == obs => {
            return Err(RejectReason::Duplicate);
        }
        // A corrected observation of an hour replaces it.
        Some(same) if same.observed_at == at => kept[pos] = obs.clone(),
        _ if pos == 0 && kept.len() >= WEATHER_KEPT => return Err(RejectReason::Superseded),
        _ => kept.insert(pos, obs.clone()),
    }
    while kept.len() > WEATHER_KEPT {
        kept.pop_front();
    }
    Ok(())
}

/// The operator's fixed parts, borrowed while one system's state is changed.
struct Op<'a> {
    config: &'a ProcessorConfig,
    schema: &'a FeatureSchema,
    derived: &'a Derived,
}

impl Op<'_> {
    /// [`Processor::process`] once the event's system is found: watermark, buffer, release.
    fn process(&self, sys: &mut SystemState, env: Envelope, out: &mut Vec<Emitted>) {
        let lateness = self.config.lateness_ms;
        sys.stats.events += 1;
        let t = env.event_time.millis();
        if sys.watermark(lateness).is_some_and(|wm| t < wm) {
            if matches!(env.event, Event::Weather(_)) {
                // Weather is a side input, read as of `observed_at + 1 h` (see `vector`): an
                // hourly observation that arrives behind the station reports still serves the
                // rows after it, so it is kept rather than dropped as late. Same stream order,
                // same state: replays stay deterministic.
                self.apply(sys, env, None, out);
                return;
            }
            if let Event::StationStatus(status) = &env.event
                && is_resent(sys, status, t)
            {
                // A report this station already has (a producer or a replay sending again
                // after a restart): a duplicate, however late, not a late event.
                sys.stats.duplicates += 1;
                out.push(Emitted::Rejected {
                    reason: RejectReason::Duplicate,
                    envelope: Box::new(env),
                });
                return;
            }
            sys.stats.late += 1;
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
        let wm = sys.watermark(lateness).unwrap_or(i64::MIN);
        if !matches!(env.event, Event::FeedHeartbeat(_)) {
            sys.arrivals += 1;
            if sys.buffer.is_empty() && t <= wm {
                // The buffer would hold this event alone and release it at once, after the
                // ticks before it: do that without the buffer.
                self.release_ticks_before(sys, t, out);
                self.apply(sys, env, None, out);
            } else {
                let key = (t, sys.arrivals - 1);
                if let Event::StationStatus(status) = &env.event
                    && self.config.score_on_arrival
                {
                    sys.buffered.insert(status.station_id.as_str(), key);
                    self.score_on_arrival(sys, status, key, out);
                }
                sys.buffer.insert(key, env);
            }
        }
        self.release(sys, wm, out);
    }

    /// Runs the ticks strictly before `t` that the watermark has passed (what the buffer
    /// does before releasing an event at `t`).
    fn release_ticks_before(&self, sys: &mut SystemState, t: i64, out: &mut Vec<Emitted>) {
        let wm = sys.watermark(self.config.lateness_ms).unwrap_or(i64::MIN);
        while let Some(tt) = sys.next_tick.filter(|&tt| tt <= wm && tt < t) {
            sys.next_tick = Some(tt + self.config.tick_ms);
            self.tick(sys, tt, out);
        }
    }

    fn release(&self, sys: &mut SystemState, wm: i64, out: &mut Vec<Emitted>) {
        loop {
            let next_event = sys
                .buffer
                .first_key_value()
                .map(|(k, _)| k.0)
                .filter(|&t| t <= wm);
            let next_tick = sys.next_tick.filter(|&t| t <= wm);
            match (next_event, next_tick) {
                (Some(te), tick) if tick.is_none_or(|tt| te <= tt) => {
                    if let Some((key, env)) = sys.buffer.pop_first() {
                        let scored = sys.scored_early.remove(&key);
                        if let Event::StationStatus(s) = &env.event
                            && self.config.score_on_arrival
                        {
                            sys.buffered.remove(s.station_id.as_str(), key);
                        }
                        self.apply(sys, env, scored, out);
                    }
                }
                (_, Some(tt)) => {
                    sys.next_tick = Some(tt + self.config.tick_ms);
                    self.tick(sys, tt, out);
                }
                _ => return,
            }
        }
    }

    /// The update trigger (an early firing): a report that waits in the buffer for the
    /// watermark is scored now, from the state as it is (what the watermark has released,
    /// plus the station's own earlier buffered reports, plus this one), so its prediction
    /// does not wait `lateness`. The state itself still moves only at release, where the row
    /// is computed again (the on-time firing) and emitted only if it differs: a correction
    /// with the same prediction id, scored later. So the last row of every prediction id is
    /// the one the watermark order gives, whatever the arrival order within the lateness. A
    /// report of a station not seen yet, or one its station would refuse, is scored at
    /// release only.
    fn score_on_arrival(
        &self,
        sys: &mut SystemState,
        status: &StationStatus,
        key: (i64, u64),
        out: &mut Vec<Emitted>,
    ) {
        let id = status.station_id.as_str();
        let known = sys.index.find(&sys.ids, id).map(|i| i as usize);
        // What the row reads of the station (its history and metadata), not what waits for
        // labels (`pending_ticks`, `scores`): those are not copied.
        let mut st = match known.and_then(|i| sys.stations.get(i)) {
            Some(st) => Station {
                history: st.history.clone(),
                pending_ticks: VecDeque::new(),
                scores: VecDeque::new(),
                ..*st
            },
            None => Station::new(&self.derived.window_lengths_ms, self.derived.retention_ms),
        };
        for k in sys.buffered.keys(id).iter().filter(|k| **k < key) {
            if let Some(Envelope {
                event: Event::StationStatus(earlier),
                ..
            }) = sys.buffer.get(k)
            {
                let _ = apply_status(&mut st, earlier, k.0, sys.tz);
            }
        }
        let t = key.0;
        if apply_status(&mut st, status, t, sys.tz).is_err() {
            return;
        }
        let local_time = sys.local_time.get(sys.tz, t);
        let subject = Subject {
            station: &st,
            id: status.station_id.clone(),
            // A station new since the neighbours were built has none yet.
            neighbours: known.map_or(&[], |i| sys.neighbours_of(i)),
        };
        let vector = vector_of(sys, subject, &local_time, t, self.schema);
        let row = row_of(vector, PredictionTrigger::Update, self.config);
        sys.stats.rows += 1;
        sys.scored_early
            .insert(key, values_hash(&row.vector.values));
        out.push(Emitted::Row(row));
    }

    /// Applies one event; `scored` holds the hash of its update row's values when that row
    /// was emitted on arrival.
    fn apply(
        &self,
        sys: &mut SystemState,
        env: Envelope,
        scored: Option<u64>,
        out: &mut Vec<Emitted>,
    ) {
        let lens = &self.derived.window_lengths_ms;
        let retention = self.derived.retention_ms;
        match &env.event {
            Event::SystemInfo(info) => {
                if sys.timezone != info.timezone {
                    sys.timezone = info.timezone.clone();
                    let tz = sys.timezone.parse().ok();
                    if sys.tz.is_some() && tz != sys.tz {
                        // The profiles' bins are hours of the old zone.
                        for st in &mut sys.stations {
                            st.history.forget_profile();
                        }
                    }
                    sys.tz = tz;
                    sys.local_time = LocalTimeCache::default();
                }
                sys.stats.applied += 1;
            }
            Event::StationInfo(info) => {
                apply_info(sys, info, lens, retention);
                sys.stats.applied += 1;
            }
            Event::Weather(obs) => match keep_weather(&mut sys.weather, obs) {
                Ok(()) => sys.stats.applied += 1,
                Err(reason) => {
                    match reason {
                        RejectReason::Duplicate => sys.stats.duplicates += 1,
                        RejectReason::Superseded => sys.stats.superseded += 1,
                        RejectReason::Late => sys.stats.late += 1,
                    }
                    out.push(Emitted::Rejected {
                        reason,
                        envelope: Box::new(env),
                    });
                }
            },
            Event::FeedHeartbeat(_) => {}
            Event::StationStatus(status) => {
                let t = env.event_time.millis();
                let idx = station_index(sys, &status.station_id, lens, retention);
                if sys.neighbours_dirty && sys.neighbours.is_empty() {
                    // First time coordinates are known: build now rather than at the tick.
                    rebuild_neighbours(sys, self.config);
                }
                match apply_status(&mut sys.stations[idx], status, t, sys.tz) {
                    Ok(()) => {
                        sys.refresh_glance(idx, self.derived.trend_wi);
                        sys.stats.applied += 1;
                        let local_time = sys.local_time.get(sys.tz, t);
                        let row = make_row(
                            sys,
                            &local_time,
                            idx,
                            t,
                            PredictionTrigger::Update,
                            self.schema,
                            self.config,
                        );
                        // The hash only when an early row was emitted (never offline).
                        if scored.is_none_or(|h| h != values_hash(&row.vector.values)) {
                            sys.stats.rows += 1;
                            // After the early row of the same report: its correction.
                            let revision = u32::from(scored.is_some());
                            out.push(Emitted::Row(FeatureRow { revision, ..row }));
                        }
                    }
                    Err(Rejected::Duplicate) => {
                        sys.stats.duplicates += 1;
                        out.push(Emitted::Rejected {
                            reason: RejectReason::Duplicate,
                            envelope: Box::new(env),
                        });
                    }
                    Err(Rejected::OutOfOrder) => {
                        sys.stats.late += 1;
                        out.push(Emitted::Rejected {
                            reason: RejectReason::Late,
                            envelope: Box::new(env),
                        });
                    }
                }
            }
        }
    }

    /// Emits the label of every prediction due at `t` (`as_of + horizon <= t`), advancing
    /// each labelled station's windows to `t`.
    fn labels_due(&self, sys: &mut SystemState, t: i64, out: &mut Vec<Emitted>) {
        let horizon_ms = self.derived.horizon_ms;
        let trend_wi = self.derived.trend_wi;
        for idx in 0..sys.stations.len() {
            let st = &mut sys.stations[idx];
            let mut advanced = false;
            while let Some(as_of) = st.pop_due(horizon_ms, t) {
                st.history.advance_to(t, sys.tz);
                advanced = true;
                if let Some(o) = labels::outcome(&st.history, as_of, horizon_ms) {
                    sys.stats.labels += 1;
                    let station_id = sys.ids.id(idx);
                    out.push(Emitted::Label(Label {
                        schema_version: LABEL_SCHEMA_VERSION,
                        prediction_id: prediction_id(
                            &sys.id,
                            station_id.as_str(),
                            as_of,
                            self.config.horizon_minutes,
                        ),
                        system_id: sys.id.clone(),
                        station_id,
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
            if advanced {
                sys.refresh_glance(idx, trend_wi);
            }
        }
    }

    fn tick(&self, sys: &mut SystemState, t: i64, out: &mut Vec<Emitted>) {
        let trend_wi = self.derived.trend_wi;
        sys.stats.ticks += 1;
        if sys.neighbours_dirty {
            rebuild_neighbours(sys, self.config);
        }
        // Labels first: everything due at or before this tick.
        self.labels_due(sys, t, out);
        let local_time = sys.local_time.get(sys.tz, t);
        for idx in 0..sys.stations.len() {
            let st = &mut sys.stations[idx];
            let Some(latest) = st.history.latest().copied() else {
                continue;
            };
            let active =
                latest.has(Report::INSTALLED) && t - latest.t <= self.config.active_within_ms;
            if !active || st.last_pending() == Some(t) {
                continue;
            }
            st.history.advance_to(t, sys.tz);
            st.pending_ticks.push_back(t);
            sys.refresh_glance(idx, trend_wi);
            let row = make_row(
                sys,
                &local_time,
                idx,
                t,
                PredictionTrigger::Tick,
                self.schema,
                self.config,
            );
            sys.stats.rows += 1;
            out.push(Emitted::Row(row));
        }
    }
}

fn station_index(sys: &mut SystemState, id: &StationId, lens: &[i64], retention: i64) -> usize {
    if let Some(i) = sys.index.find(&sys.ids, id.as_str()) {
        return i as usize;
    }
    let i = sys.stations.len();
    sys.stations.push(Station::new(lens, retention));
    sys.glances.push(Glance::default());
    sys.ids.push(id);
    sys.index
        .insert(&sys.ids, u32::try_from(i).unwrap_or(u32::MAX));
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
    let lists = neighbours::build(&coords, config.neighbours_k, config.neighbour_radius_m);
    sys.neighbours.clear();
    sys.neighbour_offsets.clear();
    sys.neighbour_offsets.push(0);
    for l in lists {
        sys.neighbours.extend_from_slice(&l);
        sys.neighbour_offsets
            .push(u32::try_from(sys.neighbours.len()).unwrap_or(u32::MAX));
    }
    sys.neighbours.shrink_to_fit();
    sys.neighbour_offsets.shrink_to_fit();
    sys.neighbours_dirty = false;
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

fn report_of(s: &StationStatus, t: i64) -> Report {
    Report::new(
        t,
        clamp_u16(s.num_bikes_available),
        s.num_docks_available.map(clamp_u16),
        s.is_renting,
        s.is_returning,
        s.is_installed,
    )
}

/// Whether the station already holds this very report (same time, same state): only while
/// its history still retains that time; older re-sends count as late.
fn is_resent(sys: &SystemState, s: &StationStatus, t: i64) -> bool {
    sys.index
        .find(&sys.ids, s.station_id.as_str())
        .and_then(|i| sys.stations.get(i as usize))
        .and_then(|st| st.history.report_at(t))
        .is_some_and(|held| held.t == t && held.same_state(&report_of(s, t)))
}

fn apply_status(
    st: &mut Station,
    s: &StationStatus,
    t: i64,
    tz: Option<chrono_tz::Tz>,
) -> Result<(), Rejected> {
    let r = report_of(s, t);
    let prev = st.history.latest().copied();
    st.history.apply(r, tz)?;
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

/// [`bikeshare_types::contracts::Prediction::id_for`] without the formatting machinery: the same length-prefixed parts
/// hashed with XXH3-128 in one shot (equal to the streaming hash of their concatenation)
/// and written as 32 lowercase hex digits. A unit test checks that both agree.
fn prediction_id(system: &SystemId, station: &str, as_of: i64, horizon_minutes: u32) -> EventId {
    let parts: [&[u8]; 5] = [
        b"prediction",
        system.as_str().as_bytes(),
        station.as_bytes(),
        &as_of.to_le_bytes(),
        &horizon_minutes.to_le_bytes(),
    ];
    let mut buf = [0u8; 256];
    let total: usize = parts.iter().map(|p| 8 + p.len()).sum();
    let mut heap = Vec::new();
    let bytes: &mut [u8] = if total <= buf.len() {
        &mut buf[..total]
    } else {
        heap.resize(total, 0);
        &mut heap
    };
    let mut at = 0;
    for p in parts {
        bytes[at..at + 8].copy_from_slice(&(p.len() as u64).to_le_bytes());
        bytes[at + 8..at + 8 + p.len()].copy_from_slice(p);
        at += 8 + p.len();
    }
    EventId::from_hex128(xxhash_rust::xxh3::xxh3_128(bytes))
}

/// The feature vector of station `idx` at `t` (its history already at `t`).
fn make_vector(
    sys: &SystemState,
    local_time: &[Option<f32>; 5],
    idx: usize,
    t: i64,
    schema: &FeatureSchema,
) -> FeatureVector {
    let subject = Subject {
        station: &sys.stations[idx],
        id: sys.ids.id(idx),
        neighbours: sys.neighbours_of(idx),
    };
    vector_of(sys, subject, local_time, t, schema)
}

/// The station a row is about: one of the system's, or (scored on arrival) a copy with
/// reports the system has not applied yet.
struct Subject<'a> {
    station: &'a Station,
    id: StationId,
    neighbours: &'a [u32],
}

fn vector_of(
    sys: &SystemState,
    subject: Subject<'_>,
    local_time: &[Option<f32>; 5],
    t: i64,
    schema: &FeatureSchema,
) -> FeatureVector {
    let st = subject.station;
    let ctx = FeatureContext {
        local_time,
        glances: &sys.glances,
        neighbours: subject.neighbours,
        weather: sys
            .weather
            .iter()
            .rev()
            .find(|w| w.observed_at.millis() + 60 * MIN_MS <= t),
        tz: sys.tz,
        profile_span_ms: i64::from(schema.horizon_minutes) * MIN_MS,
    };
    FeatureVector {
        system_id: sys.id.clone(),
        station_id: subject.id,
        as_of: Timestamp(t),
        schema_id: schema.id().clone(),
        values: features::compute(st, &ctx, t, schema.len()),
    }
}

fn make_row(
    sys: &SystemState,
    local_time: &[Option<f32>; 5],
    idx: usize,
    t: i64,
    trigger: PredictionTrigger,
    schema: &FeatureSchema,
    config: &ProcessorConfig,
) -> FeatureRow {
    row_of(
        make_vector(sys, local_time, idx, t, schema),
        trigger,
        config,
    )
}

fn row_of(
    vector: FeatureVector,
    trigger: PredictionTrigger,
    config: &ProcessorConfig,
) -> FeatureRow {
    FeatureRow {
        prediction_id: prediction_id(
            &vector.system_id,
            vector.station_id.as_str(),
            vector.as_of.millis(),
            config.horizon_minutes,
        ),
        vector,
        trigger,
        horizon_minutes: config.horizon_minutes,
        revision: 0,
    }
}

#[cfg(test)]
mod tests {
    use bikeshare_testkit::envelopes::status_envelope;
    use bikeshare_types::contracts::Prediction;

    use super::*;

    #[test]
    fn values_hash_is_the_streaming_hash_of_the_values() {
        let values: Vec<Option<f32>> = (0..300)
            .map(|i| (i % 7 != 0).then_some(i as f32 * 0.37))
            .collect();
        for len in [0, 1, 88, 128, 129, 300] {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for v in &values[..len] {
                match v {
                    Some(x) => {
                        h.update(&[1]);
                        h.update(&x.to_bits().to_le_bytes());
                    }
                    None => h.update(&[0]),
                }
            }
            assert_eq!(values_hash(&values[..len]), h.digest(), "{len} values");
        }
        assert_ne!(values_hash(&[None]), values_hash(&[Some(0.0)]));
    }

    fn status(system: &str, station: &str, t: i64, bikes: u32) -> Envelope {
        status_envelope(system, "test", station, t, bikes, 20 - bikes)
    }

    fn weather(system: &str, hour_ms: i64, temperature_c: f64) -> Envelope {
        let obs = WeatherObs {
            weather_station: "72509".into(),
            observed_at: Timestamp(hour_ms),
            temperature_c: Some(temperature_c),
            precipitation_mm: None,
            wind_speed_kmh: None,
            humidity_pct: None,
            condition: None,
        };
        let t = Timestamp(hour_ms);
        Envelope::new(SystemId::new(system), "weather", t, t, Event::Weather(obs))
    }

    fn rejected(out: &[Emitted]) -> Vec<RejectReason> {
        out.iter()
            .filter_map(|e| match e {
                Emitted::Rejected { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    /// Weather behind the station reports' watermark (a producer's look-back, a restart,
    /// an hourly poll during catch-up) is a side input that later rows read, not a late
    /// event; the same observation again is a duplicate.
    #[test]
    fn weather_behind_the_watermark_serves_later_rows() {
        const H: i64 = 60 * MIN_MS;
        let t0 = 1_700_000_000_000 / H * H;
        let mut p = Processor::new(ProcessorConfig::default());
        let mut out = Vec::new();
        p.process(status("a", "s1", t0 + 3 * H, 5), &mut out);
        out.clear();
        p.process(weather("a", t0, 3.0), &mut out);
        p.process(weather("a", t0 + H, 4.0), &mut out);
        assert_eq!(rejected(&out), [], "{out:?}");
        p.process(weather("a", t0 + H, 4.0), &mut out);
        assert_eq!(rejected(&out), [RejectReason::Duplicate]);
        let held: Vec<i64> = p.systems[&SystemId::new("a")]
            .weather
            .iter()
            .map(|w| w.observed_at.millis())
            .collect();
        assert_eq!(held, [t0, t0 + H], "kept in hour order");
        // Hours older than every kept one of a full buffer can serve no row.
        for h in 2..6 {
            p.process(weather("a", t0 + h * H, 5.0), &mut out);
        }
        out.clear();
        p.process(weather("a", t0 - H, 1.0), &mut out);
        assert_eq!(rejected(&out), [RejectReason::Superseded]);
        // A station report after them is scored with the newest hour that has ended (the
        // late-arriving t0 + 2h, at 5 °C).
        out.clear();
        p.process(status("a", "s1", t0 + 3 * H + 30_000, 6), &mut out);
        p.drain(&mut out);
        let temperature = p.schema.index("temperature_c").unwrap();
        let rows: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Emitted::Row(r) => Some(r.vector.values[temperature]),
                _ => None,
            })
            .collect();
        assert!(!rows.is_empty(), "{out:?}");
        assert!(rows.iter().all(|v| *v == Some(5.0)), "{rows:?}");
    }

    /// Live quality joins a label with the *last* row of its prediction id: a correction
    /// (the update trigger's on-time row, same id, later) replaces the early row's scores.
    #[test]
    fn live_quality_keeps_the_last_row_of_a_prediction_id() {
        let t0 = 1_700_000_000_000;
        // Lateness 0: the report is applied (and scored) at once.
        let mut p = Processor::new(ProcessorConfig {
            lateness_ms: 0,
            ..ProcessorConfig::default()
        });
        let mut out = Vec::new();
        p.process(status("a", "s1", t0, 5), &mut out);
        let row = out
            .iter()
            .find_map(|e| match e {
                Emitted::Row(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        let scored = |p_empty: f32| {
            let mut pred = bikeshare_runner_free_prediction(&row);
            pred.p_empty = p_empty;
            pred
        };
        p.record_prediction(&scored(0.1));
        p.record_prediction(&scored(0.9));
        let st = &p.systems[&SystemId::new("a")].stations[0];
        assert_eq!(
            st.scores.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            [(t0, 0.9)]
        );
    }

    fn bikeshare_runner_free_prediction(row: &FeatureRow) -> Prediction {
        Prediction {
            schema_version: 2,
            prediction_id: row.prediction_id.clone(),
            system_id: row.vector.system_id.clone(),
            station_id: row.vector.station_id.clone(),
            as_of: row.vector.as_of,
            horizon_minutes: row.horizon_minutes,
            p_empty: 0.0,
            p_full: 0.0,
            model: bikeshare_types::contracts::ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            feature_schema_id: row.vector.schema_id.clone(),
            trigger: row.trigger,
            scored_by: bikeshare_types::contracts::ScoredBy::InProcess,
            revision: row.revision,
        }
    }

    /// A checkpoint taken without the update trigger resumes with it (the app's default
    /// changed to on; a bounded `process --until-caught-up` runs without it), and back: the
    /// trigger changes when rows are emitted, not the state.
    /// The last row of every prediction id, and the other emitted items in order.
    fn answers(out: &[Emitted]) -> (BTreeMap<String, FeatureRow>, Vec<Emitted>) {
        let mut rows = BTreeMap::new();
        let mut rest = Vec::new();
        for e in out {
            match e {
                Emitted::Row(r) => {
                    rows.insert(r.prediction_id.to_string(), r.clone());
                }
                other => rest.push(other.clone()),
            }
        }
        (rows, rest)
    }

    #[test]
    fn a_snapshot_resumes_with_the_update_trigger_switched() {
        let t0 = 1_700_000_000_000;
        let off = ProcessorConfig::default();
        let on = ProcessorConfig {
            score_on_arrival: true,
            ..ProcessorConfig::default()
        };
        for (from, to) in [(off.clone(), on.clone()), (on, off)] {
            let mut p = Processor::new(from);
            let mut out = Vec::new();
            for m in 0..5 {
                p.process(status("a", "s1", t0 + m * MIN_MS, 5 + m as u32), &mut out);
            }
            let before = out.clone();
            let mut resumed = Processor::new(to.clone());
            resumed.absorb(&p.snapshot().unwrap()).unwrap();
            // The next report is scored as the resumed config says.
            out.clear();
            resumed.process(status("a", "s1", t0 + 5 * MIN_MS, 4), &mut out);
            let early = out.iter().any(
                |e| matches!(e, Emitted::Row(r) if r.vector.as_of.millis() == t0 + 5 * MIN_MS),
            );
            assert_eq!(early, to.score_on_arrival, "{out:?}");
            // And the answers are those of a processor that ran with `to` from the start: the
            // last row of every prediction id, and everything else emitted, are the same (the
            // rebuilt buffer index holds the reports still buffered: an early row reads them).
            let mut all = before;
            all.extend(out.iter().cloned());
            let mut native = Processor::new(to.clone());
            let mut native_all = Vec::new();
            for m in 0..6 {
                let bikes = if m < 5 { 5 + m as u32 } else { 4 };
                native.process(status("a", "s1", t0 + m * MIN_MS, bikes), &mut native_all);
            }
            for m in 6..12 {
                let e = status("a", "s1", t0 + m * MIN_MS, 9 - (m as u32 % 4));
                resumed.process(e.clone(), &mut all);
                native.process(e, &mut native_all);
            }
            assert_eq!(answers(&all), answers(&native_all));
            // Reports after the snapshot are scored alike when they arrive too (their first
            // row), which needs the buffered reports the rebuilt index holds.
            let first = |out: &[Emitted]| {
                let mut m = BTreeMap::new();
                for e in out {
                    if let Emitted::Row(r) = e
                        && r.vector.as_of.millis() >= t0 + 5 * MIN_MS
                    {
                        m.entry(r.prediction_id.to_string())
                            .or_insert_with(|| r.clone());
                    }
                }
                m
            };
            assert_eq!(first(&all), first(&native_all));
        }
        // Any other difference is still refused.
        let mut other = Processor::new(ProcessorConfig {
            lateness_ms: 0,
            ..ProcessorConfig::default()
        });
        let p = Processor::new(ProcessorConfig::default());
        assert!(other.absorb(&p.snapshot().unwrap()).is_err());
    }

    /// A checkpoint holds the station ids as it did when they were one packed string (decision
    /// 102): the same bytes written, and an old checkpoint's bytes read to the same ids.
    #[test]
    fn station_ids_keep_their_checkpoint_form() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Old {
            text: String,
            ends: Vec<u32>,
        }
        let names = ["S1", "", "é-42", "A32011"];
        let mut ids = StationIds::default();
        for n in names {
            ids.push(&StationId::new(n));
        }
        let old = Old {
            text: names.concat(),
            ends: vec![2, 2, 7, 13],
        };
        let written = rmp_serde::to_vec_named(&ids).unwrap();
        assert_eq!(written, rmp_serde::to_vec_named(&old).unwrap());
        let read: StationIds = rmp_serde::from_slice(&written).unwrap();
        assert_eq!(read, ids);
        assert_eq!((0..4).map(|i| read.get(i)).collect::<Vec<_>>(), names);
        // Ends out of order read as they did: an empty id where the range is not in the text.
        let bad = rmp_serde::to_vec_named(&Old {
            text: "abc".into(),
            ends: vec![3, 1, 9],
        })
        .unwrap();
        let read: StationIds = rmp_serde::from_slice(&bad).unwrap();
        assert_eq!(
            (0..3).map(|i| read.get(i)).collect::<Vec<_>>(),
            ["abc", "", ""]
        );
    }

    #[test]
    fn prediction_ids_equal_the_contract() {
        let long = "x".repeat(300);
        for (system, station, as_of, h) in [
            ("a", "s1", 1_700_000_000_000i64, 30u32),
            ("bluebikes", "A32011", -5, 0),
            ("", "", 0, 1),
            ("sys", long.as_str(), i64::MAX, u32::MAX),
        ] {
            let system = SystemId::new(system);
            assert_eq!(
                prediction_id(&system, station, as_of, h),
                Prediction::id_for(&system, &StationId::new(station), Timestamp(as_of), h)
            );
        }
    }

    #[test]
    fn split_snapshots_absorbed_give_the_same_state() {
        let config = ProcessorConfig::default();
        let mut p = Processor::new(config.clone());
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        for m in 0..50 {
            for (k, system) in ["a", "b", "c"].iter().enumerate() {
                for s in 0..3 {
                    let bikes = ((m * 7 + s * 3 + k) % 20) as u32;
                    let t = t0 + m as i64 * MIN_MS + s as i64 * 1000;
                    p.process(status(system, &format!("s{s}"), t, bikes), &mut out);
                }
            }
        }
        assert!(p.stats().labels > 0 && p.stats().rows > 0);
        let left = p.snapshot_systems(|id| id.as_str() == "b").unwrap();
        let right = p.snapshot_systems(|id| id.as_str() != "b").unwrap();
        let mut merged = Processor::new(config);
        merged.absorb(&left).unwrap();
        merged.absorb(&right).unwrap();
        assert_eq!(merged, p);
        assert_eq!(merged.stats(), p.stats());
        assert!(
            merged.absorb(&left).is_err(),
            "a system already held is refused"
        );
        assert_eq!(merged, p, "a refused absorb changes nothing");
        let mut other = Processor::new(ProcessorConfig {
            window_minutes: vec![5],
            ..ProcessorConfig::default()
        });
        assert!(other.absorb(&left).is_err(), "another config is refused");
        // Giving a partition away and taking it back restores the same state.
        assert_eq!(merged.release_systems(|id| id.as_str() == "b"), 1);
        assert_eq!(
            merged
                .system_ids()
                .map(SystemId::as_str)
                .collect::<Vec<_>>(),
            ["a", "c"]
        );
        merged.absorb(&left).unwrap();
        assert_eq!(merged, p);
    }
}
