//! Polling one GBFS system: discovery, information feeds on change, status at its TTL.
//!
//! A [`GbfsPoller`] owns one system (its own task; a hanging feed delays only itself, and
//! only up to the client's timeouts). Each [`GbfsPoller::poll_once`]:
//!
//! 1. reads `gbfs.json` when due (first poll, then at its TTL bounded by the information
//!    bounds of [`PollerConfig`]) and resolves the feed URLs against it;
//! 2. reads `system_information` and `station_information` when due, and emits a
//!    `SystemInfo` / `StationInfo` event for what is new or changed since the last emission;
//! 3. reads `station_status` and emits a `StationStatus` event for every station whose
//!    report changed (`last_reported` or any count or flag) since the last one emitted. A
//!    status naming a station that `station_information` does not know makes the poller
//!    re-read `station_information` once before the record is dead-lettered
//!    (`gbfs.station.unknown`);
//!    After the statuses it publishes a `FeedHeartbeat` carrying the feed's `last_updated`
//!    (once per new `last_updated`), so the processor's watermark advances even when no
//!    station changed;
//! 4. returns a [`PollReport`] whose `next_poll_in` is the status feed's `ttl` clamped to
//!    `[min_interval, max_interval]`.
//!
//! Requests are conditional (ETag / Last-Modified), so an unchanged feed costs a `304` and
//! emits nothing. Rejected records go to [`Output::dead_letters`], once per distinct bad
//! record: the same bad record seen again on the next poll is not dead-lettered again (its
//! dead-letter id is deterministic). A feed that fails entirely is logged with its whole cause
//! chain, counted in [`PollerStats`] by reason, and read again at the next poll; the poller
//! never panics and never stops on bad input. [`GbfsPoller::run`] loops until shutdown.
//!
//! Times: event times come from the feed (`last_reported` for status, `last_updated` for
//! information), `ingest_time` and the future-time rule from the injected [`Clock`]; the poll
//! schedule uses tokio's timer, so tests can pause it.
//!
//! [`Clock`]: bikeshare_types::Clock

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bikeshare_types::contracts::{
    DeadLetter, Envelope, Event, FeedHeartbeat, STATION_STATUS_FEED, StationInfo, StationStatus,
    SystemInfo,
};
use bikeshare_types::counters::Counter;
use bikeshare_types::error::{Classify, ErrorClass, chain};
use bikeshare_types::metrics;
use bikeshare_types::{EventId, SharedClock, StationId, SystemId, Timestamp};
use bytes::Bytes;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use tokio::time::Instant;

use super::client::{CacheValidators, ClientConfig, FetchError, Fetched, GbfsClient};
use super::discovery::Discovery;
use super::model::{FeedError, FeedHeader, FeedKind, KnownStations, Rejected};
use super::rules::{RuleConfig, rule};
use super::schema::{SchemaError, SchemaRegistry};
use super::validate::FeedValidator;
use crate::output::{Output, OutputError};
use bikeshare_types::time::millis;

/// Reasons of poll failures that are not fetch or feed errors (metrics labels).
pub mod reason {
    /// `gbfs.json` does not list a feed the poller needs (`station_status`).
    pub const FEED_MISSING: &str = "gbfs.feed.missing";
    /// A feed URL in `gbfs.json` cannot be parsed.
    pub const BAD_URL: &str = "gbfs.url";
    /// The output refused the records.
    pub const OUTPUT: &str = "output";
}

/// Poller settings; every field has a default. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct PollerConfig {
    /// Shortest time between two `station_status` polls (also used after a failure).
    #[serde(rename = "min_interval_ms", with = "millis")]
    #[default(Duration::from_secs(10))]
    pub min_interval: Duration,
    /// Longest time between two `station_status` polls, whatever the feed's TTL.
    #[serde(rename = "max_interval_ms", with = "millis")]
    #[default(Duration::from_secs(120))]
    pub max_interval: Duration,
    /// Shortest time between two reads of `gbfs.json`, `system_information` and
    /// `station_information`.
    #[serde(rename = "info_min_interval_ms", with = "millis")]
    #[default(Duration::from_secs(60))]
    pub info_min_interval: Duration,
    /// Longest time between two reads of those feeds.
    #[serde(rename = "info_max_interval_ms", with = "millis")]
    #[default(Duration::from_secs(3600))]
    pub info_max_interval: Duration,
    /// Preferred language (discovery in 1.x/2.x, localised names in 3.0).
    pub language: Option<String>,
    /// Directory of MobilityData's `gbfs-json-schema`; `None` disables schema validation.
    pub schema_dir: Option<PathBuf>,
    pub rules: RuleConfig,
    pub client: ClientConfig,
}

/// Whole seconds of `d`, for a heartbeat's period.
fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn bounded(ttl: u32, min: Duration, max: Duration) -> Duration {
    Duration::from_secs(u64::from(ttl))
        .max(min)
        .min(max.max(min))
}

