//! A fault-injecting proxy in front of kinesis-mock (which never throttles), on 127.0.0.1.
//!
//! It behaves like Kinesis under load, from the client's point of view:
//! - `PutRecords`: some calls are refused whole with `ProvisionedThroughputExceededException`;
//!   in the others, each partition key may start failing at a random record, and then all
//!   its later records in that call fail too (a shard over its limit refuses from some
//!   point on). Failed records are *removed* before forwarding, so the emulator stores
//!   exactly the records reported written.
//! - `GetRecords`: two calls in three are refused with `ProvisionedThroughputExceededException`.
//! - Everything else is forwarded unchanged.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const THROTTLED: &str = "ProvisionedThroughputExceededException";
const JSON: &str = "application/x-amz-json-1.1";

/// Faults injected so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    pub puts_throttled: u64,
    pub records_failed: u64,
    pub gets_throttled: u64,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    get_calls: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: &str, seed: u64) -> Self {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            faults: Mutex::new(Faults::default()),
            get_calls: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> Faults {
        *self.state.faults.lock().unwrap()
    }
}

fn throttled() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", JSON), ("x-amzn-errortype", THROTTLED)],
        json!({"__type": THROTTLED, "message": "Rate exceeded for shard"}).to_string(),
    )
        .into_response()
}

async fn forward(
    s: &ProxyState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let mut request = s.http.post(format!("{}{}", s.upstream, uri.path()));
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.body(body).send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    (status, answer.bytes().await.unwrap())
}

async fn handle(
    State(s): State<Arc<ProxyState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let operation = target.rsplit('.').next().unwrap_or_default();
    match operation {
        "GetRecords" if s.get_calls.fetch_add(1, Ordering::Relaxed) % 3 != 2 => {
            // Two calls out of three: far over the limit, so every cursor backs off.
            s.faults.lock().unwrap().gets_throttled += 1;
            throttled()
        }
        "PutRecords" => put_records(&s, &headers, &uri, body).await,
        _ => {
            let (status, bytes) = forward(&s, &headers, &uri, body).await;
            (status, [("content-type", JSON)], bytes).into_response()
        }
    }
}

async fn put_records(s: &ProxyState, headers: &HeaderMap, uri: &Uri, body: Bytes) -> Response {
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    // Which records fail: a key fails from a random record on.
    let failed: Vec<bool> = {
        let mut rng = s.rng.lock().unwrap();
        if rng.random_bool(0.15) {
            drop(rng);
            s.faults.lock().unwrap().puts_throttled += 1;
            return throttled();
        }
        let mut failing = HashSet::new();
        records
            .iter()
            .map(|r| {
                let key = r["PartitionKey"].as_str().unwrap_or_default().to_owned();
                if !failing.contains(&key) && rng.random_bool(0.05) {
                    failing.insert(key.clone());
                }
                failing.contains(&key)
            })
            .collect()
    };
    let kept: Vec<Value> = records
        .iter()
        .zip(&failed)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.clone())
        .collect();
    let n_failed = failed.iter().filter(|f| **f).count();
    s.faults.lock().unwrap().records_failed += n_failed as u64;
    let mut written = Vec::new();
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let (status, bytes) = forward(s, headers, uri, Bytes::from(request.to_string())).await;
        if status != StatusCode::OK {
            return (status, [("content-type", JSON)], bytes).into_response();
        }
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        written = answer["Records"].as_array().cloned().unwrap_or_default();
    }
    let mut written = written.into_iter();
    let results: Vec<Value> = failed
        .iter()
        .map(|&f| {
            if f {
                json!({"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded for shard"})
            } else {
                written.next().unwrap()
            }
        })
        .collect();
    let failed_count = results
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    (
        StatusCode::OK,
        [("content-type", JSON)],
        json!({"FailedRecordCount": failed_count, "Records": results}).to_string(),
    )
        .into_response()
}
