//! Replay: recorded histories into an [`Output`] in event-time order.
//!
//! A [`Replayer`] drives one [`ReplaySource`] over its files, in the order given:
//!
//! - [`bluebikes`]: the Bluebikes station-status change log (`.csv[.bz2]`), with coordinates
//!   and capacity from a `stations.csv`;
//! - [`jsonl`]: JSON lines of [`Envelope`]s (`.jsonl[.gz]`), as the simulator's backfill writes;
//! - [`snapshots`]: hourly snapshot sets flattened to CSV (Toronto 2020, Ecobici 2024), with
//!   GBFS `station_information` files for coordinates;
//! - [`gbfs_snapshots`]: directories of raw GBFS `station_status` JSON files (1.0–3.0), read
//!   in snapshot order through the same validator as live polling, with optional
//!   `station_information` files;
//! - [`nycflights13`]: hourly airport weather of 2013 (the `NycWeather` source).
//!
//! Each file is read (decompressed as a stream, on a blocking thread, while the pieces already
//! read are emitted) and sorted in memory — whole, or, for JSON lines, in pieces of
//! [`jsonl::PIECE_LINES`] lines so a long history streams in bounded memory (decision 095);
//! consecutive files and pieces are merged, so overlapping ones still come out in order. Only an
//! event earlier than one already emitted — possible only when a file (piece) reaches back
//! before the *previous* one's first event — is out of order: it is emitted anyway and counted in
//! [`ReplayStats::out_of_order`] (never silently dropped). Every input row becomes an event or a
//! dead letter (snapshot rows may also be "unchanged"). Station descriptions, when the source
//! has them, are emitted first, at the first event's time; a description that changes later
//! (a newer `station_information` snapshot, a Bluebikes capacity raised by what a report
//! shows) is emitted again at that time, as a live poller would.
//!
//! Capacities from side files of another date (`stations.csv`) describe stations but do not
//! reject reports unless [`ReplayConfig::side_file_capacity_rule`] says so: a capacity from
//! another day is no evidence against a real report.
//!
//! With [`Speed::Scaled`], events are paced by event time with `tokio::time` (so tests run on a
//! paused clock). Replayed events get a fresh ingest time from the injected clock; their ids
//! depend only on their content, so two replays of the same files give the same ids.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bikeshare_producers::replay::ReplayError> {
//! use std::sync::Arc;
//! use bikeshare_types::SystemClock;
//! use bikeshare_producers::output::MemoryOutput;
//! use bikeshare_producers::replay::{ReplayConfig, ReplaySource, Replayer};
//!
//! let source = ReplaySource::Bluebikes {
//!     status_files: vec!["station_status_2021-01.csv.bz2".into()],
//!     stations: Some("stations.csv".into()),
//! };
//! let config = ReplayConfig::new("bluebikes".into()).with_time_zone("America/New_York");
//! let replayer = Replayer::new(config, Arc::new(SystemClock))?;
//! let stats = replayer.run(&source, &MemoryOutput::default()).await?;
//! assert_eq!(stats.out_of_order, 0);
//! # Ok(()) }
//! ```

pub mod bluebikes;
mod files;
pub mod gbfs_snapshots;
pub mod jsonl;
pub mod nycflights13;
pub mod snapshots;
mod status;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bikeshare_types::contracts::{DeadLetter, Envelope, Event, StationInfo};
use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::limits::KINESIS_MAX_RECORDS_PER_PUT;
use bikeshare_types::{SharedClock, StationId, SystemId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::gbfs::rules::RuleConfig;
use crate::gbfs::{FeedValidator, SchemaRegistry};
use crate::output::{Output, OutputError};

/// Rule names of replay-specific dead letters (the semantic rules are `gbfs.*`).
pub mod rule {
    /// A row whose fields cannot be read (not a number, a missing required field).
    pub const PARSE: &str = "replay.parse";
    /// A JSON line that is not an [`Envelope`](bikeshare_types::contracts::Envelope).
    pub const DECODE: &str = "replay.decode";
}

/// Events per output call by default: one Kinesis `PutRecords` worth.
pub const DEFAULT_BATCH_SIZE: usize = KINESIS_MAX_RECORDS_PER_PUT;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speed {
    /// No pacing: as fast as the output takes events.
    AsFastAsPossible,
    /// Event-time seconds per wall-clock second (`60.0`: an hour of history per minute).
    Scaled(f64),
}

impl Speed {
    /// The CLI's convention: `0` is as fast as possible, anything else a scale factor.
    pub fn from_factor(factor: f64) -> Self {
        if factor == 0.0 {
            Self::AsFastAsPossible
        } else {
            Self::Scaled(factor)
        }
    }
}

/// How to replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayConfig {
    /// The system the replayed events belong to (JSON lines keep their own).
    pub system_id: SystemId,
    pub speed: Speed,
    /// Events per [`Output::events`] call (also dead letters per call).
    pub batch_size: usize,
    /// Thresholds of the semantic rules.
    #[serde(default)]
    pub rules: RuleConfig,
    /// Judge reports by `gbfs.counts.over_capacity` with capacities from a side file whose
    /// date may differ from the recording's (the Bluebikes `stations.csv` is a 2023 snapshot).
    /// Off by default: docks are added and moved, so a capacity from another date is no
    /// evidence against a real report. Capacities recorded with the reports (GBFS snapshot
    /// directories, within the hour) are always applied.
    #[serde(default)]
    pub side_file_capacity_rule: bool,
    /// The system's IANA time zone (`America/New_York` for Bluebikes), for formats that do
    /// not carry one: emitted as a `SystemInfo` before the first event, so the processor's
    /// hour and day features are local. Required by every format but JSON lines (whose
    /// recorded `SystemInfo` carries it) and weather alone; never assumed to be UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl ReplayConfig {
    /// As fast as possible, [`DEFAULT_BATCH_SIZE`], default rules.
    pub fn new(system_id: SystemId) -> Self {
        Self {
            system_id,
            speed: Speed::AsFastAsPossible,
            batch_size: DEFAULT_BATCH_SIZE,
            rules: RuleConfig::default(),
            side_file_capacity_rule: false,
            time_zone: None,
        }
    }

    /// The same, with the system's IANA time zone (see [`ReplayConfig::time_zone`]).
    pub fn with_time_zone(mut self, time_zone: impl Into<String>) -> Self {
        self.time_zone = Some(time_zone.into());
        self
    }
}

