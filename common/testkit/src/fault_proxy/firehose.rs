//! Firehose refusing calls and failing records (in front of moto's Firehose, which never
//! refuses a record). For `PutRecordBatch` calls, by [`Mode`]:
//!
//! - [`Mode::Faults`]: some calls are refused whole (HTTP 400 `ThrottlingException`, or HTTP
//!   503 `ServiceUnavailableException`, and nothing is forwarded); in the others, each record
//!   fails with some probability: failed records are removed before forwarding, and the
//!   answer gets `ErrorCode: ServiceUnavailableException` at their positions and moto's
//!   `RecordId` at the others, with `FailedPutCount` set. So moto's S3 holds exactly the
//!   records reported delivered, and a client that re-sends anything but the failed records
//!   leaves duplicates there; one that does not re-send them leaves holes.
//! - [`Mode::RefuseAll`]: every call refused with `ServiceUnavailableException`.
//!
//! Everything else is forwarded unchanged.

use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Call, FaultPolicy, json_response, refused};

const UNAVAILABLE: &str = "ServiceUnavailableException";
const THROTTLED: &str = "ThrottlingException";
const SLOW_DOWN: &str = "Slow down.";

/// What the proxy does to `PutRecordBatch` calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Call refused whole with this probability; else each record fails with the other.
    Faults { refuse_call: f64, fail_record: f64 },
    /// Every call refused.
    RefuseAll,
}

/// Faults injected so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// `PutRecordBatch` calls seen.
    pub calls: u64,
    /// Calls refused whole.
    pub calls_refused: u64,
    /// Records in refused calls.
    pub records_in_refused_calls: u64,
    /// Records failed individually in partial failures.
    pub records_failed: u64,
    /// Records forwarded to moto.
    pub records_forwarded: u64,
}

/// The Firehose policy, its random choices from a seed.
#[derive(Debug)]
pub struct Policy {
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    mode: Mode,
}

impl Policy {
    /// A policy in `mode` whose choices follow from `seed`.
    pub fn new(seed: u64, mode: Mode) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            faults: Mutex::new(Faults::default()),
            mode,
        }
    }

    async fn put_record_batch(&self, call: &Call) -> Response {
        let request: Value = serde_json::from_slice(call.body()).unwrap();
        let records = request["Records"].as_array().cloned().unwrap_or_default();
        let n = records.len() as u64;
        self.faults.lock().unwrap().calls += 1;
        let (refuse, fail_record) = match self.mode {
            Mode::RefuseAll => (Some((StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)), 0.0),
            Mode::Faults {
                refuse_call,
                fail_record,
            } => {
                let mut rng = self.rng.lock().unwrap();
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
            let mut f = self.faults.lock().unwrap();
            f.calls_refused += 1;
            f.records_in_refused_calls += n;
            return refused(status, code, SLOW_DOWN);
        }
        let failed: Vec<bool> = {
            let mut rng = self.rng.lock().unwrap();
            records
                .iter()
                .map(|_| rng.random_bool(fail_record))
                .collect()
        };
        let n_failed = failed.iter().filter(|f| **f).count();
        {
            let mut f = self.faults.lock().unwrap();
            f.records_failed += n_failed as u64;
            f.records_forwarded += n - n_failed as u64;
        }
        let failure = json!({"ErrorCode": UNAVAILABLE, "ErrorMessage": SLOW_DOWN});
        let responses = match call
            .forward_kept(request, &failed, "RequestResponses", &failure)
            .await
        {
            Ok((responses, answer)) => {
                if !answer.is_null() {
                    assert_eq!(
                        answer["FailedPutCount"], 0,
                        "moto refused records: {answer}"
                    );
                }
                responses
            }
            Err(refusal) => return refusal,
        };
        json_response(
            StatusCode::OK,
            json!({"FailedPutCount": n_failed, "Encrypted": false, "RequestResponses": responses})
                .to_string(),
        )
    }
}

impl FaultPolicy for Policy {
    type Faults = Faults;

    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap()
    }

    async fn intercept(&self, operation: &str, call: &Call) -> Option<Response> {
        match operation {
            "PutRecordBatch" => Some(self.put_record_batch(call).await),
            _ => None,
        }
    }
}
