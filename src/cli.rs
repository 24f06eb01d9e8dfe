//! Command-line flags. Each command's help says what it does in words a newcomer understands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Predicts, for every bikeshare station, whether it runs out of bikes or docks within
/// 30 minutes — from live GBFS feeds, a recorded history, or the built-in city simulator.
///
/// Start with `bikeshare up`: it runs the whole pipeline on this machine with a simulated city.
#[derive(Debug, Parser)]
#[command(name = "bikeshare", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./bikeshare.toml when it exists.
    /// Environment variables BIKESHARE_<SECTION>__<KEY> override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: the embedded stream, checkpoints, the lake, the local registry
    /// (overrides the `data_dir` config key; default ./var).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main job: simulated city → producers → stream, with a live summary.
    Up(UpArgs),
    /// Serve a simulated city as GBFS 2.3 and 3.0 feeds (and Meteostat-style weather) over
    /// HTTP, or write its history to a file with --backfill.
    Simulate(SimulateArgs),
    /// Poll GBFS feeds (and weather), validate every record, and publish events to the stream.
    Ingest(IngestArgs),
    /// Publish a recorded history to the stream in event-time order.
    Replay(ReplayArgs),
    /// Run the stream processor: events → windows and features → predictions and labels,
    /// resuming from its last checkpoint.
    Process(ProcessArgs),
    /// Run a recorded or simulated history through the same processor, offline, and write
    /// labelled, point-in-time-correct training rows.
    Backfill(BackfillArgs),
    /// Train the two models (went empty, went full) on labelled rows — a backfill CSV, a
    /// recorded history, or a simulated one — evaluate them on held-out later days against
    /// the baselines, and write a model directory (card.json, empty.json, full.json, and
    /// calibrator.json when a model's validation reliability is off).
    Train(TrainArgs),
    /// Print a stream's records (events, dead letters, predictions, labels, features) as
    /// JSON lines, merged across shards; without --follow it stops at the newest record.
    Tail(TailArgs),
    /// Serve the web dashboard over the streams in the data directory (`up` serves it too).
    Dashboard(DashboardArgs),
    /// Subscribe to live predictions over HTTP (server-sent events), resuming after
    /// disconnects without gaps or repeats.
    Subscribe(SubscribeArgs),
    /// Serve the subscription API alone: live predictions as server-sent events, read from
    /// the prediction stream (`up` serves it too; a deployed environment runs it as its own
    /// service behind the load balancer).
    Api(ApiArgs),
    /// Serve a model over HTTP like a SageMaker inference container (`GET /ping`,
    /// `POST /invocations`, CSV or JSON lines, many stations per request); the SageMaker
    /// runtime API path answers too, so the processor can use it as its endpoint.
    ServeModel(ServeModelArgs),
    /// The Parquet lake: list datasets, partitions and row counts, or archive the input
    /// streams into it (`up` does both writes itself).
    Lake(LakeArgs),
    /// Data-quality monitoring of the features in the lake against a baseline, in SageMaker
    /// Model Monitor's formats (statistics.json, constraints.json, constraint_violations.json).
    Monitor(MonitorArgs),
    /// Move a registered model version to staging or production through the promotion gate
    /// (schema and sanity checks; for production, beat the current model on held-out rows),
    /// or show the registry's versions, stages and decisions with --status.
    Promote(PromoteArgs),
    /// What the AWS templates must hold for this configuration: `names` prints every AWS
    /// name it would use (streams, tables, buckets, delivery streams, endpoint, topic);
    /// `catalog` prints the lake's Glue and Athena template, generated from its schemas.
    Infra(InfraArgs),
}

#[derive(Debug, Args)]
pub struct InfraArgs {
    #[command(subcommand)]
    pub command: InfraCommand,
}

