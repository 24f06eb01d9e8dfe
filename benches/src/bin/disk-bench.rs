//! Disk use per input event, store by store: a recorded history through the real binary —
//! `replay`, `process --until-caught-up`, `lake write --until-caught-up` — in a fresh data
//! directory, then the bytes each store holds on disk (allocated blocks, what `du` counts)
//! divided by the input events (the rows of the lake's `raw_events`, every event once).
//!
//! ```text
//! cargo build --release --bin bikeshare
//! cargo run --release -p bikeshare-benches --bin disk-bench -- \
//!   --bin $CARGO_TARGET_DIR/release/bikeshare -- --format bluebikes --system-id bluebikes \
//!   --time-zone America/New_York \
//!   --stations-file ../shared/data/real/bluebikes-boston-2021/stations.csv \
//!   ../shared/data/real/bluebikes-boston-2021/station_status_2021-01.csv.bz2
//! ```
//!
//! Everything after `--` is passed to `bikeshare replay`. Extra configuration goes through
//! the environment as usual (`BIKESHARE_STREAM__RETENTION__HOURS=...`).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use bikeshare_lake::catalog::partitions;
use bikeshare_lake::{Dataset, LakeConfig, open_store};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Bytes on disk per input event for each store, after replay, process and lake write"
)]
struct Args {
    /// The `bikeshare` binary to run.
    #[arg(long)]
    bin: PathBuf,
    /// Data directory to use (default: a temporary one, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Arguments of `bikeshare replay`.
    #[arg(last = true, required = true)]
    replay: Vec<String>,
}

/// The store a file belongs to, from its path under the data directory.
fn store_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match p.as_slice() {
        [f] if f.starts_with("stream.db") => "stream (stream.db, -wal, -shm)".into(),
        ["checkpoints", who, ..] => format!("checkpoints/{who}"),
        ["lake", "model-monitor", tree, ..] => format!("lake/model-monitor/{tree}"),
        ["lake", first, ..] => format!("lake/{first}"),
        [first, ..] => (*first).to_owned(),
        [] => String::new(),
    }
}

/// Allocated bytes per store under `dir`.
fn disk_use(dir: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir)?.to_owned();
                *out.entry(store_of(&rel)).or_default() += meta.blocks() * 512;
            }
        }
    }
    Ok(out)
}

fn run(bin: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(bin)
        .env("BIKESHARE_DATA_DIR", data_dir)
        .env("BIKESHARE_METRICS__ENABLED", "false")
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("bikeshare {} failed: {status}", args.join(" "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("var"));
    let mut replay = vec!["replay"];
    replay.extend(args.replay.iter().map(String::as_str));
    run(&args.bin, &data_dir, &replay)?;
    run(&args.bin, &data_dir, &["process", "--until-caught-up"])?;
    run(
        &args.bin,
        &data_dir,
        &["lake", "write", "--until-caught-up"],
    )?;

    let store = open_store(&LakeConfig::default(), &data_dir)?;
    let parts = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(partitions(&store))?;
    let count = |d: Dataset| -> u64 {
        parts
            .iter()
            .filter(|p| p.dataset == d)
            .map(|p| p.rows)
            .sum()
    };
    let events = count(Dataset::RawEvents);
    if events == 0 {
        bail!("no input events reached the lake");
    }
    let used = disk_use(&data_dir)?;
    let total: u64 = used.values().sum();
    println!(
        "{events} input events, {} predictions, {} labels; {} MB on disk",
        count(Dataset::Predictions),
        count(Dataset::Labels),
        total / 1_000_000
    );
    println!("| store | bytes on disk | bytes per input event |");
    println!("| --- | ---: | ---: |");
    for (name, bytes) in used.iter().chain([(&"total".to_owned(), &total)]) {
        println!(
            "| {name} | {bytes} | {:.0} |",
            *bytes as f64 / events as f64
        );
    }
    Ok(())
}
