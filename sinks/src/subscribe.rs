//! The subscription API: predictions as server-sent events, filtered and resumable.
//!
//! `GET /v1/predictions?system=<id>&station=<id>&from=latest|earliest` answers
//! `text/event-stream`. Each event is
//!
//! ```text
//! id: <cursor>
//! event: prediction
//! data: {"schema_version":3,"prediction_id":...,"p_empty":0.12,"p_full":0.01,...,"revision":0}
//! ```
//!
//! `data` is a [`Prediction`](bikeshare_types::contracts::Prediction) as JSON, version 3 (a
//! new version is a new `schema_version`, never a silent change). The same `prediction_id`
//! may come again with a higher `revision`: a correction of an early prediction (the update
//! trigger, decision 083), whose scores replace the earlier row's; a client keeps, per id,
//! the row of the highest revision (decision 087). `id` is a cursor: send it
//! back as `Last-Event-ID` (browsers' `EventSource` does it on reconnect) or `?after=` to
//! resume exactly after that event, with no gap and no repeat. Comments (`: keep-alive`) are
//! sent every 15 s so proxies keep the connection open.
//!
//! A cursor holds, per shard, the last sequence number read (for `latest`, the position at
//! subscription, when the backend reports it: [`ShardCursor::position`]) and the time the
//! subscription started, used only for a shard whose backend cannot say where a cursor
//! starts. Filters apply after reading, so positions advance even through records that are
//! filtered out.
//!
//! Answers a client can act on:
//!
//! | status | when |
//! | --- | --- |
//! | 200 | the subscription is open |
//! | 400 | an unreadable cursor, or a well-formed one the stream cannot resume (a sequence number beyond a shard's end), or a bad `from` |
//! | 401 | a token is required and missing or wrong |
//! | 404 | `system` or `station` names nothing the stream has a prediction for (once the API has read the whole stream; a client may retry, as predictions for a new station may follow) |
//! | 429 + `Retry-After` | this client (IP address; behind a trusted proxy, the address it forwarded: [`SubscribeConfig::trusted_proxies`]) already holds [`SubscribeConfig::max_per_client`] subscriptions |
//! | 503 + `Retry-After` | [`SubscribeConfig::max_subscriptions`] are open, or the stream cannot be read now |
//!
//! Subscriptions are capped because each holds a cursor per shard (with the embedded backend,
//! one SQLite connection, three file descriptors, per shard). `/healthz` never waits for a
//! subscription slot, so it answers while the API is saturated.
//!
//! The API knows its stations: a task reads the prediction stream from its oldest record and
//! keeps every (system, station) pair seen, so a filter naming an unknown one is refused
//! instead of waiting forever for an event that never comes.
//!
//! The server binds 127.0.0.1 by default. Bound to any other address it refuses to start
//! without a token, and then every request must carry `Authorization: Bearer <token>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bikeshare_runtime::http::{self, Secret, Server};
use bikeshare_stream::{SequenceNumber, ShardCursor, StartPosition, StreamReader};
use bikeshare_types::Timestamp;
use bikeshare_types::error::{Classify, ErrorClass};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Environment variable holding the API token.
pub const TOKEN_ENV: &str = "BIKESHARE_API_TOKEN";

const SERVER: Server = Server::new("the subscription API", TOKEN_ENV);

/// Settings of the subscription server.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct SubscribeConfig {
    #[default(SocketAddr::from(([127, 0, 0, 1], 8090)))]
    pub bind: SocketAddr,
    /// Bearer token; else `BIKESHARE_API_TOKEN`. Required beyond loopback.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// How often idle subscriptions look for new records, ms.
    #[default(200)]
    pub poll_interval_ms: u64,
    /// Most subscriptions open at once; beyond it a request gets 503 with `Retry-After`.
    #[default(256)]
    pub max_subscriptions: usize,
    /// Most subscriptions open at once from one client IP address; beyond it 429 with
    /// `Retry-After`.
    #[default(16)]
    pub max_per_client: usize,
    /// Reverse proxies (CIDR ranges, e.g. `["10.0.0.0/8"]`) whose `X-Forwarded-For` is
    /// believed. From a peer in one of them, the client counted by `max_per_client` is the
    /// header's rightmost address: the one the proxy appended (an AWS load balancer appends
    /// the address it was reached from), so addresses a client wrote itself, to its left,
    /// are never read. From any other peer the header is ignored. Empty by default: a
    /// direct client could write any address there.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a refused client is told to wait (`Retry-After`).
    #[default(5)]
    pub retry_after_secs: u64,
}