impl PollerConfig {
    /// When to poll `station_status` again after it said `ttl`.
    pub fn status_interval(&self, ttl: u32) -> Duration {
        bounded(ttl, self.min_interval, self.max_interval)
    }
    /// When to read an information feed again after it said `ttl`.
    pub fn info_interval(&self, ttl: u32) -> Duration {
        bounded(ttl, self.info_min_interval, self.info_max_interval)
    }
}

/// Why the poller could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("discovery URL {url:?} is invalid: {reason}")]
    Url { url: String, reason: String },
    #[error("building the GBFS HTTP client")]
    Client(#[source] FetchError),
    #[error("loading the GBFS JSON schemas")]
    Schema(#[source] SchemaError),
}

impl Classify for SetupError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Url { .. } | Self::Schema(_) => ErrorClass::User,
            Self::Client(e) => e.class(),
        }
    }
    fn retryable(&self) -> bool {
        false
    }
}

/// Why one feed failed in one poll.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{feed}: fetch failed")]
    Fetch {
        feed: FeedKind,
        #[source]
        source: FetchError,
    },
    #[error("{feed} from {url}: not a usable GBFS feed")]
    Feed {
        feed: FeedKind,
        url: String,
        #[source]
        source: FeedError,
    },
    #[error("gbfs.json lists no {feed} feed")]
    MissingFeed { feed: FeedKind },
    #[error("{feed}: URL {url:?} in gbfs.json is invalid: {reason}")]
    BadUrl {
        feed: FeedKind,
        url: String,
        reason: String,
    },
    #[error("{feed}: the output refused the records")]
    Output {
        feed: FeedKind,
        #[source]
        source: OutputError,
    },
}

impl PollError {
    /// Wraps the [`FeedError`] of `feed` read from `url`.
    fn feed_failed(feed: FeedKind, url: &Url) -> impl FnOnce(FeedError) -> Self + '_ {
        move |source| Self::Feed {
            feed,
            url: url.to_string(),
            source,
        }
    }

    pub fn feed(&self) -> FeedKind {
        match self {
            Self::Fetch { feed, .. }
            | Self::Feed { feed, .. }
            | Self::MissingFeed { feed }
            | Self::BadUrl { feed, .. }
            | Self::Output { feed, .. } => *feed,
        }
    }

    /// The `reason` label: the fetch reason, the feed's rule, or one of [`reason`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Fetch { source, .. } => source.reason(),
            Self::Feed { source, .. } => source.rule(),
            Self::MissingFeed { .. } => reason::FEED_MISSING,
            Self::BadUrl { .. } => reason::BAD_URL,
            Self::Output { .. } => reason::OUTPUT,
        }
    }
}

impl Classify for PollError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Fetch { source, .. } => source.class(),
            Self::Feed { source, .. } => source.class(),
            Self::MissingFeed { .. } | Self::BadUrl { .. } => ErrorClass::User,
            Self::Output { .. } => ErrorClass::External,
        }
    }
    /// Every poll failure is tried again at the next poll; this says whether that can help
    /// without the feed or the configuration changing.
    fn retryable(&self) -> bool {
        match self {
            Self::Fetch { source, .. } => source.retryable(),
            Self::Output { .. } => true,
            _ => false,
        }
    }
}

/// Counters of one poller, shared with whoever exports metrics.
#[derive(Debug, Default)]
pub struct PollerStats {
    polls: Counter,
    not_modified: Counter,
    errors: Counter,
    events: Counter,
    dead_letters: Counter,
    skipped: Counter,
    errors_by_reason: Mutex<BTreeMap<&'static str, u64>>,
}

/// A copy of [`PollerStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollerStatsSnapshot {
    /// Calls of `poll_once`.
    pub polls: u64,
    /// Fetches answered `304 Not Modified` (any feed).
    pub not_modified: u64,
    /// Feed failures (any feed), also by reason below.
    pub errors: u64,
    pub events: u64,
    pub dead_letters: u64,
    /// Valid records with nothing to emit (out of service, never reported).
    pub skipped: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
}

impl PollerStats {
    pub fn snapshot(&self) -> PollerStatsSnapshot {
        PollerStatsSnapshot {
            polls: self.polls.get(),
            not_modified: self.not_modified.get(),
            errors: self.errors.get(),
            events: self.events.get(),
            dead_letters: self.dead_letters.get(),
            skipped: self.skipped.get(),
            errors_by_reason: self
                .errors_by_reason
                .lock()
                .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
                .unwrap_or_default(),
        }
    }

    fn error(&self, reason: &'static str) {
        self.errors.incr();
        if let Ok(mut m) = self.errors_by_reason.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }
}

