//! The chaos suite (issue 14): the pipeline on kinesis-mock (through a fault proxy) and moto
//! (leases in DynamoDB, checkpoints in S3) with one to three `bikeshare process` instances,
//! while a seeded schedule injects, one per producer step: SIGKILL and SIGTERM of a
//! processor and of the producer (`bikeshare replay`), reshards (`UpdateShardCount` 2 -> 4,
//! splits, and 4 -> 2, merges), throttling with partial `PutRecords` failures and throttled `GetRecords`,
//! a frozen Kinesis (every call held unanswered for twice the SDK's attempt timeout), and an
//! outage of the model endpoint (`bikeshare serve-model`, which every processor and the
//! reference score through, killed for 4 s and started again on the same address).
//! Afterwards every prediction and label is compared, by id and content, with an
//! uninterrupted run on the embedded stream: 0 lost, 0 differing, 0 unknown; duplicates
//! (at-least-once: re-emitted after a kill or a take-over, identical content) are counted. The
//! last row of a prediction id is its answer: a live `process` scores reports on arrival (the
//! update trigger, decision 083) and corrects such a row later under the same id when the
//! on-time firing differs; corrections are counted, and the last row must equal the
//! reference's but for its `revision` (the reference, a bounded run, corrects nothing), while
//! rows of the same id and revision must agree (a restore numbers them as the first run
//! did; decision 087). A prediction the fallback scored during the endpoint outage differs from the
//! reference by design: it must say so (`scored_by` "fallback", the fallback's model) and
//! match the reference in everything scoring does not decide; those rows are counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{KillOnDrop, bikeshare, emulator, ok, replay, stream_records};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::Response;
use bikeshare_testkit::fault_proxy::{Call, FaultPolicy, FaultProxy, kinesis};
use bikeshare_types::xorshift::XorShift64;

/// What the proxy does now, switched by the harness.
#[derive(Debug, Default)]
struct Switches {
    throttle: AtomicBool,
    frozen: AtomicBool,
    /// Calls held while frozen.
    held: AtomicU64,
    /// `PutRecords` calls to the `events` stream (the producer's progress).
    event_puts: AtomicU64,
}

/// Kinesis under load while `throttle` is on, every call held while `frozen`.
#[derive(Debug)]
struct ChaosPolicy {
    load: kinesis::Policy,
    switches: Arc<Switches>,
}

impl FaultPolicy for ChaosPolicy {
    type Faults = kinesis::Faults;

    fn faults(&self) -> kinesis::Faults {
        self.load.faults()
    }

