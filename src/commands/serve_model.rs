//! `bikeshare serve-model`: a model directory served over the SageMaker inference-container
//! contract (see `bikeshare_models::serve`).

use std::sync::Arc;

use anyhow::Context;
use bikeshare_models::model_dir;
use bikeshare_models::serve::{self, ServedModel};
use bikeshare_stream_processor::Processor;

use crate::app::shutdown_signal;
use crate::cli::ServeModelArgs;
use crate::config::Config;

pub async fn run(args: ServeModelArgs, mut config: Config) -> anyhow::Result<()> {
    let s = &mut config.serve_model;
    if let Some(dir) = args.model_dir {
        s.model_dir = dir;
    }
    if let Some(b) = args.bind {
        s.bind = b;
    }
    if args.endpoint_name.is_some() {
        s.endpoint_name = args.endpoint_name;
    }
    // The schema the processor computes with this configuration: a model trained on any
    // other is refused here, before serving anything.
    let schema = Processor::new(config.processor.clone()).schema().clone();
    let scorer = model_dir::load(&config.serve_model.model_dir, &schema).with_context(|| {
        format!(
            "loading the model in {}",
            config.serve_model.model_dir.display()
        )
    })?;
    let model = bikeshare_stream_processor::Scorer::model(&scorer).clone();
    let running = serve::serve(
        &config.serve_model,
        Some(Arc::new(ServedModel::new(Arc::new(scorer), schema.len()))),
        shutdown_signal(None),
    )
    .await?;
    tracing::info!(
        addr = %running.local_addr(),
        model = %model.name,
        version = %model.version,
        schema = %schema.id().0,
        "serving the model"
    );
    eprintln!(
        "serving model {} version {} on {} (GET /ping, POST /invocations)",
        model.name,
        model.version,
        running.url()
    );
    running.wait().await;
    Ok(())
}