/// Why the server could not start.
pub type ApiError = http::ListenError;

/// A resumable position: per-shard last sequence numbers and the subscription's start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub since: Timestamp,
    pub positions: BTreeMap<String, String>,
}

impl Cursor {
    /// `<since ms>;<shard>=<seq>,<shard>=<seq>`
    pub fn encode(&self) -> String {
        let shards: Vec<String> = self
            .positions
            .iter()
            .map(|(s, q)| format!("{s}={q}"))
            .collect();
        format!("{};{}", self.since.millis(), shards.join(","))
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (since, rest) = s.split_once(';')?;
        let since = Timestamp(since.trim().parse().ok()?);
        let mut positions = BTreeMap::new();
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            let (shard, seq) = part.split_once('=')?;
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            positions.insert(shard.to_owned(), seq.to_owned());
        }
        Some(Self { since, positions })
    }
}

#[derive(Debug, Deserialize)]
struct Params {
    system: Option<String>,
    station: Option<String>,
    from: Option<String>,
    after: Option<String>,
}

struct AppState {
    reader: Arc<dyn StreamReader>,
    /// Becomes true at shutdown: open streams end so graceful shutdown can finish.
    stopping: tokio::sync::watch::Receiver<bool>,
    token: Option<Secret>,
    poll: Duration,
    clock: bikeshare_types::SharedClock,
    limits: Arc<Limits>,
    catalog: Arc<Catalog>,
}

/// The caps on open subscriptions: in all and per client address.
struct Limits {
    open: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
    /// Peers whose `X-Forwarded-For` names the client ([`SubscribeConfig::trusted_proxies`]).
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether a trusted proxy's unreadable header has been logged (once per server).
    unreadable_logged: std::sync::atomic::AtomicBool,
    retry_after: HeaderValue,
}

/// One open subscription's share of the [`Limits`]; released when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    client: Option<IpAddr>,
    limits: Arc<Limits>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        bikeshare_types::metrics::subscriptions_open_step(-1);
        if let Some(ip) = self.client
            && let Ok(mut m) = self.limits.per_client.lock()
            && let Some(n) = m.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Why a subscription got no slot.
enum Refusal {
    /// This client address holds its share.
    Client(IpAddr),
    /// Every slot is taken.
    Full,
}

impl Limits {
    /// A slot for `client`, or why not.
    fn acquire(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, Refusal> {
        if let Some(ip) = client {
            let held = self
                .per_client
                .lock()
                .map_or(0, |m| m.get(&ip).copied().unwrap_or(0));
            if held >= self.max_per_client {
                return Err(Refusal::Client(ip));
            }
        }
        let permit = Arc::clone(&self.open)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        if let Some(ip) = client
            && let Ok(mut m) = self.per_client.lock()
        {
            *m.entry(ip).or_default() += 1;
        }
        bikeshare_types::metrics::subscriptions_open_step(1);
        Ok(Slot {
            _permit: permit,
            client,
            limits: Arc::clone(self),
        })
    }

    /// The client a request from `peer` counts as: the address a trusted proxy forwarded,
    /// else the peer. A trusted proxy's missing or unreadable header counts as the proxy
    /// itself, logged the first time and counted every time (`bikeshare_api_unreadable_forwarded_total`).
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        match client_address(peer, headers, &self.trusted_proxies) {
            Ok(ip) => ip,
            Err(why) => {
                bikeshare_types::metrics::unreadable_forwarded();
                if !self
                    .unreadable_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        %peer,
                        why,
                        "subscription API: a trusted proxy's X-Forwarded-For names no client; \
                         counting the proxy's address (logged once)"
                    );
                }
                peer.to_canonical()
            }
        }
    }

    /// The answer to a refused subscription: 429 or 503, with `Retry-After`.
    fn refuse(&self, why: &Refusal) -> Response {
        bikeshare_types::metrics::subscription_refused(match why {
            Refusal::Client(_) => "client",
            Refusal::Full => "full",
        });
        let mut r = match why {
            Refusal::Client(ip) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{ip} already holds {} subscriptions, the most one client may hold",
                    self.max_per_client
                ),
            ),
            Refusal::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open subscriptions; retry later".to_owned(),
            ),
        }
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, self.retry_after.clone());
        r
    }
}