/// What one [`GbfsPoller::poll_once`] did.
#[derive(Debug, Default)]
pub struct PollReport {
    pub events: usize,
    pub dead_letters: usize,
    pub skipped: usize,
    /// Feeds read with a new body.
    pub fetched: Vec<FeedKind>,
    /// Feeds answered `304 Not Modified`.
    pub not_modified: Vec<FeedKind>,
    /// Feeds that failed (each already logged and counted).
    pub errors: Vec<PollError>,
    /// When to poll again.
    pub next_poll_in: Duration,
}

impl PollReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A feed's newest news: its time (`last_updated`, or the read time of an information feed),
/// when it arrived (the clock at that read), and the feed's period.
#[derive(Debug, Clone, Copy)]
struct News {
    time: Timestamp,
    arrived: Timestamp,
    period: Duration,
}

/// A feed that fails: why, since when, and when that was last dead-lettered.
#[derive(Debug, Clone, Copy)]
struct Failing {
    reason: &'static str,
    since: Timestamp,
    reported: Timestamp,
}

/// A feed that keeps failing for the same reason is dead-lettered again after this long.
const FAILURE_REPEAT_MS: i64 = Timestamp::HOUR_MS;

/// Where one feed is, and what we know about its last response.
#[derive(Debug, Default)]
struct FeedState {
    url: Option<Url>,
    validators: CacheValidators,
    /// The TTL of the last body read.
    ttl: u32,
    /// `None`: due now.
    next_due: Option<Instant>,
}

impl FeedState {
    fn due(&self, now: Instant) -> bool {
        self.next_due.is_none_or(|d| now >= d)
    }
}

/// The state of each feed the poller reads.
#[derive(Debug, Default)]
struct Feeds {
    discovery: FeedState,
    system_information: FeedState,
    station_information: FeedState,
    station_status: FeedState,
}

/// One feed as read: where from, its body and validators, and when it was read.
struct FeedRead {
    url: Url,
    body: Bytes,
    validators: CacheValidators,
    now: Timestamp,
}

impl FeedRead {
    /// An event of `system` from this read, at `event_time`.
    fn envelope(&self, system: &SystemId, event_time: Timestamp, event: Event) -> Envelope {
        Envelope::new(
            system.clone(),
            self.url.as_str(),
            event_time,
            self.now,
            event,
        )
    }
}

/// Polls one GBFS system. See the module docs.
#[derive(Debug)]
pub struct GbfsPoller {
    system_id: SystemId,
    discovery_url: Url,
    config: PollerConfig,
    client: GbfsClient,
    validator: FeedValidator,
    clock: SharedClock,
    stats: Arc<PollerStats>,
    feeds: Feeds,
    warned_versions: HashSet<String>,
    last_system_info: Option<SystemInfo>,
    stations: HashMap<StationId, StationInfo>,
    known: Option<KnownStations>,
    last_status: HashMap<StationId, StationStatus>,
    refreshed_for_unknown: HashSet<StationId>,
    last_dead_letters: HashMap<FeedKind, HashSet<EventId>>,
    /// Feeds failing now: the reason, when this failure began, and when it was last
    /// dead-lettered (see [`Self::dead_letter_failures`]).
    failing: BTreeMap<FeedKind, Failing>,
    /// `last_updated` of the last heartbeat published.
    last_heartbeat: Option<Timestamp>,
    /// The newest `last_updated` read from each feed (data freshness).
    newest_last_updated: BTreeMap<FeedKind, Timestamp>,
    /// Per feed: its newest news (see [`Self::read_ok`]), when that news arrived, and how
    /// often news is due.
    freshness: BTreeMap<FeedKind, News>,
}

impl GbfsPoller {
    /// A poller for `system_id`, discovering its feeds from `discovery_url` (`gbfs.json`).
    pub fn new(
        system_id: SystemId,
        discovery_url: &str,
        config: PollerConfig,
        clock: SharedClock,
    ) -> Result<Self, SetupError> {
        let url = Url::parse(discovery_url).map_err(|e| SetupError::Url {
            url: discovery_url.to_owned(),
            reason: e.to_string(),
        })?;
        let client = GbfsClient::new(config.client.clone()).map_err(SetupError::Client)?;
        let mut validator = FeedValidator::new(config.rules).with_language(config.language.clone());
        if let Some(dir) = &config.schema_dir {
            let registry = SchemaRegistry::new(dir).map_err(SetupError::Schema)?;
            validator = validator.with_schemas(Arc::new(registry));
        }
        Ok(Self {
            system_id,
            discovery_url: url,
            config,
            client,
            validator,
            clock,
            stats: Arc::default(),
            feeds: Feeds::default(),
            warned_versions: HashSet::new(),
            last_system_info: None,
            stations: HashMap::new(),
            known: None,
            last_status: HashMap::new(),
            refreshed_for_unknown: HashSet::new(),
            last_dead_letters: HashMap::new(),
            failing: BTreeMap::new(),
            last_heartbeat: None,
            newest_last_updated: BTreeMap::new(),
            freshness: BTreeMap::new(),
        })
    }

