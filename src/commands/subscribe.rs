//! `bikeshare subscribe`: print live predictions from the subscription API.
//!
//! Reconnects with backoff after any failure, sending the last event id, so a restart of the
//! server or a network blip loses nothing and repeats nothing. The body is parsed by
//! `eventsource-stream` (UTF-8 split across network chunks, CR, LF and CRLF line endings,
//! `retry:`), and every wait is bounded:
//!
//! - `--retries` failed attempts in a row (a refused connection, a 5xx, a 503 or 429 whose
//!   `Retry-After` is honoured, a stream that ends) and the command exits non-zero with the
//!   URL and the last cause; `--retries forever` keeps trying;
//! - a system or station the server does not know (404) is asked again for
//!   `--wait-for-station`, then the command exits non-zero with the server's message;
//! - any other 4xx (a bad cursor, a missing token) ends the command at once.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bikeshare_types::retry::Backoff;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::StatusCode;

use crate::cli::{RetryBudget, SubscribeArgs};

/// Why the last attempt failed, and how long the server asked us to wait.
struct Failed {
    cause: String,
    wait: Option<Duration>,
}

pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let token = std::env::var(bikeshare_sinks::subscribe::TOKEN_ENV).ok();
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(10),
        max_retries: None,
    };
    let mut last_id: Option<String> = None;
    let mut server_retry: Option<Duration> = None;
    let mut printed = 0usize;
    let mut failures = 0u32;
    let mut unknown_since: Option<tokio::time::Instant> = None;
    let mut rng = rand::rng();
    loop {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &args.system_id {
            query.push(("system", s.clone()));
        }
        if let Some(s) = &args.station_id {
            query.push(("station", s.clone()));
        }
        if args.from_start && last_id.is_none() {
            query.push(("from", "earliest".into()));
        }
        let mut req = client
            .get(&args.url)
            .query(&query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let failed = match req.send().await {
            Err(e) => Failed {
                cause: bikeshare_types::error::chain(&e).to_string(),
                wait: None,
            },
            Ok(resp) if resp.status().is_success() => {
                unknown_since = None;
                let mut events = resp.bytes_stream().eventsource();
                let mut received = false;
                let cause = loop {
                    match events.next().await {
                        None => break "the server ended the stream".to_owned(),
                        Some(Err(e)) => break format!("the stream broke: {e}"),
                        Some(Ok(event)) => {
                            if let Some(r) = event.retry {
                                server_retry = Some(r);
                            }
                            if !event.id.is_empty() {
                                last_id = Some(event.id);
                            }
                            if event.data.is_empty() {
                                continue;
                            }
                            received = true;
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{}", event.data).context("writing to stdout")?;
                            out.flush().context("writing to stdout")?;
                            printed += 1;
                            if args.limit.is_some_and(|l| printed >= l) {
                                return Ok(());
                            }
                        }
                    }
                };
                if received {
                    failures = 0;
                }
                Failed {
                    cause,
                    wait: server_retry,
                }
            }
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                let why = resp.text().await.unwrap_or_default();
                let since = *unknown_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= args.wait_for_station {
                    anyhow::bail!(
                        "{}: {} (asked for {:?})",
                        args.url,
                        why.trim(),
                        args.wait_for_station
                    );
                }
                tracing::info!(reason = why.trim(), "not known yet; asking again");
                tokio::time::sleep(Duration::from_secs(1).min(args.wait_for_station)).await;
                continue;
            }
            Ok(resp)
                if resp.status() == StatusCode::TOO_MANY_REQUESTS
                    || resp.status().is_server_error() =>
            {
                let status = resp.status();
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = resp.text().await.unwrap_or_default();
                Failed {
                    cause: format!("HTTP {status}: {}", body.trim()),
                    wait,
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                anyhow::bail!(
                    "{}: the server refused the subscription: HTTP {status}: {}",
                    args.url,
                    body.trim()
                );
            }
        };
        failures = failures.saturating_add(1);
        if let RetryBudget::Times(n) = args.retries
            && failures > n
        {
            anyhow::bail!("{}: gave up after {n} retries: {}", args.url, failed.cause);
        }
        let delay = failed
            .wait
            .unwrap_or_else(|| backoff.delay(failures - 1, &mut rng).unwrap_or(backoff.max));
        tracing::warn!(
            cause = %failed.cause,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "subscription to {} failed; retrying",
            args.url
        );
        tokio::time::sleep(delay).await;
    }
}
