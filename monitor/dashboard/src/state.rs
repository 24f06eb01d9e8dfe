//! What the dashboard shows, maintained by reading the streams like any other consumer.
//!
//! [`follow`] reads four streams from their oldest retained record and keeps:
//! - `events`: station names and coordinates (`station_info`), time zones, and per-system
//!   data freshness (newest event time and ingest time, heartbeats included);
//! - `predictions`: the latest prediction and the risk trend of every station, throughput;
//! - `labels`: joined with the predictions they name, rolling live quality (ROC-AUC, Brier,
//!   calibration) of `p_empty` and `p_full` over the last 6 hours of event time;
//! - `dead-letters`: counts by rule.
//!
//! Beside the latest figures it keeps bounded history, so the page needs no external store:
//! each station's recent reports (bikes, docks) and predictions with their labels
//! ([`Settings::history_ms`], at most [`POINTS_KEPT`] each), and a ring of process-wide
//! samples ([`HistorySample`], one every [`Settings::sample_every_ms`], `history_ms` of them)
//! taken by [`sample`], which also reads the process's own metrics (per-shard lag,
//! checkpoint age, alerts firing) through a [`MetricsSource`].
//!
//! Every change to a station bumps a version ([`DashboardState::version`]), so the page asks
//! only for the stations changed since the version it holds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bikeshare_stream::{ShardCursor, StartPosition, StreamReader};
use bikeshare_types::contracts::{DeadLetter, Envelope, Event, Label, ModelRef, Prediction};
use bikeshare_types::{EventId, SharedClock, StationId, SystemId, Timestamp};
use dashmap::DashMap;
use serde::Serialize;
use smart_default::SmartDefault;

use bikeshare_stream_processor::quality::{LiveQuality, QualityConfig};

use crate::freshness::FeedSeen;

/// Report and prediction points kept per station (each also bounded by
/// [`Settings::history_ms`]).
pub const POINTS_KEPT: usize = 96;
/// Alert episodes kept for the "recent" list.
pub const RECENT_ALERTS: usize = 50;

/// A station: its system and id.
pub type StationKey = (SystemId, StationId);

/// A station's static description.
#[derive(Debug, Clone, Serialize)]
pub struct StationMeta {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub capacity: Option<u32>,
}

/// One prediction of a station, and what happened once its label arrived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PredictionPoint {
    pub as_of: i64,
    pub p_empty: f32,
    pub p_full: f32,
    pub went_empty: Option<bool>,
    pub went_full: Option<bool>,
}

/// The newest prediction of a station and its previous risk.
#[derive(Debug, Clone)]
pub struct StationRisk {
    pub prediction: Prediction,
    pub previous_risk: Option<f32>,
    /// Recent predictions, oldest first.
    pub history: VecDeque<PredictionPoint>,
}

/// One station report: event time (ms), bikes and docks available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReportPoint {
    pub t: i64,
    pub bikes: u32,
    pub docks: Option<u32>,
}

/// A station's newest report and its recent ones.
#[derive(Debug, Clone, Default)]
pub struct StationReports {
    pub latest: Option<ReportPoint>,
    pub is_renting: bool,
    pub is_returning: bool,
    /// Recent reports, oldest first.
    pub history: VecDeque<ReportPoint>,
}

/// What the dashboard keeps and how long.
#[derive(Debug, Clone, Copy, PartialEq, SmartDefault)]
pub struct Settings {
    /// How much history (event time for stations, wall time for samples) is kept.
    #[default(6 * Timestamp::HOUR_MS)]
    pub history_ms: i64,
    /// One process-wide sample this often.
    #[default(10_000)]
    pub sample_every_ms: u64,
    /// A prediction older than this behind its system's newest prediction is stale (its
    /// station stopped reporting): not in the top-N, listed apart, grey on the map.
    #[default(30 * Timestamp::MINUTE_MS)]
    pub stale_after_ms: i64,
}

/// One sample of the process's own metrics (what `/metrics` shows).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Reads the process's metrics now (in `up`: its Prometheus recorder, rendered and parsed).
pub type MetricsSource = Arc<dyn Fn() -> Vec<MetricSample> + Send + Sync>;

/// A [`MetricsSource`] the state can hold.
#[derive(Clone)]
pub struct MetricsReader(pub MetricsSource);

impl std::fmt::Debug for MetricsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsReader")
    }
}

/// An alert rule as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRuleInfo {
    pub name: String,
    pub severity: String,
    pub summary: String,
    /// `metric op threshold for N s`, for people.
    pub condition: String,
}

/// One episode of an alert: from firing to resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEpisode {
    pub rule: String,
    pub severity: Option<String>,
    pub summary: Option<String>,
    pub started_ms: i64,
    pub resolved_ms: Option<i64>,
}