/// The client address of a request from `peer`: from a peer in `trusted` (a reverse proxy),
/// the rightmost `X-Forwarded-For` entry, the one that proxy appended; from any other peer,
/// the peer. `Err` says why a trusted peer's header names no client (absent, not text, or a
/// rightmost entry that is no address).
///
/// Only the rightmost entry is read, never one further left: a client can write any
/// entries itself, and a client may well sit in a trusted range (a VPN in the VPC's range).
fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Result<IpAddr, &'static str> {
    let peer = peer.to_canonical();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return Ok(peer);
    }
    // Several header lines are one list, in order (RFC 9110 §5.3).
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .ok_or("no X-Forwarded-For")?;
    let last = last.to_str().map_err(|_| "X-Forwarded-For is not text")?;
    let entry = last.rsplit(',').next().unwrap_or_default().trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
        .map_err(|_| "the rightmost X-Forwarded-For entry is no address")
}

/// The (system, station) pairs the prediction stream names: read from the oldest record and
/// followed by [`catalog`], and read up to the stream's end before a filter is refused.
struct Catalog {
    reader: Arc<dyn StreamReader>,
    /// One cursor per shard, from its oldest record.
    cursors: tokio::sync::Mutex<BTreeMap<String, Box<dyn ShardCursor>>>,
    /// Whether every shard has been read to its end at least once.
    caught_up: std::sync::atomic::AtomicBool,
    stations: RwLock<BTreeMap<String, BTreeSet<String>>>,
}