    async fn intercept(&self, operation: &str, call: &Call) -> Option<Response> {
        if operation == "PutRecords" && call.body().windows(8).any(|w| w == b"-events\"") {
            self.switches.event_puts.fetch_add(1, Ordering::SeqCst);
        }
        if self.switches.frozen.load(Ordering::SeqCst) {
            self.switches.held.fetch_add(1, Ordering::Relaxed);
            while self.switches.frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if self.switches.throttle.load(Ordering::SeqCst) {
            return self.load.intercept(operation, call).await;
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    ProcessorKill,
    ProcessorTerm,
    ProducerKill,
    ProducerTerm,
    Reshard,
    Throttle,
    Freeze,
    EndpointOutage,
}

const FAULTS: [Fault; 8] = [
    Fault::ProcessorKill,
    Fault::ProcessorTerm,
    Fault::ProducerKill,
    Fault::ProducerTerm,
    Fault::Reshard,
    Fault::Throttle,
    Fault::Freeze,
    Fault::EndpointOutage,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::ProcessorKill => "SIGKILL a processor",
            Self::ProcessorTerm => "SIGTERM a processor",
            Self::ProducerKill => "SIGKILL the producer",
            Self::ProducerTerm => "SIGTERM the producer",
            Self::Reshard => "reshard (UpdateShardCount 2->4 or 4->2)",
            Self::Throttle => "throttling + partial PutRecords failures",
            Self::Freeze => "Kinesis frozen 6 s",
            Self::EndpointOutage => "model endpoint down (4 s, until a fallback scoring)",
        }
    }
}

/// Simulated seconds per wall-clock second of the producer: a step (a part of each
/// history, tens of simulated minutes) takes a few seconds.
const SPEED: &str = "600";

/// The environment shared by every command of the chaos run.
struct Env {
    kinesis: String,
    moto: String,
    name: String,
    /// The model endpoint every processor scores through (`serve-model`), if any.
    endpoint: Option<String>,
}

/// Scoring through the model endpoint at `url`; a failed call falls back to the in-process
/// model at once, and the circuit probes the endpoint again after a second.
fn through_endpoint(c: &mut Command, url: &str) {
    c.env("BIKESHARE_PREDICTOR__BACKEND", "sagemaker")
        .env("BIKESHARE_PREDICTOR__SAGEMAKER__ENDPOINT_URL", url)
        .env("BIKESHARE_PREDICTOR__SAGEMAKER__TIMEOUT_MS", "5000")
        .env("BIKESHARE_PREDICTOR__SAGEMAKER__BUDGET_MS", "10000")
        .env("BIKESHARE_PREDICTOR__SAGEMAKER__BREAKER_OPEN_MS", "1000");
}

impl Env {
    fn command(&self, data_dir: &Path) -> Command {
        let mut c = crate::support::OnEmulators {
            kinesis: self.kinesis.clone(),
            moto: self.moto.clone(),
            name: self.name.clone(),
            shards: 2,
        }
        .command(data_dir);
        c.env("BIKESHARE_RUNNER__SHUTDOWN_GRACE_MS", "5000")
            .env("BIKESHARE_RUNNER__BATCH", "50")
            // A frozen Kinesis is an error within 3 s, not 10 (kinesis-mock, shared with other
            // tests and slower as it fills, answers a busy PutRecords in over a second).
            .env("BIKESHARE_AWS__ATTEMPT_TIMEOUT_MS", "3000")
            .env("BIKESHARE_AWS__OPERATION_TIMEOUT_MS", "9000");
        if let Some(url) = &self.endpoint {
            through_endpoint(&mut c, url);
        }
        c
    }
}

/// A running `process` instance logging to a file; killed when dropped, so a failed
/// assertion leaves no process behind.
struct Processor {
    child: KillOnDrop,
    owner: String,
    log: PathBuf,
}

impl Processor {
    fn start(env: &Env, dir: &Path, owner: &str) -> Self {
        let log = dir.join(format!("{owner}.log"));
        let child = KillOnDrop(
            env.command(&dir.join(owner))
                .env("BIKESHARE_RUNNER__LEASES__OWNER", owner)
                .env(
                    "RUST_LOG",
                    "warn,bikeshare_runner=info,bikeshare_stream::lease=info",
                )
                .arg("process")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        Self {
            child,
            owner: owner.to_owned(),
            log,
        }
    }

    fn log_has(&self, what: &str) -> bool {
        self.log_count(what) > 0
    }

    /// Lines of its log that hold `what`.
    fn log_count(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|l| l.lines().filter(|line| line.contains(what)).count())
            .unwrap_or(0)
    }
}

/// Sends SIGTERM (`kill -TERM`): the child stops within its grace period.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for `child` to exit, SIGKILLing it after `limit`; whether it exited by itself.
fn wait_bounded(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

/// CPU time a live process used (`/proc/<pid>/stat`).
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

/// Waits until `child` has used `more_ms` of CPU time beyond `from_ms` (its own progress),
/// or exits, or `limit` passes; whether the point was reached with the child alive.
fn reached(child: &mut Child, from_ms: u64, more_ms: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if cpu_ms(child.id()).is_some_and(|used| used >= from_ms + more_ms) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A processor instance in slot `i`, under a new name.
fn start(env: &Env, work: &Path, i: usize, generation: &mut usize) -> Processor {
    *generation += 1;
    Processor::start(env, work, &format!("p{i}-{generation}"))
}

/// Restarts the instances that stopped by themselves (a stalled stream is an error after
/// the SDK's timeouts and retries: the process exits and its supervisor restarts it).
fn supervise(
    env: &Env,
    work: &Path,
    procs: &mut [Processor],
    generation: &mut usize,
    restarts: &mut usize,
) {
    for (i, p) in procs.iter_mut().enumerate() {
        if p.child.try_wait().unwrap().is_some() {
            *restarts += 1;
            *p = start(env, work, i, generation);
        }
    }
}

/// The lines of `history` cut into `parts` consecutive files (one system's history: its
/// events stay in order across the parts).
fn cut(history: &Path, parts: usize) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(history).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let size = lines.len().div_ceil(parts);
    lines
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let path = history.with_extension(format!("part{i}.jsonl"));
            std::fs::write(&path, chunk.join("\n") + "\n").unwrap();
            path
        })
        .collect()
}