/// A recorded history: a format and its files, replayed in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplaySource {
    /// Bluebikes change-log files, and optionally the `stations.csv` with coordinates.
    Bluebikes {
        status_files: Vec<PathBuf>,
        stations: Option<PathBuf>,
    },
    /// JSON lines of envelopes.
    Jsonl { files: Vec<PathBuf> },
    /// Flattened hourly snapshot CSVs, and GBFS `station_information` files (oldest first).
    Snapshots {
        files: Vec<PathBuf>,
        station_information: Vec<PathBuf>,
    },
    /// nycflights13 `weather.csv` files (hourly weather at EWR, JFK and LGA, 2013).
    NycWeather { files: Vec<PathBuf> },
    /// Raw GBFS `station_status` JSON files or directories of them, in snapshot order, with
    /// `station_information` files or directories (see [`gbfs_snapshots`]).
    GbfsSnapshots {
        files_or_dirs: Vec<PathBuf>,
        station_information: Vec<PathBuf>,
        /// MobilityData's `gbfs-json-schema` directory: official schema validation, as
        /// `PollerConfig::schema_dir` does for live feeds. `None`: typed parsing and rules only.
        schema_dir: Option<PathBuf>,
    },
}

impl ReplaySource {
    /// The files replayed, in order.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            Self::Bluebikes {
                status_files: files,
                ..
            }
            | Self::Jsonl { files }
            | Self::Snapshots { files, .. }
            | Self::NycWeather { files }
            | Self::GbfsSnapshots {
                files_or_dirs: files,
                ..
            } => files,
        }
    }

    /// Reads the side files (station lists) and returns the format's reader, with the dead
    /// letters of the side files.
    fn open(
        &self,
        ctx: &RowContext,
    ) -> Result<(Box<dyn RecordedFormat>, Vec<DeadLetter>), ReplayError> {
        Ok(match self {
            Self::Bluebikes { stations, .. } => {
                let (stations, dead) = match stations {
                    Some(p) => bluebikes::read_stations(p, ctx)?,
                    None => (StationTable::default(), Vec::new()),
                };
                (Box::new(bluebikes::BluebikesFormat::new(stations)), dead)
            }
            Self::Jsonl { .. } => (Box::new(jsonl::JsonlFormat::default()), Vec::new()),
            Self::Snapshots {
                station_information,
                ..
            } => {
                let (stations, dead) =
                    snapshots::read_station_information(station_information, ctx)?;
                (Box::new(snapshots::SnapshotReader::new(stations)), dead)
            }
            Self::NycWeather { .. } => (Box::new(FileByFile(nycflights13::read_file)), Vec::new()),
            Self::GbfsSnapshots {
                station_information,
                schema_dir,
                ..
            } => {
                let mut validator = FeedValidator::new(ctx.rules);
                if let Some(dir) = schema_dir {
                    let registry = SchemaRegistry::new(dir)
                        .map_err(|e| ReplayError::Config(bikeshare_types::error::chain(&e)))?;
                    validator = validator.with_schemas(Arc::new(registry));
                }
                let (reader, dead) =
                    gbfs_snapshots::GbfsSnapshotReader::open(station_information, validator, ctx)?;
                (Box::new(reader), dead)
            }
        })
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayStats {
    /// Envelopes emitted (station descriptions included).
    pub events: u64,
    /// Dead letters emitted (side files included).
    pub dead_letters: u64,
    /// Data rows (lines) read from the replayed files, side files excluded.
    pub rows: u64,
    pub first_event_time: Option<Timestamp>,
    pub last_event_time: Option<Timestamp>,
    /// Events emitted with an event time before one already emitted (0 unless files overlap
    /// by more than one file).
    pub out_of_order: u64,
}

impl ReplayStats {
    /// An error when the replay published no event: every record was refused, or there was
    /// none. A command that processed nothing says so and fails.
    pub fn ensure_some_events(&self) -> Result<(), ReplayError> {
        if self.events == 0 {
            return Err(ReplayError::NothingUsable {
                rows: self.rows,
                dead_letters: self.dead_letters,
            });
        }
        Ok(())
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("invalid replay configuration: {0}")]
    Config(String),
    #[error("replay output failed")]
    Output(#[from] OutputError),
    #[error("replay reader task failed: {0}")]
    Task(String),
    #[error(
        "nothing replayed: {rows} rows read, {dead_letters} dead letters and no event \
         (is the format right? the dead letters say why each record was refused)"
    )]
    NothingUsable { rows: u64, dead_letters: u64 },
}

