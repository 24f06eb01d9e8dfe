//! The Firehose sink against moto server's Firehose, which delivers into moto's S3: every
//! record arrives exactly as sent (byte-equal JSON lines, by id), also through a proxy that
//! refuses calls and fails individual records; and an undeliverable batch is an error, not
//! a loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_firehose::types::{
    CompressionFormat, DeliveryStreamType, ExtendedS3DestinationConfiguration,
};
use bikeshare_firehose::batch::MAX_RECORD_BYTES;
use bikeshare_firehose::client::firehose_client;
use bikeshare_firehose::sinks::RECORD_TOO_LARGE_RULE;
use bikeshare_firehose::{
    DeliveryConfig, DeliveryStreams, FirehoseOutputs, FirehoseSinks, stream_name,
};
use bikeshare_lake::{Dataset, JsonRow};
use bikeshare_stream::sink::Sinks;
use bikeshare_testkit::emulators::moto_endpoint;
use bikeshare_testkit::envelopes;
use bikeshare_testkit::fault_proxy::FaultProxy;
use bikeshare_testkit::fault_proxy::firehose::{Mode, Policy};
use bikeshare_types::contracts::{
    DeadLetter, FeatureSchemaId, FeatureVector, Label, ModelRef, Prediction, PredictionTrigger,
};
use bikeshare_types::retry::Backoff;
use bikeshare_types::{EventId, StationId, SystemId, Timestamp};

async fn sdk_config(endpoint: &str) -> SdkConfig {
    bikeshare_runtime::aws::emulator_sdk_config(endpoint).await
}

fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh bucket and the six delivery streams `<prefix><dataset>`, each writing to
/// `<dataset>/` in the bucket.
async fn setup(sdk: &SdkConfig, test: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let bucket = format!("fh-{test}-{id}");
    let prefix = format!("fh-{test}-{id}-");
    s3_client(sdk)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let firehose = firehose_client(sdk, None);
    for d in Dataset::ALL {
        firehose
            .create_delivery_stream()
            .delivery_stream_name(stream_name(&prefix, d))
            .delivery_stream_type(DeliveryStreamType::DirectPut)
            .extended_s3_destination_configuration(
                ExtendedS3DestinationConfiguration::builder()
                    .role_arn("arn:aws:iam::123456789012:role/firehose-test")
                    .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                    .prefix(format!("{}/", d.name()))
                    // moto's DescribeDeliveryStream answer parses only uncompressed.
                    .compression_format(CompressionFormat::Uncompressed)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    (bucket, prefix)
}

/// moto with a fresh bucket and delivery streams ([`setup`]).
struct Moto {
    endpoint: String,
    sdk: SdkConfig,
    bucket: String,
    prefix: String,
}

impl Moto {
    /// For `test` (`None`: skipped without moto), the bucket and streams named after `name`.
    async fn fresh(test: &str, name: &str) -> Option<Self> {
        let endpoint = moto_endpoint(test)?;
        let sdk = sdk_config(&endpoint).await;
        let (bucket, prefix) = setup(&sdk, name).await;
        Some(Self {
            endpoint,
            sdk,
            bucket,
            prefix,
        })
    }

    /// Every one of `rows` reached `d`'s prefix exactly once, as sent (lines told apart by
    /// their `key` field).
    async fn assert_delivered_once<T: JsonRow>(&self, d: Dataset, rows: &[T], key: &str) {
        let sent: Vec<_> = rows.iter().map(JsonRow::json_line).collect();
        let got = delivered(&self.sdk, &self.bucket, d).await;
        assert_exactly_once(&sent, &got, key, d.name());
    }
}

/// Every line of every object under `<dataset>/` (moto writes one object per call and adds
/// no separator: our records end in '\n').
async fn delivered(sdk: &SdkConfig, bucket: &str, d: Dataset) -> Vec<Vec<u8>> {
    let s3 = s3_client(sdk);
    let mut lines = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{}/", d.name()))
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(o.key().unwrap())
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            assert_eq!(body.last(), Some(&b'\n'), "object {:?}", o.key());
            for line in body.split_inclusive(|b| *b == b'\n') {
                lines.push(line.to_vec());
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    lines
}

/// The `i`th prediction (id `p-<i>`) of model `xgb` version 7, a minute after the one before;
/// every 13th with a NaN `p_full`.
fn prediction(i: usize) -> Prediction {
    let station = format!("st-{}", i % 97);
    let as_of = Timestamp(1_700_000_000_000 + i as i64 * 60_000);
    let p_empty = (i % 100) as f32 / 100.0 + 0.001;
    let p_full = if i.is_multiple_of(13) { f32::NAN } else { 0.25 };
    Prediction {
        schema_version: 2,
        prediction_id: EventId::new(format!("p-{i:06}")),
        model: ModelRef {
            name: "xgb".into(),
            version: "7".into(),
        },
        trigger: if i.is_multiple_of(2) {
            PredictionTrigger::Tick
        } else {
            PredictionTrigger::Update
        },
        ..envelopes::prediction("bluebikes", &station, as_of, p_empty, p_full)
    }
}

/// The label of [`prediction`] `i`.
fn label(i: usize) -> Label {
    Label {
        went_empty: i.is_multiple_of(3),
        went_full: i.is_multiple_of(5),
        full_at_as_of: i.is_multiple_of(7),
        ..envelopes::label(&prediction(i), (i % 4) as u32)
    }
}

fn features(i: usize, width: usize) -> FeatureVector {
    FeatureVector {
        system_id: SystemId::new("bluebikes"),
        station_id: StationId::new(format!("st-{i}")),
        as_of: Timestamp(1_700_000_000_000 + i as i64),
        schema_id: FeatureSchemaId("fs1".into()),
        values: (0..width)
            .map(|k| (k % 11 != 0).then_some(k as f32 * 0.37))
            .collect(),
    }
}

/// The lines delivered equal the lines sent, each exactly once; keyed by `key`.
fn assert_exactly_once(sent: &[Vec<u8>], got: &[Vec<u8>], key: &str, what: &str) {
    let by_id = |lines: &[Vec<u8>]| -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut m: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for l in lines {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let id = v[key].as_str().unwrap().to_owned();
            m.entry(id).or_default().push(l.clone());
        }
        m
    };
    let (sent, got) = (by_id(sent), by_id(got));
    let missing: Vec<_> = sent.keys().filter(|k| !got.contains_key(*k)).collect();
    let dups: Vec<_> = got
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    let extra: Vec<_> = got.keys().filter(|k| !sent.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        dups.is_empty(),
        "{what}: {} duplicated, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    assert!(extra.is_empty(), "{what}: {} unexpected", extra.len());
    assert_eq!(sent, got, "{what}: lines differ from what was sent");
}

fn sinks(sdk: &SdkConfig, endpoint: &str, prefix: &str, delivery: DeliveryConfig) -> FirehoseSinks {
    let client = firehose_client(sdk, Some(endpoint));
    FirehoseSinks::new(
        DeliveryStreams::new(&client, prefix, &delivery),
        FirehoseOutputs {
            features: true,
            dead_letters: true,
        },
    )
}

fn fast_retries() -> DeliveryConfig {
    DeliveryConfig {
        backoff: Backoff {
            base: Duration::from_millis(2),
            max: Duration::from_millis(20),
            max_retries: Some(20),
        },
        max_elapsed_ms: 60_000,
    }
}

#[tokio::test]
async fn every_record_arrives_once_as_sent_and_oversized_rows_become_dead_letters() {
    let Some(m) = Moto::fresh("every_record_arrives_once_as_sent", "clean").await else {
        return;
    };
    let sink = sinks(&m.sdk, &m.endpoint, &m.prefix, DeliveryConfig::default());

    // 1,234 predictions in three calls of ≤ 500, handed over in uneven pieces.
    let predictions: Vec<Prediction> = (0..1234).map(prediction).collect();
    for chunk in predictions.chunks(177) {
        sink.predictions(chunk.to_vec()).await.unwrap();
    }
    let labels: Vec<Label> = (0..321).map(label).collect();
    sink.labels(labels.clone()).await.unwrap();
    // Wide feature rows: ~4 MiB per call is reached before 500 records.
    let wide: Vec<FeatureVector> = (0..40).map(|i| features(i, 30_000)).collect();
    let wide_line = wide[0].json_line().len();
    assert!(
        wide_line > 100_000 && wide_line < MAX_RECORD_BYTES,
        "{wide_line}"
    );
    // One row over 1,000 KiB: a dead letter instead.
    let huge = features(9_999, 150_000);
    assert!(huge.json_line().len() > MAX_RECORD_BYTES);
    let mut rows = wide.clone();
    rows.push(huge);
    sink.features(rows).await.unwrap();
    let letters: Vec<DeadLetter> = (0..5)
        .map(|i| {
            DeadLetter::new(
                SystemId::new("bluebikes"),
                "processor",
                "processor.decode",
                format!("bad {i}"),
                &format!("\u{1}not json {i}"),
                Timestamp(1_700_000_000_000 + i),
            )
        })
        .collect();
    sink.dead_letters(letters.clone()).await.unwrap();
    sink.commit(&[("shardId-0".into(), 1)]).await.unwrap();
    assert_eq!(sink.buffered(), 0);

    m.assert_delivered_once(Dataset::Predictions, &predictions, "prediction_id")
        .await;
    m.assert_delivered_once(Dataset::Labels, &labels, "prediction_id")
        .await;
    m.assert_delivered_once(Dataset::Features, &wide, "station_id")
        .await;
    let got = delivered(&m.sdk, &m.bucket, Dataset::DeadLetters).await;
    let (too_large, others): (Vec<_>, Vec<_>) = got.into_iter().partition(|l| {
        serde_json::from_slice::<serde_json::Value>(l).unwrap()["rule"] == RECORD_TOO_LARGE_RULE
    });
    let sent: Vec<_> = letters.iter().map(JsonRow::json_line).collect();
    assert_exactly_once(&sent, &others, "dead_letter_id", "dead letters");
    assert_eq!(
        too_large.len(),
        1,
        "the oversized feature row is one dead letter"
    );
    let d: serde_json::Value = serde_json::from_slice(&too_large[0]).unwrap();
    assert!(d["message"].as_str().unwrap().contains("features row of"));
    assert_eq!(d["raw_truncated"], true);

    let s = sink.stats().snapshot();
    assert_eq!(s.records_delivered, 1234 + 321 + 40 + 5 + 1);
    assert_eq!((s.records_retried, s.records_undelivered), (0, 0));
    // 3 prediction calls, 1 label call, ≥ 2 feature calls (4 MiB), 1 dead-letter call.
    assert!(s.calls >= 7, "{s:?}");
}

#[tokio::test]
async fn partial_failures_and_refused_calls_resend_only_what_failed() {
    let Some(m) = Moto::fresh("partial_failures_and_refused_calls", "faults").await else {
        return;
    };
    let mode = Mode::Faults {
        refuse_call: 0.2,
        fail_record: 0.1,
    };
    let proxy = FaultProxy::start(&m.endpoint, Policy::new(7, mode)).await;
    let sink = sinks(&m.sdk, &proxy.endpoint(), &m.prefix, fast_retries());

    let predictions: Vec<Prediction> = (0..3000).map(prediction).collect();
    for chunk in predictions.chunks(250) {
        sink.predictions(chunk.to_vec()).await.unwrap();
        sink.flush().await.unwrap();
    }
    let labels: Vec<Label> = (0..1500).map(label).collect();
    sink.labels(labels.clone()).await.unwrap();
    sink.flush().await.unwrap();

    m.assert_delivered_once(Dataset::Predictions, &predictions, "prediction_id")
        .await;
    m.assert_delivered_once(Dataset::Labels, &labels, "prediction_id")
        .await;

    let f = proxy.faults();
    let s = sink.stats().snapshot();
    eprintln!("faults {f:?}\nsink {s:?}");
    assert!(f.records_failed > 0 && f.calls_refused > 0, "{f:?}");
    // The retry count is exactly what the proxy refused: nothing more was re-sent.
    assert_eq!(
        s.records_retried,
        f.records_failed + f.records_in_refused_calls
    );
    assert_eq!(s.calls_refused, f.calls_refused);
    assert_eq!(s.records_delivered, 4500);
    assert_eq!(f.records_forwarded, 4500, "moto got each record once");
    assert_eq!(s.calls, f.calls);
}

#[tokio::test]
async fn records_that_cannot_be_delivered_are_an_error_not_a_loss() {
    let Some(m) = Moto::fresh("records_that_cannot_be_delivered", "down").await else {
        return;
    };
    let proxy = FaultProxy::start(&m.endpoint, Policy::new(1, Mode::RefuseAll)).await;
    let mut delivery = fast_retries();
    delivery.backoff.max_retries = Some(3);
    let sink = sinks(&m.sdk, &proxy.endpoint(), &m.prefix, delivery);
    sink.labels((0..10).map(label).collect()).await.unwrap();
    let err = sink
        .commit(&[("shardId-0".into(), 1)])
        .await
        .expect_err("the barrier must fail while Firehose refuses");
    assert!(err.to_string().contains("10 records undelivered"), "{err}");
    assert!(
        err.to_string().contains("ServiceUnavailableException"),
        "{err}"
    );
    let s = sink.stats().snapshot();
    assert_eq!(s.records_undelivered, 10);
    assert_eq!(s.calls, 4, "the first try and three retries");
    assert_eq!(proxy.faults().calls, 4);

    // A stream that does not exist is refused at once, without retries.
    let sink = sinks(&m.sdk, &m.endpoint, "no-such-prefix-", fast_retries());
    sink.labels(vec![label(1)]).await.unwrap();
    let err = sink.flush().await.expect_err("missing stream");
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(sink.stats().snapshot().calls, 1);
}
