//! [`FirehoseSinks`]: the lake's datasets into their delivery streams.
//!
//! Two roles, each its own instance over the same client:
//! - the stream processor's [`Sinks`] (in a [`bikeshare_sinks`-style `FanOut`] beside the
//!   streams and the lake): features, predictions, labels — and dead letters when they do
//!   not also travel through the `dead-letters` stream;
//! - the lake archiver's [`ArchiveTap`]: raw events, curated station status and dead letters,
//!   at each of its checkpoints.
//!
//! Rows become JSON lines ([`JsonRow`]) and wait in a buffer per dataset; a full call's worth
//! (500 records or 4 MiB) is sent at once, the rest at the checkpoint barrier
//! ([`Sinks::flush`] / [`Sinks::commit`], or the archiver's epoch), which returns only when
//! every line handed over is in Firehose — or fails, so the checkpoint is not stored.
//! A row whose line is over 1,000 KiB cannot go to Firehose: it becomes a dead letter
//! (rule `firehose.record_too_large`) sent to the dead-letters delivery stream instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bikeshare_lake::archive::ArchiveTap;
use bikeshare_lake::staging::Staging;
use bikeshare_lake::{Dataset, JsonRow};
use bikeshare_stream::sink::{SinkError, Sinks};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};
use bikeshare_types::{SystemId, Timestamp};
use bytes::Bytes;

use crate::batch::{MAX_BYTES_PER_BATCH, MAX_RECORD_BYTES, MAX_RECORDS_PER_BATCH};
use crate::delivery::{DeliveryConfig, DeliveryStats, DeliveryStream};

/// The rule of the dead letter that stands for a row too large for Firehose.
pub const RECORD_TOO_LARGE_RULE: &str = "firehose.record_too_large";

/// Which of the processor's outputs this instance sends (the archiver's tap sends its own
/// three datasets whatever this says).
#[derive(Debug, Clone, Copy)]
pub struct FirehoseOutputs {
    pub features: bool,
    /// Off when dead letters reach Firehose through the `dead-letters` stream and the
    /// archiver (each dead letter then lands once).
    pub dead_letters: bool,
}

/// One delivery stream per dataset, built from a client and a name prefix.
#[derive(Debug, Clone)]
pub struct DeliveryStreams {
    streams: BTreeMap<Dataset, DeliveryStream>,
    stats: Arc<DeliveryStats>,
}

impl DeliveryStreams {
    /// `<prefix><dataset>` for each dataset (`bikeshare-dev-predictions`), sharing `stats`.
    pub fn new(client: &aws_sdk_firehose::Client, prefix: &str, config: &DeliveryConfig) -> Self {
        let stats = Arc::new(DeliveryStats::default());
        let streams = Dataset::ALL
            .into_iter()
            .map(|d| {
                let name = stream_name(prefix, d);
                (
                    d,
                    DeliveryStream::new(client.clone(), name, config.clone(), stats.clone()),
                )
            })
            .collect();
        Self { streams, stats }
    }

    pub fn get(&self, d: Dataset) -> Option<&DeliveryStream> {
        self.streams.get(&d)
    }

    pub fn stats(&self) -> &Arc<DeliveryStats> {
        &self.stats
    }
}

/// The delivery stream name of a dataset: the prefix, then the dataset with `-` for `_`.
pub fn stream_name(prefix: &str, d: Dataset) -> String {
    format!("{prefix}{}", d.name().replace('_', "-"))
}

#[derive(Debug, Default)]
struct Buffer {
    lines: Vec<Bytes>,
    bytes: usize,
}

impl Buffer {
    fn full(&self) -> bool {
        self.lines.len() >= MAX_RECORDS_PER_BATCH || self.bytes >= MAX_BYTES_PER_BATCH
    }
}

/// Buffers rows as JSON lines per dataset and delivers them (see the module docs).
#[derive(Debug)]
pub struct FirehoseSinks {
    streams: DeliveryStreams,
    outputs: FirehoseOutputs,
    buffers: Mutex<BTreeMap<Dataset, Buffer>>,
}

fn poisoned() -> SinkError {
    SinkError {
        sink: "firehose",
        message: "buffer lock poisoned".into(),
    }
}

impl FirehoseSinks {
    pub fn new(streams: DeliveryStreams, outputs: FirehoseOutputs) -> Self {
        Self {
            streams,
            outputs,
            buffers: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn stats(&self) -> &Arc<DeliveryStats> {
        self.streams.stats()
    }

    /// Lines buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buffers
            .lock()
            .map(|b| b.values().map(|b| b.lines.len()).sum())
            .unwrap_or(0)
    }

    /// Adds rows of one dataset; rows too large become dead letters. Sends full calls.
    async fn push<T: JsonRow>(
        &self,
        rows: impl IntoIterator<Item = &T>,
        system: impl Fn(&T) -> (SystemId, Timestamp),
    ) -> Result<(), SinkError> {
        let mut too_large = Vec::new();
        let full = {
            let mut buffers = self.buffers.lock().map_err(|_| poisoned())?;
            let buf = buffers.entry(T::DATASET).or_default();
            for row in rows {
                let line = row.json_line();
                if line.len() > MAX_RECORD_BYTES {
                    let (sys, at) = system(row);
                    too_large.push(too_large_letter(T::DATASET, sys, at, &line));
                    continue;
                }
                buf.bytes += line.len();
                buf.lines.push(Bytes::from(line));
            }
            buf.full()
        };
        if !too_large.is_empty() {
            let stream = self.stream_name(T::DATASET);
            bikeshare_types::metrics::firehose_records(
                &stream,
                "too_large",
                too_large.len() as u64,
            );
            bikeshare_types::metrics::dead_letters(
                "processor",
                RECORD_TOO_LARGE_RULE,
                too_large.len() as u64,
            );
            tracing::warn!(dataset = %T::DATASET, rows = too_large.len(), "firehose: rows over 1,000 KiB dead-lettered");
            self.buffer_dead_letters(&too_large)?;
        }
        if full {
            self.send(T::DATASET).await?;
        }
        Ok(())
    }

    fn buffer_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let mut buffers = self.buffers.lock().map_err(|_| poisoned())?;
        let buf = buffers.entry(Dataset::DeadLetters).or_default();
        for d in letters {
            let line = d.json_line();
            buf.bytes += line.len();
            buf.lines.push(Bytes::from(line));
        }
        Ok(())
    }