impl Classify for ReplayError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                ErrorClass::User
            }
            // Corrupt compressed data or unreadable bytes: the file is bad.
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
                ErrorClass::User
            }
            Self::Io { .. } | Self::Task(_) => ErrorClass::Internal,
            Self::Format { .. } | Self::Config(_) | Self::NothingUsable { .. } => ErrorClass::User,
            Self::Output(_) => ErrorClass::External,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Self::Output(OutputError::Publish(_)))
    }
}

/// What readers need besides the file: the system, the rules, and the clock that stamps
/// dead letters.
#[derive(Debug, Clone)]
pub struct RowContext {
    pub system_id: SystemId,
    pub rules: RuleConfig,
    /// See [`ReplayConfig::side_file_capacity_rule`].
    pub side_file_capacity_rule: bool,
    pub clock: SharedClock,
}

impl RowContext {
    /// A dead letter of this system, stamped with the clock.
    pub fn dead_letter(
        &self,
        source: &str,
        rule: &str,
        message: impl Into<String>,
        raw: &str,
    ) -> DeadLetter {
        DeadLetter::new(
            self.system_id.clone(),
            source,
            rule,
            message,
            raw,
            self.clock.now(),
        )
    }
}

/// One replayed record, before it is put in an envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayItem {
    /// An event read from a recording: it gets an envelope when emitted.
    Fresh {
        time: Timestamp,
        source: Arc<str>,
        event: Event,
    },
    /// An envelope recorded as such: emitted as it is.
    Recorded(Envelope),
}

impl ReplayItem {
    pub fn event_time(&self) -> Timestamp {
        match self {
            Self::Fresh { time, .. } => *time,
            Self::Recorded(env) => env.event_time,
        }
    }
}

/// What one file gave: events in event-time order, dead letters, and the rows read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayChunk {
    pub items: Vec<ReplayItem>,
    pub dead_letters: Vec<DeadLetter>,
    pub rows: u64,
}

/// A row that failed: the rule and a message.
pub(crate) type RowError = (&'static str, String);

impl ReplayChunk {
    /// Dead-letters line `line_no` (its raw text) of the file `source`.
    pub(crate) fn reject_line(
        &mut self,
        ctx: &RowContext,
        source: &str,
        line_no: u64,
        (rule, message): RowError,
        raw: &str,
    ) {
        let message = format!("line {line_no}: {message}");
        self.dead_letters
            .push(ctx.dead_letter(source, rule, message, raw));
    }

    /// One data row of `source`: an event at its time, or a dead letter naming its line.
    pub(crate) fn row(
        &mut self,
        ctx: &RowContext,
        source: &Arc<str>,
        line_no: u64,
        raw: &str,
        outcome: Result<(Timestamp, Event), RowError>,
    ) {
        match outcome {
            Ok((time, event)) => self.items.push(ReplayItem::Fresh {
                time,
                source: source.clone(),
                event,
            }),
            Err(e) => self.reject_line(ctx, source, line_no, e, raw),
        }
    }
}

/// A recorded format: reads one file at a time (on a blocking thread), keeping any state
/// that spans files. New formats implement this and run through [`Replayer::run_format`].
pub trait RecordedFormat: Send + std::fmt::Debug + 'static {
    /// The files to read, in reading order, from the paths the source was given: a format
    /// may expand directories or order files by their content. By default, as given.
    fn plan(&mut self, paths: &[PathBuf], _ctx: &RowContext) -> Result<Vec<PathBuf>, ReplayError> {
        Ok(paths.to_vec())
    }

    /// Reads `path` completely; `items` must be sorted by event time.
    fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError>;

    /// Reads `path` as a sequence of pieces handed to `piece` in file order, each with its
    /// `items` sorted by event time. The replayer merges consecutive pieces as it merges
    /// consecutive files, so a format whose files are (nearly) in event-time order can stream
    /// a file in bounded memory. By default the whole file is one piece ([`Self::read_file`]).
    fn read_pieces(
        &mut self,
        path: &Path,
        ctx: &RowContext,
        piece: &mut dyn FnMut(ReplayChunk) -> Result<(), ReplayError>,
    ) -> Result<(), ReplayError> {
        piece(self.read_file(path, ctx)?)
    }

    /// Events emitted once before the first event, at its time (station descriptions).
    fn prelude(&mut self) -> Vec<(Arc<str>, Event)> {
        Vec::new()
    }

    /// Whether replaying this format needs [`ReplayConfig::time_zone`]: station reports of
    /// a recording that carries no time zone do. JSON lines carry theirs (a recorded
    /// `SystemInfo`), weather alone has no local-time feature.
    fn needs_time_zone(&self) -> bool {
        true
    }
}

/// A format whose files stand alone (no state across files) and carry their own times (no
/// time zone needed): JSON lines and nycflights13 weather, each one reading function.
#[derive(Debug)]
struct FileByFile(fn(&Path, &RowContext) -> Result<ReplayChunk, ReplayError>);

