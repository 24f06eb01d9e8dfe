//! `bikeshare`: the command line of mlops-bikeshare.
//!
//! A thin layer: it parses flags, loads the layered [`config`], and wires components from the
//! library crates; no business logic lives here. `bikeshare --help` lists the commands.

mod app;
mod cli;
mod commands;
mod config;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(mut c) => {
            if let Some(dir) = cli.data_dir {
                c.data_dir = config::DataDir(dir);
            }
            c
        }
        Err(e) => {
            eprintln!("bikeshare: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bikeshare: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Printed once, here: commands return their errors instead of logging them too.
        Err(e) => {
            eprintln!("bikeshare: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