/// Alerts firing now and recently, from `bikeshare_alerts_firing`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertsState {
    /// Whether the alert engine reported at all (the gauge appears at its first evaluation).
    pub seen: bool,
    pub firing: Vec<AlertEpisode>,
    /// Resolved episodes, newest first.
    pub recent: VecDeque<AlertEpisode>,
}

/// Lag of one shard the processor reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardLag {
    pub stream: String,
    pub shard: String,
    pub millis_behind_latest: Option<f64>,
    pub iterator_age_s: Option<f64>,
}

/// Operational figures read from the metrics at the last sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpsFigures {
    pub shards: Vec<ShardLag>,
    pub checkpoint_age_s: Option<f64>,
}

/// This process's start and the earlier starts of the same job on its data directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    pub command: String,
    /// Earlier starts of the same command on this data directory.
    pub restarts: u64,
    pub previous_start_ms: Option<i64>,
}

/// One process-wide sample for the history charts (times in ms since the epoch, wall
/// clock; `None` when the figure did not exist then).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistorySample {
    pub t: i64,
    pub events_per_s: f64,
    pub predictions_per_s: f64,
    /// `MillisBehindLatest`, the largest over the processor's shards.
    pub millis_behind_latest: Option<f64>,
    /// Per `stream/shard`.
    pub shard_lag_ms: BTreeMap<String, f64>,
    pub checkpoint_age_s: Option<f64>,
    /// Processing latency (arrival to outputs published) p50 and p99, ms.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Dead letters so far per rule.
    pub dead_letters: BTreeMap<String, u64>,
    /// The watermark shown ([`DashboardState::watermark_ms`]) and its lag behind `t`.
    pub newest_event_ms: Option<i64>,
    pub watermark_lag_s: Option<f64>,
    /// The newest prediction's `as_of` (ms): in a replay it moves while reports stand still.
    pub newest_prediction_ms: Option<i64>,
    /// Per `system/target`: live quality at this moment.
    pub quality: BTreeMap<String, QualityPoint>,
}

/// Live quality of one system and target at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QualityPoint {
    pub labelled: usize,
    pub positives: usize,
    pub pr_auc: Option<f64>,
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
}

/// Freshness of one system's data.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Freshness {
    pub newest_event_time: Timestamp,
    pub newest_ingest_time: Timestamp,
    pub events: u64,
}

/// Counts over a sliding minute of arrival times, for rates.
#[derive(Debug, Default)]
pub struct RateCounter {
    times: VecDeque<i64>,
}

impl RateCounter {
    pub fn add(&mut self, at_ms: i64) {
        self.times.push_back(at_ms);
        while self.times.front().is_some_and(|&t| t < at_ms - 60_000) {
            self.times.pop_front();
        }
    }
    /// Records in the minute before `now_ms`.
    pub fn per_minute(&self, now_ms: i64) -> usize {
        self.times.iter().filter(|&&t| t >= now_ms - 60_000).count()
    }
}

/// Everything the page shows.
#[derive(Debug)]
pub struct DashboardState {
    pub stations: DashMap<(SystemId, StationId), StationMeta>,
    pub risk: DashMap<(SystemId, StationId), StationRisk>,
    /// The newest report of each station, and its recent ones.
    pub reports: DashMap<StationKey, StationReports>,
    pub freshness: DashMap<SystemId, Freshness>,
    pub dead_letters: Mutex<BTreeMap<String, u64>>,
    /// Live quality per system, joined exactly as the processor does.
    pub quality: Mutex<BTreeMap<SystemId, LiveQuality>>,
    pub quality_config: QualityConfig,
    /// Predictions per `scored_by` (`in_process`, `endpoint`, `fallback`, `unavailable`).
    pub scored_by: Mutex<BTreeMap<&'static str, u64>>,
    /// Per (system, feed): newest event time and events seen.
    pub feeds: DashMap<(SystemId, String), FeedSeen>,
    pub model: Mutex<Option<ModelRef>>,
    pub events_rate: Mutex<RateCounter>,
    pub predictions_rate: Mutex<RateCounter>,
    pub newest_prediction_arrival: Mutex<Option<Timestamp>>,
    /// The newest `as_of` of any prediction seen (ms), for long polling.
    pub newest_as_of: std::sync::atomic::AtomicI64,
    /// The newest prediction `as_of` (ms) per system: staleness is judged against it.
    pub newest_as_of_by_system: DashMap<SystemId, i64>,
    pub clock: SharedClock,
    pub settings: Settings,
    pending: Mutex<HashMap<EventId, (f32, f32, i64)>>,
    /// Bumped at every change to a station; `changed` holds each station's last bump. Starts at
    /// the process's start time in ms, so a page kept open across a restart holds a version
    /// below every one of the new process (it gets every station again) or, after a very busy
    /// earlier process, above its current one (answered in full, see `server`).
    version: AtomicU64,
    changed: DashMap<StationKey, u64>,
    events_total: AtomicU64,
    predictions_total: AtomicU64,
    /// The runner's live counters when the processor runs in this process (`up`).
    pub runner: std::sync::OnceLock<Arc<bikeshare_runner::RunnerStats>>,
    /// The latest drift check (`rows`, `window_end`, `violations`, `top` distances), set by
    /// the drift task of the job this dashboard runs in.
    pub drift: Mutex<Option<serde_json::Value>>,
    /// The process's own metrics (per-shard lag, checkpoint age, alerts firing).
    pub metrics: OnceLock<MetricsReader>,
    /// The alert rules the process evaluates.
    pub alert_rules: OnceLock<Vec<AlertRuleInfo>>,
    pub alerts: Mutex<AlertsState>,
    pub ops: Mutex<OpsFigures>,
    /// Process-wide samples, oldest first.
    pub history: Mutex<VecDeque<HistorySample>>,
    /// When this state was created (the process's start, near enough).
    pub started_at: Timestamp,
    pub job: OnceLock<JobInfo>,
    /// Where this process serves `/metrics`, when it does.
    pub metrics_url: OnceLock<String>,
}

