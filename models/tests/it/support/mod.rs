//! What the serving tests share: a synthetic model directory for the processor's schema, a
//! running server, an SDK client pointed at it, and random feature rows.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use bikeshare_models::scorer::XgbScorer;
use bikeshare_models::serve::{self, RunningServer, ServeConfig, ServedModel};
use bikeshare_models::{model_dir, synthetic};
use bikeshare_runtime::aws::SdkConfig;
use bikeshare_stream_processor::{FeatureSchema, Processor, ProcessorConfig};

pub fn schema() -> FeatureSchema {
    Processor::new(ProcessorConfig::default()).schema().clone()
}

/// A synthetic model (40 trees of depth 6) for the processor's default schema.
pub fn model(dir: &Path) -> XgbScorer {
    let schema = schema();
    synthetic::write_model_dir(dir, "synthetic", "7", schema.id(), schema.len(), 40, 6).unwrap();
    model_dir::load(dir, &schema).unwrap()
}

pub async fn start(config: ServeConfig, scorer: XgbScorer) -> RunningServer {
    let n = schema().len();
    serve::serve(
        &config,
        Some(Arc::new(ServedModel::new(Arc::new(scorer), n))),
        std::future::pending(),
    )
    .await
    .unwrap()
}

pub fn local_config() -> ServeConfig {
    ServeConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    }
}

/// `POST <url>/invocations` straight to the container contract, with `headers`.
pub fn post_invocations(
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> impl Future<Output = reqwest::Response> + use<> {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/invocations"))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let sent = req.send();
    async move { sent.await.unwrap() }
}

/// The shared SDK configuration for a local server: our HTTPS client, a region, fixed
/// credentials (the server does not check SigV4), the endpoint URL.
pub async fn sdk(url: &str) -> SdkConfig {
    bikeshare_runtime::aws::emulator_sdk_config(url).await
}

/// `n` rows of plausible feature values, about 10 % missing, many whole numbers (ties).
pub fn rows(n: usize, width: usize, seed: u64) -> Vec<Vec<Option<f32>>> {
    let mut rng = bikeshare_types::xorshift::XorShift64::new(
        seed.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1,
    );
    let mut next = move || rng.next_u64();
    (0..n)
        .map(|_| {
            (0..width)
                .map(|_| {
                    let r = next();
                    match r % 10 {
                        0 => None,
                        1..=4 => Some((r >> 8) as f32 % 21.0),
                        _ => Some(((r >> 8) % 2_000_000) as f32 / 100_000.0),
                    }
                })
                .collect()
        })
        .collect()
}
