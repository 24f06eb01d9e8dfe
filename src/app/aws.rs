//! One AWS SDK configuration per process: loaded on first use (commands that never touch AWS
//! never load it) with the Kinesis backend's region and the `[aws]` timeouts, then shared by
//! every client; a store with a region of its own gets the same configuration with that
//! region.

use bikeshare_runtime::aws::{ClientSettings, SdkConfig, load_sdk_config};
use tokio::sync::OnceCell;

use crate::config::Config;

static SDK: OnceCell<SdkConfig> = OnceCell::const_new();

/// The process's AWS configuration, in `region` when given, else the Kinesis backend's
/// (`[stream.kinesis] region`), else the standard AWS chain's.
pub async fn sdk_config(config: &Config, region: Option<&String>) -> SdkConfig {
    let shared = SDK
        .get_or_init(|| async {
            load_sdk_config(&ClientSettings {
                region: config.stream.kinesis.region.clone(),
                endpoint_url: None,
                timeouts: config.aws,
            })
            .await
        })
        .await;
    match region {
        Some(r) => shared
            .to_builder()
            .region(aws_config::Region::new(r.clone()))
            .build(),
        None => shared.clone(),
    }
}