impl RecordedFormat for FileByFile {
    fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        (self.0)(path, ctx)
    }

    fn needs_time_zone(&self) -> bool {
        false
    }
}

/// Station descriptions and capacities from a recording's side files.
#[derive(Debug, Clone, Default)]
pub struct StationTable {
    infos: Vec<(Arc<str>, StationInfo)>,
    known: HashSet<StationId>,
    capacity: HashMap<StationId, u32>,
}

impl StationTable {
    /// Stations with coordinates, in the order read.
    pub fn infos(&self) -> impl Iterator<Item = &StationInfo> {
        self.infos.iter().map(|(_, info)| info)
    }

    /// A station's capacity, when known.
    pub fn capacity(&self, station: &StationId) -> Option<u32> {
        self.capacity.get(station).copied()
    }

    /// Whether `station` was seen (with or without coordinates).
    pub fn contains(&self, station: &StationId) -> bool {
        self.known.contains(station)
    }

    pub(crate) fn set_capacity(&mut self, station: &StationId, capacity: Option<u32>) {
        self.known.insert(station.clone());
        if let Some(c) = capacity {
            self.capacity.insert(station.clone(), c);
        }
    }

    /// Adds a description; the first one of a station wins.
    pub(crate) fn push_info(&mut self, source: Arc<str>, info: StationInfo) {
        if !self
            .infos
            .iter()
            .any(|(_, i)| i.station_id == info.station_id)
        {
            self.known.insert(info.station_id.clone());
            self.infos.push((source, info));
        }
    }

    pub(crate) fn prelude(&self) -> Vec<(Arc<str>, Event)> {
        self.infos
            .iter()
            .map(|(s, info)| (s.clone(), Event::StationInfo(info.clone())))
            .collect()
    }
}

/// `replay:<file name>`, the source of everything read from `path`.
pub fn source_name(path: &Path) -> Arc<str> {
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    Arc::from(format!("replay:{name}"))
}

/// Replays recorded histories into an [`Output`].
#[derive(Debug, Clone)]
pub struct Replayer {
    config: ReplayConfig,
    clock: SharedClock,
}

impl Replayer {
    /// Checks the configuration; `clock` stamps ingest times and dead letters.
    pub fn new(config: ReplayConfig, clock: SharedClock) -> Result<Self, ReplayError> {
        if config.batch_size == 0 {
            return Err(ReplayError::Config("batch_size must be at least 1".into()));
        }
        if let Speed::Scaled(f) = config.speed
            && !(f.is_finite() && f > 0.0)
        {
            return Err(ReplayError::Config(format!(
                "speed must be a positive factor, not {f}"
            )));
        }
        if let Some(tz) = &config.time_zone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(ReplayError::Config(format!(
                "time zone {tz:?} is not an IANA time zone name (e.g. America/New_York)"
            )));
        }
        Ok(Self { config, clock })
    }

    pub fn config(&self) -> &ReplayConfig {
        &self.config
    }

    fn context(&self) -> RowContext {
        RowContext {
            system_id: self.config.system_id.clone(),
            rules: self.config.rules,
            side_file_capacity_rule: self.config.side_file_capacity_rule,
            clock: self.clock.clone(),
        }
    }

    /// The `SystemInfo` that gives the system its time zone, first of all events; an error
    /// when the format needs one and none was given (never a silent UTC).
    fn time_zone_prelude(
        &self,
        format: &dyn RecordedFormat,
    ) -> Result<Vec<(Arc<str>, Event)>, ReplayError> {
        if !format.needs_time_zone() {
            if self.config.time_zone.is_some() {
                tracing::warn!(
                    "this format carries its systems' time zones: the time zone given is not used"
                );
            }
            return Ok(Vec::new());
        }
        let Some(tz) = &self.config.time_zone else {
            return Err(ReplayError::Config(format!(
                "the recording of system {} carries no time zone: give its IANA time zone \
                     (--time-zone, e.g. America/New_York for Bluebikes); hour and day features \
                     are local and are never assumed to be UTC",
                self.config.system_id
            )));
        };
        let id = self.config.system_id.clone();
        Ok(vec![(
            Arc::from("replay:time-zone"),
            Event::SystemInfo(bikeshare_types::contracts::SystemInfo {
                name: id.as_str().to_owned(),
                system_id: id,
                timezone: tz.clone(),
                language: None,
                gbfs_version: "1.0".into(),
            }),
        )])
    }

    /// Replays `source` completely. Cancel by dropping the future.
    pub async fn run(
        &self,
        source: &ReplaySource,
        output: &dyn Output,
    ) -> Result<ReplayStats, ReplayError> {
        let ctx = self.context();
        let opener = source.clone();
        let (format, side_dead) = blocking(move || opener.open(&ctx)).await?;
        let mut emitter = Emitter::new(&self.config, &self.clock, output);
        emitter.dead_letters(side_dead).await?;
        self.drive(format, source.files(), emitter).await
    }

    /// Replays `files` with a format of the caller's.
    pub async fn run_format(
        &self,
        format: Box<dyn RecordedFormat>,
        files: &[PathBuf],
        output: &dyn Output,
    ) -> Result<ReplayStats, ReplayError> {
        self.drive(
            format,
            files,
            Emitter::new(&self.config, &self.clock, output),
        )
        .await
    }

    async fn drive(
        &self,
        mut format: Box<dyn RecordedFormat>,
        files: &[PathBuf],
        mut emitter: Emitter<'_>,
    ) -> Result<ReplayStats, ReplayError> {
        let (ctx, given) = (self.context(), files.to_vec());
        let (returned, files) = blocking(move || {
            let files = format.plan(&given, &ctx);
            Ok((format, files))
        })
        .await?;
        format = returned;
        let files = files?;
        emitter.prelude = self.time_zone_prelude(format.as_ref())?;
        emitter.prelude.extend(format.prelude());
        let mut pending: Vec<ReplayItem> = Vec::new();
        for path in &files {
            // The file is read on a blocking thread while the pieces already read are
            // emitted; at most `PIECES_IN_FLIGHT` pieces wait between the two.
            let (ctx, owned) = (self.context(), path.clone());
            let (tx, mut rx) = tokio::sync::mpsc::channel::<ReplayChunk>(PIECES_IN_FLIGHT);
            let reader = tokio::task::spawn_blocking(move || {
                let read = format.read_pieces(&owned, &ctx, &mut |chunk| {
                    tx.blocking_send(chunk)
                        .map_err(|_| ReplayError::Task("the replay stopped reading".into()))
                });
                (format, read)
            });
            let mut emitted = Ok(());
            while let Some(chunk) = rx.recv().await {
                emitted = self
                    .emit_piece(path, chunk, &mut pending, &mut emitter)
                    .await;
                if emitted.is_err() {
                    break;
                }
            }
            drop(rx);
            let (returned, read) = reader.await.map_err(|e| ReplayError::Task(e.to_string()))?;
            format = returned;
            emitted?;
            read?;
        }
        emitter.events(pending).await?;
        emitter.finish().await
    }

    /// Emits what of `pending` is final once `chunk` (the next piece of `path`) is known, and
    /// merges the rest with the piece.
    async fn emit_piece(
        &self,
        path: &Path,
        chunk: ReplayChunk,
        pending: &mut Vec<ReplayItem>,
        emitter: &mut Emitter<'_>,
    ) -> Result<(), ReplayError> {
        tracing::debug!(
            file = %path.display(),
            rows = chunk.rows,
            events = chunk.items.len(),
            dead_letters = chunk.dead_letters.len(),
            "replaying a piece of a file"
        );
        emitter.stats.rows += chunk.rows;
        emitter.dead_letters(chunk.dead_letters).await?;
        let Some(first) = chunk.items.first().map(ReplayItem::event_time) else {
            return Ok(());
        };
        // Everything pending up to this piece's first event is final; the rest is merged.
        let rest = pending.split_off(pending.partition_point(|i| i.event_time() <= first));
        emitter.events(std::mem::take(pending)).await?;
        *pending = merge_sorted(rest, chunk.items);
        Ok(())
    }
}

