//! Kinesis under load, from the client's point of view (in front of kinesis-mock):
//!
//! - `PutRecords`: some calls (15 %) are refused whole with
//!   `ProvisionedThroughputExceededException`; in the others, each partition key may start
//!   failing at a random record (5 % a record), and then all its later records in that call
//!   fail too (a shard over its limit refuses from some point on).
//! - `GetRecords`: two calls in three are refused with `ProvisionedThroughputExceededException`.
//! - Everything else is forwarded unchanged.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Call, FaultPolicy, json_response, refused};

const THROTTLED: &str = "ProvisionedThroughputExceededException";
const RATE_EXCEEDED: &str = "Rate exceeded for shard";

/// Faults injected so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// `PutRecords` calls refused whole.
    pub puts_throttled: u64,
    /// Records failed in partial failures.
    pub records_failed: u64,
    /// `GetRecords` calls refused.
    pub gets_throttled: u64,
}

/// The Kinesis policy, its random choices from a seed.
#[derive(Debug)]
pub struct Policy {
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    get_calls: AtomicU64,
}

impl Policy {
    /// A policy whose choices follow from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            faults: Mutex::new(Faults::default()),
            get_calls: AtomicU64::new(0),
        }
    }

    fn throttled() -> Response {
        refused(StatusCode::BAD_REQUEST, THROTTLED, RATE_EXCEEDED)
    }

    async fn put_records(&self, call: &Call) -> Response {
        let request: Value = serde_json::from_slice(call.body()).unwrap();
        let records = request["Records"].as_array().cloned().unwrap_or_default();
        // Which records fail: a key fails from a random record on.
        let failed: Vec<bool> = {
            let mut rng = self.rng.lock().unwrap();
            if rng.random_bool(0.15) {
                drop(rng);
                self.faults.lock().unwrap().puts_throttled += 1;
                return Self::throttled();
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
        let n_failed = failed.iter().filter(|f| **f).count();
        self.faults.lock().unwrap().records_failed += n_failed as u64;
        let failure = json!({"ErrorCode": THROTTLED, "ErrorMessage": RATE_EXCEEDED});
        let results = match call
            .forward_kept(request, &failed, "Records", &failure)
            .await
        {
            Ok((results, _)) => results,
            Err(refusal) => return refusal,
        };
        let failed_count = results
            .iter()
            .filter(|r| r.get("ErrorCode").is_some())
            .count();
        json_response(
            StatusCode::OK,
            json!({"FailedRecordCount": failed_count, "Records": results}).to_string(),
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
            "GetRecords" if self.get_calls.fetch_add(1, Ordering::Relaxed) % 3 != 2 => {
                // Two calls out of three: far over the limit, so every cursor backs off.
                self.faults.lock().unwrap().gets_throttled += 1;
                Some(Self::throttled())
            }
            "PutRecords" => Some(self.put_records(call).await),
            _ => None,
        }
    }
}