#[derive(Debug, Subcommand)]
pub enum InfraCommand {
    /// Print the AWS names this configuration uses, as JSON.
    Names,
    /// Print the CloudFormation template of the lake's Glue tables and Athena queries
    /// (infra/cloudformation/lake-catalog.yaml).
    Catalog,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Show versions, stages and recent decisions; decide nothing.
    #[arg(long, conflicts_with_all = ["model_version", "to", "rows", "model_dir"])]
    pub status: bool,
    /// The registered version number to promote (default: the one in staging).
    #[arg(long, value_name = "N")]
    pub model_version: Option<u64>,
    /// Register this model directory (what `bikeshare train` writes, or a SageMaker
    /// training job's model.tar.gz unpacked) as a new version first, then put that version
    /// through the gate. Prints `version=N` and `source=<where the registry keeps it>` on
    /// stdout, for scripts.
    #[arg(long, value_name = "DIR", conflicts_with = "model_version")]
    pub model_dir: Option<PathBuf>,
    /// The stage to promote to.
    #[arg(long, value_enum, default_value = "production")]
    pub to: PromoteStage,
    /// Held-out labelled rows (`bikeshare backfill` CSV) the candidate was not trained on;
    /// the gate uses the last `[registry] recent_hours` of them. Required for production.
    #[arg(long, value_name = "CSV")]
    pub rows: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PromoteStage {
    Staging,
    Production,
}

#[derive(Debug, Args)]
pub struct ServeModelArgs {
    /// The model directory (card.json, empty.json, full.json); default /opt/ml/model, as
    /// SageMaker mounts it.
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Address to serve on (127.0.0.1:8080 by default; anything else needs
    /// BIKESHARE_MODEL_TOKEN).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Answer `/endpoints/<name>/invocations` for this name only (default: any name).
    #[arg(long)]
    pub endpoint_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of simulated stations.
    #[arg(long = "station-count", value_name = "N")]
    pub stations: Option<u32>,
    /// Simulated seconds per wall-clock second while catching up to now.
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
    /// How far in the past a new city starts (it runs fast until it catches up to now); a
    /// resumed city starts where it stopped, at most this far back.
    #[arg(long = "catch-up", default_value = "6h", value_parser = parse_duration)]
    pub history: std::time::Duration,
    /// Stop after this long (wall clock); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 5)]
    pub summary_every: u64,
    /// Do not train a first model when the registry has no production model (score with
    /// the baseline until one is promoted).
    #[arg(long)]
    pub no_bootstrap: bool,
    /// Start clean: remove what earlier runs left in the data directory (stream, checkpoints,
    /// lake, registry, monitoring, the city's clock) first. Without it, `up` resumes the city
    /// where it stopped.
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to serve on (127.0.0.1 by default; anything else needs BIKESHARE_SIM_TOKEN).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Number of simulated stations.
    #[arg(long = "station-count", value_name = "N")]
    pub stations: Option<u32>,
    /// Random seed: the same seed gives the same city and history.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated seconds per wall-clock second.
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Simulation start (RFC 3339), or how long ago (e.g. `6h`, `2d`).
    #[arg(long, value_parser = parse_time)]
    pub start: Option<bikeshare_types::Timestamp>,
    /// Write the history from --start to --until as JSON lines of events to this file
    /// (`.gz` compresses) instead of serving.
    #[arg(long, value_name = "FILE")]
    pub backfill: Option<PathBuf>,
    /// End of the backfill (RFC 3339, or how long ago); default: now.
    #[arg(long, requires = "backfill", value_parser = parse_time)]
    pub until: Option<bikeshare_types::Timestamp>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// A GBFS auto-discovery URL (gbfs.json); repeat for several systems.
    #[arg(long = "gbfs-url", value_name = "URL")]
    pub gbfs_urls: Vec<String>,
    /// System id for each --gbfs-url, in order (default: from system_information).
    #[arg(long = "system-id", value_name = "SYSTEM_ID")]
    pub system_ids: Vec<String>,
    /// Also start the built-in simulator (settings from the `[simulator]` config) and ingest it.
    #[arg(long)]
    pub simulator: bool,
    /// Also poll weather for each system (Meteostat; the simulator's endpoint with --simulator).
    #[arg(long)]
    pub weather: bool,
    /// Stop after this long (wall clock); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// Bluebikes station_status change log (.csv or .csv.bz2); pair with --stations-file.
    Bluebikes,
    /// JSON lines of events, as `simulate --backfill` writes them (.jsonl or .jsonl.gz).
    Jsonl,
    /// Hourly snapshot CSV (.csv.gz) of Toronto or Ecobici recordings.
    Snapshots,
    /// Raw GBFS station_status JSON snapshots (files or directories, any GBFS version),
    /// validated like live feeds; pair with --stations-file (station_information files).
    GbfsSnapshots,
}

/// A recorded history: files and their format.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Files to read, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum)]
    pub format: ReplayFormat,
    /// System id to publish under (JSON lines keep their own).
    #[arg(long, default_value = "replay")]
    pub system_id: String,
    /// Station list with coordinates and capacity (Bluebikes stations.csv, or a GBFS
    /// station_information.json for snapshots).
    #[arg(long = "stations-file", value_name = "FILE")]
    pub stations: Option<PathBuf>,
    /// The system's IANA time zone (America/New_York for Bluebikes): hour and day features
    /// are local. Required by every format but jsonl (whose recorded system information
    /// carries it); never assumed to be UTC.
    #[arg(long = "time-zone", value_name = "IANA")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// 0 = as fast as possible; otherwise simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Where to write the training rows: `*.parquet` for Parquet (columnar, zstd; what
    /// `train --rows` reads fastest), else CSV (keys, labels, then every feature; a missing
    /// feature is an empty field).
    #[arg(long, short, value_name = "PATH")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["rows", "history", "simulate_days"])))]
pub struct TrainArgs {
    /// The model directory to write (it must not exist).
    #[arg(long, short, value_name = "PATH")]
    pub output: PathBuf,
    /// Training rows written by `bikeshare backfill` (Parquet `*.parquet`, or CSV).
    #[arg(long, value_name = "CSV")]
    pub rows: Option<PathBuf>,
    /// A recorded history to backfill and train on (files in order; give --format).
    #[arg(long, num_args = 1.., value_name = "FILE", requires = "format")]
    pub history: Vec<PathBuf>,
    /// Format of the --history files.
    #[arg(long, value_enum)]
    pub format: Option<ReplayFormat>,
    /// System id of the --history (JSON lines keep their own).
    #[arg(long, default_value = "replay")]
    pub system_id: String,
    /// Station list of the --history (Bluebikes stations.csv, or station_information.json).
    #[arg(long = "stations-file", value_name = "FILE")]
    pub history_stations: Option<PathBuf>,
    /// IANA time zone of the --history's system (required but for jsonl; see `backfill`).
    #[arg(long = "time-zone", value_name = "IANA")]
    pub time_zone: Option<String>,
    /// Simulate this many days of the configured city, ending now, and train on them.
    #[arg(long, value_name = "DAYS")]
    pub simulate_days: Option<u32>,
    /// Number of simulated stations (default: the configured city's).
    #[arg(long = "station-count", value_name = "N", requires = "simulate_days")]
    pub sim_stations: Option<u32>,
    /// Version label written in the model card (default: the UTC time, e.g.
    /// 20240601T120000Z); the registry numbers versions itself.
    #[arg(long = "card-version")]
    pub model_version: Option<String>,
    /// Most boosting rounds (overrides `train.params.max_rounds`).
    #[arg(long)]
    pub max_rounds: Option<u32>,
    /// XGBoost threads (overrides `train.params.nthread`).
    #[arg(long)]
    pub nthread: Option<u32>,
    /// Keep this share of the easy negatives of the training rows, weighted so that
    /// probabilities stay calibrated (overrides `train.params.easy_negative_keep`; 1 keeps
    /// all). Cuts XGBoost's memory by about that share. With Parquet `--rows` the rows are
    /// sampled while reading (rows easy for both targets, before the validation weeks), so
    /// the table itself shrinks too.
    #[arg(long, value_name = "SHARE")]
    pub easy_negative_keep: Option<f64>,
    /// Hyper-parameter search: train N parameter sets (the configured one, then draws of
    /// depth, eta, min child weight and subsampling seeded by `train.params.seed`; rounds by
    /// early stopping) and keep the best on the validation weeks by new-stockout PR-AUC;
    /// every trial goes in the card (overrides `train.params.search_trials`). Costs N
    /// trainings.
    #[arg(long, value_name = "N")]
    pub search: Option<u32>,
    /// An ablation: train both models again without a group of features and record their
    /// test measures in the card (`NAME=PATTERN[,PATTERN…]`, a pattern a feature name or a
    /// name with one `*`, e.g. `profile=pf_*,minutes_to_*_profile`). Repeatable; each group
    /// costs a full training.
    #[arg(long, value_name = "NAME=PATTERNS")]
    pub ablate: Vec<String>,
    /// Register the model directory in the `[registry]` as a new version and put it through
    /// the gate to staging (schema and sanity checks on the test days).
    #[arg(long)]
    pub register: bool,
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Stop once every shard has been read to its end (bounded inputs: replays, tests).
    #[arg(long)]
    pub until_caught_up: bool,
    /// Stop after this long (wall clock); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Also publish every feature vector to the `features` stream.
    #[arg(long)]
    pub features: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailStream {
    Events,
    DeadLetters,
    Predictions,
    Labels,
    Features,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Which stream to print.
    #[arg(long, value_enum, default_value_t = TailStream::Events)]
    pub stream: TailStream,
    /// Start from the oldest retained record instead of only new ones.
    #[arg(long)]
    pub from_start: bool,
    /// Keep waiting for new records (else stop at the newest).
    #[arg(long, short)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to serve on (127.0.0.1 by default; anything else needs BIKESHARE_DASHBOARD_TOKEN).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address to serve on (`[api] bind`, 127.0.0.1:8090 by default; anything else needs
    /// BIKESHARE_API_TOKEN).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The subscription endpoint (`bikeshare up` serves it).
    #[arg(long, default_value = "http://127.0.0.1:8090/v1/predictions")]
    pub url: String,
    /// Only this system.
    #[arg(long)]
    pub system_id: Option<String>,
    /// Only this station.
    #[arg(long)]
    pub station_id: Option<String>,
    /// Start from the oldest retained record instead of only new ones.
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
    /// Failed attempts in a row (connection refused, 5xx, 503/429, a stream that ends)
    /// before giving up with a non-zero exit; `forever` never gives up.
    #[arg(long, default_value = "10", value_parser = parse_retries, value_name = "N|forever")]
    pub retries: RetryBudget,
    /// How long to keep asking when the server does not know the system or station (it
    /// may not have predicted it yet); then exit non-zero.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub wait_for_station: std::time::Duration,
}

/// How many failed attempts in a row a client makes before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBudget {
    Times(u32),
    Forever,
}

fn parse_retries(s: &str) -> Result<RetryBudget, String> {
    match s.trim() {
        "forever" => Ok(RetryBudget::Forever),
        n => n
            .parse()
            .map(RetryBudget::Times)
            .map_err(|_| format!("{s:?}: give a number of retries or `forever`")),
    }
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(subcommand)]
    pub command: MonitorCommand,
}

/// The feature rows a monitor command reads from the lake: `as_of` in `[since, until)`.
#[derive(Debug, Args)]
pub struct FeatureRange {
    /// First `as_of` included (RFC 3339, or how long ago, e.g. `2d`); default: the first
    /// row in the lake.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<bikeshare_types::Timestamp>,
    /// First `as_of` excluded (RFC 3339, or how long ago); default: after the last row.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<bikeshare_types::Timestamp>,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Write a baseline (statistics.json + constraints.json) of the lake's feature rows.
    Baseline {
        #[command(flatten)]
        range: FeatureRange,
        /// Output directory; default `<data_dir>/monitoring/baseline`.
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Compare the lake's feature rows with a baseline and write constraint_violations.json.
    Check {
        #[command(flatten)]
        range: FeatureRange,
        /// The baseline directory; default `<data_dir>/monitoring/baseline`.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Output directory; default `<data_dir>/monitoring/latest`.
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Exit with status 3 when any constraint is violated.
        #[arg(long)]
        fail_on_violations: bool,
    },
}

/// A time: RFC 3339 (`2026-04-07T06:00:00Z`), or how long before now (`6h`, `2d`).
fn parse_time(s: &str) -> Result<bikeshare_types::Timestamp, String> {
    use bikeshare_types::Clock;
    parse_time_or_ago(s, bikeshare_types::SystemClock.now()).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (e.g. 2026-04-07T06:00:00Z) nor a duration ago (6h, 2d)")
    })
}