/// Predictions waiting for their label in the dashboard's own quality join, at most.
const MAX_PENDING: usize = 500_000;

impl DashboardState {
    /// A state whose live quality uses `quality_config` (the processor's `[processor.quality]`,
    /// so both compute the same figures).
    pub fn new(clock: SharedClock, quality_config: QualityConfig) -> Arc<Self> {
        Self::with_settings(clock, quality_config, Settings::default())
    }

    /// A state keeping history as `settings` say.
    pub fn with_settings(
        clock: SharedClock,
        quality_config: QualityConfig,
        settings: Settings,
    ) -> Arc<Self> {
        let started_at = clock.now();
        Arc::new(Self {
            stations: DashMap::new(),
            risk: DashMap::new(),
            reports: DashMap::new(),
            freshness: DashMap::new(),
            dead_letters: Mutex::new(BTreeMap::new()),
            quality: Mutex::new(BTreeMap::new()),
            quality_config,
            scored_by: Mutex::new(BTreeMap::new()),
            feeds: DashMap::new(),
            model: Mutex::new(None),
            events_rate: Mutex::new(RateCounter::default()),
            predictions_rate: Mutex::new(RateCounter::default()),
            newest_prediction_arrival: Mutex::new(None),
            newest_as_of: std::sync::atomic::AtomicI64::new(i64::MIN),
            newest_as_of_by_system: DashMap::new(),
            started_at,
            clock,
            settings,
            pending: Mutex::new(HashMap::new()),
            version: AtomicU64::new(u64::try_from(started_at.millis()).unwrap_or(0)),
            changed: DashMap::new(),
            events_total: AtomicU64::new(0),
            predictions_total: AtomicU64::new(0),
            runner: std::sync::OnceLock::new(),
            drift: Mutex::new(None),
            metrics: OnceLock::new(),
            alert_rules: OnceLock::new(),
            alerts: Mutex::new(AlertsState::default()),
            ops: Mutex::new(OpsFigures::default()),
            history: Mutex::new(VecDeque::new()),
            job: OnceLock::new(),
            metrics_url: OnceLock::new(),
        })
    }

    /// The version of the newest station change (0: none yet).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Stations changed after `since`, with the version each changed at.
    pub fn changed_since(&self, since: u64) -> Vec<(StationKey, u64)> {
        self.changed
            .iter()
            .filter(|e| *e.value() > since)
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    /// The watermark shown: per system the newest station report's event time (other feeds
    /// such as weather or heartbeats can be current while reports lag), else its newest
    /// event; over systems the oldest. Milliseconds.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.freshness
            .iter()
            .map(|f| {
                self.feeds
                    .get(&(f.key().clone(), "station_status".to_owned()))
                    .map_or(f.value().newest_event_time.millis(), |e| e.newest.millis())
            })
            .min()
    }

    /// Stations known (from their description, a report or a prediction).
    pub fn station_count(&self) -> usize {
        self.changed.len()
    }

    fn touch(&self, key: StationKey) {
        let v = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.insert(key, v);
    }

    /// Whether a prediction made at `as_of` in `system` is stale: older than the system's
    /// newest prediction by more than [`Settings::stale_after_ms`] (its station stopped
    /// reporting). Judged in event time, so a replay of old data is not all stale.
    pub fn is_stale(&self, system: &SystemId, as_of: Timestamp) -> bool {
        self.newest_as_of_by_system
            .get(system)
            .is_some_and(|n| *n - as_of.millis() > self.settings.stale_after_ms)
    }

