//! A fault-injecting reverse proxy in front of an AWS emulator, on 127.0.0.1 (port 0).
//!
//! The emulators never throttle and never fail a record, so the tests of retries and partial
//! failures put this proxy between the client and the emulator: the client's endpoint is
//! [`FaultProxy::endpoint`]. Each call is handed to a [`FaultPolicy`] by its operation (the
//! `X-Amz-Target` header after its last dot); what the policy does not intercept is forwarded
//! unchanged. The policies:
//!
//! - [`kinesis::Policy`]: Kinesis under load (`PutRecords` refused or failing per partition
//!   key, `GetRecords` throttled).
//! - [`firehose::Policy`]: Firehose refusing `PutRecordBatch` calls or failing records.
//!
//! A failed record is *removed* before the call is forwarded ([`Call::forward_kept`]), so the
//! emulator stores exactly the records reported written.
//!
//! Test support: a broken emulator or a malformed request is a panic (a failed test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod firehose;
pub mod kinesis;

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The content type of the AWS JSON protocol.
const JSON: &str = "application/x-amz-json-1.1";

/// What a proxy does to the calls it intercepts, and what it has done so far.
pub trait FaultPolicy: Send + Sync + 'static {
    /// The faults injected so far (a snapshot).
    type Faults: Copy + Debug;

    /// The faults injected so far.
    fn faults(&self) -> Self::Faults;

    /// The answer to `call` of `operation`, or `None` to forward it unchanged.
    fn intercept(
        &self,
        operation: &str,
        call: &Call,
    ) -> impl Future<Output = Option<Response>> + Send;
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy<P> {
    addr: SocketAddr,
    state: Arc<ProxyState<P>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct ProxyState<P> {
    upstream: String,
    http: reqwest::Client,
    policy: P,
}

impl<P> Drop for FaultProxy<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<P: FaultPolicy> FaultProxy<P> {
    /// Starts a proxy to `upstream` (the emulator's endpoint) applying `policy`.
    pub async fn start(upstream: &str, policy: P) -> Self {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            policy,
        });
        let app = Router::new()
            .fallback(handle::<P>)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    /// The endpoint to give the client instead of the emulator's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The faults injected so far.
    pub fn faults(&self) -> P::Faults {
        self.state.policy.faults()
    }
}

/// One call through the proxy: its request, and the way on to the emulator.
#[derive(Debug)]
pub struct Call {
    upstream: String,
    http: reqwest::Client,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
}

impl Call {
    /// The request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Sends the call, with `body` instead of its own, to the emulator; returns its status and
    /// body.
    pub async fn forward(&self, body: Bytes) -> (StatusCode, Bytes) {
        let mut request = self
            .http
            .post(format!("{}{}", self.upstream, self.uri.path()));
        for (name, value) in &self.headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        let answer = request.body(body).send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        (status, answer.bytes().await.unwrap())
    }

    /// Forwards a batch call (`request`, records in its `Records` array) without the records
    /// `failed` marks, and answers for every record in its place: the emulator's answer (from
    /// its `answers` array) for those forwarded, `failure` for the others. Nothing is sent
    /// when every record failed. Returns the per-record answers and the emulator's whole
    /// answer (`Null` when nothing was sent), or the emulator's refusal as it came.
    pub async fn forward_kept(
        &self,
        mut request: Value,
        failed: &[bool],
        answers: &str,
        failure: &Value,
    ) -> Result<(Vec<Value>, Value), Response> {
        let records = request["Records"].as_array().cloned().unwrap_or_default();
        let kept: Vec<Value> = records
            .iter()
            .zip(failed)
            .filter(|(_, f)| !**f)
            .map(|(r, _)| r.clone())
            .collect();
        let mut answer = Value::Null;
        let mut written = Vec::new();
        if !kept.is_empty() {
            request["Records"] = Value::Array(kept);
            let (status, bytes) = self.forward(Bytes::from(request.to_string())).await;
            if status != StatusCode::OK {
                return Err(json_response(status, bytes));
            }
            answer = serde_json::from_slice(&bytes).unwrap();
            written = answer[answers].as_array().cloned().unwrap_or_default();
        }
        let mut written = written.into_iter();
        let results = failed
            .iter()
            .map(|&f| {
                if f {
                    failure.clone()
                } else {
                    written.next().unwrap()
                }
            })
            .collect();
        Ok((results, answer))
    }
}

/// An AWS JSON answer.
pub fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (status, [("content-type", JSON)], body.into()).into_response()
}

/// A call refused whole with the AWS error `code` and `message`.
pub fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", JSON), ("x-amzn-errortype", code)],
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response()
}

async fn handle<P: FaultPolicy>(
    State(s): State<Arc<ProxyState<P>>>,
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
    let call = Call {
        upstream: s.upstream.clone(),
        http: s.http.clone(),
        headers,
        uri,
        body,
    };
    if let Some(answer) = s.policy.intercept(operation, &call).await {
        return answer;
    }
    let (status, bytes) = call.forward(call.body.clone()).await;
    json_response(status, bytes)
}
