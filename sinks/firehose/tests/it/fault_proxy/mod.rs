//! A fault-injecting proxy in front of moto's Firehose (which never refuses a record), on
//! 127.0.0.1, port 0.
//!
//! For `PutRecordBatch` calls, by mode:
//! - [`Mode::Faults`]: some calls are refused whole (HTTP 400 `ThrottlingException`, or HTTP
//!   503 `ServiceUnavailableException`, and nothing is forwarded); in the others, each record
//!   fails with some probability: failed records are *removed* before forwarding, and the
//!   answer gets `ErrorCode: ServiceUnavailableException` at their positions and moto's
//!   `RecordId` at the others, with `FailedPutCount` set. So moto's S3 holds exactly the
//!   records reported delivered, and a client that re-sends anything but the failed records
//!   leaves duplicates there; one that does not re-send them leaves holes.
//! - [`Mode::RefuseAll`]: every call refused with `ServiceUnavailableException`.
//!
//! Everything else is forwarded unchanged.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const JSON: &str = "application/x-amz-json-1.1";
const UNAVAILABLE: &str = "ServiceUnavailableException";
const THROTTLED: &str = "ThrottlingException";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Call refused whole with this probability; else each record fails with the other.
    Faults {
        refuse_call: f64,
        fail_record: f64,
    },
    RefuseAll,
}

/// Faults injected so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    pub calls: u64,
    pub calls_refused: u64,
    /// Records in refused calls.
    pub records_in_refused_calls: u64,
    /// Records failed individually in partial failures.
    pub records_failed: u64,
    /// Records forwarded to moto.
    pub records_forwarded: u64,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    mode: Mode,
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
    pub async fn start(upstream: &str, seed: u64, mode: Mode) -> Self {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            faults: Mutex::new(Faults::default()),
            mode,
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

fn refused(status: StatusCode, code: &str) -> Response {
    (
        status,
        [("content-type", JSON), ("x-amzn-errortype", code)],
        json!({"__type": code, "message": "Slow down."}).to_string(),
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
    if target.ends_with(".PutRecordBatch") {
        return put_record_batch(&s, &headers, &uri, body).await;
    }
    let (status, bytes) = forward(&s, &headers, &uri, body).await;
    (status, [("content-type", JSON)], bytes).into_response()
}

async fn put_record_batch(s: &ProxyState, headers: &HeaderMap, uri: &Uri, body: Bytes) -> Response {
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let n = records.len() as u64;
    s.faults.lock().unwrap().calls += 1;
    let (refuse, fail_record) = match s.mode {
        Mode::RefuseAll => (Some((StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)), 0.0),
        Mode::Faults {
            refuse_call,
            fail_record,
        } => {
            let mut rng = s.rng.lock().unwrap();
            let refuse = rng.random_bool(refuse_call).then(|| {
                if rng.random_bool(0.5) {
                    (StatusCode::BAD_REQUEST, THROTTLED)
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
                }
            });
            (refuse, fail_record)
        }
    };
    if let Some((status, code)) = refuse {
        let mut f = s.faults.lock().unwrap();
        f.calls_refused += 1;
        f.records_in_refused_calls += n;
        return refused(status, code);
    }
    let failed: Vec<bool> = {
        let mut rng = s.rng.lock().unwrap();
        records
            .iter()
            .map(|_| rng.random_bool(fail_record))
            .collect()
    };
    let kept: Vec<Value> = records
        .iter()
        .zip(&failed)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.clone())
        .collect();
    let n_failed = failed.iter().filter(|f| **f).count();
    {
        let mut f = s.faults.lock().unwrap();
        f.records_failed += n_failed as u64;
        f.records_forwarded += kept.len() as u64;
    }
    let mut accepted = Vec::new();
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let (status, bytes) = forward(s, headers, uri, Bytes::from(request.to_string())).await;
        if status != StatusCode::OK {
            return (status, [("content-type", JSON)], bytes).into_response();
        }
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            answer["FailedPutCount"], 0,
            "moto refused records: {answer}"
        );
        accepted = answer["RequestResponses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
    let mut accepted = accepted.into_iter();
    let responses: Vec<Value> = failed
        .iter()
        .map(|&f| {
            if f {
                json!({"ErrorCode": UNAVAILABLE, "ErrorMessage": "Slow down."})
            } else {
                accepted.next().unwrap()
            }
        })
        .collect();
    (
        StatusCode::OK,
        [("content-type", JSON)],
        json!({"FailedPutCount": n_failed, "Encrypted": false, "RequestResponses": responses})
            .to_string(),
    )
        .into_response()
}