    /// Applies one record of the `events` stream (public for tests and benchmarks that fill
    /// a state without a stream).
    pub fn apply_event(&self, env: &Envelope, arrival: Timestamp) {
        self.on_event(env, arrival);
    }

    /// Applies one prediction.
    pub fn apply_prediction(&self, p: Prediction, arrival: Timestamp) {
        self.on_prediction(p, arrival);
    }

    /// Applies one label.
    pub fn apply_label(&self, l: &Label) {
        self.on_label(l);
    }

    fn on_event(&self, env: &Envelope, arrival: Timestamp) {
        if let Ok(mut r) = self.events_rate.lock() {
            r.add(arrival.millis());
        }
        let mut f = self.freshness.entry(env.system_id.clone()).or_default();
        f.events += 1;
        f.newest_event_time = f.newest_event_time.max(env.event_time);
        f.newest_ingest_time = f.newest_ingest_time.max(env.ingest_time);
        drop(f);
        let feed = crate::freshness::feed_name(&env.event).to_owned();
        self.feeds
            .entry((env.system_id.clone(), feed))
            .and_modify(|seen| seen.note(env))
            .or_insert_with(|| FeedSeen::new(env));
        self.events_total.fetch_add(1, Ordering::Relaxed);
        match &env.event {
            Event::StationInfo(info) => {
                let key = (env.system_id.clone(), info.station_id.clone());
                let meta = StationMeta {
                    name: info.name.clone(),
                    lat: info.lat,
                    lon: info.lon,
                    capacity: info.capacity,
                };
                let changed = self.stations.get(&key).is_none_or(|m| {
                    m.name != meta.name
                        || m.lat != meta.lat
                        || m.lon != meta.lon
                        || m.capacity != meta.capacity
                });
                if changed {
                    self.stations.insert(key.clone(), meta);
                    self.touch(key);
                }
            }
            Event::StationStatus(s) => {
                let key = (env.system_id.clone(), s.station_id.clone());
                let point = ReportPoint {
                    t: s.last_reported.millis(),
                    bikes: s.num_bikes_available,
                    docks: s.num_docks_available,
                };
                let mut r = self.reports.entry(key.clone()).or_default();
                if r.latest.is_some_and(|l| l.t > point.t) {
                    return; // an older report arriving late: keep the newest
                }
                r.latest = Some(point);
                r.is_renting = s.is_renting;
                r.is_returning = s.is_returning;
                if r.history.back().is_none_or(|b| b.t != point.t) {
                    r.history.push_back(point);
                }
                let cutoff = point.t.saturating_sub(self.settings.history_ms);
                while r
                    .history
                    .front()
                    .is_some_and(|f| f.t < cutoff || r.history.len() > POINTS_KEPT)
                {
                    r.history.pop_front();
                }
                drop(r);
                self.touch(key);
            }
            _ => {}
        }
    }

