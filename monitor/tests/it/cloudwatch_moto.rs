//! The CloudWatch exporter against moto server: metrics recorded through
//! `bikeshare_types::metrics`, pushed from the installed recorder with `PutMetricData`
//! (aws-sdk-cloudwatch 1.99, the query protocol moto speaks), and read back with
//! `ListMetrics` and `GetMetricData`: names, dimensions, gauge values, counter deltas and
//! histogram sample counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat};
use bikeshare_monitor::cloudwatch::{CloudWatchConfig, CloudWatchExporter};
use bikeshare_runtime::aws::emulator_sdk_config;
use bikeshare_testkit::emulators::moto_endpoint;
use bikeshare_types::Timestamp;

fn dim(k: &str, v: &str) -> Dimension {
    Dimension::builder().name(k).value(v).build()
}

/// The data points of one metric and statistic between `from` and `to`, oldest first.
async fn points(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    name: &str,
    dims: Vec<Dimension>,
    stat: &str,
    from: Timestamp,
    to: Timestamp,
) -> Vec<f64> {
    let q = MetricDataQuery::builder()
        .id("q")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(namespace)
                        .metric_name(name)
                        .set_dimensions(Some(dims))
                        .build(),
                )
                .period(60)
                .stat(stat)
                .build(),
        )
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(q)
        .start_time(DateTime::from_millis(from.millis()))
        .end_time(DateTime::from_millis(to.millis()))
        .scan_by(aws_sdk_cloudwatch::types::ScanBy::TimestampAscending)
        .send()
        .await
        .unwrap();
    out.metric_data_results()
        .first()
        .map(|r| r.values().to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn pushes_gauges_counter_deltas_and_histograms_that_read_back_from_moto() {
    let Some(moto) =
        moto_endpoint("pushes_gauges_counter_deltas_and_histograms_that_read_back_from_moto")
    else {
        return;
    };
    let sdk = emulator_sdk_config(&moto).await;
    let namespace = format!("bikeshare-test/{}", std::process::id());
    let source = bikeshare_monitor::alerts::recorder_source().unwrap();
    let mut exporter = CloudWatchExporter::new(
        &sdk,
        CloudWatchConfig {
            enabled: true,
            namespace: namespace.clone(),
            dimensions: BTreeMap::from([("environment".to_owned(), "test".to_owned())]),
            ..CloudWatchConfig::default()
        },
    );
    let cw = exporter.client().clone();

    // Two pushes one minute apart: a gauge, a counter (5 then +3) and a histogram.
    let t0 = Timestamp::from_millis(
        Timestamp::from_secs(1_800_000_000)
            .floor_to(60_000)
            .millis(),
    );
    bikeshare_types::metrics::watermark_lag("cw-sys", 42_500);
    bikeshare_types::metrics::events_in("cw-sys", "station_status", 5);
    for ms in [3, 40, 700] {
        bikeshare_types::metrics::inference_latency("cw-model", Duration::from_millis(ms));
    }
    let r = exporter.push(&source(), t0).await;
    assert_eq!(r.failed_calls, 0, "{r:?}");
    assert!(r.data >= 3 && r.calls == 1, "{r:?}");

    bikeshare_types::metrics::events_in("cw-sys", "station_status", 3);
    bikeshare_types::metrics::watermark_lag("cw-sys", 1_000);
    let r = exporter.push(&source(), t0.plus_millis(60_000)).await;
    assert_eq!(r.failed_calls, 0, "{r:?}");

    // ListMetrics: names and dimensions.
    let listed = cw
        .list_metrics()
        .namespace(&namespace)
        .dimensions(
            DimensionFilter::builder()
                .name("system")
                .value("cw-sys")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut seen: Vec<(String, Vec<(String, String)>)> = listed
        .metrics()
        .iter()
        .map(|m| {
            let mut d: Vec<(String, String)> = m
                .dimensions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or_default().to_owned(),
                        d.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            d.sort();
            (m.metric_name().unwrap_or_default().to_owned(), d)
        })
        .collect();
    seen.sort();
    seen.dedup();
    let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert!(
        seen.contains(&(
            "bikeshare_events_in_total".into(),
            vec![
                s("environment", "test"),
                s("kind", "station_status"),
                s("system", "cw-sys")
            ]
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "bikeshare_watermark_lag_seconds".into(),
            vec![s("environment", "test"), s("system", "cw-sys")]
        )),
        "{seen:?}"
    );

    // GetMetricData: the gauge per minute, the counter's deltas, the histogram's count.
    let (from, to) = (t0.plus_millis(-60_000), t0.plus_millis(180_000));
    let lag = points(
        &cw,
        &namespace,
        "bikeshare_watermark_lag_seconds",
        vec![dim("environment", "test"), dim("system", "cw-sys")],
        "Maximum",
        from,
        to,
    )
    .await;
    assert_eq!(lag, [42.5, 1.0]);
    let events = points(
        &cw,
        &namespace,
        "bikeshare_events_in_total",
        vec![
            dim("environment", "test"),
            dim("kind", "station_status"),
            dim("system", "cw-sys"),
        ],
        "Sum",
        from,
        to,
    )
    .await;
    assert_eq!(events, [5.0, 3.0], "counters are sent as deltas");
    let latency_dims = vec![dim("environment", "test"), dim("model", "cw-model")];
    let count = points(
        &cw,
        &namespace,
        "bikeshare_inference_latency_seconds",
        latency_dims.clone(),
        "SampleCount",
        from,
        to,
    )
    .await;
    assert_eq!(count, [3.0], "three observations, sent once");
    let max = points(
        &cw,
        &namespace,
        "bikeshare_inference_latency_seconds",
        latency_dims,
        "Maximum",
        from,
        to,
    )
    .await;
    assert_eq!(max, [1.0], "700 ms lands in the bucket up to 1 s");
}
