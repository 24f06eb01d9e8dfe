//! The runner over a real embedded stream with bad records in it: every record ends up as an
//! output or a dead letter with a reason, and processing goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bikeshare_runner::RunnerConfig;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_stream_processor::{BaselineScorer, Processor, ProcessorConfig};
use bikeshare_testkit::envelopes::status_envelope;
use bikeshare_types::contracts::{Envelope, PredictionTrigger};

use crate::support::{self, T0, embedded_events, local_runner, processor_config};

fn status(station: &str, t: i64, bikes: u32) -> Envelope {
    status_envelope("city", "test", station, t, bikes, 10 - bikes)
}

#[tokio::test]
async fn malformed_and_unknown_version_records_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let stream = embedded_events(dir.path(), 1).await;
    let good = |i: i64| {
        PutRecord::new(
            "city",
            status("a", T0 + i * 60_000, (i % 10) as u32).encode(),
        )
    };
    let mut unknown_version: serde_json::Value =
        serde_json::from_slice(&status("b", T0, 1).encode()).unwrap();
    unknown_version["schema_version"] = 7.into();
    let records = vec![
        good(0),
        PutRecord::new("city", b"{not json".to_vec()),
        good(1),
        PutRecord::new("city", serde_json::to_vec(&unknown_version).unwrap()),
        PutRecord::new("city", vec![0xff, 0xfe, 0x00]),
        good(2),
    ];
    stream.put_records(&records).await.unwrap();

    let sinks = MemorySinks::new();
    let processor = Processor::new(processor_config());
    let config = RunnerConfig {
        stop_when_caught_up: true,
        ..RunnerConfig::default()
    };
    let runner = local_runner(&stream, &sinks, &dir.path().join("cp"), processor, config);
    let processor = support::run_to_end("the run over bad input", runner).await;

    let dead = sinks.dead_letters.lock().unwrap().clone();
    let rules: Vec<&str> = dead.iter().map(|d| d.rule.as_str()).collect();
    assert_eq!(rules, ["processor.decode"; 3], "{dead:#?}");
    assert!(
        dead[1].message.contains("schema_version 7"),
        "{}",
        dead[1].message
    );
    assert!(
        dead.iter()
            .all(|d| d.source.starts_with("stream:shardId-000000000000:"))
    );
    assert_eq!(
        processor.stats().applied,
        3,
        "the good records around the bad ones were applied"
    );
    let predictions = sinks.predictions.lock().unwrap().clone();
    let updates = predictions
        .iter()
        .filter(|p| p.trigger == PredictionTrigger::Update)
        .count();
    assert_eq!(updates, 3, "one prediction per good report");
    assert_eq!(
        predictions.len() - updates,
        1,
        "plus the tick at the next 5-minute mark"
    );
}

#[test]
fn predictions_carry_the_configured_horizon() {
    let mut p = Processor::new(ProcessorConfig {
        lateness_ms: 0,
        horizon_minutes: 45,
        ..ProcessorConfig::default()
    });
    let scorer = BaselineScorer::new(p.schema(), 45);
    let mut out = Vec::new();
    p.process(status("a", 1_700_000_000_000, 3), &mut out);
    let row = out
        .iter()
        .find_map(|e| match e {
            bikeshare_stream_processor::Emitted::Row(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let prediction = bikeshare_runner::score(&scorer, &row);
    assert_eq!(prediction.horizon_minutes, 45);
    assert_eq!(
        prediction.prediction_id,
        bikeshare_types::contracts::Prediction::id_for(
            &prediction.system_id,
            &prediction.station_id,
            prediction.as_of,
            45
        )
    );
}
