//! Serving throughput of `serve-model`: requests of 1,000 stations (CSV or JSON lines) to
//! `POST /invocations` over keep-alive HTTP, reported as rows/s.
//!
//! ```text
//! cargo run --release -p bikeshare-benches --bin serve-bench -- --rows 1000 --trees 200 --depth 6
//! ```
//!
//! The rows are real feature vectors: a simulated city of `--rows` stations, every station
//! reporting every minute for 70 minutes, through the processor; the last row of each
//! station (so windows, neighbours and missing values are as in production). The model is a
//! synthetic XGBoost JSON pair (`bikeshare_models::synthetic`, `--trees` trees of `--depth`,
//! the size the issue's latency target names); serving cost depends on the trees' shape, not
//! on whether they were trained.
//!
//! The server runs in this process (the same code as `bikeshare serve-model`) on a tokio
//! runtime; the client (reqwest) shares the machine with it. Each run sends `--requests`
//! requests from `--concurrency` clients and measures wall time; the figure is the median of
//! `--runs` runs. The in-process evaluation of the same rows is printed alongside, so the
//! serving overhead (HTTP, parsing, formatting) is visible.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bikeshare_benches::{MinuteFeed, START_MS};
use bikeshare_models::serve::{self, ServeConfig, ServedModel};
use bikeshare_models::{model_dir, synthetic};
use bikeshare_stream_processor::{Emitted, Processor, ProcessorConfig, Scorer};
use bikeshare_types::Timestamp;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Parser)]
#[command(about = "Measures serve-model throughput (rows/s) for batches of stations")]
struct Args {
    /// Stations per request (and in the simulated city).
    #[arg(long, default_value_t = 1000)]
    rows: u32,
    #[arg(long, default_value_t = 200)]
    trees: usize,
    #[arg(long, default_value_t = 6)]
    depth: u32,
    /// Requests per run.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
}

/// The last feature row of every station of a simulated city.
fn feature_rows(stations: u32) -> anyhow::Result<(Processor, Vec<Vec<Option<f32>>>)> {
    let mut feed = MinuteFeed::new(stations, 7, Timestamp(START_MS)).context("simulator")?;
    let mut p = Processor::new(ProcessorConfig {
        lateness_ms: 0,
        ..ProcessorConfig::default()
    });
    let mut out = Vec::new();
    let mut last = std::collections::HashMap::new();
    let mut batch = feed.preamble();
    feed.reports(&mut batch);
    for _ in 0..70 {
        for env in batch.drain(..) {
            p.process(env, &mut out);
        }
        for e in out.drain(..) {
            if let Emitted::Row(r) = e {
                last.insert(r.vector.station_id.clone(), r.vector.values);
            }
        }
        feed.step();
        feed.reports(&mut batch);
    }
    let mut rows: Vec<_> = last.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((p, rows.into_iter().map(|(_, v)| v).collect()))
}

fn body(rows: &[Vec<Option<f32>>], format: Format) -> String {
    match format {
        Format::Csv => {
            let refs: Vec<&[Option<f32>]> = rows.iter().map(Vec::as_slice).collect();
            bikeshare_models::endpoint::encode_csv(&refs)
        }
        Format::Jsonl => rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({"station_id": format!("S{i}"), "features": r}).to_string() + "\n"
            })
            .collect(),
    }
}

/// One request; its latency.
async fn send(
    client: reqwest::Client,
    url: String,
    body: String,
    content_type: &'static str,
    expected_rows: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = client
        .post(&url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "status {}", r.status());
    let text = r.text().await?;
    anyhow::ensure!(text.lines().count() == expected_rows, "short answer");
    Ok(t.elapsed())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (processor, rows) = feature_rows(args.rows)?;
    let schema = processor.schema().clone();
    let missing = rows.iter().flatten().filter(|v| v.is_none()).count() as f64
        / rows.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    let dir = tempfile::tempdir()?;
    synthetic::write_model_dir(
        dir.path(),
        "bench",
        "1",
        schema.id(),
        schema.len(),
        args.trees,
        args.depth,
    )?;
    let scorer = model_dir::load(dir.path(), &schema)?;

    // In process, for comparison.
    let t = Instant::now();
    let mut sink = 0f32;
    for _ in 0..20 {
        for r in &rows {
            let s = scorer.score(r);
            sink += s.p_empty + s.p_full;
        }
    }
    let in_process = (20 * rows.len()) as f64 / t.elapsed().as_secs_f64();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let body = body(&rows, args.format);
    let content_type = match args.format {
        Format::Csv => "text/csv",
        Format::Jsonl => "application/jsonlines",
    };
    let (rates, hist) = rt.block_on(async {
        let server = serve::serve(
            &ServeConfig {
                bind: "127.0.0.1:0".parse()?,
                ..ServeConfig::default()
            },
            Some(Arc::new(ServedModel::new(Arc::new(scorer), schema.len()))),
            std::future::pending(),
        )
        .await?;
        let url = format!("{}/invocations", server.url());
        let client = reqwest::Client::new();
        let expected = args.rows as usize;
        let send = move |client: reqwest::Client, url: String, body: String| {
            send(client, url, body, content_type, expected)
        };
        // Warm-up.
        for _ in 0..5 {
            send(client.clone(), url.clone(), body.clone()).await?;
        }
        let mut rates = Vec::new();
        let mut hist = Histogram::<u64>::new(3)?;
        for _ in 0..args.runs {
            let t = Instant::now();
            let per = args.requests / args.concurrency.max(1);
            let tasks: Vec<_> = (0..args.concurrency.max(1))
                .map(|_| {
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    tokio::spawn(async move {
                        let mut lat = Vec::with_capacity(per);
                        for _ in 0..per {
                            lat.push(send(client.clone(), url.clone(), body.clone()).await?);
                        }
                        Ok::<_, anyhow::Error>(lat)
                    })
                })
                .collect();
            let mut n = 0usize;
            for task in tasks {
                for d in task.await?? {
                    hist.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))?;
                    n += 1;
                }
            }
            rates.push((n * args.rows as usize) as f64 / t.elapsed().as_secs_f64());
        }
        server.stop().await;
        Ok::<_, anyhow::Error>((rates, hist))
    })?;
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "serve-model: {} rows/request ({} features, {:.0}% missing, {:?}, {} bytes), model {} trees × depth {}, concurrency {}",
        args.rows,
        schema.len(),
        missing * 100.0,
        args.format,
        body.len(),
        args.trees,
        args.depth,
        args.concurrency
    );
    println!(
        "  throughput: median {:.0} rows/s over {} runs of {} requests (runs: {})",
        median,
        args.runs,
        args.requests,
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  request latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    println!(
        "  in-process evaluation of the same rows: {in_process:.0} rows/s (checksum {sink:.3})"
    );
    Ok(())
}
