//! `serve-model` against the real `aws-sdk-sagemakerruntime` client (`InvokeEndpoint`
//! through `endpoint_url`) and plain HTTP for the container contract: CSV and JSON lines,
//! a batch of 1,000 stations, the payload limit, bad rows, schema and token checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use bikeshare_models::endpoint::{decode_csv, encode_csv};
use bikeshare_models::serve::{MAX_PAYLOAD_BYTES, ServeConfig};
use bikeshare_stream_processor::Scorer;

#[tokio::test]
async fn a_batch_of_1000_stations_through_the_sdk_matches_the_in_process_model_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let scorer = support::model(dir.path());
    let server = support::start(support::local_config(), scorer.clone()).await;
    let width = support::schema().len();

    let ping = reqwest::get(format!("{}/ping", server.url()))
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);

    let client = aws_sdk_sagemakerruntime::Client::new(&support::sdk(&server.url()).await);
    let rows = support::rows(1000, width, 1);
    let refs: Vec<&[Option<f32>]> = rows.iter().map(Vec::as_slice).collect();
    let out = client
        .invoke_endpoint()
        .endpoint_name("bikeshare-stockout")
        .content_type("text/csv")
        .accept("text/csv")
        .custom_attributes(format!("feature_schema_id={}", support::schema().id().0))
        .body(Blob::new(encode_csv(&refs)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), Some("text/csv"));
    let attrs = out.custom_attributes().unwrap();
    assert!(attrs.contains("model=synthetic;version=7"), "{attrs}");
    let scores = decode_csv(out.body().unwrap().as_ref(), 1000).unwrap();
    let mut distinct = std::collections::BTreeSet::new();
    for (row, s) in rows.iter().zip(&scores) {
        let local = scorer.score(row);
        assert_eq!(s.p_empty.to_bits(), local.p_empty.to_bits());
        assert_eq!(s.p_full.to_bits(), local.p_full.to_bits());
        distinct.insert(s.p_empty.to_bits());
    }
    assert!(distinct.len() > 50, "the rows reach different leaves");
}

#[tokio::test]
async fn json_lines_in_and_out_echo_station_ids_and_treat_null_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let scorer = support::model(dir.path());
    let server = support::start(support::local_config(), scorer.clone()).await;
    let width = support::schema().len();
    let rows = support::rows(300, width, 2);
    let body: String = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({"station_id": format!("S{i}"), "features": r}).to_string() + "\n"
        })
        .collect();
    let client = aws_sdk_sagemakerruntime::Client::new(&support::sdk(&server.url()).await);
    let out = client
        .invoke_endpoint()
        .endpoint_name("any")
        .content_type("application/jsonlines")
        .body(Blob::new(body.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), Some("application/jsonlines"));
    let text = std::str::from_utf8(out.body().unwrap().as_ref()).unwrap();
    let answers: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 300);
    for (i, (a, r)) in answers.iter().zip(&rows).enumerate() {
        assert_eq!(a["station_id"], format!("S{i}"));
        let local = scorer.score(r);
        assert_eq!(a["p_empty"].as_f64().unwrap() as f32, local.p_empty);
        assert_eq!(a["p_full"].as_f64().unwrap() as f32, local.p_full);
    }

    // JSON lines in, CSV out.
    let out = client
        .invoke_endpoint()
        .endpoint_name("any")
        .content_type("application/jsonlines")
        .accept("text/csv")
        .body(Blob::new(body))
        .send()
        .await
        .unwrap();
    let scores = decode_csv(out.body().unwrap().as_ref(), 300).unwrap();
    assert_eq!(scores[7], scorer.score(&rows[7]));
}

