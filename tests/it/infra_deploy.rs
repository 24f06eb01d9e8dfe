//! Deploy into an emulator and run the app against what it created: every stack of
//! `infra/cloudformation` is deployed into moto's CloudFormation (`infra/emulator_deploy.py`,
//! credentials of the project's account), then the app runs with `infra/environments/dev.toml`
//! and only endpoint overrides from the environment: replay of two cities → two `process`
//! instances sharing the stack's two event shards through the stack's lease table, with
//! checkpoints in the stack's bucket and predictions scored by the endpoint client against
//! `serve-model` under the stack's endpoint name → the lake archiver → Firehose into the stack's
//! bucket → `lake ls` and the DuckDB analyst queries over the lake the stack's bucket holds.
//! Every AWS name the app uses is one the stack created (checked in moto, not assumed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{
    BIN, KillOnDrop, TestEnv, bikeshare, emulator, emulators, exit_within, listening_url, ok,
    one_system_per_shard, port_of, simulated_city_history, synthetic_model, wait_for_ping,
};

const ENV: &str = "dev";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python(py: &str, args: &[&str]) -> String {
    run_python(
        py,
        &[root().join("infra/emulator_deploy.py").to_str().unwrap()],
        args,
    )
}

/// Runs `py <script…> <args…>`, asserting success; returns stdout.
fn run_python(py: &str, script: &[&str], args: &[&str]) -> String {
    let out = Command::new(py)
        .args(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `bikeshare` with dev.toml; from the environment only endpoint overrides, the stack's
/// credentials, a scratch data directory and a free metrics port.
struct App {
    moto: String,
    serve: String,
    creds: serde_json::Value,
    config: PathBuf,
}

impl App {
    fn command(&self, data_dir: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", data_dir)
            .env("BIKESHARE_DATA_DIR", data_dir)
            .env("BIKESHARE_METRICS__BIND", "127.0.0.1:0")
            .env(
                "AWS_ACCESS_KEY_ID",
                self.creds["aws_access_key_id"].as_str().unwrap(),
            )
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.creds["aws_secret_access_key"].as_str().unwrap(),
            )
            .env(
                "AWS_SESSION_TOKEN",
                self.creds["aws_session_token"].as_str().unwrap(),
            )
            .env("AWS_REGION", "ca-central-1")
            .env("BIKESHARE_STREAM__KINESIS__ENDPOINT_URL", &self.moto)
            .env("BIKESHARE_RUNNER__LEASES__ENDPOINT_URL", &self.moto)
            .env(
                "BIKESHARE_RUNNER__CHECKPOINTS__S3__ENDPOINT_URL",
                &self.moto,
            )
            .env(
                "BIKESHARE_ARCHIVER__CHECKPOINTS__S3__ENDPOINT_URL",
                &self.moto,
            )
            .env("BIKESHARE_LAKE__ENDPOINT", &self.moto)
            .env("BIKESHARE_FIREHOSE__ENDPOINT_URL", &self.moto)
            .env("BIKESHARE_ALERTS__SNS__ENDPOINT_URL", &self.moto)
            .env("BIKESHARE_CLOUDWATCH__ENDPOINT_URL", &self.moto)
            .env("BIKESHARE_REGISTRY__SAGEMAKER__ENDPOINT_URL", &self.moto)
            // What the model workflow passes (the image it pushed); registering needs one.
            .env(
                "BIKESHARE_REGISTRY__SAGEMAKER__IMAGE",
                "387706002632.dkr.ecr.ca-central-1.amazonaws.com/bikeshare-dev:test",
            )
            .env("BIKESHARE_PREDICTOR__SAGEMAKER__ENDPOINT_URL", &self.serve)
            // A debug-build serve-model on a busy machine can take a second: the test checks
            // that every prediction is the endpoint's, so the fallback must not cut in.
            .env("BIKESHARE_PREDICTOR__SAGEMAKER__TIMEOUT_MS", "30000")
            .env("BIKESHARE_PREDICTOR__SAGEMAKER__BUDGET_MS", "60000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        c
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// How long both `process` tasks run side by side: processing the two cities takes a few
/// seconds. (Run with `--until-caught-up` instead, one of two tasks did not stop within 240 s
/// in 2 of 6 runs here; see infra/README.md.)
const PROCESS_RUN: &str = "40s";
/// A task that has not stopped this long after its run is killed and the test fails.
const PROCESS_LIMIT: Duration = Duration::from_secs(90);

/// Waits for `child` at most `limit` (a process that cannot take its leases never catches up:
/// killed, the test fails with its log instead of hanging); its exit status (None when killed)
/// and stderr.
fn finish_within(mut child: Child, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = exit_within(&mut child, limit);
    (status, reader.join().unwrap())
}

#[test]
fn the_app_runs_on_what_the_stacks_create_in_moto() {
    let test = "infra_deploy";
    let vars = ["BIKESHARE_TEST_MOTO_ENDPOINT", "BIKESHARE_TEST_MOTO_PYTHON"];
    let Some([moto, py]) = emulators(test, vars) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = root().join(format!("infra/environments/{ENV}.toml"));

    // 1. Deploy every stack; what moto skips the helper creates from the template or records.
    let deployed: serde_json::Value = serde_json::from_str(&python(
        &py,
        &["deploy", "--endpoint", &moto, "--environment", ENV],
    ))
    .unwrap();
    for (name, stack) in deployed["stacks"].as_object().unwrap() {
        assert_eq!(stack["status"], "CREATE_COMPLETE", "{name}: {stack}");
    }
    // The names of the resources of type `ty`: those moto created (`physical`) and those the
    // helper created instead (`name`).
    let created = |ty: &str| -> BTreeSet<String> {
        let named = |resources: &serde_json::Value, field: &str| -> Vec<String> {
            resources
                .as_object()
                .unwrap()
                .values()
                .filter(|r| r["type"] == ty)
                .map(|r| r[field].as_str().unwrap().to_owned())
                .collect()
        };
        deployed["stacks"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|s| {
                let mut names = named(&s["resources"], "physical");
                names.extend(named(&s["created_instead"], "name"));
                names
            })
            .collect()
    };
    let creds_file = dir.path().join("credentials.json");
    std::fs::write(&creds_file, deployed["credentials"].to_string()).unwrap();

    // 2. The names dev.toml makes the app use, through the app's own loader.
    let names: serde_json::Value = serde_json::from_str(&ok(bikeshare(dir.path()).args([
        "infra",
        "names",
        "--config",
        config.to_str().unwrap(),
    ])))
    .unwrap();
    let streams = created("AWS::Kinesis::Stream");
    for s in names["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["used"] == true)
    {
        assert!(
            streams
                .iter()
                .any(|n| n.ends_with(s["name"].as_str().unwrap())),
            "{s} not in {streams:?}"
        );
    }
    let table = names["lease_table"]["name"].as_str().unwrap().to_owned();
    assert!(created("AWS::DynamoDB::Table").contains(&table), "{table}");
    let bucket = names["checkpoints"]["bucket"].as_str().unwrap().to_owned();
    assert!(created("AWS::S3::Bucket").contains(&bucket), "{bucket}");
    assert_eq!(names["lake"]["bucket"], bucket.as_str());
    let delivery = created("AWS::KinesisFirehose::DeliveryStream");
    for d in names["firehose"].as_array().unwrap() {
        assert!(
            delivery.contains(d["name"].as_str().unwrap()),
            "{d} not in {delivery:?}"
        );
    }
    let endpoint = names["endpoint"]["name"].as_str().unwrap().to_owned();
    assert!(
        created("AWS::SageMaker::Endpoint")
            .iter()
            .any(|e| e.ends_with(&endpoint)),
        "{endpoint}"
    );
    let topic = names["sns_topic_arn"].as_str().unwrap();
    assert!(created("AWS::SNS::Topic").contains(topic), "{topic}");

    // 3. The model server under the endpoint's name, as SageMaker would run the image.
    let model_dir = dir.path().join("model");
    synthetic_model(&model_dir, "7", 10, 4);
    // On a port of the system's choosing, read back from what the server prints (a port
    // found free and then bound by the server could be taken in between).
    let mut server = KillOnDrop(
        bikeshare(dir.path())
            .args(["serve-model", "--model-dir", model_dir.to_str().unwrap()])
            .args(["--bind", "127.0.0.1:0", "--endpoint-name", &endpoint])
            .spawn_reading_stderr(),
    );
    let serve = listening_url(&mut server.0);
    wait_for_ping(&mut server.0, port_of(&serve), Duration::from_secs(30));
    let app = App {
        moto: moto.clone(),
        serve,
        creds: deployed["credentials"].clone(),
        config: config.clone(),
    };

    // 4. Two cities, one per event shard (the partition key is the system id).
    let systems = one_system_per_shard(2);
    for (i, system) in systems.iter().enumerate() {
        let span = ("2026-03-02T06:00:00Z", "2026-03-02T08:00:00Z");
        let d = dir.path().join(system);
        let history = simulated_city_history(&d, system, 10, 40 + i as u64, span);
        ok(app.command(&dir.path().join("replay")).args([
            "replay",
            "--format",
            "jsonl",
            history.to_str().unwrap(),
        ]));
    }

    // 5. Two processors share the shards; each has its own writer id and lease owner (the
    //    container entrypoint sets them from the task's host name).
    let instances: Vec<Child> = ["a", "b"]
        .iter()
        .map(|who| {
            app.command(&dir.path().join(format!("process-{who}")))
                .env("BIKESHARE_LAKE__INSTANCE", who)
                .env("BIKESHARE_RUNNER__LEASES__OWNER", format!("task-{who}"))
                .args(["process", "--duration", PROCESS_RUN])
                .spawn_reading_stderr()
        })
        .collect();
    // Both end (or are killed at the limit) before either is judged: a failing first one
    // must not leave the second running.
    let ended: Vec<_> = instances
        .into_iter()
        .map(|child| finish_within(child, PROCESS_LIMIT))
        .collect();
    for (status, stderr) in ended {
        assert!(
            status.is_some_and(|s| s.success()),
            "process ({status:?}): {stderr}"
        );
    }
    ok(app
        .command(&dir.path().join("archiver"))
        .args(["lake", "write", "--until-caught-up"]));
    drop(server);

    // The subscription API service (`bikeshare api`, compute.yaml's api service) over the
    // stack's prediction stream: a client reads predictions from its start.
    let mut api = KillOnDrop(
        app.command(&dir.path().join("api"))
            .args(["api", "--bind", "127.0.0.1:0"])
            .spawn_reading_stderr(),
    );
    let api_url = listening_url(&mut api.0);
    let subscribed = ok(app.command(&dir.path().join("subscriber")).args([
        "subscribe",
        "--url",
        &api_url,
        "--from-start",
        "-n",
        "20",
    ]));
    let served: Vec<serde_json::Value> = subscribed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(served.len(), 20, "{subscribed}");
    assert!(
        served.iter().all(|p| p["prediction_id"].is_string()),
        "{subscribed}"
    );
    drop(api);

    // 6. Leases in the stack's table, checkpoints, lake and Firehose objects in its bucket.
    let state: serde_json::Value = serde_json::from_str(&python(
        &py,
        &[
            "inspect",
            "--endpoint",
            &moto,
            "--credentials",
            creds_file.to_str().unwrap(),
            "--bucket",
            &bucket,
            "--table",
            &table,
        ],
    ))
    .unwrap();
    assert_eq!(state["key_schema"][0]["AttributeName"], "shard");
    // Written by the processors' DynamoLeaseStore under the key the stack declares, released
    // (no owner) when the tasks stopped.
    let leases = state["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "one lease per event shard: {leases:?}");
    for l in leases {
        assert!(
            l["shard"]["S"].as_str().unwrap().starts_with("shardId-"),
            "{l}"
        );
        let counter: u64 = l["counter"]["N"].as_str().unwrap().parse().unwrap();
        assert!(counter >= 1, "{l}");
    }
    let keys: Vec<&str> = state["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let under = |p: &str| keys.iter().filter(|k| k.starts_with(p)).count();
    assert!(
        under(names["checkpoints"]["prefix"].as_str().unwrap()) > 0,
        "no checkpoints: {keys:?}"
    );
    // The archiver's checkpoint is in the stack's bucket too (a restarted task resumes from
    // it), not in the task's local directory.
    assert!(
        under(names["archiver_checkpoints"]["prefix"].as_str().unwrap()) > 0,
        "no archiver checkpoint: {keys:?}"
    );
    assert!(
        !dir.path().join("archiver/checkpoints/lake").exists(),
        "the archiver checkpointed locally"
    );
    for d in [
        "raw_events",
        "station_status",
        "predictions",
        "labels",
        "dead_letters",
    ] {
        assert!(
            under(&format!("firehose/{d}/")) > 0 || d == "dead_letters",
            "Firehose {d}: {keys:?}"
        );
    }
    for d in ["raw_events", "station_status", "features", "predictions"] {
        assert!(under(&format!("lake/{d}/")) > 0, "lake {d}: {keys:?}");
    }

    // 7. `lake ls` over the stack's bucket, and the analyst queries over its lake.
    let ls = ok(app.command(&dir.path().join("ls")).args(["lake", "ls"]));
    // "<dataset>: N partitions, F files, R rows, B bytes"
    let rows: BTreeMap<&str, u64> = ls
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let (dataset, rest) = l.split_once(": ")?;
            let rows = rest.split(", ").find_map(|f| f.strip_suffix(" rows"))?;
            Some((dataset, rows.parse().ok()?))
        })
        .collect();
    assert_eq!(
        ls.lines().next(),
        Some(format!("lake: s3://{bucket}/lake").as_str()),
        "{ls}"
    );
    assert!(ls.contains("predictions"), "{ls}");
    // `prefix` of the stack's bucket, downloaded into `to`.
    let download = |prefix: &str, to: &Path| {
        let (creds, to) = (creds_file.to_str().unwrap(), to.to_str().unwrap());
        python(
            &py,
            &[
                "download",
                "--endpoint",
                &moto,
                "--credentials",
                creds,
                "--bucket",
                &bucket,
                "--prefix",
                prefix,
                "--to",
                to,
            ],
        );
    };
    let local_lake = dir.path().join("lake-copy");
    download("lake/", &local_lake);
    // The registry is the stack's model package group (the SageMaker registry, decision 086):
    // dev's configuration reads it (a missing group would be a user error naming it).
    let status = ok(app
        .command(&dir.path().join("promote"))
        .args(["promote", "--status"]));
    assert!(status.contains("bikeshare-dev-stockout"), "{status}");
    // The model workflow's step (.github/workflows/model.yml): a model directory registered
    // in the stack's group, its archive in the stack's bucket, through the gate (to staging
    // here: no held-out rows), with what the workflow reads on stdout.
    let registered = ok(app.command(&dir.path().join("promote")).args([
        "promote",
        "--model-dir",
        model_dir.to_str().unwrap(),
        "--to",
        "staging",
    ]));
    let field = |key: &str| {
        registered
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {registered}"))
            .to_owned()
    };
    let (version, source) = (field("version="), field("source="));
    assert!(
        source.starts_with(&format!("s3://{bucket}/models/")) && source.ends_with("/model.tar.gz"),
        "{registered}"
    );
    let status = ok(app
        .command(&dir.path().join("promote"))
        .args(["promote", "--status"]));
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("v{version} ")) && l.contains("staging")),
        "v{version} in staging: {status}"
    );
    let duckdb = emulator("BIKESHARE_TEST_DUCKDB_PYTHON", test);
    if let Some(duckdb) = &duckdb {
        let script = root().join("infra/athena/duckdb_lake.py");
        let text = run_python(
            duckdb,
            &[script.to_str().unwrap()],
            &[
                "--lake",
                local_lake.to_str().unwrap(),
                "--query",
                "scoring_path_by_day",
            ],
        );
        assert!(
            text.contains("endpoint"),
            "predictions scored by the stack's endpoint: {text}"
        );
    }

    // 8. Predictions on the stack's stream were scored by the endpoint (serve-model).
    let tail = ok(app.command(&dir.path().join("tail")).args([
        "tail",
        "--stream",
        "predictions",
        "--from-start",
    ]));
    let predictions: Vec<serde_json::Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(predictions.len() > 50, "{}", predictions.len());
    // Both cities, so both event shards, were processed (whichever task held each lease).
    let scored: BTreeSet<&str> = predictions
        .iter()
        .filter_map(|p| p["system_id"].as_str())
        .collect();
    let cities: BTreeSet<&str> = systems.iter().map(String::as_str).collect();
    assert_eq!(scored, cities);
    let ids: BTreeSet<&str> = predictions
        .iter()
        .map(|p| p["prediction_id"].as_str().unwrap())
        .collect();
    // A lease that moves between the tasks replays its shard from the last checkpoint: a
    // record may reach the stream twice (at least once), with the same content. A prediction
    // id may also carry a correction (the live job's update trigger, decision 083): a second
    // record of the id whose scores differ, later in the stream. Distinct records, then:
    let records: BTreeSet<String> = predictions.iter().map(|p| p.to_string()).collect();
    let corrections = records.len() - ids.len();
    // A correction changes the scores and its revision only (contract 3): the same id
    // never carries other content.
    let mut unscored: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for p in &predictions {
        let mut rest = p.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("p_empty");
            o.remove("p_full");
            o.remove("revision");
        }
        if let Some(prev) = unscored.insert(p["prediction_id"].as_str().unwrap(), rest.clone()) {
            assert_eq!(prev, rest, "re-emitted with other content than its scores");
        }
    }
    assert!(
        corrections <= ids.len() / 2,
        "{corrections} corrections for {} predictions: the update trigger corrects a few",
        ids.len()
    );
    // The lake in the stack's bucket holds each record exactly once, even when a lease moved
    // (the fenced former owner rolls its lake epoch back, decision 076 / ddb6500).
    let lake_rows = rows.get("predictions").copied().unwrap_or(0);
    assert_eq!(lake_rows, records.len() as u64, "{ls}");
    if let Some(duckdb) = &duckdb {
        let glob = local_lake.join("predictions/**/*.parquet");
        let text = run_python(
            duckdb,
            &[
                "-c",
                "import sys, duckdb; print(duckdb.sql(f\"select count(*), count(distinct \
                 prediction_id) from read_parquet('{sys.argv[1]}')\").fetchall()[0])",
            ],
            &[glob.to_str().unwrap()],
        );
        assert_eq!(
            text.trim(),
            format!("({lake_rows}, {})", ids.len()),
            "lake rows and distinct predictions"
        );
    }
    // Firehose delivered each into the bucket's firehose/ prefix (at least once).
    let delivered_dir = dir.path().join("firehose-predictions");
    download("firehose/predictions/", &delivered_dir);
    let mut delivered: Vec<String> = Vec::new();
    for f in walk(&delivered_dir) {
        for line in std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            delivered.push(v["prediction_id"].as_str().unwrap().to_owned());
        }
    }
    let delivered: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    assert_eq!(delivered, ids, "Firehose predictions vs the stream");
    assert!(
        predictions.iter().all(|p| p["scored_by"] == "endpoint"),
        "{:?}",
        predictions
            .iter()
            .map(|p| p["scored_by"].to_string())
            .collect::<BTreeSet<_>>()
    );
}
