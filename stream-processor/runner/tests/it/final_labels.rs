//! A bounded input read to its end (`stop_when_caught_up`, what `process --until-caught-up`
//! runs): before the runner stops, every prediction whose 30-minute horizon the input covers
//! has its label, also those the watermark (the lateness behind the newest event) had not
//! yet passed, in every shard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use bikeshare_runner::RunnerConfig;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream_processor::{Processor, ProcessorConfig};

use crate::support::{self, MIN, T0, city, embedded_events, local_runner, put_all};

#[tokio::test]
async fn every_label_the_input_covers_is_emitted_before_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let stream = embedded_events(dir.path(), 2).await;
    let systems = ["north".to_owned(), "south".to_owned()];
    // 91 minutes of reports every 2 minutes: the last at T0 + 90 min, off the lateness.
    put_all(&stream, &city(&systems, 91)).await;
    // The default lateness (the watermark trails the newest event by 2 minutes).
    let processor = Processor::new(ProcessorConfig::default());
    assert!(processor.config().lateness_ms > 0);
    let sinks = MemorySinks::new();
    let config = RunnerConfig {
        batch: 50,
        stop_when_caught_up: true,
        label_to_end: true,
        ..RunnerConfig::default()
    };
    let runner = local_runner(&stream, &sinks, &dir.path().join("cp"), processor, config);
    support::run_to_end("the run to the end of the input", runner).await;

    let last = T0 + 90 * MIN;
    let due: BTreeMap<String, i64> = sinks
        .predictions
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.as_of.millis() + 30 * MIN <= last)
        .map(|p| (p.prediction_id.to_string(), p.as_of.millis()))
        .collect();
    let labelled: BTreeSet<String> = sinks
        .labels
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.prediction_id.to_string())
        .collect();
    let missing: Vec<i64> = due
        .iter()
        .filter(|(id, _)| !labelled.contains(*id))
        .map(|(_, t)| (t - T0) / MIN)
        .collect();
    assert!(due.len() > 200, "{} predictions due", due.len());
    assert!(
        missing.is_empty(),
        "{} of {} due predictions without a label (minutes after T0: {missing:?})",
        missing.len(),
        due.len()
    );
    // Both systems (one per shard, or both in one) were drained.
    let systems_labelled: BTreeSet<String> = sinks
        .labels
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.as_of.millis() + 30 * MIN > last - 5 * MIN)
        .map(|l| l.system_id.to_string())
        .collect();
    assert_eq!(systems_labelled.len(), 2, "{systems_labelled:?}");
}
