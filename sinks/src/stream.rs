//! Outputs published to streams, through batching [`Publisher`]s.
//!
//! | stream | record | partition key |
//! | --- | --- | --- |
//! | `predictions` | [`Prediction`] JSON (schema_version 2) | `system_id/station_id` |
//! | `labels` | [`Label`] JSON | `system_id/station_id` |
//! | `features` | [`FeatureVector`] JSON | `system_id/station_id` |
//! | `dead-letters` | [`DeadLetter`] JSON | `system_id` |
//!
//! Keyed by station, a station's predictions stay in order for subscribers. Features are
//! optional (they are large; the lake will hold them).

use std::sync::Arc;

use async_trait::async_trait;
use bikeshare_stream::publisher::{PublishError, Publisher, PublisherConfig};
use bikeshare_stream::sink::{SinkError, Sinks};
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};

/// Stream names of the processor's outputs.
pub mod names {
    pub use bikeshare_stream::names::{DEAD_LETTERS, PREDICTIONS};
    pub const LABELS: &str = "labels";
    pub const FEATURES: &str = "features";
}

/// The writers of each output stream; `features: None` leaves features out.
#[derive(Debug)]
pub struct StreamWriters {
    pub predictions: Arc<dyn StreamWriter>,
    pub labels: Arc<dyn StreamWriter>,
    pub features: Option<Arc<dyn StreamWriter>>,
    pub dead_letters: Arc<dyn StreamWriter>,
}

/// Publishes outputs to streams.
#[derive(Debug)]
pub struct StreamSinks {
    predictions: Publisher,
    labels: Publisher,
    features: Option<Publisher>,
    dead_letters: Publisher,
}

impl StreamSinks {
    pub fn new(w: StreamWriters, config: PublisherConfig) -> Self {
        Self {
            predictions: Publisher::spawn(w.predictions, config.clone()),
            labels: Publisher::spawn(w.labels, config.clone()),
            features: w.features.map(|f| Publisher::spawn(f, config.clone())),
            dead_letters: Publisher::spawn(w.dead_letters, config),
        }
    }

    fn publishers(&self) -> impl Iterator<Item = (&'static str, &Publisher)> {
        [
            ("predictions", &self.predictions),
            ("labels", &self.labels),
            ("dead_letters", &self.dead_letters),
        ]
        .into_iter()
        .chain(self.features.as_ref().map(|f| ("features", f)))
    }
}

fn err(sink: &'static str, e: &PublishError) -> SinkError {
    SinkError {
        sink,
        message: bikeshare_types::error::chain(e),
    }
}

async fn send_all(
    sink: &'static str,
    publisher: &Publisher,
    records: impl Iterator<Item = (String, Vec<u8>)>,
) -> Result<(), SinkError> {
    for (key, data) in records {
        publisher
            .send(PutRecord::new(key, data))
            .await
            .map_err(|e| err(sink, &e))?;
    }
    Ok(())
}

/// Each row as its station's partition key (`<system>/<station>`: a station stays in one
/// shard and in order) and its JSON.
fn by_station<'a, T: serde::Serialize>(
    rows: &'a [T],
    ids: impl Fn(&T) -> (&str, &str) + 'a,
) -> impl Iterator<Item = (String, Vec<u8>)> + 'a {
    rows.iter().map(move |r| {
        let (system, station) = ids(r);
        (
            format!("{system}/{station}"),
            serde_json::to_vec(r).unwrap_or_default(),
        )
    })
}

#[async_trait]
impl Sinks for StreamSinks {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError> {
        let Some(p) = &self.features else {
            return Ok(());
        };
        send_all(
            "features",
            p,
            by_station(&rows, |r| (r.system_id.as_str(), r.station_id.as_str())),
        )
        .await
    }
    async fn predictions(&self, predictions: Vec<Prediction>) -> Result<(), SinkError> {
        send_all(
            "predictions",
            &self.predictions,
            by_station(&predictions, |p| {
                (p.system_id.as_str(), p.station_id.as_str())
            }),
        )
        .await
    }
    async fn labels(&self, labels: Vec<Label>) -> Result<(), SinkError> {
        send_all(
            "labels",
            &self.labels,
            by_station(&labels, |l| (l.system_id.as_str(), l.station_id.as_str())),
        )
        .await
    }
    async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
        send_all(
            "dead_letters",
            &self.dead_letters,
            letters
                .iter()
                .map(|d| (d.system_id.as_str().to_owned(), d.encode())),
        )
        .await
    }
    async fn flush(&self) -> Result<(), SinkError> {
        for (name, p) in self.publishers() {
            p.flush().await.map_err(|e| err(name, &e))?;
        }
        Ok(())
    }
}
