//! What the [`crate::runner`] records through [`bikeshare_types::metrics`], kept here so the
//! runner's loop only calls it at a few points.
//!
//! Events are counted per system and kind in a small local table and recorded once per
//! poll, not once per event (a labelled counter costs a map lookup).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bikeshare_stream::StreamRecord;
use bikeshare_types::contracts::{DeadLetter, Envelope, EventKind, Label, Prediction};
use bikeshare_types::metrics as m;
use bikeshare_types::{SystemId, Timestamp};

use bikeshare_stream_processor::processor::Processor;

/// How often the predictions-per-second gauge is recomputed.
const RATE_EVERY: Duration = Duration::from_secs(1);
/// How often the live-quality gauges are recomputed (each costs a sort of the window).
const QUALITY_EVERY: Duration = Duration::from_secs(2);

/// The runner's metrics state between polls.
#[derive(Debug)]
pub(crate) struct RunTelemetry {
    stream: &'static str,
    events: Vec<(SystemId, EventKind, u64)>,
    systems: BTreeSet<SystemId>,
    rate_since: Instant,
    predictions_since: u64,
    last_checkpoint: Instant,
    quality_at: Instant,
    /// The quality version of each system when its gauges were last set.
    quality_versions: Vec<(SystemId, u64)>,
}

impl RunTelemetry {
    pub(crate) fn new(stream: &'static str) -> Self {
        Self {
            stream,
            events: Vec::new(),
            systems: BTreeSet::new(),
            rate_since: Instant::now(),
            predictions_since: 0,
            last_checkpoint: Instant::now(),
            quality_at: Instant::now(),
            quality_versions: Vec::new(),
        }
    }

    /// One decoded event.
    pub(crate) fn event(&mut self, env: &Envelope) {
        let kind = env.kind();
        match self
            .events
            .iter_mut()
            .find(|(s, k, _)| *k == kind && *s == env.system_id)
        {
            Some(e) => e.2 += 1,
            None => self.events.push((env.system_id.clone(), kind, 1)),
        }
    }

    /// A shard's batch was processed and its outputs published at `now`.
    pub(crate) fn shard_done(
        &self,
        shard: &str,
        behind_ms: Option<i64>,
        records: Option<(&StreamRecord, &StreamRecord)>,
        now: Timestamp,
    ) {
        let age = records.map(|(_, newest)| now.millis() - newest.arrival.millis());
        m::shard_position(self.stream, shard, behind_ms, age);
        if let Some((oldest, _)) = records {
            m::processing_latency(self.stream, now.millis() - oldest.arrival.millis());
        }
    }

    /// The end of one poll: event counts, watermark lags, stations, checkpoint age, rate.
    pub(crate) fn poll_done(
        &mut self,
        processor: &Processor,
        predictions_total: u64,
        now: Timestamp,
    ) {
        for (system, kind, n) in self.events.drain(..) {
            m::events_in(system.as_str(), kind.as_str(), n);
            self.systems.insert(system);
        }
        for system in &self.systems {
            if let Some(wm) = processor.watermark(system) {
                m::watermark_lag(system.as_str(), now.millis() - wm.millis());
            }
        }
        m::stations_tracked(processor.stations());
        m::checkpoint_age(self.last_checkpoint.elapsed());
        let elapsed = self.rate_since.elapsed();
        if elapsed >= RATE_EVERY {
            let n = predictions_total.saturating_sub(self.predictions_since);
            m::predictions_rate(n as f64 / elapsed.as_secs_f64());
            self.rate_since = Instant::now();
            self.predictions_since = predictions_total;
        }
    }

    /// Every [`QUALITY_EVERY`] (or now, with `force`): the live-quality gauges of the
    /// systems whose labelled outcomes changed, and the shared view of them.
    pub(crate) fn quality(
        &mut self,
        processor: &Processor,
        view: &crate::LiveQualityView,
        force: bool,
    ) {
        if !force && self.quality_at.elapsed() < QUALITY_EVERY {
            return;
        }
        self.quality_at = Instant::now();
        let versions: Vec<(SystemId, u64)> = processor
            .quality_versions()
            .map(|(id, n)| (id.clone(), n))
            .collect();
        for (system, n) in &versions {
            let unchanged = self
                .quality_versions
                .iter()
                .any(|(s, m)| s == system && m == n)
                && view.contains_key(system);
            if unchanged {
                continue;
            }
            let Some(report) = processor.quality(system) else {
                continue;
            };
            for (target, q) in [("empty", &report.empty), ("full", &report.full)] {
                m::model_quality(
                    system.as_str(),
                    target,
                    q.labelled,
                    q.roc_auc,
                    q.pr_auc,
                    q.brier,
                    q.ece,
                );
            }
            view.insert(system.clone(), report);
        }
        view.retain(|s, _| versions.iter().any(|(c, _)| c == s));
        self.quality_versions = versions;
    }

    /// A checkpoint was stored after `took`.
    pub(crate) fn checkpointed(&mut self, took: Duration) {
        m::checkpoint_duration(took);
        self.last_checkpoint = Instant::now();
    }
}

/// Counts one published batch of outputs; `scoring` is the time spent scoring its rows.
pub(crate) fn published(
    predictions: &[Prediction],
    labels: &[Label],
    dead: &[DeadLetter],
    scoring: Duration,
) {
    if let Some(first) = predictions.first() {
        let rows = u32::try_from(predictions.len()).unwrap_or(u32::MAX);
        m::inference_latency(&first.model.name, scoring / rows.max(1));
    }
    count_by(predictions, |p| &p.system_id, m::predictions);
    count_by(labels, |l| &l.system_id, m::labels);
    let mut reasons: Vec<(&str, u64)> = Vec::new();
    for d in dead {
        match reasons.iter_mut().find(|(r, _)| *r == d.rule) {
            Some(r) => r.1 += 1,
            None => reasons.push((&d.rule, 1)),
        }
    }
    for (reason, n) in reasons {
        m::dead_letters("processor", reason, n);
    }
}

fn count_by<T>(items: &[T], system: impl Fn(&T) -> &SystemId, record: fn(&str, u64)) {
    let mut counts: Vec<(&SystemId, u64)> = Vec::new();
    for item in items {
        let s = system(item);
        match counts.iter_mut().find(|(x, _)| *x == s) {
            Some(c) => c.1 += 1,
            None => counts.push((s, 1)),
        }
    }
    for (s, n) in counts {
        record(s.as_str(), n);
    }
}