/// Pieces read ahead of the emitter, per file.
const PIECES_IN_FLIGHT: usize = 2;

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReplayError> + Send + 'static,
) -> Result<T, ReplayError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ReplayError::Task(e.to_string()))?
}

/// Merges two event-time-sorted lists; on equal times `a` comes first.
fn merge_sorted(a: Vec<ReplayItem>, b: Vec<ReplayItem>) -> Vec<ReplayItem> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_b = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => y.event_time() < x.event_time(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        match if take_b { b.next() } else { a.next() } {
            Some(item) => out.push(item),
            None => break,
        }
    }
    out
}

/// Batches, paces and counts what goes to the output.
struct Emitter<'a> {
    output: &'a dyn Output,
    clock: &'a SharedClock,
    system_id: SystemId,
    speed: Speed,
    batch_size: usize,
    batch: Vec<Envelope>,
    prelude: Vec<(Arc<str>, Event)>,
    /// The wall instant and event time of the first event, when pacing.
    origin: Option<(Instant, Timestamp)>,
    stats: ReplayStats,
}

impl<'a> Emitter<'a> {
    fn new(config: &ReplayConfig, clock: &'a SharedClock, output: &'a dyn Output) -> Self {
        Self {
            output,
            clock,
            system_id: config.system_id.clone(),
            speed: config.speed,
            batch_size: config.batch_size,
            batch: Vec::with_capacity(config.batch_size.min(10_000)),
            prelude: Vec::new(),
            origin: None,
            stats: ReplayStats::default(),
        }
    }

    async fn events(&mut self, items: Vec<ReplayItem>) -> Result<(), ReplayError> {
        for item in items {
            let time = item.event_time();
            self.pace(time).await?;
            for (source, event) in std::mem::take(&mut self.prelude) {
                let env = Envelope::new(
                    self.system_id.clone(),
                    &*source,
                    time,
                    self.clock.now(),
                    event,
                );
                self.push(env).await?;
            }
            let env = match item {
                ReplayItem::Fresh {
                    time,
                    source,
                    event,
                } => Envelope::new(
                    self.system_id.clone(),
                    &*source,
                    time,
                    self.clock.now(),
                    event,
                ),
                ReplayItem::Recorded(env) => env,
            };
            self.push(env).await?;
        }
        Ok(())
    }

