//! The native XGBoost evaluator (`bikeshare_models::xgboost::XgbModel`) against XGBoost's own
//! prediction, on the same model and the same rows, in one run.
//!
//! The model: 200 boosting rounds of depth-6 trees (`binary:logistic`, `hist`), trained by
//! XGBoost (through `xgboost-rs`) on labelled feature rows that the stream processor computed
//! from a simulated city (two days, 60 stations, the went-empty target). The rows evaluated
//! are held-out rows of the same history: real feature vectors with their missing values.
//!
//! Three ways to predict, each for a single row and for a batch of 1,000 rows:
//!
//! - `native`: the pure-Rust walk the processor uses on its hot path.
//! - `xgboost_inplace`: XGBoost's in-place prediction (`XGBoosterPredictFromDense`, the C API
//!   behind Python's `inplace_predict`), no DMatrix; called through `xgboost-rs-sys`, since
//!   `xgboost-rs` does not wrap it. This is the fast path XGBoost offers for serving.
//! - `xgboost_dmatrix`: a DMatrix built from the rows, then `XGBoosterPredict`: what
//!   `xgboost-rs`'s `Booster::predict` does (the only prediction it exposes), called on the
//!   same booster handle so that it too runs with one thread.
//!
//! XGBoost runs with `nthread = 1`, as serving does on our 2-core machines. Before measuring,
//! the setup checks that the three agree bit for bit on every benchmark row.

// A benchmark whose setup fails has nothing to measure: stopping loudly is right.
#![allow(clippy::expect_used)]
// The one FFI call XGBoost's in-place prediction needs; see `Inplace`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::hint::black_box;

use bikeshare_models::dataset::{Target, TrainingData};
use bikeshare_models::training::dmatrix;
use bikeshare_models::xgboost::XgbModel;
use bikeshare_simulator::{CityConfig, history};
use bikeshare_stream_processor::ProcessorConfig;
use bikeshare_types::Timestamp;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xgboost_rs::Booster;
use xgboost_rs_sys as sys;

const TREES: u32 = 200;
const DEPTH: u32 = 6;
const BATCH: usize = 1000;

/// Labelled feature rows from two simulated days of a 60-station city.
fn feature_rows() -> TrainingData {
    let end = Timestamp(1_717_560_000_000 + 2 * 24 * Timestamp::HOUR_MS);
    let from = end.plus_millis(-2 * 24 * Timestamp::HOUR_MS);
    let city = CityConfig {
        stations: 60,
        ..CityConfig::default()
    };
    let events = history(&city, from, end).expect("simulate the city");
    let (data, _) =
        TrainingData::from_events(ProcessorConfig::default(), events).expect("backfill the rows");
    data
}