    fn on_prediction(&self, p: Prediction, arrival: Timestamp) {
        if let Ok(mut r) = self.predictions_rate.lock() {
            r.add(arrival.millis());
        }
        self.predictions_total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut n) = self.newest_prediction_arrival.lock() {
            *n = Some(n.map_or(arrival, |x| x.max(arrival)));
        }
        if let Ok(mut by) = self.scored_by.lock() {
            *by.entry(p.scored_by.as_str()).or_default() += 1;
        }
        if !p.is_available() {
            // No probabilities (the endpoint failed, fallback "unavailable"): nothing to draw
            // or to score; the station keeps its last usable prediction.
            return;
        }
        if let Ok(mut m) = self.model.lock() {
            *m = Some(p.model.clone());
        }
        self.newest_as_of
            .fetch_max(p.as_of.millis(), std::sync::atomic::Ordering::Relaxed);
        {
            let mut n = self
                .newest_as_of_by_system
                .entry(p.system_id.clone())
                .or_insert(p.as_of.millis());
            *n = (*n).max(p.as_of.millis());
        }
        if let Ok(mut pending) = self.pending.lock()
            && self.quality_config.sampled(p.prediction_id.as_str())
        {
            pending.insert(
                p.prediction_id.clone(),
                (p.p_empty, p.p_full, p.as_of.millis()),
            );
            // Labels come at most ~35 minutes after their prediction: keep 2 hours, and never
            // more than MAX_PENDING (the oldest go first; a clean-up leaves at most half, so
            // its cost is spread over the inserts that follow).
            if pending.len() > MAX_PENDING {
                let newest = p.as_of.millis();
                pending.retain(|_, v| v.2 >= newest - 2 * 3_600_000);
                if pending.len() > MAX_PENDING / 2 {
                    let mut times: Vec<i64> = pending.values().map(|v| v.2).collect();
                    let k = times.len() - MAX_PENDING / 2;
                    let (_, cut, _) = times.select_nth_unstable(k);
                    let cut = *cut;
                    pending.retain(|_, v| v.2 >= cut);
                }
            }
        }
        let key = (p.system_id.clone(), p.station_id.clone());
        let point = PredictionPoint {
            as_of: p.as_of.millis(),
            p_empty: p.p_empty,
            p_full: p.p_full,
            went_empty: None,
            went_full: None,
        };
        let history_ms = self.settings.history_ms;
        match self.risk.entry(key.clone()) {
            dashmap::Entry::Occupied(mut o) => {
                let r = o.get_mut();
                let newer = p.as_of >= r.prediction.as_of;
                // A re-scored prediction (same as_of) replaces its point; an older one
                // arriving late goes into the history only.
                match r.history.iter().rposition(|h| h.as_of <= point.as_of) {
                    Some(i) if r.history[i].as_of == point.as_of => {
                        let (we, wf) = (r.history[i].went_empty, r.history[i].went_full);
                        r.history[i] = PredictionPoint {
                            went_empty: we,
                            went_full: wf,
                            ..point
                        };
                    }
                    Some(i) => r.history.insert(i + 1, point),
                    None => r.history.push_front(point),
                }
                let newest = r.history.back().map_or(point.as_of, |b| b.as_of);
                while r.history.front().is_some_and(|f| {
                    f.as_of < newest.saturating_sub(history_ms) || r.history.len() > POINTS_KEPT
                }) {
                    r.history.pop_front();
                }
                if newer {
                    if p.as_of > r.prediction.as_of {
                        r.previous_risk = Some(r.prediction.p_empty.max(r.prediction.p_full));
                    }
                    r.prediction = p;
                }
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(StationRisk {
                    prediction: p,
                    previous_risk: None,
                    history: VecDeque::from([point]),
                });
            }
        }
        self.touch(key);
    }

    fn on_label(&self, l: &Label) {
        if let Some(mut r) = self
            .risk
            .get_mut(&(l.system_id.clone(), l.station_id.clone()))
            && let Some(h) = r
                .history
                .iter_mut()
                .rev()
                .find(|h| h.as_of == l.as_of.millis())
        {
            h.went_empty = Some(l.went_empty);
            h.went_full = Some(l.went_full);
        }
        let Some((pe, pf, _)) = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&l.prediction_id))
        else {
            return;
        };
        if let Ok(mut q) = self.quality.lock() {
            q.entry(l.system_id.clone()).or_default().push(
                (l.as_of.millis(), pe, pf, l.went_empty, l.went_full),
                (l.empty_at_as_of, l.full_at_as_of),
                &self.quality_config,
            );
        }
    }

    fn on_dead_letter(&self, d: &DeadLetter) {
        if let Ok(mut m) = self.dead_letters.lock() {
            *m.entry(d.rule.clone()).or_default() += 1;
        }
    }
}

/// The streams the dashboard reads.
#[derive(Debug, Clone)]
pub struct Sources {
    pub events: Arc<dyn StreamReader>,
    pub predictions: Arc<dyn StreamReader>,
    pub labels: Arc<dyn StreamReader>,
    pub dead_letters: Arc<dyn StreamReader>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Events,
    Predictions,
    Labels,
    DeadLetters,
}

