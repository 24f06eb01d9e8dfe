//! What the dashboard shows, maintained by reading the streams like any other consumer.
//!
//! [`follow`] reads four streams from their oldest retained record and keeps:
//! - `events`: station names and coordinates (`station_info`), time zones, and per-system
//!   data freshness (newest event time and ingest time, heartbeats included);
//! - `predictions`: the latest prediction and the risk trend of every station, throughput;
//! - `labels`: joined with the predictions they name, rolling live quality (ROC-AUC, Brier,
//!   calibration) of `p_empty` and `p_full` over the last 6 hours of event time;
//! - `dead-letters`: counts by rule.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bikeshare_stream::{ShardCursor, StartPosition, StreamReader};
use bikeshare_types::contracts::{DeadLetter, Envelope, Event, Label, ModelRef, Prediction};
use bikeshare_types::{EventId, SharedClock, StationId, SystemId, Timestamp};
use dashmap::DashMap;
use serde::Serialize;

use bikeshare_stream_processor::quality::{LiveQuality, QualityConfig};

/// A station's static description.
#[derive(Debug, Clone, Serialize)]
pub struct StationMeta {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub capacity: Option<u32>,
}

/// The newest prediction of a station and its previous risk.
#[derive(Debug, Clone)]
pub struct StationRisk {
    pub prediction: Prediction,
    pub previous_risk: Option<f32>,
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
    pub freshness: DashMap<SystemId, Freshness>,
    pub dead_letters: Mutex<BTreeMap<String, u64>>,
    /// Live quality per system, joined exactly as the processor does.
    pub quality: Mutex<BTreeMap<SystemId, LiveQuality>>,
    pub quality_config: QualityConfig,
    /// Predictions per `scored_by` (`in_process`, `endpoint`, `fallback`, `unavailable`).
    pub scored_by: Mutex<BTreeMap<&'static str, u64>>,
    /// Per (system, feed): newest event time and events seen.
    pub feeds: DashMap<(SystemId, String), (Timestamp, u64)>,
    pub model: Mutex<Option<ModelRef>>,
    pub events_rate: Mutex<RateCounter>,
    pub predictions_rate: Mutex<RateCounter>,
    pub newest_prediction_arrival: Mutex<Option<Timestamp>>,
    /// The newest `as_of` of any prediction seen (ms), for long polling.
    pub newest_as_of: std::sync::atomic::AtomicI64,
    pub clock: SharedClock,
    pending: Mutex<HashMap<EventId, (f32, f32, i64)>>,
    /// The runner's live counters when the processor runs in this process (`up`).
    pub runner: std::sync::OnceLock<Arc<bikeshare_runner::RunnerStats>>,
    /// The latest drift check (`rows`, `window_end`, `violations`, `top` distances), set by
    /// the drift task of the job this dashboard runs in.
    pub drift: Mutex<Option<serde_json::Value>>,
}

/// Predictions waiting for their label in the dashboard's own quality join, at most.
const MAX_PENDING: usize = 500_000;

impl DashboardState {
    /// A state whose live quality uses `quality_config` (the processor's `[processor.quality]`,
    /// so both compute the same figures).
    pub fn new(clock: SharedClock, quality_config: QualityConfig) -> Arc<Self> {
        Arc::new(Self {
            stations: DashMap::new(),
            risk: DashMap::new(),
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
            clock,
            pending: Mutex::new(HashMap::new()),
            runner: std::sync::OnceLock::new(),
            drift: Mutex::new(None),
        })
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
        let feed = match &env.event {
            Event::FeedHeartbeat(h) => h.feed.clone(),
            Event::StationStatus(_) => "station_status".to_owned(),
            Event::StationInfo(_) => "station_information".to_owned(),
            Event::SystemInfo(_) => "system_information".to_owned(),
            Event::Weather(_) => "weather".to_owned(),
        };
        let mut e = self
            .feeds
            .entry((env.system_id.clone(), feed))
            .or_insert((env.event_time, 0));
        e.0 = e.0.max(env.event_time);
        e.1 += 1;
        drop(e);
        if let Event::StationInfo(info) = &env.event {
            self.stations.insert(
                (env.system_id.clone(), info.station_id.clone()),
                StationMeta {
                    name: info.name.clone(),
                    lat: info.lat,
                    lon: info.lon,
                    capacity: info.capacity,
                },
            );
        }
    }

    fn on_prediction(&self, p: Prediction, arrival: Timestamp) {
        if let Ok(mut r) = self.predictions_rate.lock() {
            r.add(arrival.millis());
        }
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
        let previous_risk = self
            .risk
            .get(&key)
            .map(|r| r.prediction.p_empty.max(r.prediction.p_full));
        self.risk.insert(
            key,
            StationRisk {
                prediction: p,
                previous_risk,
            },
        );
    }

    fn on_label(&self, l: &Label) {
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
