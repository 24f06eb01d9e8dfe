//! One module per command; this one holds what they share: opening the streams, the
//! producers' output, and shutdown.

mod api;
mod backfill;
mod dashboard;
mod infra;
mod ingest;
mod lake;
mod monitor;
mod process;
mod promote;
mod replay;
mod serve_model;
mod simulate;
mod subscribe;
mod tail;
mod train;
mod up;

use crate::cli::Command;
use crate::config::Config;

pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Ingest(args) => ingest::run(args, config).await,
        Command::Replay(args) => replay::run(args, config).await,
        Command::Tail(args) => tail::run(args, config).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::Api(args) => api::run(args, config).await,
        Command::Dashboard(args) => dashboard::run(args, config).await,
        Command::Process(args) => process::run(args, config).await,
        Command::Backfill(args) => backfill::run(args, config).await,
        Command::Up(args) => up::run(args, config).await,
        Command::Lake(args) => lake::run(args, config).await,
        Command::Monitor(args) => monitor::run(args, config).await,
        Command::Simulate(args) => simulate::run(args, config).await,
        Command::ServeModel(args) => serve_model::run(args, config).await,
        Command::Train(args) => train::run(args, config).await,
        Command::Promote(args) => promote::run(args, config).await,
        Command::Infra(args) => infra::run(args, config).await,
    }
}