/// What the SDK reports for a container error: a `ModelError` with the original status.
fn model_error(e: aws_sdk_sagemakerruntime::error::SdkError<InvokeEndpointError>) -> (i32, String) {
    match e.into_service_error() {
        InvokeEndpointError::ModelError(m) => (
            m.original_status_code().unwrap(),
            m.original_message().unwrap().to_owned(),
        ),
        other => panic!("expected a ModelError, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_rows_a_foreign_schema_and_oversized_payloads_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let scorer = support::model(dir.path());
    let server = support::start(support::local_config(), scorer).await;
    let width = support::schema().len();
    let client = aws_sdk_sagemakerruntime::Client::new(&support::sdk(&server.url()).await);
    let invoke = |body: String, attrs: Option<String>| {
        client
            .invoke_endpoint()
            .endpoint_name("e")
            .content_type("text/csv")
            .set_custom_attributes(attrs)
            .body(Blob::new(body))
            .send()
    };
    let good = encode_csv(&[&support::rows(1, width, 3)[0]]);

    // A non-number in row 2, column 3.
    let mut bad = vec!["1"; width];
    bad[2] = "abc";
    let (status, message) = model_error(
        invoke(format!("{good}{}\n", bad.join(",")), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(
        message.contains("row 2, column 3") && message.contains("abc"),
        "{message}"
    );

    // A row one feature short.
    let short = vec!["1"; width - 1].join(",");
    let (status, message) = model_error(invoke(short, None).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(
        message.contains(&format!("has {} features", width - 1)),
        "{message}"
    );

    // Infinity, and an empty body.
    let mut inf = vec!["1"; width];
    inf[0] = "inf";
    assert_eq!(
        model_error(invoke(inf.join(","), None).await.unwrap_err()).0,
        400
    );
    let (_, message) = model_error(invoke(String::new(), None).await.unwrap_err());
    assert!(message.contains("no rows"), "{message}");

    // Features of another schema.
    let (status, message) = model_error(
        invoke(good.clone(), Some("feature_schema_id=fs1-other".into()))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(message.contains("fs1-other"), "{message}");

    // Over 6 MB: 413, reported by the SDK as a ValidationError with that status.
    let big = good.repeat(MAX_PAYLOAD_BYTES / good.len() + 1);
    assert!(big.len() > MAX_PAYLOAD_BYTES);
    let e = invoke(big.clone(), None).await.unwrap_err();
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 413);
    let e = e.into_service_error();
    assert!(e.is_validation_error(), "{e:?}");

    // The container contract answers plain statuses and messages.
    let url = server.url();
    let csv = [("content-type", "text/csv")];
    let r = support::post_invocations(&url, &csv, big).await;
    assert_eq!(r.status(), 413);
    let json = [("content-type", "application/json")];
    let r = support::post_invocations(&url, &json, good.clone()).await;
    assert_eq!(r.status(), 415);
    assert!(r.text().await.unwrap().contains("text/csv"));
    let xml = [("content-type", "text/csv"), ("accept", "application/xml")];
    let r = support::post_invocations(&url, &xml, good.clone()).await;
    assert_eq!(r.status(), 406);
    let r = support::post_invocations(&url, &csv, good).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().lines().count(), 1);
}

#[tokio::test]
async fn tokens_endpoint_names_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let scorer = support::model(dir.path());
    // Beyond loopback a token is required to start at all.
    let exposed = ServeConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..ServeConfig::default()
    };
    if std::env::var(bikeshare_models::serve::TOKEN_ENV).is_err() {
        let err = bikeshare_models::serve::serve(&exposed, None, std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("without a token"), "{err}");
    }

    let server = support::start(
        ServeConfig {
            token: Some("s3cret".into()),
            endpoint_name: Some("prod".into()),
            ..support::local_config()
        },
        scorer,
    )
    .await;
    let width = support::schema().len();
    let body = encode_csv(&[&support::rows(1, width, 4)[0]]);
    let post = |auth: Option<&str>| {
        let mut headers = vec![("content-type", "text/csv")];
        headers.extend(auth.map(|a| ("authorization", a)));
        support::post_invocations(&server.url(), &headers, body.clone())
    };
    assert_eq!(post(None).await.status(), 401);
    assert_eq!(post(Some("Bearer wrong")).await.status(), 401);
    assert_eq!(post(Some("Bearer s3cret")).await.status(), 200);

    // Through the SDK (Authorization is SigV4): the token rides in the custom attributes.
    let client = aws_sdk_sagemakerruntime::Client::new(&support::sdk(&server.url()).await);
    let invoke = |name: &str, attrs: &str| {
        client
            .invoke_endpoint()
            .endpoint_name(name)
            .content_type("text/csv")
            .custom_attributes(attrs)
            .body(Blob::new(body.clone()))
            .send()
    };
    assert!(invoke("prod", "token=s3cret").await.is_ok());
    let e = invoke("prod", "token=nope").await.unwrap_err();
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 401);
    let e = invoke("staging", "token=s3cret").await.unwrap_err();
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 404);
    assert!(e.into_service_error().is_validation_error());

    // No model: /ping says not ready, invocations 503 (the SDK: ModelNotReadyException).
    server.set_model(None);
    let ping = reqwest::get(format!("{}/ping", server.url()))
        .await
        .unwrap();
    assert_eq!(ping.status(), 503);
    let e = invoke("prod", "token=s3cret").await.unwrap_err();
    assert!(e.into_service_error().is_model_not_ready_exception());
}