    /// Shares one schema registry (compiled once) between pollers.
    pub fn with_schemas(mut self, schemas: Arc<SchemaRegistry>) -> Self {
        self.validator = self.validator.with_schemas(schemas);
        self
    }

    /// Shares one HTTP client (one connection pool) between pollers.
    pub fn with_client(mut self, client: GbfsClient) -> Self {
        self.client = client;
        self
    }

    pub fn system_id(&self) -> &SystemId {
        &self.system_id
    }

    /// The counters, shared: they stay readable after [`GbfsPoller::run`] takes the poller.
    pub fn stats(&self) -> Arc<PollerStats> {
        Arc::clone(&self.stats)
    }

    /// Polls until `shutdown` completes, then returns the final counters.
    pub async fn run(
        mut self,
        output: Arc<dyn Output>,
        shutdown: impl Future<Output = ()>,
    ) -> PollerStatsSnapshot {
        tokio::pin!(shutdown);
        tracing::info!(system = %self.system_id, url = %self.discovery_url, "GBFS poller started");
        loop {
            let report = tokio::select! {
                biased;
                () = &mut shutdown => break,
                report = self.poll_once(output.as_ref()) => report,
            };
            tracing::debug!(
                system = %self.system_id,
                events = report.events,
                dead_letters = report.dead_letters,
                errors = report.errors.len(),
                next_poll_ms = u64::try_from(report.next_poll_in.as_millis()).unwrap_or(u64::MAX),
                "GBFS poll done"
            );
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(report.next_poll_in) => {}
            }
        }
        tracing::info!(system = %self.system_id, "GBFS poller stopped");
        self.stats.snapshot()
    }

    /// One poll of every feed that is due. Failures are in the report, already logged.
    pub async fn poll_once(&mut self, output: &dyn Output) -> PollReport {
        self.stats.polls.incr();
        let mut report = PollReport::default();
        let started = Instant::now();

        let status_known = self.feed(FeedKind::StationStatus).url.is_some();
        if (!status_known || self.feed(FeedKind::Discovery).due(started))
            && let Err(e) = self.poll_discovery(output, &mut report).await
        {
            self.failed(e, &mut report);
        }
        if self.feed(FeedKind::StationStatus).url.is_none() {
            report.next_poll_in = self.config.min_interval;
            return report;
        }
        let mut info_read = Vec::new();
        for kind in [FeedKind::SystemInformation, FeedKind::StationInformation] {
            let feed = self.feed(kind);
            if feed.url.is_some() && feed.due(started) {
                let result = match kind {
                    FeedKind::SystemInformation => {
                        self.poll_system_information(output, &mut report).await
                    }
                    _ => self.poll_station_information(output, &mut report).await,
                };
                match result {
                    Ok(()) => info_read.push(kind),
                    Err(e) => self.failed(e, &mut report),
                }
            }
        }
        for kind in info_read {
            if let Err(e) = self.info_heartbeat(kind, output, &mut report).await {
                self.failed(e, &mut report);
            }
        }
        report.next_poll_in = match self.poll_station_status(output, &mut report).await {
            Ok(ttl) => self.config.status_interval(ttl),
            Err(e) => {
                self.failed(e, &mut report);
                self.config.min_interval
            }
        };
        self.dead_letter_failures(output, &mut report).await;
        let now = self.clock.now();
        for (kind, news) in &self.freshness {
            metrics::feed_age(
                self.system_id.as_str(),
                kind.name(),
                now.millis() - news.time.millis(),
                now.millis() - news.arrived.millis(),
                i64::try_from(news.period.as_millis()).unwrap_or(i64::MAX),
            );
        }
        report
    }

    /// Dead-letters the feeds that failed in this poll, so a feed that stays broken leaves a
    /// record in the stream and not only a log line: one when a failure begins (or its reason
    /// changes), then one an hour while it lasts, not one per poll. A failure to publish to
    /// the output is not dead-lettered there (it would fail the same way).
    async fn dead_letter_failures(&mut self, output: &dyn Output, report: &mut PollReport) {
        let now = self.clock.now();
        let mut letters = Vec::new();
        for error in &report.errors {
            if matches!(error, PollError::Output { .. }) {
                continue;
            }
            let (kind, reason) = (error.feed(), error.reason());
            let failing = match self.failing.get(&kind) {
                Some(f) if f.reason == reason => {
                    if now.millis() - f.reported.millis() < FAILURE_REPEAT_MS {
                        continue;
                    }
                    Failing {
                        reported: now,
                        ..*f
                    }
                }
                _ => Failing {
                    reason,
                    since: now,
                    reported: now,
                },
            };
            self.failing.insert(kind, failing);
            let url = match kind {
                FeedKind::Discovery => Some(&self.discovery_url),
                _ => self.feed(kind).url.as_ref(),
            }
            .map_or_else(|| self.discovery_url.to_string(), Url::to_string);
            // No payload was read: the raw record says which read failed, and since when.
            let raw = serde_json::json!({
                "feed": kind.name(),
                "url": url,
                "failing_since": failing.since,
                "at": now,
            })
            .to_string();
            letters.push(DeadLetter::new(
                self.system_id.clone(),
                url,
                reason,
                chain(error),
                &raw,
                now,
            ));
        }
        if letters.is_empty() {
            return;
        }
        let (n, rules): (usize, Vec<String>) = (
            letters.len(),
            letters.iter().map(|d| d.rule.clone()).collect(),
        );
        match output.dead_letters(letters).await {
            Ok(()) => {
                for rule in rules {
                    metrics::dead_letters("ingest", &rule, 1);
                }
                report.dead_letters += n;
                self.stats.dead_letters.add(n);
            }
            Err(e) => tracing::warn!(
                system = %self.system_id,
                error = %chain(&e),
                "could not dead-letter the feeds that failed; they are logged and counted only"
            ),
        }
    }

    /// Publishes that an information feed was read (a `200` or a `304`): those feeds publish
    /// events only on change, so this is how a reader of the stream sees that they are alive.
    async fn info_heartbeat(
        &mut self,
        kind: FeedKind,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let (
            Some(url),
            Some(&News {
                time: read_at,
                period,
                ..
            }),
        ) = (self.feed(kind).url.clone(), self.freshness.get(&kind))
        else {
            return Ok(());
        };
        let event = Envelope::new(
            self.system_id.clone(),
            url.as_str(),
            read_at,
            read_at,
            Event::FeedHeartbeat(FeedHeartbeat {
                feed: kind.name().into(),
                last_updated: read_at,
                period_s: Some(secs(period)),
            }),
        );
        self.emit(kind, vec![event], output, report).await
    }

    fn feed(&self, kind: FeedKind) -> &FeedState {
        let f = &self.feeds;
        match kind {
            FeedKind::Discovery => &f.discovery,
            FeedKind::SystemInformation => &f.system_information,
            FeedKind::StationInformation => &f.station_information,
            FeedKind::StationStatus => &f.station_status,
        }
    }

    fn feed_mut(&mut self, kind: FeedKind) -> &mut FeedState {
        let f = &mut self.feeds;
        match kind {
            FeedKind::Discovery => &mut f.discovery,
            FeedKind::SystemInformation => &mut f.system_information,
            FeedKind::StationInformation => &mut f.station_information,
            FeedKind::StationStatus => &mut f.station_status,
        }
    }

    fn failed(&mut self, error: PollError, report: &mut PollReport) {
        tracing::warn!(
            system = %self.system_id,
            feed = error.feed().name(),
            reason = error.reason(),
            error = %chain(&error),
            "GBFS feed failed; it is read again at the next poll"
        );
        self.stats.error(error.reason());
        metrics::feed_error(self.system_id.as_str(), error.feed().name(), error.reason());
        // Forget the validators so the next poll reads the body again instead of a 304.
        if matches!(error, PollError::Feed { .. } | PollError::Output { .. }) {
            self.feed_mut(error.feed()).validators = CacheValidators::default();
        }
        self.feed_mut(error.feed()).next_due = None;
        report.errors.push(error);
    }

    /// GET one feed: `None` when not modified (a successful read, recorded), else what was read.
    async fn fetch(
        &mut self,
        kind: FeedKind,
        report: &mut PollReport,
    ) -> Result<Option<FeedRead>, PollError> {
        let url = match kind {
            FeedKind::Discovery => Some(self.discovery_url.clone()),
            _ => self.feed(kind).url.clone(),
        };
        let Some(url) = url else {
            return Err(PollError::MissingFeed { feed: kind });
        };
        let fetched = self
            .client
            .fetch(&url, &self.feed(kind).validators)
            .await
            .map_err(|source| PollError::Fetch { feed: kind, source })?;
        match fetched {
            Fetched::NotModified => {
                self.stats.not_modified.incr();
                report.not_modified.push(kind);
                self.read_ok(kind, None, None);
                Ok(None)
            }
            Fetched::Body { body, validators } => {
                report.fetched.push(kind);
                Ok(Some(FeedRead {
                    url,
                    body,
                    validators,
                    now: self.clock.now(),
                }))
            }
        }
    }

    /// Dead-letters what a read rejected, then records the read as successful (see
    /// [`Self::read_ok`]).
    async fn finish_read(
        &mut self,
        kind: FeedKind,
        read: FeedRead,
        rejected: &[Rejected],
        ttl: u32,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        self.dead_letter(kind, &read.url, rejected, read.now, output, report)
            .await?;
        self.read_ok(kind, Some(read.validators), Some(ttl));
        Ok(())
    }

    /// Records a successful read: validators, TTL, when the feed is due again, and its
    /// news. `station_status`'s news is a newer `last_updated` (a feed that keeps serving the
    /// same data brings none); the other feeds change rarely, so a read, `304` included, is
    /// their news.
    fn read_ok(&mut self, kind: FeedKind, validators: Option<CacheValidators>, ttl: Option<u32>) {
        let status = kind == FeedKind::StationStatus;
        let feed = self.feed_mut(kind);
        if let Some(v) = validators {
            feed.validators = v;
        }
        if let Some(ttl) = ttl {
            feed.ttl = ttl;
        }
        let ttl = feed.ttl;
        let interval = if status {
            self.config.status_interval(ttl)
        } else {
            self.config.info_interval(ttl)
        };
        self.feed_mut(kind).next_due = Some(Instant::now() + interval);
        let now = self.clock.now();
        let time = if status {
            self.newest_last_updated.get(&kind).copied()
        } else {
            Some(now)
        };
        if let Some(time) = time {
            let news = self.freshness.entry(kind).or_insert(News {
                time,
                arrived: now,
                period: interval,
            });
            if time > news.time {
                (news.time, news.arrived) = (time, now);
            }
            news.period = interval;
        }
        self.failing.remove(&kind);
    }

    /// Notes the feed's `last_updated` (its freshness), and warns once per version read with
    /// a borrowed layout (`3.1-RC` as 3.0).
    fn warn_version(&mut self, kind: FeedKind, header: &FeedHeader) {
        let newest = self
            .newest_last_updated
            .entry(kind)
            .or_insert(header.last_updated);
        *newest = (*newest).max(header.last_updated);
        let (declared, layout) = (header.declared_version.as_str(), header.version.as_str());
        if declared != layout && self.warned_versions.insert(declared.to_owned()) {
            tracing::warn!(
                system = %self.system_id,
                feed = kind.name(),
                declared,
                read_as = layout,
                "GBFS version not fully supported; reading it with the layout of {layout}"
            );
        }
    }

    async fn poll_discovery(
        &mut self,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let kind = FeedKind::Discovery;
        let Some(read) = self.fetch(kind, report).await? else {
            return Ok(());
        };
        let (url, now) = (&read.url, read.now);
        let discovery = self
            .validator
            .discovery(&read.body, now)
            .map_err(PollError::feed_failed(kind, url))?;
        let Discovery {
            header,
            feeds: _,
            rejected,
            ..
        } = &discovery;
        self.warn_version(kind, header);
        self.dead_letter(kind, url, rejected, now, output, report)
            .await?;

        let mut bad_url = None;
        for kind in [
            FeedKind::SystemInformation,
            FeedKind::StationInformation,
            FeedKind::StationStatus,
        ] {
            let resolved = match discovery.url(kind) {
                None => None,
                Some(raw) => match url.join(raw) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        bad_url.get_or_insert(PollError::BadUrl {
                            feed: kind,
                            url: raw.to_owned(),
                            reason: e.to_string(),
                        });
                        None
                    }
                },
            };
            let feed = self.feed_mut(kind);
            if feed.url != resolved {
                *feed = FeedState {
                    url: resolved,
                    ..FeedState::default()
                };
            }
        }
        self.read_ok(kind, Some(read.validators), Some(discovery.header.ttl));
        if let Some(e) = bad_url {
            return Err(e);
        }
        if self.feed(FeedKind::StationStatus).url.is_none() {
            return Err(PollError::MissingFeed {
                feed: FeedKind::StationStatus,
            });
        }
        Ok(())
    }

    async fn poll_system_information(
        &mut self,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let kind = FeedKind::SystemInformation;
        let Some(read) = self.fetch(kind, report).await? else {
            return Ok(());
        };
        let parsed = self
            .validator
            .system_information(&read.body, &self.system_id, read.now)
            .map_err(PollError::feed_failed(kind, &read.url))?;
        self.warn_version(kind, &parsed.header);
        if let Some(info) = parsed.records.into_iter().next()
            && self.last_system_info.as_ref() != Some(&info)
        {
            let event = read.envelope(
                &self.system_id,
                parsed.header.last_updated,
                Event::SystemInfo(info.clone()),
            );
            self.emit(kind, vec![event], output, report).await?;
            self.last_system_info = Some(info);
        }
        let ttl = parsed.header.ttl;
        self.finish_read(kind, read, &parsed.rejected, ttl, output, report)
            .await
    }

    async fn poll_station_information(
        &mut self,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let kind = FeedKind::StationInformation;
        let Some(read) = self.fetch(kind, report).await? else {
            return Ok(());
        };
        let parsed = self
            .validator
            .station_information(&read.body, read.now)
            .map_err(PollError::feed_failed(kind, &read.url))?;
        self.warn_version(kind, &parsed.header);
        let changed: Vec<Envelope> = parsed
            .records
            .iter()
            .filter(|info| self.stations.get(&info.station_id) != Some(*info))
            .map(|info| {
                read.envelope(
                    &self.system_id,
                    parsed.header.last_updated,
                    Event::StationInfo(info.clone()),
                )
            })
            .collect();
        self.emit(kind, changed, output, report).await?;
        self.known = Some(KnownStations::from_feed(&parsed));
        self.stats.skipped.add(parsed.skipped.len());
        report.skipped += parsed.skipped.len();
        self.stations = parsed
            .records
            .into_iter()
            .map(|info| (info.station_id.clone(), info))
            .collect();
        // New information: a station still unknown may trigger another refresh.
        self.refreshed_for_unknown.clear();
        let ttl = parsed.header.ttl;
        self.finish_read(kind, read, &parsed.rejected, ttl, output, report)
            .await
    }

    /// Returns the status feed's TTL.
    async fn poll_station_status(
        &mut self,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<u32, PollError> {
        let kind = FeedKind::StationStatus;
        let Some(read) = self.fetch(kind, report).await? else {
            return Ok(self.feed(kind).ttl);
        };
        let parse = |this: &Self| {
            this.validator
                .station_status(&read.body, read.now, this.known.as_ref())
                .map_err(PollError::feed_failed(kind, &read.url))
        };
        let mut parsed = parse(self)?;
        let unknown: Vec<StationId> = parsed
            .rejected
            .iter()
            .filter(|r| r.rule == rule::STATION_UNKNOWN)
            .filter_map(|r| r.station_id.clone())
            .filter(|id| !self.refreshed_for_unknown.contains(id))
            .collect();
        let info_read_now = report.fetched.contains(&FeedKind::StationInformation)
            || report.not_modified.contains(&FeedKind::StationInformation);
        if !unknown.is_empty()
            && !info_read_now
            && self.feed(FeedKind::StationInformation).url.is_some()
        {
            tracing::info!(
                system = %self.system_id,
                unknown = unknown.len(),
                "station_status names stations station_information does not know; re-reading it"
            );
            if let Err(e) = self.poll_station_information(output, report).await {
                self.failed(e, report);
            }
            self.refreshed_for_unknown.extend(unknown);
            parsed = parse(self)?;
        }
        self.warn_version(kind, &parsed.header);

        let changed: Vec<&StationStatus> = parsed
            .records
            .iter()
            .filter(|s| {
                self.last_status
                    .get(&s.station_id)
                    .is_none_or(|prev| !prev.same_report(s))
            })
            .collect();
        let mut events: Vec<Envelope> = changed
            .iter()
            .map(|s| {
                read.envelope(
                    &self.system_id,
                    s.last_reported,
                    Event::StationStatus((*s).clone()),
                )
            })
            .collect();
        let last_updated = parsed.header.last_updated;
        let heartbeat = self.last_heartbeat.is_none_or(|t| last_updated > t);
        if heartbeat {
            let period = self.config.status_interval(parsed.header.ttl);
            events.push(read.envelope(
                &self.system_id,
                last_updated,
                Event::FeedHeartbeat(FeedHeartbeat {
                    feed: STATION_STATUS_FEED.into(),
                    last_updated,
                    period_s: Some(secs(period)),
                }),
            ));
        }
        self.emit(kind, events, output, report).await?;
        if heartbeat {
            self.last_heartbeat = Some(last_updated);
        }
        for s in changed {
            self.last_status.insert(s.station_id.clone(), s.clone());
        }
        let ttl = parsed.header.ttl;
        self.finish_read(kind, read, &parsed.rejected, ttl, output, report)
            .await?;
        report.skipped += parsed.skipped.len();
        self.stats.skipped.add(parsed.skipped.len());
        Ok(ttl)
    }

    async fn emit(
        &self,
        kind: FeedKind,
        events: Vec<Envelope>,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        let mut kinds: Vec<(&'static str, u64)> = Vec::new();
        for e in &events {
            let k = e.kind().as_str();
            match kinds.iter_mut().find(|(x, _)| *x == k) {
                Some(c) => c.1 += 1,
                None => kinds.push((k, 1)),
            }
        }
        output
            .events(events)
            .await
            .map_err(|source| PollError::Output { feed: kind, source })?;
        for (k, count) in kinds {
            metrics::events_out("gbfs", self.system_id.as_str(), k, count);
        }
        report.events += n;
        self.stats.events.add(n);
        Ok(())
    }

    /// Dead-letters `rejected`, leaving out the letters already sent for this feed's last read.
    async fn dead_letter(
        &mut self,
        kind: FeedKind,
        url: &Url,
        rejected: &[Rejected],
        at: Timestamp,
        output: &dyn Output,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let letters: Vec<DeadLetter> = rejected
            .iter()
            .map(|r| {
                DeadLetter::new(
                    self.system_id.clone(),
                    url.as_str(),
                    r.rule,
                    &r.message,
                    &r.raw,
                    at,
                )
            })
            .collect();
        let ids: HashSet<EventId> = letters.iter().map(|d| d.dead_letter_id.clone()).collect();
        let previous = self.last_dead_letters.get(&kind);
        let fresh: Vec<DeadLetter> = letters
            .into_iter()
            .filter(|d| previous.is_none_or(|p| !p.contains(&d.dead_letter_id)))
            .collect();
        if !fresh.is_empty() {
            let (letters, per_rule) = summarise(fresh, &self.system_id, kind, url, at);
            output
                .dead_letters(letters)
                .await
                .map_err(|source| PollError::Output { feed: kind, source })?;
            // Counted per record, summarised ones included.
            for (rule, n) in per_rule {
                metrics::dead_letters("ingest", &rule, n as u64);
                report.dead_letters += n;
                self.stats.dead_letters.add(n);
            }
        }
        self.last_dead_letters.insert(kind, ids);
        Ok(())
    }
}

/// Dead letters kept per rule from one read; beyond them, one summary per rule stands for
/// the rest (a 10 MB feed of broken records would otherwise be 40,000 records).
pub const DEAD_LETTERS_PER_RULE: usize = 100;

/// Keeps the first [`DEAD_LETTERS_PER_RULE`] letters of each rule and summarises the rest of
/// that rule in one letter (its raw: the feed, the rule, how many, and a digest of their ids,
/// so the same broken content gives the same summary). Also returns the records per rule.
fn summarise(
    letters: Vec<DeadLetter>,
    system: &SystemId,
    feed: FeedKind,
    url: &Url,
    at: Timestamp,
) -> (Vec<DeadLetter>, BTreeMap<String, usize>) {
    let mut per_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut over: BTreeMap<String, Vec<EventId>> = BTreeMap::new();
    let mut kept = Vec::with_capacity(letters.len().min(4 * DEAD_LETTERS_PER_RULE));
    for d in letters {
        let n = per_rule.entry(d.rule.clone()).or_default();
        *n += 1;
        if *n <= DEAD_LETTERS_PER_RULE {
            kept.push(d);
        } else {
            over.entry(d.rule).or_default().push(d.dead_letter_id);
        }
    }
    for (rule, ids) in over {
        let digest = bikeshare_types::ids::deterministic_id(
            &ids.iter()
                .map(|id| id.as_str().as_bytes())
                .collect::<Vec<_>>(),
        );
        let raw = serde_json::json!({
            "feed": feed.name(),
            "rule": rule,
            "records_not_listed": ids.len(),
            "ids_digest": digest.as_str(),
        })
        .to_string();
        let message = format!(
            "{} more records of this read broke {rule} (the first {DEAD_LETTERS_PER_RULE} are \
             dead-lettered one by one)",
            ids.len()
        );
        kept.push(DeadLetter::new(
            system.clone(),
            url.as_str(),
            rule,
            message,
            &raw,
            at,
        ));
    }
    (kept, per_rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_ttl_within_bounds() {
        let c = PollerConfig {
            min_interval: Duration::from_secs(10),
            max_interval: Duration::from_secs(60),
            ..PollerConfig::default()
        };
        assert_eq!(c.status_interval(0), Duration::from_secs(10));
        assert_eq!(c.status_interval(30), Duration::from_secs(30));
        assert_eq!(c.status_interval(3600), Duration::from_secs(60));
        let inverted = PollerConfig {
            max_interval: Duration::from_secs(1),
            ..c
        };
        assert_eq!(
            inverted.status_interval(30),
            Duration::from_secs(10),
            "min wins, no panic"
        );
    }

    #[test]
    fn config_has_defaults_and_reads_milliseconds() {
        let c: PollerConfig = serde_json::from_str(
            r#"{"min_interval_ms": 500, "language": "fr", "client": {"read_timeout_ms": 100}}"#,
        )
        .unwrap();
        assert_eq!(c.min_interval, Duration::from_millis(500));
        assert_eq!(c.max_interval, PollerConfig::default().max_interval);
        assert_eq!(c.language.as_deref(), Some("fr"));
        assert_eq!(c.client.read_timeout, Duration::from_millis(100));
        assert_eq!(
            c.client.max_body_bytes,
            super::super::client::DEFAULT_MAX_BODY_BYTES
        );
    }

    #[test]
    fn errors_have_reasons() {
        let missing = PollError::MissingFeed {
            feed: FeedKind::StationStatus,
        };
        assert_eq!(missing.reason(), reason::FEED_MISSING);
        assert_eq!(missing.feed(), FeedKind::StationStatus);
        assert!(!missing.retryable());
    }
}
