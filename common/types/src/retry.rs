//! Exponential backoff with full jitter: the one retry policy of the workspace.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::time::millis;

/// `delay(n)` is uniform in `[0, min(max, base * 2^n)]` ("full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    #[serde(with = "millis")]
    pub base: Duration,
    #[serde(with = "millis")]
    pub max: Duration,
    /// Attempts after the first; `None` retries forever (for loops that must not lose data).
    pub max_retries: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_retries: Some(5),
        }
    }
}

impl Backoff {
    /// Three retries within seconds (200 ms doubling, at most 5 s apart): for a call whose
    /// caller goes on without it once they are spent (an alert notification, a metrics push).
    pub const SHORT: Backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
        max_retries: Some(3),
    };

    /// The delay before retry number `attempt` (0-based), or `None` when retries are spent.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Option<Duration> {
        if self.max_retries.is_some_and(|m| attempt >= m) {
            return None;
        }
        let cap = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rng.random_range(0..=cap_ms)))
    }

    /// Runs `op` until it succeeds, fails with an error another attempt cannot help, or the
    /// retries are spent. Before each retry `on_retry(attempt, delay, &error)` hears of the
    /// failure (`attempt` 0-based) and `sleep(delay)` is awaited: the caller's runtime sleeps, so this crate
    /// needs none (`tokio::time::sleep` in every caller today).
    pub async fn retry<T, E, Op, Fut, Sleep, SleepFut>(
        &self,
        mut op: Op,
        sleep: Sleep,
        mut on_retry: impl FnMut(u32, Duration, &E),
    ) -> Result<T, GaveUp<E>>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
        Sleep: Fn(Duration) -> SleepFut,
        SleepFut: Future<Output = ()>,
    {
        let mut attempt = 0;
        loop {
            let Failure { error, retryable } = match op().await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            match retryable
                .then(|| self.delay(attempt, &mut rand::rng()))
                .flatten()
            {
                Some(d) => {
                    on_retry(attempt, d, &error);
                    sleep(d).await;
                    attempt += 1;
                }
                None => {
                    return Err(GaveUp {
                        error,
                        retryable,
                        attempts: attempt + 1,
                    });
                }
            }
        }
    }
}

/// One failed attempt of [`Backoff::retry`]: the error, and whether another attempt can help.
#[derive(Debug)]
pub struct Failure<E> {
    pub error: E,
    pub retryable: bool,
}

/// What [`Backoff::retry`] gives up with: the last failure and the attempts made.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub retryable: bool,
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_capped_and_retries_end() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_retries: Some(8),
        };
        let mut rng = rand::rng();
        for attempt in 0..8 {
            let d = b.delay(attempt, &mut rng).unwrap();
            assert!(d <= Duration::from_secs(1));
            assert!(d <= Duration::from_millis(100 << attempt));
        }
        assert!(b.delay(8, &mut rng).is_none());
    }
}