/// Outputs by id (the last row of each); rows of an id emitted again with other content are
/// counted (corrections).
#[derive(Debug, Default)]
struct Outputs {
    by_id: BTreeMap<String, serde_json::Value>,
    records: usize,
    /// Rows of an id emitted again with other scores (an early firing corrected).
    corrections: usize,
    /// Rows of an id emitted again with other content beyond its scoring, or with the same
    /// revision and other scores (not by the fallback): never right. A restore must number
    /// an id's rows as the first run did (contract 3: 0, then 1 for the correction).
    conflicting: usize,
    /// Each (id, revision)'s first row.
    revisions: BTreeMap<(String, u64), serde_json::Value>,
    /// Each id's first row scored by the fallback, whether or not a later copy (scored by
    /// the endpoint after a kill or a take-over) is the one `by_id` keeps.
    fell_back: BTreeMap<String, serde_json::Value>,
}

fn outputs(values: Vec<serde_json::Value>) -> Outputs {
    let mut out = Outputs {
        records: values.len(),
        ..Outputs::default()
    };
    for v in values {
        let id = v["prediction_id"].as_str().unwrap().to_owned();
        let revision = v["revision"].as_u64().unwrap_or(0);
        if fallback(&v) {
            out.fell_back.entry(id.clone()).or_insert_with(|| v.clone());
        }
        match out.revisions.get(&(id.clone(), revision)) {
            Some(prev) if *prev != v && !fallback(prev) && !fallback(&v) => {
                out.conflicting += 1;
            }
            Some(_) => {}
            None => {
                out.revisions.insert((id.clone(), revision), v.clone());
            }
        }
        // The last copy of an id counts (the processor's last row of a prediction is the
        // watermark order's); a copy with other content is counted as a correction, except a
        // row scored once by the fallback (during the outage) and once by the endpoint
        // (emitted again after a kill or a take-over): the same row, scored differently by
        // design, and the endpoint's copy is the one compared with the reference.
        let rescored = |a: &serde_json::Value, b: &serde_json::Value| {
            (fallback(a) || fallback(b)) && unscored(a) == unscored(b)
        };
        match out.by_id.insert(id.clone(), v.clone()) {
            Some(prev) if fallback(&v) && rescored(&prev, &v) => {
                out.by_id.insert(id, prev);
            }
            Some(prev) if prev == v || rescored(&prev, &v) => {}
            Some(prev) if unscored(&prev) == unscored(&v) => out.corrections += 1,
            Some(_) => out.conflicting += 1,
            None => {}
        }
    }
    out
}

/// A prediction scored by the in-process fallback instead of the endpoint.
fn fallback(v: &serde_json::Value) -> bool {
    v["scored_by"] == "fallback"
}

/// A row without its revision: the reference (a bounded run, no update trigger) has no
/// corrections, so its rows are all revision 0 where the live run's corrected ids end at 1.
fn answer(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("revision");
    }
    v
}

/// A prediction without what scoring decides (scores, model, who scored) and the revision
/// that numbers an id's scorings (contract 3: a correction is revision 1).
fn unscored(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["p_empty", "p_full", "model", "scored_by", "revision"] {
            o.remove(k);
        }
    }
    v
}

