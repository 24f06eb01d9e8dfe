//! Helpers shared by the end-to-end tests: run the real `bikeshare` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_bikeshare");

/// `bikeshare` with its data directory in `data_dir`, quick checkpoints and small reads.
pub fn bikeshare(data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("BIKESHARE_DATA_DIR", data_dir)
        .env("BIKESHARE_RUNNER__CHECKPOINT_INTERVAL_MS", "30")
        .env("BIKESHARE_LAKE__CHECKPOINT_INTERVAL_MS", "10")
        .env("BIKESHARE_RUNNER__BATCH", "50")
        .env("BIKESHARE_METRICS__BIND", "127.0.0.1:0")
        // No fixed ports: tests run in parallel.
        .env("BIKESHARE_SIMULATOR__BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// The settings the tests add to a command.
pub trait TestEnv {
    /// The fixed credentials (`test`/`test`) and region (`us-east-1`) the emulators accept.
    fn emulator_credentials(&mut self) -> &mut Self;

    /// Starts the command with stdout discarded and stderr piped, to read what it prints.
    fn spawn_reading_stderr(&mut self) -> std::process::Child;
}

impl TestEnv for Command {
    fn emulator_credentials(&mut self) -> &mut Self {
        self.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
    }

    fn spawn_reading_stderr(&mut self) -> std::process::Child {
        self.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Runs to completion, asserting success; returns stdout.
pub fn ok(c: &mut Command) -> String {
    let out = c.output().expect("run bikeshare");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A child process killed (and reaped) when dropped, so a test that panics never leaves a job
/// running behind it.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A simulated history of `stations` stations over `[start, until)` as envelope JSON lines.
pub fn simulated_history(
    dir: &Path,
    stations: u32,
    seed: u64,
    start: &str,
    until: &str,
) -> PathBuf {
    simulate(bikeshare(dir), dir, stations, seed, (start, until))
}

/// [`simulated_history`] of the city `system` (its system id, the partition key of `events`)
/// over `span` (start and end, RFC 3339), written into `dir` (created).
pub fn simulated_city_history(
    dir: &Path,
    system: &str,
    stations: u32,
    seed: u64,
    span: (&str, &str),
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = bikeshare(dir);
    c.env("BIKESHARE_SIMULATOR__CITY__SYSTEM_ID", system);
    simulate(c, dir, stations, seed, span)
}

fn simulate(mut c: Command, dir: &Path, stations: u32, seed: u64, span: (&str, &str)) -> PathBuf {
    let (start, until) = span;
    let history = dir.join("history.jsonl");
    ok(c.args([
        "simulate",
        "--backfill",
        history.to_str().unwrap(),
        "--station-count",
        &stations.to_string(),
        "--seed",
        &seed.to_string(),
        "--start",
        start,
        "--until",
        until,
    ]));
    history
}

/// `shards` system ids (`city-<n>`), the `i`th of which the partition key of `events` (the
/// system id) maps to the `i`th of `shards` uniform shards.
pub fn one_system_per_shard(shards: u32) -> Vec<String> {
    let ranges = bikeshare_stream::uniform_ranges(shards);
    let mut systems: Vec<Option<String>> = vec![None; shards as usize];
    for i in 0.. {
        let id = format!("city-{i}");
        let slot = &mut systems[bikeshare_stream::shard_for_key(&ranges, &id)];
        if slot.is_none() {
            *slot = Some(id);
        }
        if systems.iter().all(Option::is_some) {
            break;
        }
    }
    systems.into_iter().map(Option::unwrap).collect()
}

/// A simulated history ([`simulated_history`]) in a temporary directory of its own, where the
/// test keeps its data directories and other files too.
#[derive(Debug)]
pub struct History {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl History {
    /// `stations` stations over `[start, until)` (RFC 3339), simulated with `seed`.
    pub fn simulate(stations: u32, seed: u64, start: &str, until: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = simulated_history(dir.path(), stations, seed, start, until);
        Self { dir, file }
    }

    /// The temporary directory: the history and whatever else the test writes.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The history file (envelope JSON lines).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// A new data directory `name` in [`Self::dir`], the history replayed into its event stream.
    pub fn replayed(&self, name: &str) -> PathBuf {
        let data = self.dir().join(name);
        replay(&data, &self.file);
        data
    }
}

/// Replays `history` (envelope JSON lines, e.g. [`simulated_history`]) into the event stream
/// of `data_dir`.
pub fn replay(data_dir: &Path, history: &Path) {
    ok(bikeshare(data_dir).args(["replay", "--format", "jsonl", history.to_str().unwrap()]));
}

/// `bikeshare backfill --format <format> <input> -o <out>`: training rows of a recording, into
/// CSV or Parquet (by the extension of `out`).
pub fn backfill(data_dir: &Path, format: &str, input: &Path, out: &Path) -> Command {
    let mut c = bikeshare(data_dir);
    c.args(["backfill", "--format", format])
        .arg(input)
        .arg("-o")
        .arg(out);
    c
}

/// Every record of `stream` as JSON.
pub fn stream_records(data_dir: &Path, stream: &str) -> Vec<serde_json::Value> {
    ok(bikeshare(data_dir).args(["tail", "--stream", stream, "--from-start"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The pipeline on the emulators, for the commands of one test run: the streams on
/// kinesis-mock (named `<name>-<stream>`, created with `shards` shards), the shard leases in the
/// DynamoDB table `name` (3 s leases) and the checkpoints in the S3 bucket `name` (every
/// 400 ms), both on moto and created when missing.
#[derive(Debug, Clone)]
pub struct OnEmulators {
    pub kinesis: String,
    pub moto: String,
    pub name: String,
    pub shards: u32,
}

impl OnEmulators {
    /// [`bikeshare`] in `data_dir`, configured for this deployment.
    pub fn command(&self, data_dir: &Path) -> Command {
        let mut c = bikeshare(data_dir);
        c.emulator_credentials()
            .env("BIKESHARE_STREAM__BACKEND", "kinesis")
            .env("BIKESHARE_STREAM__KINESIS__ENDPOINT_URL", &self.kinesis)
            .env("BIKESHARE_STREAM__KINESIS__REGION", "us-east-1")
            .env(
                "BIKESHARE_STREAM__KINESIS__STREAM_PREFIX",
                format!("{}-", self.name),
            )
            .env("BIKESHARE_STREAM__KINESIS__CREATE_MISSING", "true")
            .env(
                "BIKESHARE_STREAM__KINESIS__CREATE_SHARDS",
                self.shards.to_string(),
            )
            .env("BIKESHARE_RUNNER__LEASES__STORE", "dynamodb")
            .env("BIKESHARE_RUNNER__LEASES__TABLE", &self.name)
            .env("BIKESHARE_RUNNER__LEASES__ENDPOINT_URL", &self.moto)
            .env("BIKESHARE_RUNNER__LEASES__CREATE_TABLE", "true")
            .env("BIKESHARE_RUNNER__LEASES__DURATION_MS", "3000")
            .env("BIKESHARE_RUNNER__CHECKPOINTS__STORE", "s3")
            .env("BIKESHARE_RUNNER__CHECKPOINTS__S3__BUCKET", &self.name)
            .env(
                "BIKESHARE_RUNNER__CHECKPOINTS__S3__ENDPOINT_URL",
                &self.moto,
            )
            .env("BIKESHARE_RUNNER__CHECKPOINTS__S3__CREATE_BUCKET", "true")
            .env("BIKESHARE_RUNNER__CHECKPOINT_INTERVAL_MS", "400");
        c
    }
}

/// Records keyed by their `id_field`; a record seen again (the stream is at-least-once, as
/// Kinesis) must be identical: `what` names the records in that failure.
pub fn by_id(
    records: impl IntoIterator<Item = serde_json::Value>,
    what: &str,
    id_field: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut map = std::collections::BTreeMap::new();
    for v in records {
        let id = v[id_field].as_str().unwrap().to_owned();
        if let Some(prev) = map.insert(id.clone(), v.clone()) {
            assert_eq!(
                prev, v,
                "{what}: record {id} re-emitted with different content"
            );
        }
    }
    map
}

/// An emulator's endpoint from `var` (`BIKESHARE_TEST_KINESIS_ENDPOINT`,
/// `BIKESHARE_TEST_MOTO_ENDPOINT`, set by `scripts/test.sh`). Without it the test is
/// skipped, except in CI (`CI=true`), where a missing emulator is a failure.
pub use bikeshare_testkit::emulators::env_or_skip as emulator;

/// Every endpoint of `vars`, looked up in order as [`emulator`] does; `None` (the test is
/// skipped) at the first one missing.
pub fn emulators<const N: usize>(test: &str, vars: [&str; N]) -> Option<[String; N]> {
    let mut found = Vec::with_capacity(N);
    for var in vars {
        found.push(emulator(var, test)?);
    }
    found.try_into().ok()
}

/// The state and CPU time (user + system) of a process, from `/proc/<pid>/stat`. Kill points
/// are measured in the CPU time of the process itself, not in wall time, so a machine busy with
/// other tests moves them little. (In wall time, an uninterrupted run slowed by other tests
/// set kill points that a later, faster run outran: it was never killed.)
fn cpu_time(pid: u32) -> Option<(char, std::time::Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux the tests run on.
    Some((state, std::time::Duration::from_millis(ticks * 10)))
}

/// Runs `bikeshare <args>` in `data_dir` to the end, as [`ok`] does, and returns its output and
/// the CPU time it used (the measure [`run_with_kills`] places its kill points by), read from
/// the process itself just before it is reaped (so other tests' processes never count).
#[allow(clippy::zombie_processes)] // reaped by try_wait or wait below
pub fn ok_with_cpu_time(data_dir: &Path, args: &[&str]) -> (String, std::time::Duration) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = bikeshare(data_dir)
        .args(args)
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .spawn()
        .unwrap();
    let mut used = std::time::Duration::ZERO;
    let status = loop {
        match cpu_time(child.id()) {
            // Exited, not yet reaped: its times are final.
            Some(('Z', t)) => {
                used = t;
                break child.wait().unwrap();
            }
            Some((_, t)) => used = t,
            None => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(
        status.success(),
        "{args:?} failed: {}",
        std::fs::read_to_string(err.path()).unwrap_or_default()
    );
    (std::fs::read_to_string(out.path()).unwrap(), used)
}

/// Runs `bikeshare <args>` in `data_dir` and SIGKILLs it as soon as `kill_now(pid)` says so;
/// returns whether it was killed (`false`: it finished first, successfully).
#[allow(clippy::zombie_processes)] // every child is reaped: by try_wait, or wait after kill
pub fn run_and_kill_when(
    data_dir: &Path,
    args: &[&str],
    mut kill_now: impl FnMut(u32) -> bool,
) -> bool {
    let mut child = bikeshare(data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{args:?} failed");
            return false;
        }
        if kill_now(child.id()) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// [`run_and_kill_when`] the process has used `kill_at` of CPU time.
pub fn run_and_kill_at(data_dir: &Path, args: &[&str], kill_at: std::time::Duration) -> bool {
    // Unreadable only between the child's exit and try_wait: poll again.
    run_and_kill_when(data_dir, args, |pid| {
        cpu_time(pid).is_some_and(|(_, used)| used >= kill_at)
    })
}

/// Bytes of the embedded stream of `data_dir` (its database and write-ahead log): grows as
/// records are published.
pub fn stream_bytes(data_dir: &Path) -> u64 {
    ["stream.db", "stream.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Runs `bikeshare <args>` in `data_dir` again and again, SIGKILLing it at pseudo-random
/// fractions (5–30 %) of `full_run`, the CPU time of an uninterrupted run
/// ([`ok_with_cpu_time`]), until one run finishes by itself; returns the kills. For commands
/// that resume (each run has less left to do).
pub fn run_with_kills(
    data_dir: &Path,
    args: &[&str],
    full_run: std::time::Duration,
    seed: u64,
) -> usize {
    use std::time::{Duration, Instant};
    let mut kills = 0;
    let started = Instant::now();
    let mut rng = bikeshare_types::xorshift::XorShift64::new(seed);
    loop {
        // Early enough that a restarted run, which has less left to do than the first,
        // is still killed mid-run: between 5 % and 30 % of an uninterrupted run.
        let fraction = 0.05 + 0.25 * rng.below(1000) as f64 / 1000.0;
        let kill_at = full_run.mul_f64(fraction).max(Duration::from_millis(20));
        if !run_and_kill_at(data_dir, args, kill_at) {
            return kills;
        }
        kills += 1;
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{args:?}: no run finished after {kills} kills"
        );
    }
}

/// Every row of `T`'s dataset in the local lake of `data_dir`.
pub fn lake_rows<T: bikeshare_lake::LakeRecord>(data_dir: &Path) -> Vec<T> {
    let store =
        bikeshare_lake::open_store(&bikeshare_lake::LakeConfig::default(), data_dir).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bikeshare_lake::catalog::read_dataset::<T>(&store))
        .unwrap()
}

/// Writes a synthetic model (`name` "synthetic", `trees` trees of `depth`, see
/// `bikeshare_models::synthetic`) for the processor's default feature schema into `model_dir`
/// and returns that schema.
pub fn synthetic_model(
    model_dir: &Path,
    version: &str,
    trees: usize,
    depth: u32,
) -> bikeshare_stream_processor::FeatureSchema {
    let schema = bikeshare_stream_processor::Processor::new(Default::default())
        .schema()
        .clone();
    bikeshare_models::synthetic::write_model_dir(
        model_dir,
        "synthetic",
        version,
        schema.id(),
        schema.len(),
        trees,
        depth,
    )
    .unwrap();
    schema
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` to exit; `None` if it is still running after `limit` (then killed and
/// reaped).
pub fn exit_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `bikeshare serve-model` of `model_dir` bound to `addr` (a fixed address, so a restarted
/// server comes back where the clients look), output discarded; killed when dropped, so a
/// failed assertion leaves no server behind. Returns once it answers `/ping`
/// ([`wait_for_ping`], at most a minute).
pub fn serve_model(data_dir: &Path, model_dir: &Path, addr: std::net::SocketAddr) -> KillOnDrop {
    let mut server = KillOnDrop(
        bikeshare(data_dir)
            .args(["serve-model", "--model-dir"])
            .arg(model_dir)
            .args(["--bind", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_ping(&mut server, addr.port(), Duration::from_secs(60));
    server
}

/// Waits until the server child `server` answers `GET /ping` ([`PING`]) with 200 on
/// 127.0.0.1:`port`, and returns that answer. The test fails, saying which, if the child
/// exits first or `within` runs out. Every wait for a server's readiness is this one.
pub fn wait_for_ping(server: &mut std::process::Child, port: u16, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(answer) = http(port, PING).filter(|a| a.starts_with("HTTP/1.1 200")) {
            return answer;
        }
        if let Some(status) = server.try_wait().unwrap() {
            panic!("the server for port {port} exited ({status}) before answering /ping");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server on port {port} did not answer /ping within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The URL a server child (`serve-model`, the image's `serve`) prints on stderr once it listens
/// (`… on <url> …`); the rest of its stderr is drained in the background.
pub fn listening_url(server: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(server.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let rest = l.split_once(" on ")?.1;
            Some(
                rest.split_whitespace()
                    .next()?
                    .trim_end_matches('/')
                    .to_owned(),
            )
        })
        .expect("the server prints where it listens");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    url
}

/// The port of a URL such as [`listening_url`]'s (`http://127.0.0.1:<port>`).
pub fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// `GET /ping`, as [`http`] sends it.
pub const PING: &str = "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Sends `request` (raw HTTP/1.1, `Connection: close`) to 127.0.0.1:`port` and returns the
/// whole answer; `None` when it cannot connect, send or read (10 s read timeout).
pub fn http(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}