#[derive(Debug, Args)]
pub struct LakeArgs {
    #[command(subcommand)]
    pub command: LakeCommand,
}

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// List every dataset's partitions with their files, rows and bytes.
    Ls {
        /// Only this dataset (raw_events, station_status, features, predictions, labels,
        /// dead_letters).
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Archive the `events` and `dead-letters` streams into the lake (raw events, curated
    /// station status, dead letters), resuming from its last checkpoint.
    Write {
        /// Stop once both streams are read to their end.
        #[arg(long)]
        until_caught_up: bool,
        /// Stop after this long (wall clock); default: run until Ctrl-C.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
    },
}

/// Parses a time given as RFC 3339 or as "how long ago" (`6h`, `2d`).
pub fn parse_time_or_ago(
    s: &str,
    now: bikeshare_types::Timestamp,
) -> anyhow::Result<bikeshare_types::Timestamp> {
    if let Some(t) = bikeshare_types::Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let ago = parse_duration(s).map_err(|e| anyhow::anyhow!("{e}; or give an RFC 3339 time"))?;
    Ok(now.plus_millis(-i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)))
}

/// Parses `90s`, `15m`, `6h`, `2d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 90s, 15m, 6h, 2d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::BTreeMap;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    /// Every long flag that appears in more than one command, with each command's path.
    fn shared_flags() -> BTreeMap<String, Vec<(String, clap::Arg)>> {
        fn walk(
            cmd: &clap::Command,
            path: &str,
            out: &mut BTreeMap<String, Vec<(String, clap::Arg)>>,
        ) {
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long()
                    && !matches!(long, "help" | "version")
                {
                    out.entry(long.to_owned())
                        .or_default()
                        .push((path.to_owned(), arg.clone()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut all = BTreeMap::new();
        walk(&Cli::command(), "bikeshare", &mut all);
        all
    }

    /// One meaning per flag name: wherever a long flag appears it takes the same kind of
    /// value (the parser's type), under the same value name, with the same short form.
    #[test]
    fn a_flag_name_means_one_thing_in_every_command() {
        let mut problems = Vec::new();
        for (long, uses) in shared_flags() {
            let meaning = |a: &clap::Arg| {
                (
                    a.get_value_parser().type_id(),
                    a.get_num_args().is_some_and(|n| n.takes_values()),
                    a.get_value_names().map(<[_]>::to_vec),
                    a.get_short(),
                )
            };
            let first = meaning(&uses[0].1);
            for (path, arg) in &uses[1..] {
                if meaning(arg) != first {
                    problems.push(format!(
                        "--{long}: {:?} in `{}` but {:?} in `{path}`",
                        first,
                        uses[0].0,
                        meaning(arg)
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Each command's rendered --help names the shared flags it has, the global ones
    /// included, and no flag name the CLI retired for being ambiguous.
    #[test]
    fn every_help_shows_the_shared_flags_and_no_retired_name() {
        let retired = [
            "--stations ",
            "--system ",
            "--station ",
            "--out ",
            "--sim-stations",
        ];
        let mut cli = Cli::command();
        cli.build();
        fn check(cmd: &mut clap::Command, path: &str, retired: &[&str]) {
            let help = cmd.render_long_help().to_string();
            for flag in ["--config", "--data-dir"] {
                assert!(help.contains(flag), "`{path} --help` lacks {flag}");
            }
            for r in retired {
                assert!(!help.contains(r), "`{path} --help` still shows {r}");
            }
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(
                        help.contains(&format!("--{long}")),
                        "`{path}` hides --{long}"
                    );
                }
            }
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            for name in names.into_iter().filter(|n| n != "help") {
                if let Some(sub) = cmd.find_subcommand_mut(&name) {
                    check(sub, &format!("{path} {name}"), retired);
                }
            }
        }
        check(&mut cli, "bikeshare", &retired);
        // The names that once meant two things now have one.
        let shared = shared_flags();
        for (flag, commands) in [
            ("station-count", 3),
            ("stations-file", 3),
            ("system-id", 4),
            ("output", 4),
            ("data-dir", 1),
        ] {
            assert!(
                shared.get(flag).is_some_and(|u| u.len() >= commands),
                "--{flag}: {:?}",
                shared
                    .get(flag)
                    .map(|u| u.iter().map(|(p, _)| p).collect::<Vec<_>>())
            );
        }
    }

    #[test]
    fn retry_budgets() {
        assert_eq!(parse_retries("3"), Ok(RetryBudget::Times(3)));
        assert_eq!(parse_retries("forever"), Ok(RetryBudget::Forever));
        assert!(parse_retries("-1").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
