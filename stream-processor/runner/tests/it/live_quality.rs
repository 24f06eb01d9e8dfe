//! Live model quality from the processor's own labels, through the real runner over an
//! embedded stream: the figures equal a brute-force join of the published predictions and
//! labels, the gauges are set, and a run stopped halfway and resumed from its checkpoint
//! ends with exactly the same quality as a straight run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bikeshare_embedded::EmbeddedStream;
use bikeshare_runner::RunnerConfig;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::PutRecord;
use bikeshare_stream_processor::quality::{QualityConfig, QualityReport, TargetQuality};
use bikeshare_stream_processor::{Processor, ProcessorConfig};
use bikeshare_types::SystemId;

use crate::support::{self, city, embedded_events, local_runner, put_all};

/// Six stations reporting every 2 minutes for `minutes`: some drain to empty, some fill up,
/// some wander (a deterministic walk), so both outcomes of both targets occur.
fn history(minutes: i64) -> Vec<PutRecord> {
    city(&["city".to_owned()], minutes)
}

fn config() -> ProcessorConfig {
    ProcessorConfig {
        lateness_ms: 0,
        quality: QualityConfig {
            window_ms: 2 * 3_600_000,
            ..QualityConfig::default()
        },
        ..ProcessorConfig::default()
    }
}

struct Run {
    processor: Processor,
    sinks: MemorySinks,
    view: Option<QualityReport>,
}

async fn run(stream: &EmbeddedStream, cp: &std::path::Path, sinks: MemorySinks) -> Run {
    let processor = Processor::new(config());
    let config = RunnerConfig {
        batch: 50,
        stop_when_caught_up: true,
        ..RunnerConfig::default()
    };
    let runner = local_runner(stream, &sinks, cp, processor, config);
    let view = runner.live_quality();
    let processor = support::run_to_end("the run", runner).await;
    let view = view.get(&SystemId::new("city")).map(|r| r.clone());
    Run {
        processor,
        sinks,
        view,
    }
}

/// The quality computed the slow way: every published label joined with its prediction by
/// id, kept when within the window of the newest labelled `as_of`.
fn brute_force(sinks: &MemorySinks, window_ms: i64) -> (TargetQuality, TargetQuality) {
    let predictions: HashMap<String, (f32, f32)> = sinks
        .predictions
        .lock()
        .unwrap()
        .iter()
        .map(|p| (p.prediction_id.to_string(), (p.p_empty, p.p_full)))
        .collect();
    let labels = sinks.labels.lock().unwrap().clone();
    let joined: Vec<_> = labels
        .iter()
        .filter_map(|l| {
            predictions
                .get(l.prediction_id.as_str())
                .map(|&(pe, pf)| (l.as_of.millis(), pe, pf, l.went_empty, l.went_full))
        })
        .collect();
    let newest = joined.iter().map(|j| j.0).max().unwrap();
    let kept: Vec<_> = joined
        .into_iter()
        .filter(|j| j.0 >= newest - window_ms)
        .collect();
    let pe: Vec<f32> = kept.iter().map(|j| j.1).collect();
    let pf: Vec<f32> = kept.iter().map(|j| j.2).collect();
    let ye: Vec<bool> = kept.iter().map(|j| j.3).collect();
    let yf: Vec<bool> = kept.iter().map(|j| j.4).collect();
    (TargetQuality::of(&pe, &ye), TargetQuality::of(&pf, &yf))
}

#[tokio::test]
async fn quality_gauges_are_set_from_the_processors_own_labels() {
    let handle = bikeshare_monitor::exporter::install().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = embedded_events(dir.path(), 1).await;
    put_all(&stream, &history(5 * 60)).await;
    let r = run(&stream, &dir.path().join("cp"), MemorySinks::new()).await;

    let report = r.processor.quality(&SystemId::new("city")).unwrap();
    let (empty, full) = brute_force(&r.sinks, config().quality.window_ms);
    assert!(empty.labelled > 200, "{} labelled", empty.labelled);
    assert!(
        empty.positives > 0 && empty.positives < empty.labelled,
        "both outcomes of went-empty occur: {empty:?}"
    );
    assert!(full.positives > 0 && full.positives < full.labelled);
    assert_eq!(report.empty, empty, "went-empty quality = brute force");
    assert_eq!(report.full, full, "went-full quality = brute force");
    assert!(empty.roc_auc.is_some() && empty.pr_auc.is_some() && empty.ece.is_some());
    // The window holds 2 h of 5 h of labels.
    assert!(empty.labelled < r.sinks.labels.lock().unwrap().len() / 2);
    assert_eq!(
        r.view.as_ref(),
        Some(&report),
        "the shared view is the final report"
    );

    let text = handle.render();
    let samples = bikeshare_monitor::samples::parse(&text);
    let gauge = |name: &str, target: &str| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.label("system") == Some("city")
                    && s.label("target") == Some(target)
            })
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("{name}{{target={target}}} not in\n{text}"))
    };
    use bikeshare_types::metrics as m;
    assert_eq!(
        gauge(m::MODEL_LABELLED.name, "empty"),
        empty.labelled as f64
    );
    assert_eq!(gauge(m::MODEL_LABELLED.name, "full"), full.labelled as f64);
    for (metric, target, want) in [
        (m::MODEL_ROC_AUC, "empty", empty.roc_auc),
        (m::MODEL_PR_AUC, "full", full.pr_auc),
        (m::MODEL_BRIER, "empty", empty.brier),
        (m::MODEL_CALIBRATION_ERROR, "full", full.ece),
    ] {
        let (got, want) = (gauge(metric.name, target), want.unwrap());
        assert!(
            (got - want).abs() < 1e-9,
            "{}{{target={target}}}: {got}, the report says {want}",
            metric.name
        );
    }
}

#[tokio::test]
async fn a_run_resumed_from_its_checkpoint_ends_with_the_same_quality() {
    let records = history(5 * 60);
    // Stopped at 4 h of 5: the 2-hour window at the end spans the restart, and predictions
    // made just before it are labelled just after it (their scores wait in the checkpoint).
    let half = records.len() * 4 / 5;
    let dir = tempfile::tempdir().unwrap();

    let straight = EmbeddedStream::open(dir.path().join("a.db"), "events", 1)
        .await
        .unwrap();
    put_all(&straight, &records).await;
    let a = run(&straight, &dir.path().join("cp-a"), MemorySinks::new()).await;

    let resumed = EmbeddedStream::open(dir.path().join("b.db"), "events", 1)
        .await
        .unwrap();
    put_all(&resumed, &records[..half]).await;
    let first = run(&resumed, &dir.path().join("cp-b"), MemorySinks::new()).await;
    let midway = first.processor.quality(&SystemId::new("city")).unwrap();
    drop(first);
    put_all(&resumed, &records[half..]).await;
    let b = run(&resumed, &dir.path().join("cp-b"), MemorySinks::new()).await;

    let (qa, qb) = (
        a.processor.quality(&SystemId::new("city")).unwrap(),
        b.processor.quality(&SystemId::new("city")).unwrap(),
    );
    assert!(midway.empty.labelled > 0, "labels before the restart");
    assert_ne!(midway, qa, "the second half changed the window");
    let (na, nb) = (
        a.sinks.predictions.lock().unwrap().len(),
        b.sinks.predictions.lock().unwrap().len(),
    );
    assert!(
        nb < na / 3,
        "the second run resumed ({nb} of {na} predictions)"
    );
    assert_eq!(qa, qb, "straight and resumed runs hold the same quality");
    assert_eq!(a.view, b.view);
}
