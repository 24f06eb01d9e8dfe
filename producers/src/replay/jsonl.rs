//! JSON lines of [`Envelope`]s (`.jsonl`, optionally gzip), as the simulator's backfill
//! writes them.
//!
//! Envelopes are replayed as recorded: their ids, system, source and times are kept (they were
//! validated when they were made, so no semantic rule runs again). Each line must decode with
//! [`Envelope::decode`]; a line that does not is a dead letter with rule `replay.decode`.
//! Lines are put in event-time order (a stable sort, so equal times keep file order) within
//! pieces of [`PIECE_LINES`] lines, which the replayer merges as it merges files: the simulator
//! and the recorder write in event-time order, so a file streams in memory bounded by a few
//! pieces, whatever its length. A line earlier than the piece before the previous one is
//! emitted anyway and counted in [`super::ReplayStats::out_of_order`] (decision 095).

use std::path::Path;

use bikeshare_types::contracts::Envelope;

use super::files::RecordedLines;
use super::{ReplayChunk, ReplayError, ReplayItem, RowContext, rule, source_name};

/// Lines per piece: 16,384 lines are 1.6 minutes of a 10,000-station city reporting every
/// minute, about 20 MiB of decoded envelopes.
pub const PIECE_LINES: u64 = 16_384;

/// JSON lines as a [`super::RecordedFormat`]: files stand alone and carry their own times.
/// Files are read in pieces of `piece_lines` lines ([`PIECE_LINES`] by default).
#[derive(Debug)]
pub struct JsonlFormat {
    pub piece_lines: u64,
}

impl Default for JsonlFormat {
    fn default() -> Self {
        Self {
            piece_lines: PIECE_LINES,
        }
    }
}

impl super::RecordedFormat for JsonlFormat {
    fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        read_file(path, ctx)
    }

    fn read_pieces(
        &mut self,
        path: &Path,
        ctx: &RowContext,
        piece: &mut dyn FnMut(ReplayChunk) -> Result<(), ReplayError>,
    ) -> Result<(), ReplayError> {
        read_pieces(path, ctx, self.piece_lines, piece)
    }

    fn needs_time_zone(&self) -> bool {
        false
    }
}

/// Reads one JSON-lines file into event-time order, whole.
pub fn read_file(path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
    let mut whole = ReplayChunk::default();
    read_pieces(path, ctx, u64::MAX, &mut |chunk| {
        whole = chunk;
        Ok(())
    })?;
    Ok(whole)
}

/// Reads one JSON-lines file as pieces of `piece_lines` lines, each in event-time order.
pub fn read_pieces(
    path: &Path,
    ctx: &RowContext,
    piece_lines: u64,
    piece: &mut dyn FnMut(ReplayChunk) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let source = source_name(path);
    let mut lines = RecordedLines::open(path)?;
    // Room for a whole piece up front: a piece's items grown by doubling were copied about
    // twice over, and each large free made glibc consolidate its small-chunk bins.
    let room = usize::try_from(piece_lines.min(PIECE_LINES)).unwrap_or(0);
    let mut chunk = ReplayChunk::default();
    chunk.items.reserve(room);
    while let Some((line_no, raw)) = lines.next_row()? {
        chunk.rows += 1;
        match Envelope::decode_str(&raw) {
            Ok(env) => chunk.items.push(ReplayItem::Recorded(env)),
            Err(e) => chunk.reject_line(ctx, &source, line_no, (rule::DECODE, e.to_string()), &raw),
        }
        if chunk.rows >= piece_lines {
            chunk.items.sort_by_key(ReplayItem::event_time);
            piece(std::mem::take(&mut chunk))?;
            chunk.items.reserve(room);
        }
    }
    chunk.items.sort_by_key(ReplayItem::event_time);
    piece(chunk)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bikeshare_types::contracts::{Event, WeatherObs};
    use bikeshare_types::{SystemId, Timestamp};

    use super::*;
    use crate::replay::tests::ctx;

    fn weather(at: i64) -> Envelope {
        let obs = WeatherObs {
            weather_station: "72509".into(),
            observed_at: Timestamp::from_secs(at),
            temperature_c: Some(1.5),
            precipitation_mm: None,
            wind_speed_kmh: None,
            humidity_pct: None,
            condition: None,
        };
        let t = Timestamp::from_secs(at);
        Envelope::new(SystemId::new("sim"), "simulator", t, t, Event::Weather(obs))
    }

    #[test]
    fn decodes_sorts_and_dead_letters_gzip_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (late, early) = (weather(7200), weather(3600));
        let mut text = Vec::new();
        for line in [
            late.encode(),
            b"{\"schema_version\":1,\"oops\"".to_vec(),
            early.encode(),
        ] {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        text.extend_from_slice(b"\n");
        let p = dir.path().join("backfill.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&text).unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();

        let chunk = read_file(&p, &ctx()).unwrap();
        assert_eq!(chunk.rows, 3);
        let envs: Vec<_> = chunk
            .items
            .into_iter()
            .map(|i| match i {
                ReplayItem::Recorded(e) => e,
                other => panic!("not recorded: {other:?}"),
            })
            .collect();
        assert_eq!(
            envs,
            vec![early, late],
            "kept as recorded, in event-time order"
        );
        assert_eq!(chunk.dead_letters.len(), 1);
        assert_eq!(chunk.dead_letters[0].rule, "replay.decode");
        assert_eq!(chunk.dead_letters[0].source, "replay:backfill.jsonl.gz");
        assert!(chunk.dead_letters[0].message.starts_with("line 2:"));
    }
}
