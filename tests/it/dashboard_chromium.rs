//! The dashboard in headless Chromium against a running main job, used as a person would:
//! it loads and draws the stations on the map, fills the top-N table (fresh predictions),
//! the model-health panel (serving model, live quality per system and target), the system
//! and ops panels (throughput, lag per shard, checkpoint age, alerts, uptime) and the
//! freshness of each feed, draws the history charts, and updates as predictions arrive.
//! Then the test zooms the map with the wheel, clicks a station for its popup, searches a
//! station by id and opens its drill-down. Screenshots of each step go to
//! `$CARGO_TARGET_TMPDIR/dashboard_chromium/`; any console error or uncaught exception fails
//! the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::dashboard_browser::{Browser, chromium_or_skip, output_dir};
use crate::support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use support::{KillOnDrop, TestEnv, bikeshare};

#[test]
fn the_dashboard_is_used_as_a_person_would() {
    let Some(chrome) = chromium_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Longer than the test can take; killed when the test ends, passes or fails.
    let mut up = KillOnDrop(
        bikeshare(dir.path())
            .args([
                "up",
                "--duration",
                "900s",
                "--summary-every",
                "600",
                "--station-count",
                "120",
                // The baseline scores: training a first model would add ~20 s and show nothing
                // more of the page (up_bootstrap.rs tests the bootstrap).
                "--no-bootstrap",
            ])
            .env("BIKESHARE_API__BIND", "127.0.0.1:0")
            .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
            .env("BIKESHARE_DASHBOARD__SAMPLE_EVERY_MS", "1000")
            .spawn_reading_stderr(),
    );
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
    let shots = output_dir("dashboard_chromium");
    let mut b = Browser::launch(&chrome, dir.path(), 1400, 1000);
    b.navigate(&url);

    // The job has predictions within a minute (the simulator starts six hours back, 60x).
    let drawn = "Number(document.body.dataset.stationsDrawn || 0) >= 100 \
                 && document.querySelectorAll('#top tr').length >= 10";
    if !b.wait_for(drawn, Duration::from_secs(90)) {
        let _ = up.kill();
        let _ = up.wait();
        let tail = drain.join().unwrap_or_default();
        panic!(
            "stations drawn: {}; the end of `up`'s log:\n{}",
            b.eval("document.body.dataset.stationsDrawn"),
            Vec::from(tail).join("\n")
        );
    }
    // Top-N: names with their ids, UTC dates, and only fresh predictions.
    let top = b.eval(
        "[...document.querySelectorAll('#top tr')].map(tr => [...tr.cells].map(td => td.textContent))",
    );
    let top = top.as_array().unwrap();
    for r in top {
        let id = r[1].as_str().unwrap();
        let as_of = r[4].as_str().unwrap();
        assert!(id.starts_with('S'), "an id beside the name: {r}");
        assert!(
            as_of.len() == 19 && as_of.as_bytes()[4] == b'-' && as_of.as_bytes()[13] == b':',
            "a UTC date and time: {r}"
        );
    }
    // The serving model (the baseline, with --no-bootstrap).
    let model = b.eval("document.getElementById('mh-model').textContent");
    let model = model.as_str().unwrap();
    assert!(
        model.contains("bikeshare-stockout") || model.contains("baseline-netflow"),
        "model-health names the model: {model:?}"
    );

    // Live: newer predictions arrive while the page is open.
    let (updates, first) = (
        b.eval("Number(document.body.dataset.updates)")
            .as_u64()
            .unwrap(),
        b.eval("document.body.dataset.newest").to_string(),
    );
    assert!(
        b.wait_for(
            &format!(
                "Number(document.body.dataset.updates) >= {} && document.body.dataset.newest > {first}",
                updates + 3
            ),
            Duration::from_secs(40)
        ),
        "the page kept updating with newer predictions"
    );

    // Live quality once labels joined predictions (the history before "now" is labelled
    // within seconds), each row with a Brier score; the calibration chart is drawn.
    assert!(
        b.wait_for(
            "document.querySelectorAll('#quality tbody tr').length >= 2",
            Duration::from_secs(40)
        ),
        "quality rows for the one system"
    );
    let quality = b.eval(
        "[...document.querySelectorAll('#quality tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))",
    );
    let quality = quality.as_array().unwrap();
    let targets: Vec<&str> = quality.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert_eq!(
        &targets[..2],
        ["empty", "full"],
        "a row per target, then the new-stockout rows: {targets:?}"
    );
    for r in quality {
        let labelled: u64 = r[2].as_str().unwrap().parse().unwrap_or(0);
        let brier: f64 = r[7].as_str().unwrap().parse().unwrap_or(f64::NAN);
        assert!(labelled > 0, "labelled predictions in {r}");
        assert!((0.0..=1.0).contains(&brier), "a Brier score in {r}");
    }
    assert!(b.wait_for(
        "!!document.querySelector('#chart-calibration canvas')",
        Duration::from_secs(10)
    ));
    let text = |b: &mut Browser, id: &str| {
        b.eval(&format!("document.getElementById('{id}').textContent"))
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        text(&mut b, "mh-scored-by").contains("in_process"),
        "scored_by"
    );
    // System health: throughput, the watermark as a UTC time and a lag, latency percentiles.
    let events: f64 = text(&mut b, "sh-events").parse().unwrap_or(0.0);
    assert!(events > 0.0, "events/s");
    let watermark = text(&mut b, "sh-watermark-time");
    assert!(watermark.ends_with(" UTC"), "watermark: {watermark:?}");
    let lag = text(&mut b, "sh-watermark");
    assert!(
        [" s", " min", " h"].iter().any(|u| lag.ends_with(u)),
        "watermark lag: {lag:?}"
    );
    for id in ["sh-proc-p50", "sh-proc-p99", "sh-inf-p50", "sh-inf-p99"] {
        let t = text(&mut b, id);
        assert!(
            t.ends_with(" ms") || t.ends_with(" s") || t.ends_with(" µs"),
            "{id}: {t:?}"
        );
    }
    // Ops: catching up (the city runs 60x toward now) or real time, a row per shard with
    // its lag, a checkpoint age, the alert engine's rules, uptime.
    // (Waited for: on a loaded machine the pipeline can pause for a few samples and read as
    // behind for a moment.)
    let healthy_mode = "['catching up', 'real time'].some(m => \
         document.getElementById('mode').textContent.startsWith(m))";
    assert!(
        b.wait_for(healthy_mode, Duration::from_secs(30)),
        "mode: {:?}",
        text(&mut b, "mode")
    );
    assert!(b.wait_for(
        "document.querySelectorAll('#shards tbody tr').length >= 1",
        Duration::from_secs(10)
    ));
    assert!(
        text(&mut b, "ops-checkpoint").ends_with(" s"),
        "checkpoint age"
    );
    assert!(
        text(&mut b, "alerts-note").contains("rules"),
        "the alert engine's state: {:?}",
        text(&mut b, "alerts-note")
    );
    assert_eq!(text(&mut b, "ops-restarts"), "0");
    // History: the charts have a few samples.
    assert!(
        b.wait_for(
            "['chart-throughput', 'chart-lag', 'chart-latency', 'chart-dead', 'chart-prauc', 'chart-logloss']\
             .every(id => !!document.querySelector('#' + id + ' canvas'))",
            Duration::from_secs(20)
        ),
        "every history chart is drawn"
    );
    // Freshness per feed: every feed of the healthy job, each judged against its own period
    // (information feeds say they were read, weather is hourly), and none stale.
    let all_feeds = "['station_status', 'station_information', 'system_information', 'weather']\
         .every(f => [...document.querySelectorAll('#feeds tbody tr')].some(tr => tr.cells[1].textContent === f))";
    let feeds_js = "[...document.querySelectorAll('#feeds tbody tr')].map(tr => [...tr.cells].map(td => td.textContent + (td.classList.contains('stale') ? ' (stale)' : '')))";
    assert!(
        b.wait_for(all_feeds, Duration::from_secs(20)),
        "feeds: {}",
        b.eval(feeds_js)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#feeds .stale').length"),
        serde_json::json!(0),
        "a healthy job shows no stale feed: {}",
        b.eval(feeds_js)
    );
    assert!(b.screenshot(&shots.join("1-overview.png")) > 10_000);

    // Zoom in with the mouse wheel over the map.
    let zoom = b.eval("dashboard.map.getZoom()").as_f64().unwrap();
    let (mx, my) = b.centre_of("#map");
    b.wheel(mx, my, -600.0);
    assert!(
        b.wait_for(
            &format!("dashboard.map.getZoom() > {zoom}"),
            Duration::from_secs(30)
        ),
        "the wheel zooms the map in from {zoom}"
    );
    std::thread::sleep(Duration::from_millis(500));
    b.screenshot(&shots.join("2-zoomed.png"));

    // Click the riskiest station on screen: its popup names it with its figures.
    let key = b.eval(
        "(() => { const r = dashboard.map.getContainer().getBoundingClientRect(); \
           const on = [...dashboard.stations.values()].filter(s => { const p = dashboard.stationPoint(s.key); \
             return p && p.x > r.left + 20 && p.x < r.right - 20 && p.y > r.top + 120 && p.y < r.bottom - 20; }); \
           on.sort((a, b) => (b.risk ?? -1) - (a.risk ?? -1)); return on.length ? on[0].key : null; })()",
    );
    let key = key.as_str().expect("a station on screen").to_owned();
    let at = b.eval(&format!(
        "dashboard.stationPoint({})",
        serde_json::Value::from(key.as_str())
    ));
    b.click(at["x"].as_f64().unwrap(), at["y"].as_f64().unwrap());
    let id = key.split('\u{0}').nth(1).unwrap().to_owned();
    assert!(
        b.wait_for(
            &format!(
                "(() => {{ const p = document.querySelector('.leaflet-popup-content .popup'); \
                 return !!p && p.textContent.includes({}) && p.textContent.includes('p(empty)') \
                 && p.textContent.includes('bikes / docks'); }})()",
                serde_json::Value::from(id.as_str())
            ),
            Duration::from_secs(30)
        ),
        "clicking station {id} opens its popup"
    );
    std::thread::sleep(Duration::from_millis(500)); // the popup fades in
    b.screenshot(&shots.join("3-popup.png"));

    // Search another station by its id and open its drill-down with Enter.
    let other = b.eval(&format!(
        "[...dashboard.stations.values()].map(s => s.id).filter(i => i !== {}).sort()[7]",
        serde_json::Value::from(id.as_str())
    ));
    let other = other.as_str().unwrap().to_owned();
    let (sx, sy) = b.centre_of("#search");
    b.click(sx, sy);
    b.type_text(&other);
    assert!(
        b.wait_for(
            &format!(
                "(() => {{ const li = document.querySelector('#search-results li'); \
                 return !!li && li.getAttribute('data-key').endsWith({}); }})()",
                serde_json::Value::from(other.as_str())
            ),
            Duration::from_secs(30)
        ),
        "the search lists {other} first"
    );
    b.press_enter();
    assert!(
        b.wait_for(
            &format!(
                "(document.body.dataset.drill || '').endsWith('/' + {}) && !document.getElementById('drill').hidden \
                 && !!document.querySelector('#drill-bikes canvas') && !!document.querySelector('#drill-risk canvas') \
                 && document.querySelectorAll('#neighbours tbody tr').length >= 3",
                serde_json::Value::from(other.as_str())
            ),
            Duration::from_secs(10)
        ),
        "the drill-down of {other}: its charts and neighbours"
    );
    let facts = text(&mut b, "drill-facts");
    assert!(
        facts.contains("bikes") && facts.contains("predictions labelled"),
        "drill-down facts: {facts}"
    );
    b.eval("document.getElementById('drill').scrollIntoView()");
    b.screenshot(&shots.join("4-drilldown.png"));
    eprintln!("screenshots: {}", shots.display());

    assert!(
        b.errors.is_empty(),
        "console errors on the page: {:#?}",
        b.errors
    );
    drop(b);
    let _ = up.kill();
    let _ = up.wait();
    let _ = drain.join();
}