/// Predictions scored by the fallback (any copy of their id), and those of them that match
/// their reference row in everything but scoring and say who scored them (the fallback's
/// model, not the endpoint's).
fn fallbacks(want: &Outputs, got: &Outputs) -> (usize, usize) {
    let rows: Vec<_> = got.fell_back.iter().collect();
    let sound = rows
        .iter()
        .filter(|(k, v)| {
            want.by_id
                .get(*k)
                .is_some_and(|w| unscored(w) == unscored(v) && v["model"] != w["model"])
        })
        .count();
    (rows.len(), sound)
}

/// The rows of `want` that `got` holds with other content. A fallback row is compared
/// without its scoring ([`fallbacks`] checks it is marked).
fn differing<'a>(
    want: &'a Outputs,
    got: &'a Outputs,
) -> impl Iterator<Item = (&'a String, &'a serde_json::Value)> {
    want.by_id.iter().filter(|(k, w)| {
        got.by_id.get(*k).is_some_and(|g| {
            if fallback(g) {
                unscored(g) != unscored(w)
            } else {
                answer(g) != answer(w)
            }
        })
    })
}

/// Lost, differing (or re-emitted differently), unknown, duplicates. A fallback row is
/// compared without its scoring ([`fallbacks`] checks it is marked).
fn compare(want: &Outputs, got: &Outputs) -> [usize; 4] {
    let lost = want
        .by_id
        .keys()
        .filter(|k| !got.by_id.contains_key(*k))
        .count();
    let differing = differing(want, got).count();
    let unknown = got
        .by_id
        .keys()
        .filter(|k| !want.by_id.contains_key(*k))
        .count();
    [lost, differing, unknown, got.records - got.by_id.len()]
}