    fn stream_name(&self, d: Dataset) -> String {
        self.streams
            .get(d)
            .map(|s| s.name().to_owned())
            .unwrap_or_default()
    }

    /// Sends what one dataset's buffer holds.
    async fn send(&self, d: Dataset) -> Result<(), SinkError> {
        let lines = {
            let mut buffers = self.buffers.lock().map_err(|_| poisoned())?;
            match buffers.get_mut(&d) {
                Some(b) => {
                    b.bytes = 0;
                    std::mem::take(&mut b.lines)
                }
                None => return Ok(()),
            }
        };
        if lines.is_empty() {
            return Ok(());
        }
        let stream = self.streams.get(d).ok_or_else(|| SinkError {
            sink: "firehose",
            message: format!("no delivery stream for {d}"),
        })?;
        match stream.put(&lines).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Back into the buffer, ahead of anything added meanwhile: a later commit
                // sends them again (at least once), never skips them.
                let mut buffers = self.buffers.lock().map_err(|_| poisoned())?;
                if let Some(b) = buffers.get_mut(&d) {
                    b.bytes += lines.iter().map(Bytes::len).sum::<usize>();
                    let newer = std::mem::replace(&mut b.lines, lines);
                    b.lines.extend(newer);
                }
                Err(SinkError {
                    sink: "firehose",
                    message: bikeshare_types::error::chain(&e),
                })
            }
        }
    }

    /// Sends every buffer (dead letters last: sending may add none, but rows set aside
    /// while sending others land in the same barrier).
    async fn send_all(&self) -> Result<(), SinkError> {
        for d in Dataset::ALL {
            self.send(d).await?;
        }
        Ok(())
    }
}

/// A dead letter standing for a row too large for Firehose; its own line always fits (the
/// raw text is cut until it does).
fn too_large_letter(d: Dataset, system: SystemId, at: Timestamp, line: &[u8]) -> DeadLetter {
    let text = String::from_utf8_lossy(line);
    let message = format!(
        "{d} row of {} bytes is over Firehose's {MAX_RECORD_BYTES}-byte record limit",
        line.len()
    );
    let mut keep = text.len();
    loop {
        let mut cut = keep.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut letter = DeadLetter::new(
            system.clone(),
            "firehose",
            RECORD_TOO_LARGE_RULE,
            message.clone(),
            &text[..cut],
            at,
        );
        letter.raw_truncated |= cut < text.len();
        if letter.json_line().len() <= MAX_RECORD_BYTES || cut == 0 {
            return letter;
        }
        keep = cut / 2;
    }
}

#[async_trait]
impl Sinks for FirehoseSinks {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError> {
        if !self.outputs.features {
            return Ok(());
        }
        self.push(&rows, |r| (r.system_id.clone(), r.as_of)).await
    }
    async fn predictions(&self, predictions: Vec<Prediction>) -> Result<(), SinkError> {
        self.push(&predictions, |r| (r.system_id.clone(), r.as_of))
            .await
    }
    async fn labels(&self, labels: Vec<Label>) -> Result<(), SinkError> {
        self.push(&labels, |r| (r.system_id.clone(), r.as_of)).await
    }
    async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
        if !self.outputs.dead_letters {
            return Ok(());
        }
        self.push(&letters, |r| (r.system_id.clone(), r.at)).await
    }
    /// Resolves when every line handed over is in Firehose.
    async fn flush(&self) -> Result<(), SinkError> {
        self.send_all().await
    }
}

#[async_trait]
impl ArchiveTap for FirehoseSinks {
    async fn epoch(&self, staging: &Staging) -> Result<(), SinkError> {
        self.push(staging.raw_events.iter(), |e| {
            (e.system_id.clone(), e.event_time)
        })
        .await?;
        self.push(staging.station_status.iter(), |s| {
            (s.system_id.clone(), s.status.last_reported)
        })
        .await?;
        self.push(staging.dead_letters.iter(), |d| (d.system_id.clone(), d.at))
            .await?;
        self.send_all().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stream_names_follow_the_prefix() {
        assert_eq!(
            stream_name("bikeshare-dev-", Dataset::StationStatus),
            "bikeshare-dev-station-status"
        );
        assert_eq!(stream_name("", Dataset::Predictions), "predictions");
    }

    #[test]
    fn a_too_large_row_becomes_a_dead_letter_that_fits() {
        // Escaping makes control characters six times longer in JSON.
        let line = "\u{1}".repeat(MAX_RECORD_BYTES + 10);
        let d = too_large_letter(
            Dataset::Features,
            SystemId::new("s"),
            Timestamp(7),
            line.as_bytes(),
        );
        assert_eq!(d.rule, RECORD_TOO_LARGE_RULE);
        assert!(d.raw_truncated);
        assert!(d.json_line().len() <= MAX_RECORD_BYTES);
        assert!(d.message.contains("features row of"));
        assert_eq!(d.at, Timestamp(7));
    }
}