    /// Waits until `time` is due (flushing what is batched first), when pacing.
    async fn pace(&mut self, time: Timestamp) -> Result<(), ReplayError> {
        let Speed::Scaled(factor) = self.speed else {
            return Ok(());
        };
        let (start, t0) = *self.origin.get_or_insert((Instant::now(), time));
        let ahead_ms = (time.millis() - t0.millis()).max(0) as f64 / factor;
        let Some(due) = Duration::try_from_secs_f64(ahead_ms / 1000.0)
            .ok()
            .and_then(|d| start.checked_add(d))
        else {
            return Ok(());
        };
        if due > Instant::now() {
            self.flush().await?;
            tokio::time::sleep_until(due).await;
        }
        Ok(())
    }

    async fn push(&mut self, env: Envelope) -> Result<(), ReplayError> {
        let t = env.event_time;
        let stats = &mut self.stats;
        if stats.last_event_time.is_some_and(|last| t < last) {
            stats.out_of_order += 1;
        }
        stats.first_event_time.get_or_insert(t);
        stats.last_event_time = Some(stats.last_event_time.map_or(t, |last| last.max(t)));
        stats.events += 1;
        self.batch.push(env);
        if self.batch.len() >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ReplayError> {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(
                &mut self.batch,
                Vec::with_capacity(self.batch_size.min(10_000)),
            );
            self.output.events(batch).await?;
        }
        Ok(())
    }

    async fn dead_letters(&mut self, dead: Vec<DeadLetter>) -> Result<(), ReplayError> {
        self.stats.dead_letters += dead.len() as u64;
        let mut dead = dead.into_iter().peekable();
        while dead.peek().is_some() {
            let batch: Vec<_> = dead.by_ref().take(self.batch_size).collect();
            self.output.dead_letters(batch).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<ReplayStats, ReplayError> {
        self.flush().await?;
        if self.stats.out_of_order > 0 {
            tracing::warn!(
                out_of_order = self.stats.out_of_order,
                "replay emitted events out of order"
            );
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bikeshare_testkit::envelopes::status_envelope;
    use bikeshare_types::time::ManualClock;

    use super::*;
    use crate::output::MemoryOutput;

    /// A context for reader tests: system `test`, default rules, a clock in 2021.
    pub(crate) fn ctx() -> RowContext {
        RowContext {
            system_id: SystemId::new("test"),
            rules: RuleConfig::default(),
            side_file_capacity_rule: false,
            clock: Arc::new(ManualClock::new(Timestamp::from_secs(1_640_000_000))),
        }
    }

    const HEADER: &str = "station_id,num_bikes_available,num_docks_available,is_installed,\
                          is_renting,is_returning,last_reported";

    /// Writes a small change-log file with one row per `(station, epoch second)`.
    fn change_log(dir: &Path, name: &str, rows: &[(&str, i64)]) -> PathBuf {
        let mut text = format!("{HEADER}\n");
        for (station, t) in rows {
            text.push_str(&format!("{station},1,2,1,1,1,{t}\n"));
        }
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn replayer(speed: Speed, batch_size: usize) -> Replayer {
        let config = ReplayConfig {
            speed,
            batch_size,
            ..ReplayConfig::new("test".into()).with_time_zone("America/New_York")
        };
        Replayer::new(config, ctx().clock).unwrap()
    }

    /// Event times (s) of the recorded events: the time zone's `SystemInfo` left out.
    fn secs(events: &[Envelope]) -> Vec<i64> {
        events
            .iter()
            .filter(|e| !matches!(e.event, Event::SystemInfo(_)))
            .map(|e| e.event_time.secs())
            .collect()
    }

    #[tokio::test]
    async fn overlapping_files_come_out_globally_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let a = change_log(
            dir.path(),
            "a.csv",
            &[
                ("1", 1_609_477_050),
                ("1", 1_609_477_010),
                ("2", 1_609_477_030),
            ],
        );
        let b = change_log(
            dir.path(),
            "b.csv",
            &[
                ("3", 1_609_477_040),
                ("3", 1_609_477_020),
                ("3", 1_609_477_060),
            ],
        );
        let c = change_log(dir.path(), "c.csv", &[("4", 1_609_477_070)]);
        let out = MemoryOutput::default();
        let source = ReplaySource::Bluebikes {
            status_files: vec![a, b, c],
            stations: None,
        };
        let stats = replayer(Speed::AsFastAsPossible, 2)
            .run(&source, &out)
            .await
            .unwrap();
        let events = out.take_events();
        let offsets: Vec<_> = secs(&events).iter().map(|s| s - 1_609_477_000).collect();
        assert_eq!(offsets, [10, 20, 30, 40, 50, 60, 70]);
        assert_eq!(events[0].source, "replay:time-zone");
        assert_eq!(events[1].source, "replay:a.csv");
        assert_eq!(events[2].source, "replay:b.csv");
        assert_eq!(stats.out_of_order, 0);
        assert_eq!((stats.events, stats.rows, stats.dead_letters), (8, 7, 0));
        assert_eq!(
            stats.first_event_time,
            Some(Timestamp::from_secs(1_609_477_010))
        );
        assert_eq!(
            stats.last_event_time,
            Some(Timestamp::from_secs(1_609_477_070))
        );
    }

    #[tokio::test]
    async fn a_file_reaching_back_past_the_previous_one_is_counted_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = change_log(
            dir.path(),
            "a.csv",
            &[("1", 1_609_477_010), ("1", 1_609_477_020)],
        );
        let b = change_log(dir.path(), "b.csv", &[("2", 1_609_477_015)]);
        let c = change_log(dir.path(), "c.csv", &[("3", 1_609_477_005)]);
        let out = MemoryOutput::default();
        let source = ReplaySource::Bluebikes {
            status_files: vec![a, b, c],
            stations: None,
        };
        let stats = replayer(Speed::AsFastAsPossible, 10)
            .run(&source, &out)
            .await
            .unwrap();
        assert_eq!(secs(&out.take_events()).len(), 4);
        assert_eq!(stats.out_of_order, 1);
        assert_eq!(
            stats.first_event_time,
            Some(Timestamp::from_secs(1_609_477_010))
        );
    }

    #[tokio::test]
    async fn station_infos_lead_at_the_first_event_time_and_dead_letters_are_batched() {
        let dir = tempfile::tempdir().unwrap();
        let stations = dir.path().join("stations.csv");
        std::fs::write(
            &stations,
            "station_id,name,lat,lon,capacity\n1,One,42.3,-71.1,10\n2,Two,0,0,5\n",
        )
        .unwrap();
        let log = change_log(
            dir.path(),
            "s.csv",
            &[("1", 1_609_477_020), ("x", -5), ("y", -6), ("z", -7)],
        );
        let out = MemoryOutput::default();
        let source = ReplaySource::Bluebikes {
            status_files: vec![log],
            stations: Some(stations),
        };
        let stats = replayer(Speed::AsFastAsPossible, 2)
            .run(&source, &out)
            .await
            .unwrap();
        let mut events = out.take_events();
        assert!(
            matches!(&events[0].event, Event::SystemInfo(i) if i.timezone == "America/New_York")
        );
        let zone = events.remove(0);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0].event, Event::StationInfo(i) if i.station_id.as_str() == "1"));
        assert_eq!(events[0].event_time, events[1].event_time);
        assert_eq!(zone.event_time, events[0].event_time);
        assert_eq!(events[0].source, "replay:stations.csv");
        assert_eq!(stats.dead_letters, 4);
        assert_eq!(out.take_dead_letters().len(), 4);
    }

