//! The dashboard in headless Chromium against a running main job: it loads, draws stations
//! on the map, fills the top-N table, the model-health panel (serving model, live quality per
//! system and target), the system-health panel (throughput, lag) and the freshness of each
//! feed, and updates as predictions arrive. The screenshot is written to
//! `$CARGO_TARGET_TMPDIR/dashboard.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::bikeshare;

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
}

fn headless(chrome: &str, profile: &std::path::Path) -> Command {
    let mut c = Command::new(chrome);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

fn attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom[start..].split('"').next()
}

/// The text of the element with `id` (up to its first child tag).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    dom.split(&marker)
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .map(|(_, text)| text.split('<').next().unwrap_or(""))
        .unwrap_or("")
}

/// The body rows of the table with `id`, each as its cells' texts.
fn body_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let table = dom
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .unwrap_or("")
        .split("</table>")
        .next()
        .unwrap_or("");
    let body = table.split("<tbody>").nth(1).unwrap_or("");
    body.split("<tr>")
        .skip(1)
        .map(|tr| {
            tr.split("<td")
                .skip(1)
                .map(|td| {
                    td.split_once('>')
                        .map(|(_, t)| t.split('<').next().unwrap_or("").to_owned())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_dashboard_shows_stations_top_n_and_live_updates() {
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have Chromium (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: no chromium on PATH (scripts/test.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut up = bikeshare(dir.path())
        .args([
            "up",
            "--duration",
            "90s",
            "--summary-every",
            "600",
            "--station-count",
            "120",
        ])
        .env("BIKESHARE_API__BIND", "127.0.0.1:0")
        .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(up.stderr.take().unwrap()).lines();
    let mut url = None;
    for line in stderr.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("dashboard:") {
            url = Some(u.trim().to_owned());
            break;
        }
    }
    let url = url.expect("`up` prints the dashboard URL");
    // Keep draining `up`'s stderr: a full pipe would block its logging, and with it the job.
    let drain = std::thread::spawn(move || {
        let mut tail = std::collections::VecDeque::new();
        for line in stderr.map_while(Result::ok) {
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail
    });

    // Wait until the job has predictions (the simulator starts six hours back, 60x).
    let started = Instant::now();
    let profile = dir.path().join("chrome");
    let dump = |wait_ms: u32| -> String {
        let out = headless(&chrome, &profile)
            .arg(format!("--virtual-time-budget={wait_ms}"))
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut dom = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        dom = dump(3000);
        if dom.contains("class=\"station\"") && dom.matches("<tr>").count() > 6 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let stations = dom.matches("class=\"station\"").count();
    if stations < 100 {
        let _ = up.kill();
        let _ = up.wait();
        let tail = drain.join().unwrap_or_default();
        panic!(
            "stations on the map: {stations}; the end of `up`'s log:\n{}",
            Vec::from(tail).join("\n")
        );
    }
    let top_rows = dom
        .split("id=\"top\"")
        .nth(1)
        .unwrap_or("")
        .split("</tbody>")
        .next()
        .unwrap_or("")
        .matches("<tr>")
        .count();
    assert!(top_rows >= 10, "rows in the top-N table: {top_rows}");
    // `up` bootstraps a model through the gate; when the gate refuses it, the baseline serves.
    assert!(
        dom.contains("bikeshare-stockout") || dom.contains("baseline-netflow"),
        "the serving model's name is shown"
    );

    // Live: one page load sees newer predictions arrive (the page long-polls, and virtual
    // time does not advance while a request is pending, so this waits in real time).
    let live = dump(8000);
    let updates: u32 = attr(&live, "data-updates")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (first, newest) = (
        attr(&live, "data-first-newest").unwrap_or(""),
        attr(&live, "data-newest").unwrap_or(""),
    );
    assert!(updates >= 3, "the page refreshed {updates} times");
    assert!(
        newest > first,
        "newer predictions appeared while the page was open: {first} -> {newest}"
    );

    // Model health: the serving model, and live quality per system and target once labels
    // joined predictions (the history before "now" is labelled within seconds).
    let mut dom = live;
    let deadline = Instant::now() + Duration::from_secs(40);
    while body_rows(&dom, "quality").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        dom = dump(3000);
    }
    let model = text_of(&dom, "mh-model");
    assert!(
        model.contains("bikeshare-stockout") || model.contains("baseline-netflow"),
        "model-health names the model: {model:?}"
    );
    assert!(
        text_of(&dom, "mh-scored-by").contains("in_process"),
        "scored_by: {:?}",
        text_of(&dom, "mh-scored-by")
    );
    let quality = body_rows(&dom, "quality");
    assert_eq!(
        quality.len(),
        2,
        "one row per target of the one system: {quality:?}"
    );
    for row in &quality {
        let labelled: u64 = row[2].parse().unwrap_or(0);
        let brier: f64 = row[6].parse().unwrap_or(f64::NAN);
        assert!(labelled > 0, "labelled predictions in {row:?}");
        assert!((0.0..=1.0).contains(&brier), "a Brier score in {row:?}");
    }
    // System health: throughput and lag figures, not placeholders.
    let events: f64 = text_of(&dom, "sh-events").parse().unwrap_or(0.0);
    assert!(events > 0.0, "events/s: {:?}", text_of(&dom, "sh-events"));
    assert!(
        text_of(&dom, "sh-watermark").ends_with(" s"),
        "watermark lag: {:?}",
        text_of(&dom, "sh-watermark")
    );
    assert!(text_of(&dom, "sh-dead").parse::<u64>().is_ok());
    // Latency percentiles from the runner of the same process.
    for id in ["sh-proc-p50", "sh-proc-p99", "sh-inf-p50", "sh-inf-p99"] {
        let t = text_of(&dom, id);
        assert!(
            t.ends_with(" ms") || t.ends_with(" s") || t.ends_with(" µs"),
            "{id}: {t:?}"
        );
    }
    // Freshness per feed: station status and information at least, each with an age.
    let feeds = body_rows(&dom, "feeds");
    let names: Vec<&str> = feeds.iter().map(|r| r[1].as_str()).collect();
    assert!(
        names.contains(&"station_status") && names.contains(&"station_information"),
        "feeds: {feeds:?}"
    );
    assert!(feeds.iter().all(|r| r[3].ends_with(" s")), "{feeds:?}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let status = headless(&chrome, &profile)
        .args(["--virtual-time-budget=3000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        status.status.success() && shot.metadata().unwrap().len() > 10_000,
        "screenshot written"
    );
    eprintln!("screenshot: {}", shot.display());

    let _ = up.kill();
    let _ = up.wait();
    let _ = drain.join();
}
