//! A bounded input read to its end (`stop_when_caught_up`, what `process --until-caught-up`
//! runs): before the runner stops, every prediction whose 30-minute horizon the input covers
//! has its label, also those the watermark (the lateness behind the newest event) had not
//! yet passed, in every shard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bikeshare_embedded::EmbeddedStream;
use bikeshare_runner::{Runner, RunnerConfig};
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::StreamWriter;
use bikeshare_stream::checkpoint::LocalCheckpointStore;
use bikeshare_stream_processor::{BaselineScorer, Processor, ProcessorConfig, Scorer};
use bikeshare_types::time::ManualClock;
use bikeshare_types::{SharedClock, Timestamp};
use tokio::sync::watch;

use crate::support::{MIN, T0, city};

#[tokio::test]
async fn every_label_the_input_covers_is_emitted_before_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(dir.path().join("s.db"), "events", 2)
        .await
        .unwrap();
    let systems = ["north".to_owned(), "south".to_owned()];
    // 91 minutes of reports every 2 minutes: the last at T0 + 90 min, off the lateness.
    let records = city(&systems, 91);
    for chunk in records.chunks(500) {
        stream.put_records(chunk).await.unwrap();
    }
    // The default lateness (the watermark trails the newest event by 2 minutes).
    let processor = Processor::new(ProcessorConfig::default());
    assert!(processor.config().lateness_ms > 0);
    let scorer: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(processor.schema(), 30));
    let (_tx, rx) = watch::channel(scorer);
    let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(T0)));
    let sinks = MemorySinks::new();
    let runner = Runner::new(
        Arc::new(stream.clone()),
        Arc::new(sinks.clone()),
        Arc::new(LocalCheckpointStore::new(dir.path().join("cp"))),
        rx,
        clock,
        processor,
        RunnerConfig {
            batch: 50,
            stop_when_caught_up: true,
            label_to_end: true,
            ..RunnerConfig::default()
        },
    );
    runner.run(std::future::pending()).await.unwrap();

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