impl Catalog {
    fn new(reader: Arc<dyn StreamReader>) -> Self {
        Self {
            reader,
            cursors: tokio::sync::Mutex::default(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
            stations: RwLock::default(),
        }
    }

    /// One read of every shard (opening new ones); whether any shard is still behind.
    async fn pass(&self) -> bool {
        let mut cursors = self.cursors.lock().await;
        match self.reader.list_shards().await {
            Ok(shards) => {
                for shard in shards {
                    if cursors.contains_key(shard.id.as_str()) {
                        continue;
                    }
                    match self
                        .reader
                        .open(&shard.id, StartPosition::TrimHorizon)
                        .await
                    {
                        Ok(c) => {
                            cursors.insert(shard.id.0.clone(), c);
                        }
                        Err(e) => tracing::warn!(error = %e, "subscription catalog: open failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "subscription catalog: cannot list shards"),
        }
        let mut behind = false;
        for c in cursors.values_mut() {
            match c.next_batch(1000).await {
                Ok(batch) => {
                    behind |= !batch.records.is_empty()
                        || batch.millis_behind_latest.is_some_and(|m| m > 0);
                    for rec in &batch.records {
                        if let Ok(keys) = serde_json::from_slice::<Keys<'_>>(&rec.data) {
                            self.add(&keys);
                        }
                    }
                }
                Err(e) => {
                    behind = true;
                    tracing::warn!(error = %e, "subscription catalog: read failed");
                }
            }
        }
        if !behind {
            self.caught_up
                .store(true, std::sync::atomic::Ordering::Release);
        }
        behind
    }

    /// Reads to the stream's end now (at most `passes` reads of every shard), so a station
    /// predicted a moment ago is known.
    async fn catch_up(&self, passes: usize) {
        for _ in 0..passes {
            if !self.pass().await {
                return;
            }
        }
    }

    /// Why a subscription filtered on `system` and `station` can never receive an event, if
    /// the whole stream has been read and names neither.
    fn unknown(&self, system: Option<&str>, station: Option<&str>) -> Option<String> {
        if (system.is_none() && station.is_none())
            || !self.caught_up.load(std::sync::atomic::Ordering::Acquire)
        {
            return None;
        }
        let known = self.stations.read().ok()?;
        let systems = || {
            let names: Vec<&str> = known.keys().map(String::as_str).take(10).collect();
            if names.is_empty() {
                "no predictions yet".to_owned()
            } else {
                format!("systems with predictions: {}", names.join(", "))
            }
        };
        match (system, station) {
            (Some(sys), _) if !known.contains_key(sys) => {
                Some(format!("unknown system {sys:?} ({})", systems()))
            }
            (Some(sys), Some(st)) if !known.get(sys).is_some_and(|s| s.contains(st)) => Some(
                format!("unknown station {st:?} in system {sys:?}: no prediction names it"),
            ),
            (None, Some(st)) if !known.values().any(|s| s.contains(st)) => Some(format!(
                "unknown station {st:?}: no prediction names it ({})",
                systems()
            )),
            _ => None,
        }
    }

    fn add(&self, keys: &Keys<'_>) {
        let seen = self.stations.read().is_ok_and(|m| {
            m.get(keys.system_id)
                .is_some_and(|s| s.contains(keys.station_id))
        });
        if !seen && let Ok(mut m) = self.stations.write() {
            m.entry(keys.system_id.to_owned())
                .or_default()
                .insert(keys.station_id.to_owned());
        }
    }
}

/// Reads the whole prediction stream, then follows it, into `catalog` until `stopping`.
async fn catalog(
    catalog: Arc<Catalog>,
    poll: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if !catalog.pass().await {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stopping.changed() => return,
            }
        } else if *stopping.borrow() {
            return;
        }
    }
}

/// A running server; its `url` is `/v1/predictions`.
pub type RunningApi = http::Running;

/// Serves predictions read through `reader` until `shutdown` resolves.
pub async fn serve(
    config: SubscribeConfig,
    reader: Arc<dyn StreamReader>,
    clock: bikeshare_types::SharedClock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningApi, ApiError> {
    let token = SERVER.token_for_bind(config.bind, config.token.as_ref())?;
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let poll = Duration::from_millis(config.poll_interval_ms.max(10));
    let limits = Arc::new(Limits {
        open: Arc::new(Semaphore::new(config.max_subscriptions)),
        per_client: Mutex::new(HashMap::new()),
        max_per_client: config.max_per_client,
        trusted_proxies: config.trusted_proxies.clone(),
        unreadable_logged: std::sync::atomic::AtomicBool::new(false),
        retry_after: HeaderValue::from(config.retry_after_secs.max(1)),
    });
    let known = Arc::new(Catalog::new(Arc::clone(&reader)));
    tokio::spawn(catalog(Arc::clone(&known), poll, stopping.clone()));
    let state = Arc::new(AppState {
        reader,
        stopping,
        token,
        poll,
        clock,
        limits,
        catalog: known,
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let app = Router::new()
        .route("/v1/predictions", get(predictions))
        .route("/healthz", get(|| async { "ok" }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .with_state(state);
    // Served with each connection's address, which the per-client cap counts by.
    let (listener, local) = SERVER.bind(config.bind).await?;
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "subscription API stopped");
        }
    });
    let running = http::Running::new(local, "/v1/predictions", task);
    tracing::info!(addr = %running.local_addr(), "subscription API listening");
    Ok(running)
}

async fn predictions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
    request: Request,
) -> Response {
    if !http::authorised(state.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    let (system, station) = (p.system.as_deref(), p.station.as_deref());
    let filtered = system.is_some() || station.is_some();
    let caught_up = state
        .catalog
        .caught_up
        .load(std::sync::atomic::Ordering::Acquire);
    if filtered && (!caught_up || state.catalog.unknown(system, station).is_some()) {
        // Perhaps predicted a moment ago: read to the stream's end before refusing.
        state.catalog.catch_up(100).await;
        if let Some(why) = state.catalog.unknown(system, station) {
            return (StatusCode::NOT_FOUND, why).into_response();
        }
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| state.limits.client(c.0.ip(), &headers));
    let slot = match state.limits.acquire(client) {
        Ok(slot) => slot,
        Err(why) => return state.limits.refuse(&why),
    };
    let resume = p.after.clone().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let cursor = match resume {
        Some(s) => match Cursor::decode(&s) {
            Some(c) => c,
            None => return (StatusCode::BAD_REQUEST, "unreadable cursor").into_response(),
        },
        None => match p.from.as_deref() {
            None | Some("latest") => Cursor {
                since: state.clock.now(),
                positions: BTreeMap::new(),
            },
            Some("earliest") => Cursor {
                since: Timestamp(i64::MIN),
                positions: BTreeMap::new(),
            },
            Some(other) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("from={other:?}: use latest or earliest"),
                )
                    .into_response();
            }
        },
    };
    let mut cursor = cursor;
    let cursors = match open_all(&state, &mut cursor).await {
        Ok(c) => c,
        Err(e) if e.class() == ErrorClass::User => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the cursor cannot be resumed: {e}"),
            )
                .into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "subscription: cannot open the stream");
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "the prediction stream is not readable",
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, state.limits.retry_after.clone());
            return r;
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    tokio::spawn(async move {
        pump(state, cursor, cursors, p.system, p.station, tx).await;
        drop(slot);
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(borrow)]
    system_id: &'a str,
    #[serde(borrow)]
    station_id: &'a str,
}

type Cursors = Vec<(String, Box<dyn ShardCursor>)>;