/// Reads the streams into `state` until `stop` resolves.
pub async fn follow(
    state: Arc<DashboardState>,
    sources: Sources,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut cursors: Vec<(Kind, Box<dyn ShardCursor>)> = Vec::new();
    for (kind, reader) in [
        (Kind::Events, &sources.events),
        (Kind::Predictions, &sources.predictions),
        (Kind::Labels, &sources.labels),
        (Kind::DeadLetters, &sources.dead_letters),
    ] {
        match reader.list_shards().await {
            Ok(shards) => {
                for s in shards {
                    match reader.open(&s.id, StartPosition::TrimHorizon).await {
                        Ok(c) => cursors.push((kind, c)),
                        Err(e) => tracing::warn!(error = %e, "dashboard: cannot open a shard"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, ?kind, "dashboard: cannot list shards"),
        }
    }
    loop {
        let mut got = 0;
        for (kind, c) in &mut cursors {
            let Ok(batch) = c.next_batch(2000).await else {
                continue;
            };
            got += batch.records.len();
            for rec in batch.records {
                match kind {
                    Kind::Events => {
                        if let Ok(env) = Envelope::decode(&rec.data) {
                            state.on_event(&env, rec.arrival);
                        }
                    }
                    Kind::Predictions => {
                        if let Ok(p) = serde_json::from_slice::<Prediction>(&rec.data) {
                            state.on_prediction(p, rec.arrival);
                        }
                    }
                    Kind::Labels => {
                        if let Ok(l) = serde_json::from_slice::<Label>(&rec.data) {
                            state.on_label(&l);
                        }
                    }
                    Kind::DeadLetters => {
                        if let Ok(d) = serde_json::from_slice::<DeadLetter>(&rec.data) {
                            state.on_dead_letter(&d);
                        }
                    }
                }
            }
        }
        if got == 0 {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Takes one [`HistorySample`] every [`Settings::sample_every_ms`] (and reads the metrics:
/// shard lag, checkpoint age, alerts) until `stop` resolves.
pub async fn sample(state: Arc<DashboardState>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_millis(
        state.settings.sample_every_ms.max(100),
    ));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(i64, u64, u64)> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => {}
        }
        last = Some(state.take_sample(last));
    }
}

impl DashboardState {
    /// Reads the metrics, updates alerts and ops figures, and appends one history sample.
    /// `last` is the previous call's `(time, events, predictions)`, for rates; returns this
    /// call's.
    pub fn take_sample(&self, last: Option<(i64, u64, u64)>) -> (i64, u64, u64) {
        let now = self.clock.now().millis();
        let events = self.events_total.load(Ordering::Relaxed);
        let predictions = self.predictions_total.load(Ordering::Relaxed);
        let rate = |total: u64, before: u64, since: i64| {
            let dt = (now - since) as f64 / 1000.0;
            if dt > 0.0 {
                total.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let (events_per_s, predictions_per_s) = match last {
            Some((t, e, p)) => (rate(events, e, t), rate(predictions, p, t)),
            None => (0.0, 0.0),
        };
        let samples = self.metrics.get().map(|m| (m.0)()).unwrap_or_default();
        let ops = ops_figures(&samples);
        self.update_alerts(&samples, now);
        let newest_event_ms = self.watermark_ms();
        let runner = self.runner.get();
        let latency = runner.and_then(|r| r.processing_latency.quantiles([0.5, 0.99]));
        let quality = self.quality_points();
        let s = HistorySample {
            t: now,
            events_per_s,
            predictions_per_s,
            millis_behind_latest: ops
                .shards
                .iter()
                .filter_map(|s| s.millis_behind_latest)
                .reduce(f64::max)
                .or_else(|| runner.map(|r| r.millis_behind_latest.load(Ordering::Relaxed) as f64)),
            shard_lag_ms: ops
                .shards
                .iter()
                .filter_map(|s| {
                    s.millis_behind_latest
                        .map(|v| (format!("{}/{}", s.stream, s.shard), v))
                })
                .collect(),
            checkpoint_age_s: ops.checkpoint_age_s,
            latency_p50_ms: latency.map(|l| l[0] * 1e3),
            latency_p99_ms: latency.map(|l| l[1] * 1e3),
            dead_letters: self
                .dead_letters
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            newest_event_ms,
            watermark_lag_s: newest_event_ms.map(|n| (now - n) as f64 / 1000.0),
            newest_prediction_ms: Some(self.newest_as_of.load(Ordering::Relaxed))
                .filter(|&v| v != i64::MIN),
            quality,
        };
        if let Ok(mut o) = self.ops.lock() {
            *o = ops;
        }
        if let Ok(mut h) = self.history.lock() {
            h.push_back(s);
            let cutoff = now.saturating_sub(self.settings.history_ms);
            while h.front().is_some_and(|f| f.t < cutoff) {
                h.pop_front();
            }
        }
        (now, events, predictions)
    }

    /// Live quality per `system/target` now.
    pub fn quality_points(&self) -> BTreeMap<String, QualityPoint> {
        let mut out = BTreeMap::new();
        if let Ok(q) = self.quality.lock() {
            for (system, lq) in q.iter() {
                let r = lq.summary(&self.quality_config);
                for (target, t) in [("empty", &r.empty), ("full", &r.full)] {
                    out.insert(
                        format!("{system}/{target}"),
                        QualityPoint {
                            labelled: t.labelled,
                            positives: t.positives,
                            pr_auc: t.pr_auc,
                            log_loss: t.log_loss,
                            brier: t.brier,
                        },
                    );
                }
            }
        }
        out
    }

    /// Follows `bikeshare_alerts_firing{rule}`: a rule at 1 starts an episode, back at 0
    /// (or gone) it resolves and moves to the recent list.
    fn update_alerts(&self, samples: &[MetricSample], now: i64) {
        let firing: BTreeMap<&str, bool> = samples
            .iter()
            .filter(|s| s.name == "bikeshare_alerts_firing")
            .filter_map(|s| s.labels.get("rule").map(|r| (r.as_str(), s.value > 0.0)))
            .collect();
        let rules = self.alert_rules.get();
        let info = |rule: &str| rules.and_then(|rs| rs.iter().find(|r| r.name == rule));
        let Ok(mut a) = self.alerts.lock() else {
            return;
        };
        a.seen |= !firing.is_empty();
        let (still, ended): (Vec<AlertEpisode>, Vec<AlertEpisode>) = std::mem::take(&mut a.firing)
            .into_iter()
            .partition(|e| firing.get(e.rule.as_str()).copied().unwrap_or(false));
        a.firing = still;
        for mut e in ended {
            e.resolved_ms = Some(now);
            a.recent.push_front(e);
        }
        for (rule, on) in firing {
            if on && !a.firing.iter().any(|e| e.rule == rule) {
                a.firing.push(AlertEpisode {
                    rule: rule.to_owned(),
                    severity: info(rule).map(|r| r.severity.clone()),
                    summary: info(rule).map(|r| r.summary.clone()),
                    started_ms: now,
                    resolved_ms: None,
                });
            }
        }
        a.recent.truncate(RECENT_ALERTS);
    }
}

/// Per-shard lag and checkpoint age from the metrics.
fn ops_figures(samples: &[MetricSample]) -> OpsFigures {
    let mut shards: BTreeMap<(String, String), ShardLag> = BTreeMap::new();
    let mut checkpoint_age_s = None;
    for s in samples {
        let shard = || {
            let stream = s.labels.get("stream").cloned().unwrap_or_default();
            let shard = s.labels.get("shard").cloned().unwrap_or_default();
            (stream, shard)
        };
        match s.name.as_str() {
            "bikeshare_shard_millis_behind_latest" => {
                let k = shard();
                shards
                    .entry(k.clone())
                    .or_insert_with(|| ShardLag {
                        stream: k.0,
                        shard: k.1,
                        millis_behind_latest: None,
                        iterator_age_s: None,
                    })
                    .millis_behind_latest = Some(s.value);
            }
            "bikeshare_shard_iterator_age_seconds" => {
                let k = shard();
                shards
                    .entry(k.clone())
                    .or_insert_with(|| ShardLag {
                        stream: k.0,
                        shard: k.1,
                        millis_behind_latest: None,
                        iterator_age_s: None,
                    })
                    .iterator_age_s = Some(s.value);
            }
            "bikeshare_checkpoint_age_seconds" => checkpoint_age_s = Some(s.value),
            _ => {}
        }
    }
    OpsFigures {
        shards: shards.into_values().collect(),
        checkpoint_age_s,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bikeshare_types::contracts::StationStatus;
    use bikeshare_types::time::ManualClock;

    const MIN: i64 = 60_000;

    fn state(clock: &Arc<ManualClock>) -> Arc<DashboardState> {
        DashboardState::new(clock.clone(), QualityConfig::default())
    }

    fn prediction(station: &str, as_of: i64, p: f32) -> Prediction {
        bikeshare_testkit::envelopes::prediction("c", station, Timestamp(as_of), p, 0.01)
    }

    fn envelope(event: Event, t: i64) -> Envelope {
        Envelope::new(
            SystemId::new("c"),
            "test",
            Timestamp(t),
            Timestamp(t),
            event,
        )
    }

    #[test]
    fn versions_name_the_stations_changed_since() {
        let clock = Arc::new(ManualClock::new(Timestamp(0)));
        let s = state(&clock);
        assert_eq!(s.version(), 0);
        s.apply_prediction(prediction("a", 0, 0.2), Timestamp(0));
        s.apply_prediction(prediction("b", 0, 0.3), Timestamp(0));
        let v = s.version();
        assert_eq!(s.changed_since(0).len(), 2);
        s.apply_prediction(prediction("a", 5 * MIN, 0.4), Timestamp(0));
        let since: Vec<String> = s
            .changed_since(v)
            .into_iter()
            .map(|(k, _)| k.1.to_string())
            .collect();
        assert_eq!(since, vec!["a".to_owned()]);
        // The same description again is no change.
        let info = bikeshare_testkit::envelopes::station_info("a", "A".into(), 42.0, -71.0, 10);
        s.apply_event(&envelope(Event::StationInfo(info.clone()), 0), Timestamp(0));
        let v = s.version();
        s.apply_event(&envelope(Event::StationInfo(info), 0), Timestamp(0));
        assert_eq!(s.version(), v);
    }

    #[test]
    fn predictions_keep_history_trend_and_labels_and_go_stale() {
        let clock = Arc::new(ManualClock::new(Timestamp(0)));
        let s = state(&clock);
        for i in 0..10 {
            s.apply_prediction(prediction("a", i * 5 * MIN, 0.1 * i as f32), Timestamp(0));
        }
        // A late, older prediction goes into the history, not over the newest.
        s.apply_prediction(prediction("a", 2 * MIN, 0.9), Timestamp(0));
        let key = (SystemId::new("c"), StationId::new("a"));
        let r = s.risk.get(&key).unwrap();
        assert_eq!(r.prediction.as_of, Timestamp(45 * MIN));
        assert!((r.previous_risk.unwrap() - 0.8).abs() < 1e-6);
        assert_eq!(r.history.len(), 11);
        assert!(
            r.history
                .iter()
                .zip(r.history.iter().skip(1))
                .all(|(a, b)| a.as_of < b.as_of)
        );
        drop(r);
        // The label of the prediction at 10 minutes: it went empty.
        let label = Label {
            went_empty: true,
            ..bikeshare_testkit::envelopes::label(&prediction("a", 10 * MIN, 0.0), 3)
        };
        s.apply_label(&label);
        let r = s.risk.get(&key).unwrap();
        let h = r.history.iter().find(|h| h.as_of == 10 * MIN).unwrap();
        assert_eq!((h.went_empty, h.went_full), (Some(true), Some(false)));
        drop(r);
        // Station b stopped reporting 40 minutes before a's newest prediction.
        s.apply_prediction(prediction("b", 5 * MIN, 0.5), Timestamp(0));
        assert!(s.is_stale(&key.0, Timestamp(5 * MIN)));
        assert!(!s.is_stale(&key.0, Timestamp(45 * MIN)));
    }

    #[test]
    fn reports_keep_the_newest_and_a_bounded_history() {
        let clock = Arc::new(ManualClock::new(Timestamp(0)));
        let s = state(&clock);
        let report = |t: i64, bikes: u32| {
            Event::StationStatus(StationStatus {
                station_id: StationId::new("a"),
                num_bikes_available: bikes,
                num_ebikes_available: None,
                num_bikes_disabled: None,
                num_docks_available: Some(10 - bikes),
                num_docks_disabled: None,
                is_installed: true,
                is_renting: true,
                is_returning: true,
                last_reported: Timestamp(t),
                vehicle_types_available: Vec::new(),
            })
        };
        for i in 0..1000 {
            s.apply_event(
                &envelope(report(i * MIN, (i % 10) as u32), i * MIN),
                Timestamp(0),
            );
        }
        s.apply_event(&envelope(report(5 * MIN, 7), 5 * MIN), Timestamp(0));
        let r = s
            .reports
            .get(&(SystemId::new("c"), StationId::new("a")))
            .unwrap();
        assert_eq!(r.latest.unwrap().t, 999 * MIN);
        assert!(r.history.len() <= POINTS_KEPT);
        assert!(r.history.front().unwrap().t >= 999 * MIN - s.settings.history_ms);
    }

    #[test]
    fn samples_read_shard_lag_checkpoint_age_and_alert_episodes() {
        let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        let s = state(&clock);
        let firing = Arc::new(Mutex::new(1.0));
        let f = firing.clone();
        let source: MetricsSource = Arc::new(move || {
            let m = |name: &str, labels: &[(&str, &str)], value: f64| MetricSample {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                value,
            };
            vec![
                m(
                    "bikeshare_shard_millis_behind_latest",
                    &[("stream", "events"), ("shard", "shard-0")],
                    1500.0,
                ),
                m(
                    "bikeshare_shard_millis_behind_latest",
                    &[("stream", "events"), ("shard", "shard-1")],
                    20.0,
                ),
                m("bikeshare_checkpoint_age_seconds", &[], 4.0),
                m(
                    "bikeshare_alerts_firing",
                    &[("rule", "feed_stale")],
                    *f.lock().unwrap(),
                ),
            ]
        });
        let _ = s.metrics.set(MetricsReader(source));
        let _ = s.alert_rules.set(vec![AlertRuleInfo {
            name: "feed_stale".into(),
            severity: "warning".into(),
            summary: "a feed is stale".into(),
            condition: "bikeshare_feed_age_seconds > 300".into(),
        }]);
        let last = s.take_sample(None);
        clock.advance_millis(10_000);
        *firing.lock().unwrap() = 0.0;
        s.take_sample(Some(last));
        let h = s.history.lock().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].millis_behind_latest, Some(1500.0));
        assert_eq!(h[1].shard_lag_ms.get("events/shard-0"), Some(&1500.0));
        assert_eq!(h[1].checkpoint_age_s, Some(4.0));
        let a = s.alerts.lock().unwrap();
        assert!(a.seen && a.firing.is_empty());
        assert_eq!(a.recent.len(), 1);
        assert_eq!(a.recent[0].severity.as_deref(), Some("warning"));
        assert_eq!(
            (a.recent[0].started_ms, a.recent[0].resolved_ms),
            (1_000_000, Some(1_010_000))
        );
    }
}