    /// Records the (paused) tokio instant of every `events` call.
    #[derive(Debug, Default)]
    struct TimedOutput {
        calls: Mutex<Vec<(Duration, Vec<i64>)>>,
        start: Mutex<Option<Instant>>,
    }

    #[async_trait]
    impl Output for TimedOutput {
        async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError> {
            let now = Instant::now();
            let start = *self.start.lock().unwrap().get_or_insert(now);
            self.calls
                .lock()
                .unwrap()
                .push((now - start, secs(&events)));
            Ok(())
        }
        async fn dead_letters(&self, _: Vec<DeadLetter>) -> Result<(), OutputError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scaled_speed_paces_by_event_time() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_609_477_000;
        // Two events at t0, one a minute later, one two hours later; 60x speed.
        let log = change_log(
            dir.path(),
            "s.csv",
            &[("1", t0), ("2", t0), ("1", t0 + 60), ("2", t0 + 7200)],
        );
        let out = TimedOutput::default();
        let source = ReplaySource::Bluebikes {
            status_files: vec![log],
            stations: None,
        };
        replayer(Speed::Scaled(60.0), 100)
            .run(&source, &out)
            .await
            .unwrap();
        let calls = out.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                (Duration::ZERO, vec![t0, t0]),
                (Duration::from_secs(1), vec![t0 + 60]),
                (Duration::from_secs(120), vec![t0 + 7200]),
            ]
        );
    }

    #[tokio::test]
    async fn a_recording_without_a_time_zone_is_refused_and_a_given_one_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, "station_id,num_bikes_available\n").unwrap();
        let source = ReplaySource::Bluebikes {
            status_files: vec![p],
            stations: None,
        };
        let clock = ctx().clock;
        let out = MemoryOutput::default();
        let none = Replayer::new(ReplayConfig::new("bb".into()), clock.clone()).unwrap();
        let err = none.run(&source, &out).await.unwrap_err();
        assert!(matches!(err, ReplayError::Config(_)), "{err}");
        assert!(err.to_string().contains("--time-zone"), "{err}");
        assert!(out.take_events().is_empty());
        let bad = ReplayConfig::new("bb".into()).with_time_zone("Boston");
        assert!(matches!(
            Replayer::new(bad, clock.clone()),
            Err(ReplayError::Config(_))
        ));
        // JSON lines carry their own: no time zone needed.
        let j = dir.path().join("e.jsonl");
        let t = Timestamp::from_secs(1_609_477_000);
        std::fs::write(
            &j,
            status_envelope("sim", "simulator", "s1", t.millis(), 1, 3).encode(),
        )
        .unwrap();
        none.run(&ReplaySource::Jsonl { files: vec![j] }, &out)
            .await
            .unwrap();
        assert_eq!(out.take_events().len(), 1);
    }

    #[tokio::test]
    async fn jsonl_replays_envelopes_as_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let t = Timestamp::from_secs(1_609_477_000);
        let env = status_envelope("sim", "simulator", "s1", t.millis(), 1, 3);
        let p = dir.path().join("b.jsonl");
        std::fs::write(&p, [env.encode(), b"\nnot json\n".to_vec()].concat()).unwrap();
        let out = MemoryOutput::default();
        let stats = replayer(Speed::AsFastAsPossible, 10)
            .run(&ReplaySource::Jsonl { files: vec![p] }, &out)
            .await
            .unwrap();
        assert_eq!(out.take_events(), vec![env]);
        let dead = out.take_dead_letters();
        assert_eq!(
            (
                dead.len(),
                dead[0].rule.as_str(),
                dead[0].system_id.as_str()
            ),
            (1, "replay.decode", "test")
        );
        assert_eq!((stats.rows, stats.events, stats.dead_letters), (2, 1, 1));
    }

    /// JSON lines read in pieces of two lines (the replayer reads [`jsonl::PIECE_LINES`]).
    fn two_line_pieces() -> Box<jsonl::JsonlFormat> {
        Box::new(jsonl::JsonlFormat { piece_lines: 2 })
    }

    /// A JSON-lines file of status reports at `secs`, in that line order.
    fn jsonl_at(dir: &Path, secs: &[i64]) -> PathBuf {
        let mut text = Vec::new();
        for (i, s) in secs.iter().enumerate() {
            let env = status_envelope("sim", "simulator", &format!("s{i}"), s * 1000, 1, 3);
            text.extend_from_slice(&env.encode());
            text.push(b'\n');
        }
        let p = dir.join("pieces.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn a_file_streamed_in_pieces_is_reordered_within_the_previous_piece_and_counts_the_rest()
    {
        let dir = tempfile::tempdir().unwrap();
        // Pieces [10, 30] [20, 50] [40, 60] [5]: 20 and 40 reach back into the previous piece
        // (merged into order); 5 reaches back past it (emitted, counted, never dropped).
        let p = jsonl_at(dir.path(), &[10, 30, 20, 50, 40, 60, 5]);
        let out = MemoryOutput::default();
        let stats = replayer(Speed::AsFastAsPossible, 3)
            .run_format(two_line_pieces(), &[p], &out)
            .await
            .unwrap();
        assert_eq!(secs(&out.take_events()), vec![10, 20, 30, 5, 40, 50, 60]);
        assert_eq!((stats.rows, stats.events, stats.out_of_order), (7, 7, 1));
    }

    #[tokio::test]
    async fn an_output_failing_mid_file_stops_the_reading_with_its_own_error() {
        #[derive(Debug, Default)]
        struct FailsOnSecondBatch(Mutex<u32>);

        #[async_trait]
        impl Output for FailsOnSecondBatch {
            async fn events(&self, _: Vec<Envelope>) -> Result<(), OutputError> {
                let mut n = self.0.lock().unwrap();
                *n += 1;
                if *n >= 2 {
                    return Err(OutputError::Publish("the stream is gone".into()));
                }
                Ok(())
            }

            async fn dead_letters(&self, _: Vec<DeadLetter>) -> Result<(), OutputError> {
                Ok(())
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let p = jsonl_at(dir.path(), &(0..100).collect::<Vec<_>>());
        let out = FailsOnSecondBatch::default();
        let err = replayer(Speed::AsFastAsPossible, 1)
            .run_format(two_line_pieces(), &[p], &out)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ReplayError::Output(OutputError::Publish(m)) if m == "the stream is gone"),
            "the output's error, not the reader's: {err:?}"
        );
        assert_eq!(*out.0.lock().unwrap(), 2, "no batch after the failed one");
    }

    #[test]
    fn config_is_checked_and_errors_are_classified() {
        let bad = |speed, batch_size| {
            let config = ReplayConfig {
                speed,
                batch_size,
                ..ReplayConfig::new("t".into())
            };
            Replayer::new(config, ctx().clock).unwrap_err()
        };
        assert!(matches!(
            bad(Speed::AsFastAsPossible, 0),
            ReplayError::Config(_)
        ));
        assert!(matches!(
            bad(Speed::Scaled(-1.0), 1),
            ReplayError::Config(_)
        ));
        assert!(matches!(
            bad(Speed::Scaled(f64::NAN), 1),
            ReplayError::Config(_)
        ));
        assert_eq!(Speed::from_factor(0.0), Speed::AsFastAsPossible);
        assert_eq!(Speed::from_factor(60.0), Speed::Scaled(60.0));
        let missing = ReplayError::Io {
            path: "x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(missing.class(), ErrorClass::User);
        assert!(!missing.retryable());
        assert!(ReplayError::Output(OutputError::Publish("x".into())).retryable());
    }

    #[test]
    fn the_replay_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (r, out) = (
            replayer(Speed::AsFastAsPossible, 1),
            MemoryOutput::default(),
        );
        let source = ReplaySource::Jsonl { files: vec![] };
        assert_send(&r.run(&source, &out));
    }

    #[tokio::test]
    async fn a_missing_file_is_a_clear_error() {
        let source = ReplaySource::Jsonl {
            files: vec!["/nonexistent/x.jsonl".into()],
        };
        let err = replayer(Speed::AsFastAsPossible, 1)
            .run(&source, &MemoryOutput::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.jsonl"), "{err}");
        assert_eq!(err.class(), ErrorClass::User);
    }
}