/// Opens every shard at the cursor's positions (before the response starts, so `latest`
/// means "as of the response"), completing the cursor with positions the backend reports.
async fn open_all(
    state: &AppState,
    cursor: &mut Cursor,
) -> Result<Cursors, bikeshare_stream::StreamError> {
    let mut cursors: Cursors = Vec::new();
    for shard in state.reader.list_shards().await? {
        let known = cursor.positions.get(shard.id.as_str()).cloned();
        let from = match &known {
            Some(seq) => StartPosition::AfterSequence(SequenceNumber(seq.clone())),
            None if cursor.since.millis() == i64::MIN => StartPosition::TrimHorizon,
            None => StartPosition::Latest,
        };
        let latest = from == StartPosition::Latest;
        let mut c = state.reader.open(&shard.id, from).await?;
        if latest && c.position().is_none() {
            // The backend cannot say where `Latest` is: read from the horizon and skip by time.
            c = state
                .reader
                .open(&shard.id, StartPosition::TrimHorizon)
                .await?;
        } else if known.is_none()
            && let Some(p) = c.position()
        {
            cursor.positions.insert(shard.id.0.clone(), p.0);
        }
        cursors.push((shard.id.0.clone(), c));
    }
    Ok(cursors)
}

/// Sends matching records from every shard until the client leaves.
async fn pump(
    state: Arc<AppState>,
    mut cursor: Cursor,
    mut cursors: Cursors,
    system: Option<String>,
    station: Option<String>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    loop {
        if tx.is_closed() {
            return; // the client left
        }
        let mut got = 0;
        for (shard, c) in &mut cursors {
            let batch = match c.next_batch(500).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "subscription: read failed");
                    return;
                }
            };
            for rec in batch.records {
                got += 1;
                let seen_before =
                    !cursor.positions.contains_key(shard.as_str()) && rec.arrival < cursor.since;
                cursor
                    .positions
                    .insert(shard.clone(), rec.sequence.0.clone());
                if seen_before {
                    continue;
                }
                let Ok(keys) = serde_json::from_slice::<Keys<'_>>(&rec.data) else {
                    continue;
                };
                if system.as_deref().is_some_and(|s| s != keys.system_id)
                    || station.as_deref().is_some_and(|s| s != keys.station_id)
                {
                    continue;
                }
                let data = String::from_utf8_lossy(&rec.data);
                let event = Event::default()
                    .event("prediction")
                    .id(cursor.encode())
                    .data(data);
                if tx.send(Ok(event)).await.is_err() {
                    return; // the client left
                }
            }
        }
        if *state.stopping.borrow() {
            return;
        }
        if got == 0 {
            if tx.is_closed() {
                return;
            }
            let mut stopping = state.stopping.clone();
            tokio::select! {
                () = tokio::time::sleep(state.poll) => {}
                _ = stopping.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            since: Timestamp(1_700_000_000_000),
            positions: BTreeMap::from([
                ("shardId-000000000000".into(), "42".into()),
                ("shardId-000000000001".into(), "7".into()),
            ]),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(
            Cursor::decode("5;"),
            Some(Cursor {
                since: Timestamp(5),
                positions: BTreeMap::new()
            })
        );
        for bad in ["", "x;", "5;a", "5;a=", "5;a=1x", "5"] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_a_trusted_peer_names_the_client_and_only_by_the_rightmost_entry() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let headers = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
            }
            h
        };
        let alb = ip("10.1.2.3");
        let xff = headers(&["1.1.1.1, 10.9.9.9"]);
        // A client inside the trusted range is still the client: no recursion leftwards.
        assert_eq!(client_address(alb, &xff, &trusted), Ok(ip("10.9.9.9")));
        assert_eq!(
            client_address(ip("192.0.2.1"), &xff, &trusted),
            Ok(ip("192.0.2.1"))
        );
        assert_eq!(client_address(alb, &xff, &[]), Ok(alb));
        // An IPv4 peer seen through an IPv6 socket is still trusted.
        assert_eq!(
            client_address(ip("::ffff:10.1.2.3"), &headers(&["203.0.113.5"]), &trusted),
            Ok(ip("203.0.113.5"))
        );
        assert_eq!(
            client_address(alb, &headers(&["[2001:db8::7]:443"]), &trusted),
            Ok(ip("2001:db8::7"))
        );
        assert!(client_address(alb, &HeaderMap::new(), &trusted).is_err());
        let mut not_text = HeaderMap::new();
        not_text.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert!(client_address(alb, &not_text, &trusted).is_err());
        for bad in [
            "",
            ",",
            "1.2.3.4,",
            "unknown",
            "1.2.3.4 5.6.7.8",
            "999.1.1.1",
        ] {
            assert!(
                client_address(alb, &headers(&[bad]), &trusted).is_err(),
                "{bad:?}"
            );
        }
    }
}