/// A booster of `TREES` rounds of depth `DEPTH`, as XGBoost JSON.
fn train(data: &TrainingData, rows: std::ops::Range<usize>) -> Vec<u8> {
    let labels = data.labels(Target::WentEmpty, rows.clone());
    let dtrain = dmatrix(data.rows(rows), data.num_features(), &labels, 2).expect("DMatrix");
    let config: HashMap<String, String> = [
        ("objective", "binary:logistic"),
        ("tree_method", "hist"),
        ("max_depth", &DEPTH.to_string()),
        ("eta", "0.1"),
        ("nthread", "2"),
        ("base_score", "0.2"),
        ("verbosity", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut booster = Booster::new_with_json_config(&[&dtrain], config).expect("booster");
    for round in 0..TREES {
        booster
            .update(&dtrain, round as i32)
            .expect("boosting round");
    }
    booster
        .save_to_buffer("json".into())
        .expect("save JSON")
        .into_bytes()
}

/// An XGBoost booster loaded from JSON, predicting through the C API.
struct Xgb {
    handle: sys::BoosterHandle,
    config: CString,
}

/// The message of XGBoost's last error.
fn last_error() -> String {
    // SAFETY: XGBGetLastError returns a pointer to a NUL-terminated thread-local string
    // owned by XGBoost, valid until the next call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(sys::XGBGetLastError()) }
        .to_string_lossy()
        .into_owned()
}

fn check(rc: std::os::raw::c_int, what: &str) {
    assert!(rc == 0, "{what}: {}", last_error());
}

impl Xgb {
    fn load(json: &[u8]) -> Self {
        let mut handle: sys::BoosterHandle = std::ptr::null_mut();
        let nthread = CString::new("nthread").expect("literal");
        let one = CString::new("1").expect("literal");
        // SAFETY: a booster with no cached matrices (null array of length 0), then a model
        // loaded from a buffer XGBoost copies; `handle` is freed in `Drop`.
        unsafe {
            check(
                sys::XGBoosterCreate(std::ptr::null(), 0, &mut handle),
                "XGBoosterCreate",
            );
            check(
                sys::XGBoosterLoadModelFromBuffer(handle, json.as_ptr().cast(), json.len() as _),
                "XGBoosterLoadModelFromBuffer",
            );
            check(
                sys::XGBoosterSetParam(handle, nthread.as_ptr(), one.as_ptr()),
                "XGBoosterSetParam",
            );
        }
        // type 0 = the transformed prediction (a probability for binary:logistic).
        let config = CString::new(
            r#"{"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false, "cache_id": 0, "missing": NaN}"#,
        )
        .expect("literal");
        Self { handle, config }
    }

    /// In-place prediction: probabilities for `rows` rows of `cols` features, appended to
    /// `out`.
    fn inplace(&self, values: &[f32], rows: usize, cols: usize, out: &mut Vec<f32>) {
        assert_eq!(values.len(), rows * cols);
        // The array interface (version 3) of the row-major matrix: pointer, read-only flag.
        let interface = CString::new(format!(
            r#"{{"data": [{}, true], "shape": [{rows}, {cols}], "typestr": "<f4", "version": 3}}"#,
            values.as_ptr() as usize
        ))
        .expect("no NUL in JSON");
        let mut shape: *const sys::bst_ulong = std::ptr::null();
        let mut dim: sys::bst_ulong = 0;
        let mut result: *const f32 = std::ptr::null();
        // SAFETY: `values` outlives the call and matches the interface's shape and type;
        // XGBoost owns `result`, valid until the next prediction on this booster and thread,
        // and holds `rows` floats for a binary model with strict_shape false; it is copied
        // before this function returns.
        unsafe {
            check(
                sys::XGBoosterPredictFromDense(
                    self.handle,
                    interface.as_ptr(),
                    self.config.as_ptr(),
                    std::ptr::null_mut(),
                    &mut shape,
                    &mut dim,
                    &mut result,
                ),
                "XGBoosterPredictFromDense",
            );
            out.extend_from_slice(std::slice::from_raw_parts(result, rows));
        }
    }
}

impl Xgb {
    /// Prediction through a DMatrix (NaN = missing), as `xgboost-rs`'s `Booster::predict`.
    fn via_dmatrix(&self, values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        assert_eq!(values.len(), rows * cols);
        let mut m: sys::DMatrixHandle = std::ptr::null_mut();
        let mut len: sys::bst_ulong = 0;
        let mut result: *const f32 = std::ptr::null();
        // SAFETY: XGBoost copies `values` (of the stated shape) into the DMatrix, which is
        // freed below; `result` is XGBoost's buffer of `len` floats, copied before the next
        // call on this booster.
        unsafe {
            check(
                sys::XGDMatrixCreateFromMat_omp(
                    values.as_ptr(),
                    rows as _,
                    cols as _,
                    f32::NAN,
                    &mut m,
                    1,
                ),
                "XGDMatrixCreateFromMat_omp",
            );
            let rc = sys::XGBoosterPredict(self.handle, m, 0, 0, 0, &mut len, &mut result);
            let out = if rc == 0 {
                std::slice::from_raw_parts(result, len as usize).to_vec()
            } else {
                Vec::new()
            };
            sys::XGDMatrixFree(m);
            check(rc, "XGBoosterPredict");
            out
        }
    }
}

impl Drop for Xgb {
    fn drop(&mut self) {
        // SAFETY: the handle came from XGBoosterCreate and is freed once.
        unsafe {
            sys::XGBoosterFree(self.handle);
        }
    }
}

fn evaluator(c: &mut Criterion) {
    let data = feature_rows();
    let n = data.len();
    assert!(n > 4 * BATCH, "only {n} rows");
    let cols = data.num_features();
    let json = train(&data, 0..n - BATCH);
    let native = XgbModel::from_json(&json).expect("native model");
    assert_eq!(native.num_trees(), TREES as usize);
    let xgb = Xgb::load(&json);
    let batch = data.rows(n - BATCH..n).to_vec();

    // The three agree bit for bit before anything is timed.
    let by_native: Vec<u32> = batch
        .chunks(cols)
        .map(|r| native.predict(r).to_bits())
        .collect();
    let mut by_inplace = Vec::new();
    xgb.inplace(&batch, BATCH, cols, &mut by_inplace);
    let by_dmatrix = xgb.via_dmatrix(&batch, BATCH, cols);
    for (i, ((a, b), d)) in by_native
        .iter()
        .zip(&by_inplace)
        .zip(&by_dmatrix)
        .enumerate()
    {
        assert_eq!(*a, b.to_bits(), "row {i}: native vs in-place");
        assert_eq!(*a, d.to_bits(), "row {i}: native vs DMatrix");
    }

    let mut g = c.benchmark_group("evaluator_single_row");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    let mut next_row = || {
        k = (k + 1) % BATCH;
        &batch[k * cols..(k + 1) * cols]
    };
    g.bench_function("native", |b| {
        b.iter(|| black_box(native.predict(next_row())))
    });
    let mut out = Vec::with_capacity(1);
    g.bench_function("xgboost_inplace", |b| {
        b.iter(|| {
            out.clear();
            xgb.inplace(next_row(), 1, cols, &mut out);
            black_box(out[0])
        })
    });
    g.bench_function("xgboost_dmatrix", |b| {
        b.iter(|| black_box(xgb.via_dmatrix(next_row(), 1, cols)))
    });
    g.finish();

    let mut g = c.benchmark_group("evaluator_batch_1000");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut out = Vec::with_capacity(BATCH);
    g.bench_function("native", |b| {
        b.iter(|| {
            out.clear();
            native.predict_rows(&batch, cols, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("xgboost_inplace", |b| {
        b.iter(|| {
            out.clear();
            xgb.inplace(&batch, BATCH, cols, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("xgboost_dmatrix", |b| {
        b.iter(|| black_box(xgb.via_dmatrix(&batch, BATCH, cols)))
    });
    g.finish();
}

criterion_group!(benches, evaluator);
criterion_main!(benches);
