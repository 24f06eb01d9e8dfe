//! The subscription API: predictions as server-sent events, filtered and resumable.
//!
//! `GET /v1/predictions?system=<id>&station=<id>&from=latest|earliest` answers
//! `text/event-stream`. Each event is
//!
//! ```text
//! id: <cursor>
//! event: prediction
//! data: {"schema_version":2,"prediction_id":...,"p_empty":0.12,"p_full":0.01,...}
//! ```
//!
//! `data` is a [`Prediction`](bikeshare_types::contracts::Prediction) as JSON, version 2 (a
//! new version is a new `schema_version`, never a silent change). `id` is a cursor: send it
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
//! The server binds 127.0.0.1 by default. Bound to any other address it refuses to start
//! without a token, and then every request must carry `Authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bikeshare_runtime::http::{self, Secret, Server};
use bikeshare_stream::{SequenceNumber, ShardCursor, StartPosition, StreamReader};
use bikeshare_types::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Environment variable holding the API token.
pub const TOKEN_ENV: &str = "BIKESHARE_API_TOKEN";

const SERVER: Server = Server::new("the subscription API", TOKEN_ENV);

/// Settings of the subscription server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeConfig {
    pub bind: SocketAddr,
    /// Bearer token; else `BIKESHARE_API_TOKEN`. Required beyond loopback.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// How often idle subscriptions look for new records, ms.
    pub poll_interval_ms: u64,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8090)),
            token: None,
            poll_interval_ms: 200,
        }
    }
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

/// One server-sent event as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: String,
}

/// Incremental decoder of a `text/event-stream` body (clients and tests).
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: String,
}

impl SseDecoder {
    /// Adds a chunk of the body; returns the events it completed (comments are skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None::<String>);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    data = Some(match data {
                        Some(d) => format!("{d}\n{v}"),
                        None => v.to_owned(),
                    });
                }
            }
            if let Some(data) = data {
                out.push(SseEvent { id, data });
            }
        }
        out
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
    let state = Arc::new(AppState {
        reader,
        stopping,
        token,
        poll: Duration::from_millis(config.poll_interval_ms.max(10)),
        clock,
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
    let running = SERVER
        .start(config.bind, "/v1/predictions", app, shutdown)
        .await?;
    tracing::info!(addr = %running.local_addr(), "subscription API listening");
    Ok(running)
}

async fn predictions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    if !http::authorised(state.token.as_ref(), &headers) {
        return http::unauthorised();
    }
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
        Err(e) => {
            tracing::warn!(error = %e, "subscription: cannot open the stream");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the prediction stream is not readable",
            )
                .into_response();
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    tokio::spawn(pump(state, cursor, cursors, p.system, p.station, tx));
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
    fn sse_decoder_joins_chunks_and_skips_comments() {
        let mut d = SseDecoder::default();
        assert!(
            d.push(b": keep-alive\n\nid: 1;a=2\nevent: prediction\nda")
                .is_empty()
        );
        let ev = d.push(b"ta: {\"x\":1}\n\n");
        assert_eq!(
            ev,
            vec![SseEvent {
                id: Some("1;a=2".into()),
                data: "{\"x\":1}".into()
            }]
        );
    }

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
}
