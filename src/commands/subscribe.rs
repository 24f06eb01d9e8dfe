//! `bikeshare subscribe`: print live predictions from the subscription API.
//!
//! Reconnects with backoff after any failure, sending the last event id, so a restart of the
//! server or a network blip loses nothing and repeats nothing.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bikeshare_sinks::subscribe::SseDecoder;
use bikeshare_types::retry::Backoff;
use futures::StreamExt;

use crate::cli::SubscribeArgs;

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
    let mut printed = 0usize;
    let mut attempt = 0u32;
    let mut rng = rand::rng();
    loop {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &args.system {
            query.push(("system", s.clone()));
        }
        if let Some(s) = &args.station {
            query.push(("station", s.clone()));
        }
        if args.from_start {
            query.push(("from", "earliest".into()));
        }
        let mut req = client.get(&args.url).query(&query);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        match req
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            Ok(resp) => {
                attempt = 0;
                let mut body = resp.bytes_stream();
                let mut decoder = SseDecoder::default();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    for event in decoder.push(&chunk) {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{}", event.data).context("writing to stdout")?;
                        out.flush()?;
                        printed += 1;
                        last_id = event.id.or(last_id);
                        if args.limit.is_some_and(|l| printed >= l) {
                            return Ok(());
                        }
                    }
                }
                tracing::warn!("subscription closed; reconnecting");
            }
            Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                anyhow::bail!("the server refused the subscription: {e}");
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach {}; retrying", args.url),
        }
        let delay = backoff.delay(attempt, &mut rng).unwrap_or(backoff.max);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}
