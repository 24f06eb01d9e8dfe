//! Metrics compliance: each command serves `/metrics` while it runs, emits every metric of
//! its component that is always present (`bikeshare_types::metrics::ALL`, `Presence::Always`)
//! under its documented name and labels, and nothing that is not documented.
//!
//! `ingest --simulator --weather` and `process` run side by side on one data directory, each
//! scraped over HTTP; neither emits the other's metrics. Once its first labels are due (30
//! simulated minutes), `process` must also emit the live model-quality gauges, per system and
//! target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::{Duration, Instant};

use bikeshare_types::metrics::{
    ALL, Component, EVENTS_OUT, FEED_AGE, FEED_ERRORS, MODEL_BRIER, MODEL_CALIBRATION_ERROR,
    MODEL_LABELLED, MODEL_PR_AUC, MODEL_ROC_AUC, MetricDef, Presence, lookup,
};

/// Live quality: emitted by `process` once labels join its predictions.
static QUALITY: [MetricDef; 5] = [
    MODEL_LABELLED,
    MODEL_BRIER,
    MODEL_CALIBRATION_ERROR,
    MODEL_ROC_AUC,
    MODEL_PR_AUC,
];
use support::{TestEnv, bikeshare};

/// 12:00 UTC on the latest Tuesday before yesterday: 07:00 in Toronto (the simulated city's
/// time zone; 08:00 in summer), so the run covers a weekday morning rush. The live-quality
/// gauges need stockouts among the labels, and the simulated city has almost none on a
/// weekend evening or at night: a start relative to now made this test depend on the hour CI
/// ran it at.
fn weekday_morning_ms() -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut day = i64::try_from(now.as_millis()).unwrap() / DAY_MS - 1;
    // Day 0 (1970-01-01) was a Thursday: (day + 3) % 7 is 0 on Mondays, 1 on Tuesdays.
    while (day + 3) % 7 != 1 {
        day -= 1;
    }
    day * DAY_MS + 12 * 3_600_000
}

/// Starts `bikeshare args...` and returns it with the URL of its `/metrics`.
fn spawn(dir: &std::path::Path, args: &[&str]) -> (Child, String) {
    let mut child = bikeshare(dir)
        .args(args)
        // Days back at 120x: it never catches up with the wall clock during this test.
        .env(
            "BIKESHARE_SIMULATOR__START",
            weekday_morning_ms().to_string(),
        )
        .env("BIKESHARE_SIMULATOR__TIME_SCALE", "120")
        .env("BIKESHARE_SIMULATOR__BIND", "127.0.0.1:0")
        .env("BIKESHARE_SIMULATOR__CITY__STATIONS", "60")
        .spawn_reading_stderr();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| {
                panic!("{args:?} exited before printing its /metrics URL: {seen:#?}")
            })
            .unwrap();
        seen.push(line.clone());
        if let Some(u) = line.strip_prefix("metrics:") {
            break u.trim().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// Metric families in a scrape, each with the label names of its samples.
fn scrape(url: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = http::get(url);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in bikeshare_monitor::samples::parse(&text) {
        let family = lookup(&s.name).map_or(s.name.clone(), |d| d.name.to_owned());
        let labels = out.entry(family).or_default();
        labels.extend(
            s.labels
                .into_keys()
                .filter(|k| k != "le" && k != "quantile"),
        );
    }
    out
}

mod http {
    /// A plain HTTP/1.1 GET of a loopback URL (no client crate needed for one request).
    pub fn get(url: &str) -> String {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{url}: {body:.200}");
        body.split_once("\r\n\r\n").unwrap().1.to_owned()
    }
}

fn required(component: Component) -> Vec<&'static MetricDef> {
    ALL.iter()
        .filter(|d| d.component == component && d.presence == Presence::Always)
        .collect()
}

fn missing(found: &BTreeMap<String, BTreeSet<String>>, component: Component) -> Vec<&'static str> {
    let mut required = required(component);
    if component == Component::Process {
        required.extend(QUALITY.iter());
    }
    required
        .into_iter()
        .filter(|d| !found.contains_key(d.name))
        .map(|d| d.name)
        .collect()
}

fn check_documented(found: &BTreeMap<String, BTreeSet<String>>, who: &str) {
    for (name, labels) in found {
        let def = lookup(name).unwrap_or_else(|| panic!("{who} emits undocumented {name}"));
        let documented: BTreeSet<String> = def.labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(labels, &documented, "{who}: labels of {name}");
    }
}

#[test]
fn ingest_and_process_emit_their_documented_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ingest, ingest_url) = spawn(
        dir.path(),
        &["ingest", "--simulator", "--weather", "--duration", "120s"],
    );
    let (mut process, process_url) = spawn(dir.path(), &["process", "--duration", "120s"]);

    let started = Instant::now();
    let (mut from_ingest, mut from_process) = (BTreeMap::new(), BTreeMap::new());
    while started.elapsed() < Duration::from_secs(100) {
        from_ingest = scrape(&ingest_url);
        from_process = scrape(&process_url);
        if missing(&from_ingest, Component::Ingest).is_empty()
            && missing(&from_process, Component::Process).is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = ingest.kill();
    let _ = process.kill();
    let _ = (ingest.wait(), process.wait());

    assert_eq!(
        missing(&from_ingest, Component::Ingest),
        Vec::<&str>::new(),
        "ingest"
    );
    assert_eq!(
        missing(&from_process, Component::Process),
        Vec::<&str>::new(),
        "process"
    );
    check_documented(&from_ingest, "ingest");
    check_documented(&from_process, "process");
    let process_metrics: Vec<_> = from_ingest
        .keys()
        .filter(|n| lookup(n).is_some_and(|d| d.component == Component::Process))
        .collect();
    assert!(
        process_metrics.is_empty(),
        "ingest emits {process_metrics:?}"
    );
    let producer_metrics: Vec<_> = [EVENTS_OUT, FEED_AGE, FEED_ERRORS]
        .iter()
        .filter(|d| from_process.contains_key(d.name))
        .collect();
    assert!(
        producer_metrics.is_empty(),
        "process emits {producer_metrics:?}"
    );
}

#[test]
fn the_readme_table_documents_every_metric_with_its_labels() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for d in ALL {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", d.name)))
            .unwrap_or_else(|| panic!("README.md has no row for {}", d.name));
        let labels = row.split(" | ").nth(3).unwrap_or("");
        let listed: BTreeSet<&str> = labels.split(", ").filter(|l| *l != "—").collect();
        let defined: BTreeSet<&str> = d.labels.iter().copied().collect();
        assert_eq!(listed, defined, "README labels of {}", d.name);
    }
}