#[test]
fn chaos_gives_every_output_of_an_uninterrupted_run() {
    let test = "chaos";
    let Some(kinesis_endpoint) = emulator("BIKESHARE_TEST_KINESIS_ENDPOINT", test) else {
        return;
    };
    let Some(moto) = emulator("BIKESHARE_TEST_MOTO_ENDPOINT", test) else {
        return;
    };
    let seed: u64 = std::env::var("BIKESHARE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let long = std::env::var_os("BIKESHARE_CHAOS_LONG").is_some_and(|v| v == "1");
    let mut rng = XorShift64::from_seed(seed);
    let (hours, rounds) = if long { (10, 3) } else { (4, 1) };
    // One to three processor instances: 1 + seed mod 3 (the default seed 7 runs two).
    let instances = 1 + (seed % 3) as usize;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();

    // Three systems' histories, replayed into the embedded stream for the reference.
    let systems = ["chaos-a", "chaos-b", "chaos-c"];
    let until = format!("2026-03-02T{:02}:00:00Z", 6 + hours);
    let histories: Vec<PathBuf> = systems
        .iter()
        .enumerate()
        .map(|(i, system)| {
            let d = dir.path().join(system);
            std::fs::create_dir_all(&d).unwrap();
            let path = d.join("history.jsonl");
            ok(bikeshare(&d)
                .env("BIKESHARE_SIMULATOR__CITY__SYSTEM_ID", system)
                .args([
                    "simulate",
                    "--backfill",
                    path.to_str().unwrap(),
                    "--station-count",
                    "15",
                    "--seed",
                    &(seed + i as u64).to_string(),
                    "--start",
                    "2026-03-02T06:00:00Z",
                    "--until",
                    &until,
                ]));
            path
        })
        .collect();
    // The model endpoint every processor scores through, the reference's too.
    let model_dir = dir.path().join("model");
    let endpoint_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    crate::support::synthetic_model(&model_dir, "5", 10, 4);
    let mut endpoint = crate::support::serve_model(dir.path(), &model_dir, endpoint_addr);
    let endpoint_url = Some(format!("http://{endpoint_addr}"));
    // The fault schedule: every kind once per round, a reshard twice (a split up to four
    // shards, then a merge back to two), in a seeded order.
    let mut schedule = Vec::new();
    for _ in 0..rounds {
        let mut kinds = FAULTS.to_vec();
        kinds.push(Fault::Reshard);
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.below(i as u64 + 1) as usize);
        }
        schedule.extend(kinds);
    }
    let steps = schedule.len();
    let parts: Vec<Vec<PathBuf>> = histories.iter().map(|h| cut(h, steps + 1)).collect();

    let reference = dir.path().join("reference");
    for h in &histories {
        replay(&reference, h);
    }
    let mut reference_run = bikeshare(&reference);
    if let Some(url) = &endpoint_url {
        through_endpoint(&mut reference_run, url);
    }
    ok(reference_run
        .args(["process", "--until-caught-up"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1"));
    let want_p = outputs(stream_records(&reference, "predictions"));
    assert!(
        want_p.by_id.values().all(|p| p["scored_by"] == "endpoint"),
        "the reference is scored by the endpoint alone"
    );
    let want_l = outputs(stream_records(&reference, "labels"));
    assert!(
        want_p.by_id.len() > 500 && want_l.by_id.len() > 300,
        "too few outputs: {} predictions, {} labels",
        want_p.by_id.len(),
        want_l.by_id.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let switches = Arc::new(Switches::default());
    let proxy = rt.block_on(FaultProxy::start(
        &kinesis_endpoint,
        ChaosPolicy {
            load: kinesis::Policy::new(seed),
            switches: switches.clone(),
        },
    ));
    let env = Env {
        kinesis: proxy.endpoint(),
        moto,
        name: format!("chaos-{}-{seed}", std::process::id()),
        endpoint: endpoint_url.clone(),
    };
    let work = dir.path().join("chaos");
    std::fs::create_dir_all(&work).unwrap();

    // The first part of each history creates the stream; then the processors start, the first
    // alone until it has created the outputs and taken its leases.
    for p in &parts {
        ok(env
            .command(&work)
            .args(["replay", "--format", "jsonl", p[0].to_str().unwrap()]));
    }
    let mut generation = 0;
    let mut restarts = 0;
    let mut producer_retries = 0;
    let mut procs: Vec<Processor> = Vec::new();
    for i in 0..instances {
        let p = start(&env, &work, i, &mut generation);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.log_has("leases changed") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        procs.push(p);
    }

    let sdk = rt.block_on(bikeshare_runtime::aws::emulator_sdk_config(
        &kinesis_endpoint,
    ));
    let client = bikeshare_aws::kinesis_client(&sdk);
    let events = format!("{}-events", env.name);
    let mut shards = 2;
    // Per kind: injected, not reached (the target finished before its kill point).
    let mut injected: BTreeMap<Fault, (usize, usize)> = BTreeMap::new();
    for (step, fault) in schedule.iter().copied().enumerate() {
        let chunk = step + 1;
        let entry = injected.entry(fault).or_default();
        match fault {
            Fault::Reshard => {
                shards = if shards == 2 { 4 } else { 2 };
                rt.block_on(bikeshare_aws::update_shard_count(&client, &events, shards))
                    .unwrap();
                entry.0 += 1;
            }
            Fault::Throttle => switches.throttle.store(true, Ordering::SeqCst),
            _ => {}
        }
        // The producer's step: one part of each history.
        // The producer's step: the next part of every history, paced (`--speed`) so that
        // it runs while the faults happen.
        let files: Vec<String> = parts
            .iter()
            .filter_map(|p| p.get(chunk))
            .map(|f| f.to_str().unwrap().to_owned())
            .collect();
        if files.is_empty() {
            continue;
        }
        let replay = |env: &Env| {
            KillOnDrop(
                env.command(&work)
                    .args(["replay", "--format", "jsonl", "--speed", SPEED])
                    .args(&files)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(work.join("producer.log")).unwrap())
                    .spawn()
                    .unwrap(),
            )
        };
        let mut child = replay(&env);
        if matches!(fault, Fault::ProducerKill | Fault::ProducerTerm) {
            // Its progress point: a seeded number of its `PutRecords` calls to `events`.
            let from = switches.event_puts.load(Ordering::SeqCst);
            let at = from + 1 + rng.below(3);
            let deadline = Instant::now() + Duration::from_secs(60);
            let alive = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                if switches.event_puts.load(Ordering::SeqCst) >= at {
                    break true;
                }
                assert!(Instant::now() < deadline, "the producer made no progress");
                std::thread::sleep(Duration::from_millis(2));
            };
            if alive {
                if fault == Fault::ProducerKill {
                    child.kill().unwrap();
                } else {
                    sigterm(&child);
                }
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            wait_bounded(&mut child, Duration::from_secs(30));
            // Run again from the parts' start: records sent before the kill arrive twice.
            child = replay(&env);
        }
        if matches!(fault, Fault::ProcessorKill | Fault::ProcessorTerm) {
            let i = rng.below(procs.len() as u64) as usize;
            let p = &mut procs[i];
            let from = cpu_ms(p.child.id()).unwrap_or(0);
            // Early in the step, while it processes the step's records.
            let at = 10 + rng.below(120);
            // Killed at its progress point, or after 20 s (counted "not reached": it idled).
            if reached(&mut p.child, from, at, Duration::from_secs(20)) {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            if fault == Fault::ProcessorKill {
                let _ = p.child.kill();
                p.child.wait().unwrap();
            } else {
                sigterm(&p.child);
                assert!(
                    wait_bounded(&mut p.child, Duration::from_secs(15)),
                    "{} did not stop within its grace period after SIGTERM",
                    p.owner
                );
            }
            procs[i] = start(&env, &work, i, &mut generation);
        }
        if fault == Fault::EndpointOutage {
            let up = &mut endpoint;
            // While the step's records are processed: gone (connections refused), then back
            // on the same address. Its progress point: an instance scored rows with the
            // fallback (it logs each such call), after 4 s down at least; a fixed 4 s could
            // fall while no instance scored anything, on a busy machine.
            let fell_back = |procs: &[Processor]| -> usize {
                procs
                    .iter()
                    .map(|p| p.log_count("endpoint call failed; using the fallback"))
                    .sum()
            };
            std::thread::sleep(Duration::from_millis(300));
            let before = fell_back(&procs);
            let _ = up.0.kill();
            let _ = up.0.wait();
            let down = Instant::now();
            let scored = loop {
                if down.elapsed() >= Duration::from_secs(4) && fell_back(&procs) > before {
                    break true;
                }
                if down.elapsed() >= Duration::from_secs(30) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            *up = crate::support::serve_model(dir.path(), &model_dir, endpoint_addr);
            if scored {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        if fault == Fault::Freeze {
            switches.frozen.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(6));
            switches.frozen.store(false, Ordering::SeqCst);
            entry.0 += 1;
        }
        // A producer that gave up (a frozen or throttled stream) is run again, as its
        // supervisor would; records it sent before the failure arrive twice.
        let mut attempts = 0;
        loop {
            supervise(&env, &work, &mut procs, &mut generation, &mut restarts);
            assert!(
                wait_bounded(&mut child, Duration::from_secs(120)),
                "the producer's step {step} did not finish"
            );
            if child.wait().unwrap().success() {
                break;
            }
            attempts += 1;
            producer_retries += 1;
            assert!(
                attempts < 8,
                "the producer's step {step} ({fault:?}) kept failing: {}",
                std::fs::read_to_string(work.join("producer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_secs(1));
            child = replay(&env);
        }
        if fault == Fault::Throttle {
            switches.throttle.store(false, Ordering::SeqCst);
            entry.0 += 1;
        }
    }
    // Whatever parts the schedule's steps did not reach.
    for p in &parts {
        for part in p.iter().skip(steps) {
            ok(env
                .command(&work)
                .args(["replay", "--format", "jsonl", part.to_str().unwrap()]));
        }
    }

    // Stop the instances; one more finishes what is left and stops once caught up.
    for p in &mut procs {
        sigterm(&p.child);
    }
    for p in &mut procs {
        assert!(
            wait_bounded(&mut p.child, Duration::from_secs(20)),
            "{} did not stop within its grace period after SIGTERM",
            p.owner
        );
    }
    let mut last = KillOnDrop(
        env.command(&work.join("final"))
            .env("BIKESHARE_RUNNER__LEASES__OWNER", "final")
            .args(["process", "--until-caught-up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_bounded(&mut last, Duration::from_secs(180)),
        "the final instance did not catch up"
    );
    assert!(last.wait().unwrap().success(), "the final instance failed");

    let direct = Env {
        kinesis: kinesis_endpoint.clone(),
        moto: env.moto.clone(),
        name: env.name.clone(),
        endpoint: endpoint_url.clone(),
    };
    let tail = |stream: &str| {
        outputs(
            ok(direct.command(&work.join("tail")).args([
                "tail",
                "--stream",
                stream,
                "--from-start",
            ]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        )
    };
    let got_p = tail("predictions");
    let got_l = tail("labels");
    let [p_lost, p_diff, p_unknown, p_dup] = compare(&want_p, &got_p);
    let [l_lost, l_diff, l_unknown, l_dup] = compare(&want_l, &got_l);
    let (p_fallback, p_fallback_sound) = fallbacks(&want_p, &got_p);
    drop(endpoint);
    let load = proxy.faults();

    let mut table = String::new();
    let _ = writeln!(
        table,
        "chaos seed {seed}{}: {instances} processor instance(s), 3 systems x 15 stations x {hours} h, {:.0} s",
        if long { " (long)" } else { "" },
        started.elapsed().as_secs_f64()
    );
    // "Not reached": a processor idle until 20 s (killed then anyway), a producer that finished
    // its step before its point (not killed).
    let _ = writeln!(
        table,
        "| fault | at its progress point | point not reached |"
    );
    let _ = writeln!(table, "| --- | ---: | ---: |");
    for (fault, (n, missed)) in &injected {
        let _ = writeln!(table, "| {} | {n} | {missed} |", fault.name());
    }
    let _ = writeln!(
        table,
        "proxy: {} PutRecords throttled, {} records failed, {} GetRecords throttled, {} calls held frozen",
        load.puts_throttled,
        load.records_failed,
        load.gets_throttled,
        switches.held.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        table,
        "supervisor: {restarts} processor restarts after an error exit, {producer_retries} producer re-runs after a failure"
    );
    let _ = writeln!(
        table,
        "| output | reference | lost | differing | unknown | duplicates | scored by the fallback |"
    );
    let _ = writeln!(table, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        table,
        "| predictions | {} | {p_lost} | {p_diff} | {p_unknown} | {p_dup} | {p_fallback} |",
        want_p.by_id.len()
    );
    let _ = writeln!(
        table,
        "predictions corrected later under the same id (early firings): reference {}, chaos {}",
        want_p.corrections, got_p.corrections
    );
    let _ = writeln!(
        table,
        "| labels | {} | {l_lost} | {l_diff} | {l_unknown} | {l_dup} | - |",
        want_l.by_id.len()
    );
    // The first differing predictions, for the failure message.
    for (k, w) in differing(&want_p, &got_p).take(3) {
        let _ = writeln!(table, "differs: {k}\n  want {w}\n  got  {}", got_p.by_id[k]);
    }
    eprintln!("{table}");
    let logs = || {
        procs
            .iter()
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert_eq!(
        [
            p_lost,
            p_diff,
            p_unknown,
            l_lost,
            l_diff,
            l_unknown,
            got_p.conflicting,
            got_l.conflicting,
            want_p.conflicting,
            want_l.conflicting,
        ],
        [0; 10],
        "outputs lost, differing, unknown or re-emitted with other content than scores:\n{table}\nlogs of the last instances:\n{}",
        logs()
    );
    assert_eq!(
        p_fallback, p_fallback_sound,
        "every fallback row matches its reference row but for its scoring, and names the fallback's model:\n{table}"
    );
    // Every outage that reached its point (an instance logged a fallback scoring) shows in
    // the outputs.
    let outages = injected.get(&Fault::EndpointOutage).map_or(0, |(n, _)| *n);
    assert!(
        outages == 0 || p_fallback > 0,
        "the endpoint outage sent no row to the fallback:\n{table}"
    );
    let missed: usize = injected.values().map(|(_, m)| m).sum();
    let hit: usize = injected.values().map(|(n, _)| n).sum();
    assert!(
        hit >= schedule.len() - missed && hit > missed,
        "too few faults injected:\n{table}"
    );
}
