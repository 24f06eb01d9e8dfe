//! The dashboard at world scale: 50,000 stations in 50 systems spread over the globe (the
//! GBFS catalogue lists ~225k stations in all), served from a state filled in process, in
//! headless Chromium. It checks that every station reaches the map and that one update after
//! 1 % of the stations changed carries only those stations, and prints what the README
//! reports: time to the first paint of the stations, one full redraw, and the bytes of the
//! first answer and of one update (gzip). Figures only; nothing here is timed against a limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bikeshare_dashboard::server::{DashboardConfig, serve};
use bikeshare_dashboard::state::DashboardState;
use bikeshare_stream_processor::quality::QualityConfig;
use bikeshare_testkit::envelopes;
use bikeshare_types::contracts::{
    Envelope, Event, ModelRef, Prediction, PredictionTrigger, StationStatus,
};
use bikeshare_types::time::ManualClock;
use bikeshare_types::{StationId, SystemId, Timestamp};

use crate::dashboard_browser::{Browser, chromium_or_skip, output_dir};

const SYSTEMS: u64 = 50;
const PER_SYSTEM: u64 = 1000;
const NOW: i64 = 1_796_000_000_000;

/// A deterministic pseudo-random number in [0, 1) from `i`.
fn unit(i: u64) -> f64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A prediction of model `m` version `1` (the testkit's builder, scored on a tick).
fn prediction(system: &SystemId, station: &StationId, as_of: i64, p_empty: f32) -> Prediction {
    let (system, station) = (system.as_str(), station.as_str());
    Prediction {
        schema_version: 2,
        model: ModelRef {
            name: "m".into(),
            version: "1".into(),
        },
        trigger: PredictionTrigger::Tick,
        ..envelopes::prediction(system, station, Timestamp(as_of), p_empty, 0.02)
    }
}

fn fill(state: &DashboardState) {
    for s in 0..SYSTEMS {
        let system = SystemId::new(format!("system-{s:02}"));
        let (lat0, lon0) = (-45.0 + 100.0 * unit(s), -170.0 + 340.0 * unit(s + 1000));
        for j in 0..PER_SYSTEM {
            let i = s * PER_SYSTEM + j;
            let station = StationId::new(format!("st-{i:06}"));
            let info = envelopes::station_info(
                station.as_str(),
                format!("Station {i}"),
                lat0 + 0.3 * (unit(2 * i) - 0.5),
                lon0 + 0.4 * (unit(2 * i + 1) - 0.5),
                20,
            );
            let env =
                |e: Event| Envelope::new(system.clone(), "test", Timestamp(NOW), Timestamp(NOW), e);
            state.apply_event(&env(Event::StationInfo(info)), Timestamp(NOW));
            let bikes = (unit(3 * i) * 20.0) as u32;
            let status = StationStatus {
                station_id: station.clone(),
                num_bikes_available: bikes,
                num_ebikes_available: None,
                num_bikes_disabled: None,
                num_docks_available: Some(20 - bikes),
                num_docks_disabled: None,
                is_installed: true,
                is_renting: true,
                is_returning: true,
                last_reported: Timestamp(NOW),
                vehicle_types_available: Vec::new(),
            };
            state.apply_event(&env(Event::StationStatus(status)), Timestamp(NOW));
            let p = (unit(5 * i).powi(4)) as f32;
            state.apply_prediction(prediction(&system, &station, NOW, p), Timestamp(NOW));
        }
    }
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    gzip: bool,
) -> (reqwest::StatusCode, usize, Vec<u8>) {
    let mut req = client.get(url);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let body = r.bytes().await.unwrap().to_vec();
    (status, body.len(), body)
}

#[test]
fn fifty_thousand_stations_render_and_update_in_deltas() {
    let Some(chrome) = chromium_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(NOW)));
    let state = DashboardState::new(clock.clone(), QualityConfig::default());
    fill(&state);
    let total = (SYSTEMS * PER_SYSTEM) as usize;
    assert_eq!(state.station_count(), total);
    let config = DashboardConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..DashboardConfig::default()
    };
    let running = rt
        .block_on(serve(config, state.clone(), std::future::pending()))
        .unwrap();
    let base = running.url();

    let dir = tempfile::tempdir().unwrap();
    let mut b = Browser::launch(&chrome, dir.path(), 1400, 1000);
    b.navigate(&base);
    assert!(
        b.wait_for(
            &format!(
                "dashboard.stations.size === {total} && performance.getEntriesByName('stations-painted').length > 0"
            ),
            Duration::from_secs(60)
        ),
        "all {total} stations reach the page and the map"
    );
    let first_paint_ms = b
        .eval("performance.getEntriesByName('stations-painted')[0].startTime")
        .as_f64()
        .unwrap();
    let drawn = b
        .eval("Number(document.body.dataset.stationsDrawn)")
        .as_u64()
        .unwrap();
    let redraw_ms = b
        .eval("(() => { const t = performance.now(); for (let i = 0; i < 5; i++) { dashboard.layer.redraw(); } return (performance.now() - t) / 5; })()")
        .as_f64()
        .unwrap();
    // At world scale the stations are clusters (a pie of the share at risk, with a count).
    let clusters = b
        .eval("Number(document.body.dataset.clusters)")
        .as_u64()
        .unwrap();
    assert!(
        (SYSTEMS / 2..=5000).contains(&clusters),
        "{clusters} clusters at world scale"
    );
    let shots = output_dir("dashboard_scale");
    b.screenshot(&shots.join("50k-world.png"));
    // At city scale, one system's stations one by one.
    b.eval("dashboard.select('system-07\\u0000st-007500', true)");
    assert!(
        b.wait_for(
            "Number(document.body.dataset.clusters) === 0 && Number(document.body.dataset.stationsDrawn) > 5",
            Duration::from_secs(30)
        ),
        "stations drawn one by one at city scale"
    );
    b.screenshot(&shots.join("50k-city.png"));

    // Sizes of the first answer (every station) and of one update after 1 % changed.
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let (full_status, full_gzip, _) = rt.block_on(get(&client, &format!("{base}api/state"), true));
    let (_, full_raw, _) = rt.block_on(get(&client, &format!("{base}api/state"), false));
    assert_eq!(full_status, 200);
    let before = state.version();
    let changed: Vec<u64> = (0..total as u64).step_by(100).collect();
    for &i in &changed {
        let s = i / PER_SYSTEM;
        state.apply_prediction(
            prediction(
                &SystemId::new(format!("system-{s:02}")),
                &StationId::new(format!("st-{i:06}")),
                NOW + 300_000,
                0.77,
            ),
            Timestamp(NOW),
        );
    }
    let delta_url = format!("{base}api/state?since={before}&wait_ms=0");
    let (_, delta_gzip, _) = rt.block_on(get(&client, &delta_url, true));
    let (_, delta_raw, body) = rt.block_on(get(&client, &delta_url, false));
    let delta: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(delta["full"], false);
    assert_eq!(
        delta["stations"].as_array().unwrap().len(),
        changed.len(),
        "an update carries only the stations that changed"
    );
    assert!(
        delta_gzip * 10 < full_gzip,
        "one update ({delta_gzip} B) is far smaller than the first answer ({full_gzip} B)"
    );
    // The page receives that update (its long poll returns) and recolours the station.
    assert!(
        b.wait_for(
            "dashboard.stations.get('system-00\\u0000st-000100').risk === 0.77",
            Duration::from_secs(15)
        ),
        "the open page applied the update"
    );
    // An unchanged answer is not sent again.
    let (_, _, _) = rt.block_on(get(&client, &format!("{base}api/history"), false));
    let r = rt
        .block_on(client.get(format!("{base}api/config")).send())
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let again = rt
        .block_on(
            client
                .get(format!("{base}api/config"))
                .header("if-none-match", &etag)
                .send(),
        )
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
    eprintln!(
        "dashboard at {total} stations: first paint of the stations {first_paint_ms:.0} ms after navigation \
         ({drawn} drawn), one redraw {redraw_ms:.1} ms; first answer {full_raw} B ({full_gzip} B gzip); \
         one update of {} stations {delta_raw} B ({delta_gzip} B gzip)",
        changed.len()
    );
    drop(b);
    drop(running);
}
